"""`shared`: paths of the user's checkout that git does not hold (data, a virtual environment),
linked into every trial's worktree; and the hint a baseline that misses one gets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import cli, git, make_task, script_agent, trials

from autoresearch.records import Status
from autoresearch.task import TaskError, load_task

READS_DATA = """\
import os
X = 3.0
n = float(open("data/n.txt").read())
print(f"loss: {(X - 1.0) ** 2 + n}")
"""
METRIC = '[metric]\nname = "loss"\ngoal = "minimize"\n'
LOWER_X = "sed -i 's/^X = .*/X = 2.0/' exp.py\necho 'X to 2'\n"


def _repo(tmp_path: Path, extra: str = "", experiment: str = READS_DATA) -> Path:
    root = make_task(tmp_path / "task", experiment=experiment, files={".gitignore": "data/\n"},
                     toml_extra=extra + METRIC)
    (root / "data").mkdir()
    (root / "data" / "n.txt").write_text("5")
    return root




def test_without_shared_the_baseline_failure_names_the_ignored_folder_and_the_fix(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    r = cli("run", str(root), "--tag", "t", "--agent", "search", "--trials", "1")
    assert r.returncode == 1
    assert "'data' is in your checkout but not in git" in r.stderr
    assert 'shared = ["data"]' in r.stderr


@pytest.mark.parametrize("sandboxed", [False, True], ids=["plain", "sandbox"])
def test_shared_data_reaches_the_baseline_every_trial_and_setup(tmp_path: Path, sandboxed: bool) -> None:
    """The experiment and setup read data/ through the link; the user's checkout stays clean and
    its data unchanged; under --sandbox a write through the link fails (read-only)."""
    if sandboxed:
        from autoresearch import sandbox

        if sandbox.problem() is not None:
            pytest.skip(f"bubblewrap cannot run here: {sandbox.problem()}")
    exp = READS_DATA + (
        "try:\n    open('data/n.txt', 'w').write('0')\n    print('wrote: 1')\n"
        "except OSError:\n    print('wrote: 0')\n")
    root = _repo(tmp_path, 'shared = ["data"]\nsetup = "test -f data/n.txt"\n', experiment=exp)
    agent = script_agent(tmp_path / "agent.sh", LOWER_X)
    flags = ["--sandbox"] if sandboxed else []
    r = cli("run", str(root), "--tag", "t", "--agent-cmd", agent, "--trials", "1", *flags)
    assert r.returncode == 0, r.stderr
    done = trials(root)
    assert [t.status for t in done] == [Status.KEEP, Status.KEEP], [t.reason for t in done]
    if sandboxed:
        assert (root / "data" / "n.txt").read_text() == "5"  # read-only under the sandbox
        assert [t.metric for t in done] == [9.0, 6.0]
        assert "wrote: 0" in (root / ".autoresearch/t/logs/1.log").read_text()
    else:  # plain: the link is the user's folder (as documented), so a write lands there
        assert (root / "data" / "n.txt").read_text() == "0"
    assert git(root, "status", "--porcelain") == ""
    assert not (root / ".autoresearch/t/setup/data").exists()  # a link is not setup's output


def test_a_shared_path_missing_from_the_checkout_is_a_warning(tmp_path: Path) -> None:
    root = make_task(tmp_path / "task", toml_extra='shared = ["cache"]\n')
    r = cli("run", str(root), "--tag", "t", "--agent", "search", "--trials", "0")
    assert r.returncode == 0, r.stderr
    assert "'shared' path 'cache' is not in your checkout" in r.stdout + r.stderr


@pytest.mark.parametrize("value, message", [
    ('["/abs/data"]', "paths inside the task repository"),
    ('["../up"]', "paths inside the task repository"),
    ('["data/*"]', "not globs"),
    ('[".git"]', "cannot name .git"),
    ('["exp.py"]', "'exp.py', which is editable"),
    ('["."]', "paths inside the task repository"),
    ('"data"', "must be a list of strings"),
])
def test_bad_shared_entries_are_refused(tmp_path: Path, value: str, message: str) -> None:
    root = make_task(tmp_path / "task", toml_extra=f"shared = {value}\n")
    with pytest.raises(TaskError, match=message.replace("*", r"\*").replace(".", r"\.")):
        load_task(root)


def test_a_program_file_is_needed_only_when_the_task_file_names_one(tmp_path: Path) -> None:
    root = make_task(tmp_path / "task")
    git(root, "rm", "-q", "program.md")
    git(root, "commit", "-q", "-m", "no program")
    task = load_task(root)
    assert task.program_text() == ""
    r = cli("run", str(root), "--tag", "t", "--agent", "search", "--trials", "1")
    assert r.returncode == 0, r.stderr
    named = make_task(tmp_path / "named", toml_extra='program = "notes.md"\n')
    with pytest.raises(TaskError, match="'program' file 'notes.md' not found"):
        load_task(named)


def test_a_submodule_is_empty_in_trials_unless_shared(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "helper.py").write_text("OFFSET = 0.5\n")
    git(lib, "init", "-q")
    git(lib, "add", "-A")
    git(lib, "commit", "-qm", "lib")
    exp = "import sys\nsys.path.insert(0, 'vendor/lib')\nfrom helper import OFFSET\nX = 3.0\nprint(f'loss: {X + OFFSET}')\n"
    root = make_task(tmp_path / "task", experiment=exp)
    git(root, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib), "vendor/lib")
    git(root, "commit", "-qm", "submodule")
    r = cli("run", str(root), "--tag", "t", "--agent", "search", "--trials", "1")
    assert r.returncode == 1
    assert 'trial worktrees hold submodules empty ("vendor/lib")' in r.stderr, r.stderr
    toml = root / "autoresearch.toml"
    toml.write_text('shared = ["vendor/lib"]\n' + toml.read_text())
    git(root, "commit", "-qam", "share it")
    r = cli("run", str(root), "--tag", "t2", "--agent", "search", "--trials", "1")
    assert r.returncode == 0, r.stderr
    assert [t.metric for t in trials(root, "t2")][0] == 3.5
    assert git(root, "status", "--porcelain") == ""
    # a submodule's file named editable: said at once (the baseline failed, saying to share the
    # folder, which was then refused for holding an editable file)
    toml.write_text(toml.read_text().replace('editable = ["exp.py"]', 'editable = ["exp.py", "vendor/lib/helper.py"]'))
    git(root, "commit", "-qam", "the submodule's file editable")
    r = cli("run", str(root), "--tag", "t3", "--agent", "search", "--trials", "1")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "'vendor/lib/helper.py', a file of the git submodule 'vendor/lib'" in r.stderr, r.stderr


def test_an_experiment_that_changes_what_setup_made_is_noted_on_it(tmp_path: Path) -> None:
    """setup's output is linked into every trial: an experiment that writes through the link
    changes the evaluation data of later trials (red team, round 2). There is no copy to put
    back, and a database rewrites its lock file on open, so the trial is flagged for a human;
    a file added next to it (a cache) or Python's bytecode cache is not noted at all."""
    experiment = READS_DATA + "open('data/cache.txt', 'w').write('ok')\n"
    root = make_task(tmp_path / "task", experiment=experiment, files={".gitignore": "data/\n"},
                     toml_extra='setup = "mkdir -p data && echo 5 > data/n.txt"\n' + METRIC)
    agent = script_agent(tmp_path / "agent.sh", LOWER_X + "if [ \"$AUTORESEARCH_TRIAL\" = 2 ]; then "
                         "echo \"open('data/n.txt', 'w').write('-100')\" >> exp.py; fi\n")
    r = cli("run", str(root), "--tag", "t", "--agent-cmd", agent, "--trials", "3")
    assert r.returncode == 0, r.stdout + r.stderr
    ts = trials(root)
    assert not any("setup made" in f for f in ts[1].flags)  # the cache it wrote is not noted
    assert any("changed what setup made (data/n.txt" in f for f in ts[2].flags), ts[2].flags
    assert "[audit:" in cli("status", str(root)).stdout


