"""Results you can trust, the evaluator: the only source of the figures of record (not the run's
own print or metric file, not a changed protected file, not the files or processes the run
leaves); its own failures, files and output (a timeout, a missing figure, a metric file in its
working folder); memory_gb, a gain equal to min_delta, what setup writes, and the harness's own
variables against secrets.

Real task repositories, real loops through the CLI, real subprocesses. (Results you can trust
also: noise in test_noise.py, the sealed holdout in test_holdout.py, the evaluator in
test_evaluator.py, the causality probe in test_causality.py; the sandbox in test_sandbox.py,
the audit in test_audit.py.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli, git, make_task, script_agent, trials
from trust_helpers import EVALUATOR, EXPERIMENT, LOWER_X, METRIC, eval_task, run

from autoresearch.process import kill_owned
from autoresearch.records import Status

# ---------------------------------------------------------------------------
# the evaluator is the only source of the figures of record


def test_the_evaluators_figure_is_recorded_not_the_runs_claim(tmp_path: Path) -> None:
    root = eval_task(tmp_path)
    agent = script_agent(tmp_path / "agent.sh", """\
        sed -i 's/^X = .*/X = 2.5/' exp.py
        echo 'print("loss: -100.0")' >> exp.py
        echo "claim a better loss"
        """)
    run(root, agent, 1)
    t = trials(root)[1]
    assert t.metric == pytest.approx(2.25) and t.status is Status.KEEP
    assert any("names the figure 'loss'" in f for f in t.flags)  # and the audit saw the print
    assert "loss: -100.0" in (root / ".autoresearch" / "t" / "logs" / "1.log").read_text()


def test_record_figures_and_memory_are_the_evaluators_too(tmp_path: Path) -> None:
    """With `evaluate`, what the experiment prints counts for nothing: a `record` figure and
    peak_vram_mb it alone prints are not recorded; the ones the evaluator prints are."""
    experiment = EXPERIMENT + 'print("steps: 7")\nprint("peak_vram_mb: 4096")\n'
    evaluator = EVALUATOR + 'print("tokens: 99")\n'
    root = make_task(tmp_path / "task", experiment=experiment, files={"prepare.py": evaluator},
                     toml_extra='evaluate = "python prepare.py"\n' + METRIC + 'record = ["steps", "tokens"]\n')
    r = cli("run", str(root), "--tag", "t", "--trials", "0")
    assert r.returncode == 0, r.stderr
    (base,) = trials(root)
    assert base.figures == {"loss": 4.0, "tokens": 99.0}
    row = (root / ".autoresearch/t/results.tsv").read_text().splitlines()[1].split("\t")
    assert row[1:4] == ["4.000000", "0.0", "keep"]


def test_a_metric_file_is_the_evaluators_not_the_runs(tmp_path: Path) -> None:
    evaluator = """\
import json, os
run = os.environ["AUTORESEARCH_RUN_DIR"]
if os.path.exists(os.path.join(run, "result.json")):
    loss = json.load(open(os.path.join(run, "result.json")))["loss"]
    json.dump({"loss": loss}, open(os.path.join(run, "metrics.json"), "w"))
