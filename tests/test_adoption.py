"""What a user adopting the tool on an existing repository runs into: a task file edited between
runs of a tag, git inside a trial, an activated virtualenv, `git clean`, a branch named
`autoresearch`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli, git, make_task, script_agent, trials

from autoresearch.records import Status

LOWER_X = "sed -i 's/^X = .*/X = 2.0/' exp.py\necho 'X to 2'\n"




def test_resuming_a_tag_whose_task_file_now_measures_differently_is_refused(tmp_path: Path) -> None:
    root = make_task(tmp_path / "task")
    assert cli("run", str(root), "--tag", "t", "--agent", "search", "--trials", "1").returncode == 0
    toml = root / "autoresearch.toml"
    toml.write_text(toml.read_text().replace('goal = "minimize"', 'goal = "maximize"'))
    git(root, "commit", "-qam", "maximize now")
    r = cli("run", str(root), "--tag", "t", "--agent", "search", "--trials", "1")
    assert r.returncode == 2
    assert "changed since tag t started (metric.goal: 'minimize' -> 'maximize')" in r.stderr
    assert len(trials(root)) == 2  # nothing ran
    r = cli("run", str(root), "--tag", "t2", "--agent", "search", "--trials", "1")  # a new tag is fine
    assert r.returncode == 0, r.stderr


def test_the_program_and_the_timeout_may_change_between_runs_of_a_tag(tmp_path: Path) -> None:
    root = make_task(tmp_path / "task")
    assert cli("run", str(root), "--tag", "t", "--agent", "search", "--trials", "1").returncode == 0
    (root / "program.md").write_text("# program\nNow try smaller X.\n")
    toml = root / "autoresearch.toml"
    toml.write_text(toml.read_text().replace("timeout = 10", "timeout = 30"))
    git(root, "commit", "-qam", "new direction")
    r = cli("run", str(root), "--tag", "t", "--agent", "search", "--trials", "1")
    assert r.returncode == 0, r.stderr
    assert len(trials(root)) == 3


def test_git_in_an_experiment_sees_the_trial_commit_and_a_clean_tree(tmp_path: Path) -> None:
    """Experiments log the commit (wandb, MLflow) or refuse a dirty tree: inside a trial HEAD is
    the trial's own commit and `git status` shows nothing but what the run made."""
    exp = ("import subprocess\nX = 3.0\n"
           "head = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True).stdout.strip()\n"
           "st = subprocess.run(['git', 'status', '--porcelain'], capture_output=True, text=True).stdout.strip()\n"
           "import os\nprint('env', os.environ.get('AUTORESEARCH_COMMIT'))\n"
           "print('head', head)\nprint('status [' + st + ']')\nprint(f'loss: {X}')\n")
    root = make_task(tmp_path / "task", experiment=exp)
    agent = script_agent(tmp_path / "agent.sh", "sed -i \"s/^X = .*/X = $AUTORESEARCH_TRIAL.5/\" exp.py\necho move X\n")
    r = cli("run", str(root), "--tag", "t", "--agent-cmd", agent, "--trials", "2")
    assert r.returncode == 0, r.stderr
    for t in trials(root):
        log = Path(t.log_path or "").read_text()
        assert f"head {t.commit}" in log, log
        assert f"env {t.commit}" in log, log  # AUTORESEARCH_COMMIT: the same, where git is not (Ray)
        assert "status []" in log, log