def test_a_name_added_to_setup_json_is_not_linked_into_trials(tmp_path: Path) -> None:
    """Red team, round 4: an agent plants json.py in the tag's setup/ folder and lists it in
    setup.json; the next run moved it back as setup's output, and it shadowed the json module
    of the protected evaluator in every trial. The list of setup's output is the ledger's."""
    check = "import json\nprint('json from:', json.__file__)\nprint('loss: 1.0')\n"
    root = make_task(tmp_path / "task", files={"check.py": check, ".gitignore": "data/\n"},
                     toml_extra='setup = "mkdir -p data && echo 1 > data/x"\nevaluate = "python check.py"\n')
    toml = root / "autoresearch.toml"
    toml.write_text(toml.read_text().replace('protected = ["prepare.py"]', 'protected = ["prepare.py", "check.py"]'))
    git(root, "commit", "-qam", "check.py protected")
    assert cli("run", str(root), "--tag", "t", "--trials", "0").returncode == 0
    tag = root / ".autoresearch" / "t"
    (tag / "setup" / "json.py").write_text("print('loss: 0.000001')\n")
    (tag / "setup.json").write_text(json.dumps(["data", "json.py"]))
    agent = script_agent(tmp_path / "a.sh", "sed -i 's/^X = .*/X = 2.0/' exp.py\necho X\n")
    r = cli("run", str(root), "--tag", "t", "--agent-cmd", agent, "--trials", "1")
    assert r.returncode == 0, r.stderr
    log = (tag / "logs" / "1.log").read_text()
    assert "loss: 0.000001" not in log and "worktrees" not in log.split("json from:")[1].split("\n")[0], log


def test_setup_json_made_a_fifo_does_not_stall_a_resume(tmp_path: Path) -> None:
    """A ledger of an older version (setup's output listed in setup.json alone) whose setup.json
    an unsealed agent made a FIFO: the next run read it and waited for a writer forever."""
    import os
    import sqlite3

    root = make_task(tmp_path / "task", files={".gitignore": "data/\n"},
                     toml_extra='setup = "mkdir -p data && echo 1 > data/x"\n')
    assert cli("run", str(root), "--tag", "t", "--trials", "0").returncode == 0
    tag = root / ".autoresearch" / "t"
    with sqlite3.connect(tag / "ledger.sqlite") as db:
        db.execute("DELETE FROM meta WHERE key='setup_entries'")
    (tag / "setup.json").unlink()
    os.mkfifo(tag / "setup.json")
    r = cli("run", str(root), "--tag", "t", "--trials", "0", timeout=60)
    assert r.returncode == 0, r.stderr


def test_a_setup_that_changes_a_tracked_file_leaves_the_baseline_on_the_committed_code(tmp_path: Path) -> None:
    """Setup's change to a tracked file is not kept (trials run the commit, as the warning says):
    the baseline's worktree held it, so a change to a protected file rejected the baseline as
    the experiment's doing, and the run failed."""
    repo = make_task(tmp_path / "t", 'setup = "echo made > made.txt; echo >> prepare.py; echo >> exp.py"\n')
    r = cli("run", str(repo), "--tag", "t", "--trials", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "setup changed tracked files (exp.py, prepare.py)" in r.stdout + r.stderr
    rows = trials(repo)
    assert [t.status for t in rows] == [Status.KEEP, rows[1].status] and rows[0].metric is not None
    assert git(repo, "status", "--porcelain") == ""  # (your checkout: untouched)