"""
    root = make_task(tmp_path / "task", experiment=EXPERIMENT, files={"prepare.py": evaluator},
                     toml_extra='evaluate = "python prepare.py"\n' + METRIC + 'file = "metrics.json"\n')
    agent = script_agent(tmp_path / "agent.sh", """\
        cat > exp.py <<'EOF'
        import json, os
        json.dump({"loss": -100.0}, open(os.path.join(os.environ["AUTORESEARCH_RUN_DIR"], "metrics.json"), "w"))
        EOF
        echo "write the metric file myself"
        """)
    run(root, agent, 1)
    base, t = trials(root)
    assert base.metric == pytest.approx(4.0)
    assert t.status is Status.CRASH and "metrics.json was not written" in t.reason


@pytest.mark.parametrize("holdout", [False, True], ids=["hash-check", "sealed"])
def test_an_experiment_that_changes_a_protected_file_is_rejected(tmp_path: Path, holdout: bool) -> None:
    """Unsealed, the file is read-only by mode (root ignores that) and hash-checked after the
    run: rejected. Sealed (a task with a holdout, where bwrap works), the file is bound
    read-only: the write itself fails, and the run with it."""
    from autoresearch import sandbox

    if holdout and sandbox.problem():
        pytest.skip(f"the seal needs bubblewrap: {sandbox.problem()}")
    root = eval_task(tmp_path, holdout=holdout)
    agent = script_agent(tmp_path / "agent.sh", """\
        cat >> exp.py <<'EOF'
        os.chmod("prepare.py", 0o644)
        with open("prepare.py", "a") as f:
            f.write("print('loss: -100')\\n")
        EOF
        echo "improve the evaluator"
        """)
    run(root, agent, 1)
    t = trials(root)[1]
    if holdout:
        assert t.status is Status.CRASH and "Read-only file system" in t.reason, t.reason
    else:
        assert t.status is Status.REJECTED and "changed protected file(s): prepare.py" in t.reason
    assert "loss: -100" not in (root / "prepare.py").read_text()
    assert t.metric is None


SHADOW = '''\
cat >> exp.py <<'EOF'
# leave a module that shadows the evaluator's `import json` (the script's folder comes first)
FAKE = 'import sys\\nprint("loss: -100.0")\\nsys.exit(0)\\n'
open("json.py", "w").write(FAKE)
os.makedirs("__pycache__", exist_ok=True)
EOF
echo "shadow json"
'''


DAEMON = '''\
cat >> exp.py <<'EOF'
# a daemon in its own session that plants the shadow module once the tree was restored
import subprocess
subprocess.Popen(["setsid", "bash", "-c",
                  "sleep 0.7; printf 'print(\\"loss: -100.0\\")\\\\nraise SystemExit(0)\\\\n' > json.py"],
                 start_new_session=True)
EOF
echo "plant json later"
'''


SLOW_EVALUATOR = "import time\ntime.sleep(1.5)\n" + EVALUATOR


@pytest.mark.parametrize("trick", [SHADOW, pytest.param(DAEMON, marks=pytest.mark.slow)], ids=["shadow-module", "daemon"])
def test_files_the_run_leaves_cannot_reach_the_evaluator(tmp_path: Path, trick: str) -> None:
    """Unsealed (no holdout): the tree is restored before the evaluator, and what the run left
    running is killed first."""
    root = eval_task(tmp_path, evaluator=SLOW_EVALUATOR, holdout=False)
    agent = script_agent(tmp_path / "agent.sh", "sed -i 's/^X = .*/X = 2.5/' exp.py\n" + trick)
    run(root, agent, 1)
    t = trials(root)[1]
    assert t.status is Status.KEEP and t.metric == pytest.approx(2.25), t.reason
    time.sleep(1.0)
    assert not list((root / ".autoresearch" / "t" / "worktrees").rglob("json.py"))
    # the control: the same evaluator beside such a module is fooled
    fooled = tmp_path / "fooled"
    fooled.mkdir()
    (fooled / "prepare.py").write_text(EVALUATOR)
    (fooled / "json.py").write_text('print("loss: -100.0")\nraise SystemExit(0)\n')
    out = subprocess.run([sys.executable, "prepare.py"], cwd=fooled, capture_output=True, text=True)
    assert out.stdout.strip() == "loss: -100.0"


@pytest.mark.parametrize("planted", ["json.py", "json/__init__.py", "fancystats.py"])
def test_a_module_the_agent_commits_cannot_stand_in_for_one_the_evaluator_imports(tmp_path: Path, planted: str) -> None:
    """With the whole root editable (`*.py`), an agent committed json.py beside the protected
    evaluator, which imported it in place of Python's json: a worse change was kept with the
    agent's figure. A new file named as a standard-library module, or as one a protected file
    imports (here an optional one), is rejected; the same change without it is measured."""
    optional = "try:\n    import fancystats\nexcept ImportError:\n    fancystats = None\n"
    root = make_task(tmp_path / "task", experiment=EXPERIMENT, files={"prepare.py": optional + EVALUATOR},
                     toml_extra='evaluate = "python prepare.py"\n' + METRIC)
    toml = root / "autoresearch.toml"
    toml.write_text(toml.read_text().replace('editable = ["exp.py"]', 'editable = ["*.py", "*/*.py"]'))
    git(root, "commit", "-q", "-am", "the whole root editable")
    fake = 'def load(f, *a, **k):\n    return {"loss": -100.0}\ndef dump(o, f, *a, **k):\n    f.write(repr(o))\n'
    agent = script_agent(tmp_path / "agent.sh", f"""\
        sed -i 's/^X = .*/X = 5.0/' exp.py
        if [ "$AUTORESEARCH_TRIAL" = 1 ]; then mkdir -p "$(dirname {planted})"; printf '{fake}' > {planted}; fi
        echo "worse X"
        """)
    run(root, agent, 2)
    one, two = trials(root)[1:]
    assert one.status is Status.REJECTED and f"added {planted}, which Python would import in place of" in one.reason, one
    assert two.status is Status.DISCARD and two.metric == pytest.approx(16.0), two  # measured, honestly



PYC = f"model/__pycache__/data.cpython-{sys.version_info[0]}{sys.version_info[1]}.pyc"


@pytest.mark.parametrize("planted", ["model/data/__init__.py", "model/data.abi3.so", PYC])
def test_a_package_the_agent_commits_cannot_stand_in_for_a_protected_module(tmp_path: Path, planted: str) -> None:
    """The evaluator imports a protected module of a package (`model/data.py`) beside editable
    ones (`model/`). An agent committed `model/data/__init__.py`: Python takes a package before
    the module of the same name (an extension too), and nothing of the protected file was
    changed, so the agent's `answer` gave the figure of record (-100, kept); so did a bytecode
    cache of data.py made from other source (an unchecked hash-based .pyc: Python does not look
    at the source). A new file named as a protected module beside it, or a cache of one, is
    rejected."""
    evaluator = ("import os\nfrom model.data import answer\n"
                 "x = float(open(os.path.join(os.environ['AUTORESEARCH_RUN_DIR'], 'x.txt')).read())\n"
                 "print(f'loss: {answer(x)}')\n")
    experiment = "import os\nfrom model.net import X\nopen(os.path.join(os.environ['AUTORESEARCH_RUN_DIR'], 'x.txt'), 'w').write(str(X))\n"
    files = {"prepare.py": evaluator, "model/__init__.py": "", "model/net.py": "X = 3.0\n",
             "model/data.py": "def answer(x):\n    return (x - 1) ** 2 + 2\n"}
    root = make_task(tmp_path / "task", experiment=experiment, files=files,
                     toml_extra='evaluate = "python prepare.py"\n' + METRIC)
    toml = root / "autoresearch.toml"
    toml.write_text(toml.read_text().replace('editable = ["exp.py"]', 'editable = ["exp.py", "model/"]')
                    .replace('protected = ["prepare.py"]', 'protected = ["prepare.py", "model/__init__.py", "model/data.py"]'))
    git(root, "commit", "-q", "-am", "a package, part editable")
    agent = script_agent(tmp_path / "agent.sh", f"""\
        sed -i 's/^X = .*/X = 2.9/' model/net.py
        if [ "$AUTORESEARCH_TRIAL" = 1 ]; then
            mkdir -p model/data model/__pycache__; printf 'def answer(x):\\n    return -100.0\\n' > {tmp_path / "fake.py"}
            python -c "import py_compile as c, shutil, sys; (c.compile(sys.argv[1], cfile=sys.argv[2], invalidation_mode=c.PycInvalidationMode.UNCHECKED_HASH) if sys.argv[2].endswith('.pyc') else shutil.copy(*sys.argv[1:]))" {tmp_path / "fake.py"} {planted}
            rmdir model/data 2>/dev/null || true
        fi
        echo "smaller X"
        """)
    run(root, agent, 2)
    one, two = trials(root)[1:]
    assert one.status is Status.REJECTED and f"added {planted}, " in one.reason and "the protected model/data.py" \
        in one.reason, (one.status, one.metric, one.reason)
    assert two.status is Status.KEEP and two.metric == pytest.approx(5.61), two  # measured, honestly

def test_kill_owned_matches_a_trial_not_its_namesakes() -> None:
    procs = {owner: subprocess.Popen(["sleep", "30"], env={**os.environ, "AUTORESEARCH_OWNER": owner})
             for owner in ("/x/t:1", "/x/t:10", "/x/t:1:agent")}
    try:
        assert kill_owned("/x/t:1") == 2
        time.sleep(0.2)
        assert procs["/x/t:1"].poll() is not None and procs["/x/t:1:agent"].poll() is not None
        assert procs["/x/t:10"].poll() is None
    finally:
        for p in procs.values():
            p.kill()
            p.wait()


# ---------------------------------------------------------------------------
# the evaluator's own failures, files and output


def test_an_evaluator_past_the_timeout_is_a_timeout_and_its_output_explains_the_verdict(tmp_path: Path) -> None:
    """An evaluator that hangs is killed at the timeout and the trial says so (status timeout);
    a missing figure is explained with the evaluator's output, not the run's own print."""
    evaluator = """\