def test_an_activated_virtualenv_is_the_python_of_experiments(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    exp = "import sys\nX = 3.0\nprint('prefix', sys.prefix)\nprint(f'loss: {X}')\n"
    root = make_task(tmp_path / "task", experiment=exp)
    env = {"VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    r = cli("run", str(root), "--tag", "t", "--agent", "search", "--trials", "0", env=env)
    assert r.returncode == 0, r.stderr
    assert f"run `python` from your active environment {venv}" in r.stdout + r.stderr
    assert f"prefix {venv}" in (root / ".autoresearch/t/logs/0.log").read_text()
    r = cli("run", str(root), "--tag", "u", "--agent", "search", "--trials", "0")  # none active: ours
    assert f"prefix {sys.prefix}" in (root / ".autoresearch/u/logs/0.log").read_text()


@pytest.mark.extended  # (an activated one runs by default)
def test_the_virtualenv_autoresearch_runs_in_is_the_python_of_experiments(tmp_path: Path) -> None:
    """Installed in a virtualenv (activated, or its python named): experiments import what is
    installed there (a link to its python would lose the virtualenv: no pyvenv.cfg beside it)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "autoresearch_src.pth").write_text(str(Path(__file__).resolve().parents[1] / "src") + "\n")
    (site / "only_in_venv.py").write_text("MARK = 'from the venv'\n")
    exp = "import only_in_venv\nX = 3.0\nprint(only_in_venv.MARK)\nprint(f'loss: {X}')\n"
    root = make_task(tmp_path / "task", experiment=exp)
    base = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    for tag, env in (("named", base), ("activated", {**base, "VIRTUAL_ENV": str(venv),
                                                     "PATH": f"{venv / 'bin'}{os.pathsep}{base['PATH']}"})):
        r = subprocess.run([str(venv / "bin" / "python"), "-m", "autoresearch", "run", str(root), "--tag", tag,
                            "--agent", "search", "--trials", "0"], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "from the venv" in (root / f".autoresearch/{tag}/logs/0.log").read_text()


def test_a_virtualenv_pipx_or_uv_tool_made_is_not_the_python_of_experiments(tmp_path: Path, monkeypatch) -> None:
    """It holds autoresearch alone (no torch): experiments keep the interpreter it was made from."""
    from autoresearch.execute import python_bin, tool_environment

    for prefix, tool in (("/home/u/.local/pipx/venvs/autoresearch", True), ("/home/u/.local/share/uv/tools/autoresearch", True),
                         ("/home/u/project/.venv", False)):
        monkeypatch.setattr(sys, "prefix", prefix)
        monkeypatch.setattr(sys, "base_prefix", "/usr")
        monkeypatch.delenv("VIRTUAL_ENV", raising=False)
        monkeypatch.delenv("CONDA_PREFIX", raising=False)
        assert tool_environment() is tool
        assert (python_bin(tmp_path / "shim")[0] == tmp_path / "shim") is tool


def test_git_clean_fdx_leaves_the_record(tmp_path: Path) -> None:
    root = make_task(tmp_path / "task")
    assert cli("run", str(root), "--tag", "t", "--agent", "search", "--trials", "1").returncode == 0
    subprocess.run(["git", "clean", "-fdx", "-q"], cwd=root, check=True)
    assert (root / ".autoresearch/t/results.tsv").exists()
    r = cli("run", str(root), "--tag", "t", "--agent", "search", "--trials", "1")
    assert r.returncode == 0, r.stderr
    assert [t.number for t in trials(root)] == [0, 1, 2]
    subprocess.run(["git", "clean", "-ffdx", "-q"], cwd=root, check=True)  # the double force does remove it
    r = cli("run", str(root), "--tag", "t", "--agent", "search", "--trials", "1")
    assert r.returncode == 2 and "git branch -D autoresearch/t" in r.stderr


def test_a_branch_named_autoresearch_is_one_clear_line(tmp_path: Path) -> None:
    root = make_task(tmp_path / "task")
    git(root, "branch", "autoresearch")
    r = cli("run", str(root), "--tag", "t", "--agent", "search", "--trials", "1")
    assert r.returncode == 2
    assert "beside the existing branch autoresearch: rename that branch" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (root / ".autoresearch/t/ledger.sqlite").exists()


def test_a_repository_made_inside_the_worktree_is_rejected_and_the_loop_goes_on(tmp_path: Path) -> None:
    """`git init vendor` with no commit made `git add` fail and stopped the loop; a repository
    inside the worktree is a submodule the guard rejects, and none of it survives the trial."""
    root = make_task(tmp_path / "task")
    agent = script_agent(tmp_path / "a.sh", "git init -q vendor\necho x > vendor/f\n" + LOWER_X)
    r = cli("run", str(root), "--tag", "t", "--agent-cmd", agent, "--trials", "2")
    assert r.returncode == 0, r.stderr
    done = trials(root)
    assert [t.status.value for t in done] == ["keep", "rejected", "rejected"], [t.reason for t in done]
    assert all("vendor" in t.reason for t in done[1:])


def test_an_agent_that_pops_the_users_stash_is_rejected_and_told_how_to_restore_it(tmp_path: Path) -> None:
    """Worktrees share refs/stash with the user's repository: an agent's `git stash; ...; git
    stash pop` before it changed anything pops the user's own stash into its trial."""
    root = make_task(tmp_path / "task")
    (root / "exp.py").write_text((root / "exp.py").read_text().replace("X = 3.0", "X = 1.5"))
    git(root, "stash", "-q")
    agent = script_agent(tmp_path / "a.sh", "git stash -q || true\ngit stash pop -q || true\necho 'popped'\n")
    r = cli("run", str(root), "--tag", "t", "--agent-cmd", agent, "--trials", "1")
    assert r.returncode == 0, r.stderr
    t = trials(root)[1]
    assert t.status.value == "rejected" and "git's stash changed while the agent ran" in t.reason
    assert any("git stash store -m restored" in f for f in t.flags), t.flags
    restore = next(f for f in t.flags if "git stash store" in f).split("git stash store -m restored ")[1].rstrip(")")
    git(root, "stash", "store", "-m", "restored", restore)
    assert git(root, "stash", "list")  # the user's work is back


def test_the_python_of_an_active_environment_replaced_by_the_agent_is_put_back(tmp_path: Path) -> None:
    """Experiments and the evaluator run the `python` of the user's active virtualenv (or of the
    one autoresearch runs in), not autoresearch's own links. An agent replaced it by a script
    that prints a better figure when it runs the evaluator, and that was the figure of record
    (-100, kept): only autoresearch's own links were watched. It is put back and the trial
    rejected; the next trial is measured by the real interpreter."""
    from trust_helpers import eval_task

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    root = eval_task(tmp_path, holdout=False)
    python = venv / "bin" / "python"
    agent = script_agent(tmp_path / "agent.sh", f"""\
        sed -i "s/^X = .*/X = 2.$AUTORESEARCH_TRIAL/" exp.py
        if [ "$AUTORESEARCH_TRIAL" = 1 ]; then
            real=$(readlink -f {python}); rm {python}
            printf '#!/bin/sh\\n[ "$1" = prepare.py ] && {{ echo "loss: -100"; exit 0; }}\\nexec %s "$@"\\n' "$real" > {python}
            chmod +x {python}
        fi
        echo lower X
        """)
    env = {"VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    r = cli("run", str(root), "--tag", "t", "--agent-cmd", agent, "--trials", "2", env=env)
    assert r.returncode == 0, r.stderr
    ts = trials(root)
    assert ts[1].status is Status.REJECTED and "changed the experiments' python" in ts[1].reason, (ts[1].metric, ts[1].reason)
    assert python.is_symlink() and ts[2].metric == pytest.approx(1.44), ts[2].metric


def test_a_pyvenv_cfg_put_beside_the_experiments_python_is_taken_out(tmp_path: Path) -> None:
    """Experiments run autoresearch's own links (`.autoresearch/bin/<id>/python`). An agent put
    a pyvenv.cfg beside them: Python took them for a virtualenv's, with a site folder of the
    agent's (`.autoresearch/bin/lib/python3.X/site-packages`, never looked at), whose .pth
    printed the evaluator's figure (-100, kept). The pyvenv.cfg is taken out and the trial
    rejected."""
    from trust_helpers import eval_task

    if sys.prefix != sys.base_prefix:
        pytest.skip("experiments run the python of the virtualenv autoresearch runs in here, not its own links")
    root = eval_task(tmp_path, holdout=False)
    (tmp_path / "pyvenv.cfg").write_text(f"home = {os.path.dirname(os.path.realpath(sys.executable))}\n"
                                         "include-system-site-packages = true\n")
    (tmp_path / "evil.pth").write_text("import atexit, sys; atexit.register(print, 'loss: -100') "
                                       "if sys.argv[:1] == ['prepare.py'] else None\n")
    site = f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages"
    agent = script_agent(tmp_path / "agent.sh", f"""\
        sed -i "s/^X = .*/X = 2.$AUTORESEARCH_TRIAL/" exp.py
        B={root}/.autoresearch/bin
        if [ "$AUTORESEARCH_TRIAL" = 1 ]; then
            for id in $(ls "$B"); do cp {tmp_path / "pyvenv.cfg"} "$B/$id/"; done
            mkdir -p "$B/{site}"; cp {tmp_path / "evil.pth"} "$B/{site}/"
        fi
        echo lower X
        """)
    r = cli("run", str(root), "--tag", "t", "--agent-cmd", agent, "--trials", "2")
    assert r.returncode == 0, r.stderr
    ts = trials(root)
    assert ts[1].status is Status.REJECTED and "pyvenv.cfg" in ts[1].reason, (ts[1].metric, ts[1].reason)
    assert ts[2].metric == pytest.approx(1.44), ts[2].metric


@pytest.mark.parametrize("planted", ["sitecustomize.py", "json.py"])
def test_what_an_agent_plants_in_a_pythonpath_folder_is_taken_out(tmp_path: Path, planted: str) -> None:
    """Experiments and the evaluator get the user's PYTHONPATH, whose folders Python searches
    before the standard library and the site folders. An agent put a sitecustomize.py there (it
    runs at every start: the evaluator printed its figure, -100, kept) or a json.py (every
    `import json`, the experiment's and the evaluator's, ran it): only the site folders and the
    standard library were watched. Either is taken out (kept in the quarantine) and its trial
    rejected."""
    from trust_helpers import eval_task

    folder = tmp_path / "mine"
    folder.mkdir()
    cheat = ("import atexit, os, sys\nif sys.argv[:1] == ['prepare.py']:\n    sys.stdout.write('loss: -100\\n')\n"
             "    sys.stdout.flush()\n    os._exit(0)\n")
    (tmp_path / "cheat.py").write_text(cheat)
    root = eval_task(tmp_path, holdout=False)
    agent = script_agent(tmp_path / "agent.sh", f"""\
        sed -i "s/^X = .*/X = 2.$AUTORESEARCH_TRIAL/" exp.py
        if [ "$AUTORESEARCH_TRIAL" = 1 ]; then cp {tmp_path / "cheat.py"} {folder / planted}; fi
        echo lower X
        """)
    r = cli("run", str(root), "--tag", "t", "--agent-cmd", agent, "--trials", "2",
            env={"PYTHONPATH": f"{folder}{os.pathsep}{os.environ['PYTHONPATH']}"})
    assert r.returncode == 0, r.stderr
    ts = trials(root)
    assert ts[1].status is Status.REJECTED and planted in ts[1].reason, (ts[1].metric, ts[1].reason)
    assert not (folder / planted).exists() and (root / ".autoresearch/t/quarantine" / planted).exists()
    assert ts[2].metric == pytest.approx(1.44), ts[2].metric


@pytest.mark.parametrize("planted", ["a link in place of a .pth", "a package named sitecustomize",
                                     "a .pth, with a file where its copy is kept"])
def test_a_startup_file_made_a_link_or_a_package_is_taken_out_not_written_through(tmp_path: Path, planted: str) -> None:
    """A `.pth` that was there, replaced by a link to a file of the agent's, was put back by
    writing through the link (into the agent's file) and the link stayed: the agent's next write
    to its file ran at every start of the evaluator, unseen, and faked the metric of a trial
    kept. A folder `sitecustomize/` (a package, imported as the module would be) could not be
    put back at all and ran at every start from then on; nor could a .pth whose copy could not be
    kept (a file put where the quarantine folder goes). All are taken out on the trial that
    planted them (what was there kept in the quarantine), and the next trial gains nothing."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "distutils-precedence.pth").write_text("import os\n")  # (setuptools writes one)
    mine = tmp_path / "mine.pth"
    mine.write_text("")
    cheat = "import atexit; atexit.register(print, 'loss: -100')"
    root = tmp_path / "task"
    plant = {"a link in place of a .pth": f'rm {site}/distutils-precedence.pth; ln -s {mine} {site}/distutils-precedence.pth',
             "a package named sitecustomize": f'mkdir {site}/sitecustomize; echo "{cheat}" > {site}/sitecustomize/__init__.py',
             "a .pth, with a file where its copy is kept":
                 f'echo x > {root}/.autoresearch/t/quarantine; echo "{cheat}" > {site}/evil.pth'}[planted]
    later = f'echo "{cheat}" > {mine}' if planted.startswith("a link") else ""
    make_task(root)
    agent = script_agent(tmp_path / "agent.sh", f"""\
        sed -i "s/^X = .*/X = 2.$AUTORESEARCH_TRIAL/" exp.py
        if [ "$AUTORESEARCH_TRIAL" = 1 ]; then {plant}; fi
        if [ "$AUTORESEARCH_TRIAL" = 2 ]; then {later or ":"}; fi
        echo lower X
        """)
    env = {"VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    r = cli("run", str(root), "--tag", "t", "--agent-cmd", agent, "--trials", "2", env=env)
    assert r.returncode == 0, r.stderr
    ts = trials(root)
    assert ts[1].status is Status.REJECTED and "changed Python startup files" in ts[1].reason, ts[1].reason
    assert ts[2].metric is not None and ts[2].metric > 0, (ts[2].status, ts[2].metric)
    pth = site / "distutils-precedence.pth"
    assert not pth.is_symlink() and pth.read_text() == "import os\n"
    assert not (site / "sitecustomize").exists() and not (site / "evil.pth").exists()
    assert mine.read_text() in ("", f"{cheat}\n")  # (nothing of the harness's written into it)
    assert any((root / ".autoresearch/t/quarantine").iterdir())


def test_a_package_setup_installs_or_you_install_meanwhile_is_left_alone(tmp_path: Path) -> None:
    """A `.pth` that comes with a *.dist-info (what `pip install -e` writes) is a package
    installed, by setup or by you while the loop runs: kept, and noted on the trial running then.
    One that comes alone (planted) is taken out and its trial rejected; it is moved to the tag's
    quarantine folder, not deleted (on a shared interpreter it may be another process's file)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    lib = tmp_path / "mylib"
    lib.mkdir()
    (lib / "mylib.py").write_text("OFFSET = 0.0\n")
    install = (f"mkdir -p {site}/mylib-0.1.dist-info && echo {lib} > {site}/__editable__.mylib-0.1.pth")
    exp = "import mylib\nX = 3.0\nprint(f'loss: {X + mylib.OFFSET}')\n"
    root = make_task(tmp_path / "task", experiment=exp, toml_extra=f'setup = "{install}"\n')
    agent = script_agent(tmp_path / "agent.sh", f"""\
        sed -i "s/^X = .*/X = 2.$AUTORESEARCH_TRIAL/" exp.py
        if [ "$AUTORESEARCH_TRIAL" = 2 ]; then mkdir -p {site}/other-1.0.dist-info; echo {lib} > {site}/other.pth; fi
        if [ "$AUTORESEARCH_TRIAL" = 3 ]; then echo {lib} > {site}/planted.pth; fi
        echo lower X
        """)
    env = {"VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    r = cli("run", str(root), "--tag", "t", "--agent-cmd", agent, "--trials", "4", env=env)
    assert r.returncode == 0, r.stderr
    ts = trials(root)
    assert ts[0].status is Status.KEEP and ts[1].status is not Status.REJECTED
    assert (site / "__editable__.mylib-0.1.pth").exists() and (site / "other.pth").exists()
    assert ts[2].status is not Status.REJECTED and any("pip install" in f for f in ts[2].flags), ts[2].flags
    assert ts[3].status is Status.REJECTED and "planted.pth" in ts[3].reason
    assert not (site / "planted.pth").exists()
    kept = root / ".autoresearch" / "t" / "quarantine" / "planted.pth"
    assert kept.read_text() == f"{lib}\n" and str(kept.parent) in ts[3].reason, ts[3].reason
    assert ts[4].status is not Status.REJECTED


@pytest.mark.extended
def test_a_resumed_tag_goes_on_with_its_agent_unless_run_names_one(tmp_path: Path) -> None:
    """An overnight run with a CLI agent, stopped (a reboot) and resumed with `run --tag T`: it
    used to go on with the search agent. A flag still chooses; an empty --agent-cmd is an error."""
    root = make_task(tmp_path / "task")
    agent = script_agent(tmp_path / "agent.sh", LOWER_X)
    assert cli("run", str(root), "--tag", "t", "--agent-cmd", agent, "--trials", "1").returncode == 0
    r = cli("run", str(root), "--tag", "t", "--trials", "1")
    assert r.returncode == 0, r.stderr
    assert f"tag t goes on with the agent it ran with: cli: {agent}" in r.stderr
    assert [t.agent for t in trials(root)] == ["baseline", "cli", "cli"]
    # a new agent timeout alone changes the timeout, not the agent (it used to switch to search)
    r = cli("run", str(root), "--tag", "t", "--trials", "1", "--agent-timeout", "600")
    assert r.returncode == 0, r.stderr
    assert f"goes on with the agent it ran with: cli: {agent} (now with --agent-timeout 600" in r.stderr
    assert [t.agent for t in trials(root)] == ["baseline", "cli", "cli", "cli"]
    # a flag the cli agent does not take is an error, not a quiet switch to the search agent
    r = cli("run", str(root), "--tag", "t", "--trials", "1", "--sampler", "random")
    assert r.returncode == 2 and "--sampler: not taken by --agent cli" in r.stderr and "--agent" in r.stderr
    assert len(trials(root)) == 4
    r = cli("run", str(root), "--tag", "t", "--agent", "search", "--trials", "1")
    assert r.returncode == 0 and "goes on with" not in r.stderr
    assert trials(root)[-1].agent == "search"
    # now the search agent: --sampler changes its sampler and keeps it
    r = cli("run", str(root), "--tag", "t", "--trials", "1", "--sampler", "random")
    assert r.returncode == 0 and "goes on with the agent it ran with: search (now with --sampler random)" in r.stderr
    r = cli("run", str(root), "--tag", "t", "--agent-cmd", "  ", "--trials", "1")
    assert r.returncode == 2 and r.stderr.strip() == "autoresearch: error: --agent-cmd is empty"


def test_an_agent_table_with_a_model_or_a_command_and_no_kind_names_that_agent(tmp_path: Path) -> None:
    from autoresearch.agents.registry import agent_options
    from autoresearch.cli import build_parser
    from autoresearch.task import load_task

    for table, name in (('model = "openai/gpt-4.1"', "llm"), ('cmd = "true"', "cli"), ("", "search")):
        root = make_task(tmp_path / name, toml_extra=f"[agent]\n{table}\n" if table else "")
        args = build_parser().parse_args(["run", str(root)])
        assert agent_options(args, load_task(root)).name == name


def test_trials_0_runs_the_baseline_of_files_without_constants(tmp_path: Path) -> None:
    root = make_task(tmp_path / "task", experiment="print('loss: 1.5')\n")
    r = cli("run", str(root), "--tag", "t", "--trials", "0")
    assert r.returncode == 0, r.stderr
    assert [t.metric for t in trials(root)] == [1.5]
    r = cli("run", str(root), "--tag", "t", "--trials", "1")
    assert r.returncode == 2 and "found no constants to tune" in r.stderr


def test_a_failed_repeat_of_the_baseline_names_its_own_run_and_log(tmp_path: Path) -> None:
    root = make_task(tmp_path / "task", toml_extra="[acceptance]\nbaseline_runs = 3\n")
    toml = root / "autoresearch.toml"
    toml.write_text(toml.read_text().replace('command = "python exp.py"',
                                             'command = \'test "$AUTORESEARCH_SEED" = 1 && exit 3; python exp.py\''))
    git(root, "commit", "-qam", "seed 1 fails")
    r = cli("run", str(root), "--tag", "t", "--trials", "1")
    assert r.returncode == 1
    assert "failed: run 2 of 3 (seed 1, log 0.1.log): exit code 3: (no output); see " in r.stderr, r.stderr
    assert r.stderr.rstrip().split("; see ")[1].startswith(str(root / ".autoresearch" / "t" / "logs" / "0.1.log"))


@pytest.mark.parametrize("assign", [
    "MY_KEY=sk-proj-" + "a1b2c3d4" * 5,  # shaped like a key
    # not shaped like one, but given to a key's name (they were recorded and shown as they were)
    "MISTRAL_API_KEY=Zx9FAKEmistralKEY0123456789abcdEF", "export HF_TOKEN='FAKEhuggingface0123456789abcd';"])
def test_a_tag_whose_agent_command_held_a_key_asks_for_it_again(tmp_path: Path, assign: str) -> None:
    root = make_task(tmp_path / "task")
    agent = script_agent(tmp_path / "agent.sh", LOWER_X)
    key = assign.split("=", 1)[1].strip("';")
    r = cli("run", str(root), "--tag", "t", "--agent-cmd", f"{assign} {agent}", "--trials", "1", env={"MISTRAL_API_KEY": "", "HF_TOKEN": ""})
    assert r.returncode == 0, r.stderr
    for path in (root / ".autoresearch").rglob("*"):
        assert not path.is_file() or key not in path.read_bytes().decode("latin-1"), path
    r = cli("run", str(root), "--tag", "t", "--trials", "1")
    assert r.returncode == 2 and "holds a key, which is never recorded: give the agent's flags again" in r.stderr
    r = cli("run", str(root), "--tag", "t", "--trials", "1", "--agent-timeout", "60")  # not the agent's flags
    assert r.returncode == 2 and "give the agent's flags again" in r.stderr
    assert len(trials(root)) == 2  # nothing ran with another agent


def test_a_tag_whose_server_held_a_key_resumes_with_its_flags_given_again(tmp_path: Path) -> None:
    from autoresearch.agents.registry import agent_options
    from autoresearch.cli import build_parser
    from autoresearch.ledger import Ledger
    from autoresearch.task import load_task

    root = make_task(tmp_path / "task")
    assert cli("run", str(root), "--tag", "t", "--trials", "0").returncode == 0
    led = Ledger.open(root, "t", "loss")
    led.set_meta("agent_options", '{"name": "llm", "withheld": true}')  # as a --base-url with a key leaves it
    led.close()
    task = load_task(root)
    args = build_parser().parse_args(["run", str(root), "--tag", "t", "--model", "openai/m",
                                      "--base-url", "http://127.0.0.1:9/v1"])
    opts = agent_options(args, task, "t")
    assert opts.name == "llm" and opts.model == "openai/m" and opts.base_url == "http://127.0.0.1:9/v1"


def test_a_resume_refuses_a_task_file_changed_and_not_committed(tmp_path: Path) -> None:
    """Red team, round 4: an agent widened `editable` in your checkout's task file (noted on its
    trial); the next resume read the task file from there and measured with the wider scope."""
    root = make_task(tmp_path / "task")
    assert cli("run", str(root), "--tag", "t", "--trials", "0").returncode == 0
    toml = root / "autoresearch.toml"
    toml.write_text(toml.read_text().replace('protected = ["prepare.py"]', "protected = []"))
    r = cli("run", str(root), "--tag", "t", "--trials", "1")
    assert r.returncode == 2 and "autoresearch.toml has uncommitted changes" in r.stderr, r.stderr
    git(root, "commit", "-qam", "nothing protected now")
    assert cli("run", str(root), "--tag", "t", "--trials", "0").returncode == 0


def test_your_own_stash_while_a_built_in_agent_works_is_noted_not_held_against_the_trial(tmp_path: Path) -> None:
    """The built-in agents run no git: a `git stash` / `git stash pop` of yours while one
    proposes is yours, so the trial is noted (an audit flag) and run, not rejected."""
    from fakes.llm_server import FakeLLM, Say
    from llm_helpers import good_edit, run_llm

    root = make_task(tmp_path / "task")

    def stash(_body: object) -> Say:  # the user, in their checkout, while the model is asked
        (root / "NOTES.md").write_text("my notes\n")
        git(root, "stash", "-q", "-u")
        return Say("Let me look at the code.", [("read_file", {"path": "exp.py"})])

    with FakeLLM("openai", [stash, *good_edit()[1:]]) as fake:
        r = run_llm(root, fake)
    assert r.returncode == 0, r.stderr
    t = trials(root)[1]
    assert t.status == Status.KEEP, t.reason
    assert any("refs/stash" in f for f in t.flags), t.flags
    git(root, "stash", "pop", "-q")
    assert (root / "NOTES.md").read_text() == "my notes\n"