import json, os, time
run = os.environ["AUTORESEARCH_RUN_DIR"]
loss = json.load(open(os.path.join(run, "result.json")))["loss"]
if loss < 0.1:
    time.sleep(60)
if loss < 4.0:
    print("evaluated, no figure")
print(f"loss: {loss}")
"""
    root = make_task(tmp_path / "task", experiment=EXPERIMENT, files={"prepare.py": evaluator},
                     toml_extra='evaluate = "python prepare.py"\n' + METRIC)
    toml = (root / "autoresearch.toml").read_text().replace("timeout = 10", "timeout = 3")
    (root / "autoresearch.toml").write_text(toml)
    git(root, "commit", "-qam", "timeout 3")
    agent = script_agent(tmp_path / "agent.sh", """\
        if [ "$AUTORESEARCH_TRIAL" = 1 ]; then sed -i 's/^X = .*/X = 1.5/' exp.py; fi
        if [ "$AUTORESEARCH_TRIAL" = 2 ]; then sed -i 's/^X = .*/X = 1.1/' exp.py; fi
        echo "move X"
        """)
    r = run(root, agent, 2)
    assert "timeout (3 s) is not above time_budget (5 s)" in r.stdout + r.stderr
    base, first, second = trials(root)
    assert base.status is Status.KEEP
    assert first.status is Status.KEEP  # 0.25: printed last by the evaluator
    assert second.status is Status.TIMEOUT and "the evaluator was killed after the 3 s timeout" in second.reason


def test_a_missing_figure_is_explained_with_the_evaluators_output(tmp_path: Path) -> None:
    evaluator = 'print("evaluated, val: 1.0")\n'
    root = make_task(tmp_path / "task", experiment='print("loss: 0.5")\n', files={"prepare.py": evaluator},
                     toml_extra='evaluate = "python prepare.py"\n' + METRIC)
    r = cli("run", str(root), "--tag", "t", "--agent", "cli", "--agent-cmd", "true", "--trials", "0")
    assert r.returncode == 1
    assert "no 'loss' figure in the output; last output: evaluated, val: 1.0" in r.stderr, r.stderr
    assert "loss: 0.5" not in r.stderr.split("last output:")[1]


def test_an_evaluator_may_write_the_metric_file_in_its_working_folder(tmp_path: Path) -> None:
    """`file = "metrics.json"` with an evaluator: read from $AUTORESEARCH_RUN_DIR or the folder
    the evaluator ran in, and only what the evaluator wrote (the run's own copy is removed)."""
    evaluator = """\
import json, os
loss = json.load(open(os.path.join(os.environ["AUTORESEARCH_RUN_DIR"], "result.json")))["loss"]
if loss != 0.25:
    json.dump({"loss": loss}, open("metrics.json", "w"))
"""
    root = make_task(tmp_path / "task", experiment=EXPERIMENT, files={"prepare.py": evaluator},
                     toml_extra='evaluate = "python prepare.py"\n' + METRIC + 'file = "metrics.json"\n')
    agent = script_agent(tmp_path / "agent.sh", """\
        if [ "$AUTORESEARCH_TRIAL" = 1 ]; then sed -i 's/^X = .*/X = 2.0/' exp.py; fi
        if [ "$AUTORESEARCH_TRIAL" = 2 ]; then
          sed -i 's/^X = .*/X = 1.5/' exp.py
          echo 'json.dump({"loss": -1.0}, open("metrics.json", "w"))' >> exp.py
        fi
        echo "move X"
        """)
    run(root, agent, 2)
    base, first, second = trials(root)
    assert (base.metric, first.metric, first.status) == (4.0, 1.0, Status.KEEP)
    assert second.status is Status.CRASH and "metrics.json was not written" in second.reason
    assert "$AUTORESEARCH_RUN_DIR or the working folder" in second.reason


def test_memory_gb_comes_from_peak_vram_mb_without_record(tmp_path: Path) -> None:
    """results.tsv's memory_gb is read from `peak_vram_mb:` as autoresearch prints it, whether or
    not the task lists it under `record`."""
    root = make_task(tmp_path / "task", experiment='print("loss: 2.0")\nprint("peak_vram_mb: 45000.7")\n',
                     toml_extra=METRIC)
    r = cli("run", str(root), "--tag", "t", "--agent", "cli", "--agent-cmd", "true", "--trials", "0")
    assert r.returncode == 0, r.stderr
    row = (root / ".autoresearch/t/results.tsv").read_text().splitlines()[1].split("\t")
    assert row[1:4] == ["2.000000", "43.9", "keep"]


def test_an_absurd_peak_vram_mb_is_no_memory_gb_of_dozens_of_digits(tmp_path: Path) -> None:
    """A broken counter's peak_vram_mb (1e30, 1e300, inf, negative) is written as memory_gb 0.0,
    none, as tools read it: 1e30 / 1024 to one decimal was a 27-digit field, 1e300 a 301-digit one.
    `show` still gives the figure as printed."""
    exp = ("import os\nn = int(os.environ['AUTORESEARCH_TRIAL'])\n"
           "print('loss:', 2.0 - n / 10)\nprint('peak_vram_mb:', ['1e30', '1e300', 'inf', '-5', '2048'][n])\n")
    root = make_task(tmp_path / "task", experiment=exp, toml_extra=METRIC)
    agent = script_agent(tmp_path / "agent.sh", 'echo "# $AUTORESEARCH_TRIAL" >> exp.py\necho "next"\n')
    run(root, agent, 4)
    rows = [r.split("\t") for r in (root / ".autoresearch/t/results.tsv").read_text().splitlines()[1:]]
    assert [r[2] for r in rows] == ["0.0", "0.0", "0.0", "0.0", "2.0"], rows
    assert [r[3] for r in rows] == ["keep"] * 5
    assert "peak_vram_mb: 1e+30" in cli("show", "0", str(root), "--tag", "t").stdout


@pytest.mark.parametrize("goal, old, new", [("maximize", 0.3, 0.4), ("maximize", 0.4, 0.5),
                                           ("minimize", 0.5, 0.4), ("minimize", 0.4, 0.3)])
def test_a_gain_equal_to_min_delta_is_not_more_than_it(tmp_path: Path, goal: str, old: float, new: float) -> None:
    """min_delta = 0.1: 0.3 -> 0.4 and 0.4 -> 0.5 both gain exactly the bar (whatever the float
    subtraction says: 0.10000000000000003 and 0.09999999999999998), so neither is kept."""
    root = make_task(tmp_path / "task", experiment=f"X = {old}\nprint(f'loss: {{X}}')\n",
                     toml_extra=f'[acceptance]\nmin_delta = 0.1\n[metric]\nname = "loss"\ngoal = "{goal}"\n')
    agent = script_agent(tmp_path / "agent.sh", f"""\
        sed -i 's/^X = .*/X = {new}/' exp.py
        echo "move X"
        """)
    run(root, agent, 1)
    t = trials(root)
    assert [x.status for x in t] == [Status.KEEP, Status.DISCARD], t[1].reason


@pytest.mark.parametrize("sandboxed", [False, pytest.param(True, marks=pytest.mark.extended)], ids=["plain", "sandbox"])
def test_what_setup_writes_in_the_repository_reaches_every_trial_and_the_evaluator(tmp_path: Path, sandboxed: bool) -> None:
    """setup writes data/ (git-ignored) inside the repository: every trial's experiment and
    evaluation find it, not only the baseline; a trial that does not touch it is not rejected
    for it; on resume an idempotent setup finds its output where it left it."""
    prep = """\
import os, sys
if sys.argv[1:] == ["--evaluate"]:
    data = open("data/d.txt").read().strip()
    loss = float(open(os.path.join(os.environ["AUTORESEARCH_RUN_DIR"], "loss.txt")).read())
    print(f"loss: {loss}")
    print(f"data: {len(data)}")
else:
    if not os.path.exists("data/d.txt"):
        os.makedirs("data", exist_ok=True)
        open("data/d.txt", "w").write("x" * 10)
        with open(os.path.join(os.environ["MADE"], "made.log"), "a") as f:
            f.write("made\\n")
"""
    exp = """\
import os
X = 3.0
n = len(open("data/d.txt").read().strip())
open(os.path.join(os.environ["AUTORESEARCH_RUN_DIR"], "loss.txt"), "w").write(str((X - 1.0) ** 2 + n))
"""
    root = make_task(tmp_path / "task", experiment=exp, files={"prepare.py": prep, ".gitignore": "data/\n"},
                     toml_extra='setup = "python prepare.py"\nevaluate = "python prepare.py --evaluate"\n'
                                '[acceptance]\nbaseline_runs = 2\n' + METRIC + 'record = ["data"]\n')
    agent = script_agent(tmp_path / "agent.sh", LOWER_X)
    env = {"MADE": str(tmp_path)}
    if sandboxed:
        from autoresearch import sandbox

        if sandbox.problem() is not None:
            pytest.skip(f"bubblewrap cannot run here: {sandbox.problem()}")
    flags = ["--sandbox"] if sandboxed else []
    r = cli("run", str(root), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "2", *flags, env=env)
    assert r.returncode == 0, r.stderr
    r = cli("run", str(root), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "1", *flags, env=env)
    assert r.returncode == 0, r.stderr
    done = trials(root)
    assert [t.status for t in done] == [Status.KEEP, Status.KEEP, Status.KEEP, Status.DISCARD], [t.reason for t in done]
    assert [t.figures.get("data") for t in done] == [10.0] * 4
    assert (tmp_path / "made.log").read_text() == "made\n"  # made once, found again on resume
    assert not (root / "data").exists()  # and the user's checkout untouched


def test_the_harness_own_variables_reach_the_experiment_and_secrets_do_not(tmp_path: Path) -> None:
    """Keys and tokens are kept from experiments (they run code an agent wrote), but an
    AUTORESEARCH_* setting such as AUTORESEARCH_EVAL_TOKENS is the task's own and passes."""
    exp = ("import os\nprint('loss: 1.0')\n"
           "print('eval tokens', os.environ.get('AUTORESEARCH_EVAL_TOKENS'))\n"
           "print('key', os.environ.get('SOME_API_KEY'), os.environ.get('GH_TOKEN'))\n"
           "print('more', sorted(k for k in os.environ if k.startswith('T_')))\n")
    root = make_task(tmp_path / "task", experiment=exp, toml_extra=METRIC)
    # (secrets the first rule let through: a PAT, a *_KEY, a private key, credentials, a URL with a
    # password, the ssh agent; and a setting it took for one: T_MAX_TOKENS)
    more = {"T_GITHUB_PAT": "ghp_y", "T_OPENAI_KEY": "sk-y", "T_PRIVATE_KEY_PEM": "-----BEGIN", "T_MY_CREDENTIALS": "c",
            "T_DATABASE_URL": "postgres://u:hunter2@h/d", "T_MAX_TOKENS": "512", "T_REPO_URL": "https://github.com/x/y"}
    r = cli("run", str(root), "--tag", "t", "--agent", "cli", "--agent-cmd", "true", "--trials", "0",
            env={"AUTORESEARCH_EVAL_TOKENS": "1048576", "SOME_API_KEY": "sk-x", "GH_TOKEN": "ghp_x", **more})
    assert r.returncode == 0, r.stderr
    log = (root / ".autoresearch/t/logs/0.log").read_text()
    assert "eval tokens 1048576" in log and "key None None" in log
    assert "more ['T_MAX_TOKENS', 'T_REPO_URL']" in log, log


def test_an_experiment_is_told_when_an_evaluate_step_scores_it_next(tmp_path: Path) -> None:
    """AUTORESEARCH_EVALUATE holds the task's `evaluate` command in the experiment's environment
    (it may leave the scoring to it, as nanochat's train.py does), and is absent without one, even
    when the user's shell exports it."""
    exp = EXPERIMENT + "print('told', repr(os.environ.get('AUTORESEARCH_EVALUATE')))\n"
    evaluated = eval_task(tmp_path / "a", experiment=exp, holdout=False)
    plain = make_task(tmp_path / "b" / "task", experiment=exp, toml_extra=METRIC)
    for root, told in ((evaluated, "'python prepare.py'"), (plain, "None")):
        r = cli("run", str(root), "--tag", "t", "--trials", "0", env={"AUTORESEARCH_EVALUATE": "echo mine"})
        assert r.returncode == 0, r.stderr
        assert f"told {told}\n" in (root / ".autoresearch/t/logs/0.log").read_text()
