"""Every malformed task file is one clear line naming the key, exit 2, no traceback."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from conftest import cli, git, make_task, script_agent, trials

from autoresearch.errors import TaskError
from autoresearch.ledger import Ledger
from autoresearch.records import Status
from autoresearch.task import load_task

GOOD = textwrap.dedent("""\
    name = "t"
    program = "program.md"
    editable = ["exp.py"]
    protected = ["prepare.py"]
    setup = "true"
    command = "python exp.py"
    evaluate = "python prepare.py"
    time_budget = 5
    timeout = 10
    [metric]
    name = "loss"
    goal = "minimize"
    record = ["peak_vram_mb"]
    holdout = "test_loss"
    [acceptance]
    min_delta = "auto"
    baseline_runs = 3
    confirm = 2
    """)

BAD = [
    ("invalid TOML", GOOD.replace('name = "t"', 'name = "t'), "invalid TOML"),
    ("unknown key", GOOD.replace("command =", "comand = 'x'\ncommand ="), "did you mean 'command'"),
    ("unknown metric key", GOOD.replace('goal = "minimize"', 'goal = "minimize"\ngaol = 1'), "metric.gaol"),
    ("unknown acceptance key", GOOD.replace("confirm = 2", "confirms = 2"), "did you mean 'confirm'"),
    ("budget wrong type", GOOD.replace("time_budget = 5", 'time_budget = "five"'), "'time_budget' must be a number"),
    ("budget bool", GOOD.replace("time_budget = 5", "time_budget = true"), "'time_budget' must be a number"),
    ("budget zero", GOOD.replace("time_budget = 5", "time_budget = 0"), "'time_budget' must be a positive"),
    ("timeout negative", GOOD.replace("timeout = 10", "timeout = -1"), "'timeout' must be a positive"),
    ("missing command", GOOD.replace('command = "python exp.py"\n', ""), "'command'"),
    ("empty command", GOOD.replace('command = "python exp.py"', 'command = " "'), "'command' must not be empty"),
    ("command not string", GOOD.replace('command = "python exp.py"', "command = 3"), "'command' must be a string"),
    ("missing metric", GOOD.split("[metric]")[0], "[metric]"),
    ("missing metric name", GOOD.replace('name = "loss"\n', ""), "'metric.name'"),
    ("goal", GOOD.replace('goal = "minimize"', 'goal = "min"'), "'metric.goal' must be"),
    ("missing goal", GOOD.replace('goal = "minimize"\n', ""), "'metric.goal'"),
    ("editable no match", GOOD.replace('editable = ["exp.py"]', 'editable = ["trian.py"]'), "'trian.py' matches no file"),
    ("editable not list", GOOD.replace('editable = ["exp.py"]', 'editable = "exp.py"'), "'editable' must be a list"),
    ("editable empty", GOOD.replace('editable = ["exp.py"]', "editable = []"), "at least one"),
    ("missing editable", GOOD.replace('editable = ["exp.py"]\n', ""), "'editable'"),
    ("both", GOOD.replace('protected = ["prepare.py"]', 'protected = ["exp.py"]'), "both editable and protected"),
    ("editable task file", GOOD.replace('editable = ["exp.py"]', 'editable = ["exp.py", "autoresearch.toml"]'), "always protected"),
    ("editable glob of protected files", GOOD.replace('editable = ["exp.py"]', 'editable = ["*.toml"]'),
     "'*.toml' matches only protected files (autoresearch.toml;"),
    ("missing program", GOOD.replace('program = "program.md"', 'program = "nope.md"'), "'program' file 'nope.md' not found"),
    ("min_delta word", GOOD.replace('min_delta = "auto"', 'min_delta = "big"'), "'acceptance.min_delta'"),
    ("min_delta negative", GOOD.replace('min_delta = "auto"', "min_delta = -0.1"), "'acceptance.min_delta' must be a finite number >= 0"),
    ("baseline_runs zero", GOOD.replace("baseline_runs = 3", "baseline_runs = 0"), "'acceptance.baseline_runs' must be at least 1"),
    ("confirm float", GOOD.replace("confirm = 2", "confirm = 1.5"), "'acceptance.confirm' must be an integer"),
    ("pattern groups", GOOD.replace('goal = "minimize"', 'goal = "minimize"\npattern = "loss=\\\\d+"'), "exactly one group"),
    ("pattern invalid", GOOD.replace('goal = "minimize"', 'goal = "minimize"\npattern = "(["'), "not a valid regular expression"),
    ("record not list", GOOD.replace('record = ["peak_vram_mb"]', 'record = "peak_vram_mb"'), "'metric.record' must be a list"),
    ("metric not table", GOOD.split("[metric]")[0] + 'metric = "loss"\n', "'metric' must be a table"),
    ("holdout same", GOOD.replace('holdout = "test_loss"', 'holdout = "loss"'), "must differ"),
]


@pytest.mark.parametrize("label,text,needle", BAD, ids=[b[0] for b in BAD])
def test_bad_task_file_is_one_clear_line(tmp_path: Path, label: str, text: str, needle: str) -> None:
    repo = make_task(tmp_path / "r", toml=text)
    with pytest.raises(TaskError) as e:
        load_task(repo)
    assert needle in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_bad_task_file_exit_code_and_no_traceback(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "r", toml=GOOD.replace("time_budget = 5", "time_budget = -5"))
    r = cli("run", str(repo), "--tag", "x", "--agent", "cli", "--agent-cmd", "true")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and "time_budget" in r.stderr


def test_good_task_file_loads(tmp_path: Path) -> None:
    task = load_task(make_task(tmp_path / "r", toml=GOOD))
    assert task.acceptance.min_delta == "auto" and task.acceptance.confirm == 2
    assert task.metric.holdout == "test_loss" and task.is_protected("autoresearch.toml")
    assert task.is_editable("exp.py") and not task.is_editable("prepare.py")


@pytest.mark.parametrize("globs", [["*"], ["*.py", "*.md"]])
def test_a_wide_editable_glob_leaves_the_protected_files_out(tmp_path: Path, globs: list[str]) -> None:
    """`editable = ["*.py"]` beside `protected = ["prepare.py"]` (or `["*"]`, which also names the
    task file and the program) was refused; the protected files are now left out of it."""
    root = make_task(tmp_path / "r")
    toml = (root / "autoresearch.toml").read_text()
    (root / "autoresearch.toml").write_text(toml.replace('editable = ["exp.py"]', "editable = " + json.dumps(globs)))
    git(root, "commit", "-qam", "wide editable")
    task = load_task(root)
    assert task.is_editable("exp.py") and task.is_editable("new.py")
    assert not any(task.is_editable(p) for p in ("prepare.py", "autoresearch.toml", "program.md"))
    agent = script_agent(tmp_path / "a.sh", "sed -i \"s/^X = .*/X = 2.$AUTORESEARCH_TRIAL/\" exp.py\n"
                         "if [ $AUTORESEARCH_TRIAL = 2 ]; then echo 'DATA = 1' > prepare.py; fi\necho X\n")
    r = cli("run", str(root), "--tag", "t", "--agent-cmd", agent, "--trials", "2")
    assert r.returncode == 0, r.stderr
    ts = Ledger.read(root, "t").trials()
    assert ts[1].status is not Status.REJECTED, ts[1].reason
    assert ts[2].status is Status.REJECTED and "prepare.py" in ts[2].reason


@pytest.mark.parametrize("folder", ["src", "src/", "./src"])
def test_an_editable_folder_leaves_the_protected_files_in_it_out(tmp_path: Path, folder: str) -> None:
    """A folder stands for everything under it, as `src/**` does: a protected file in it was
    "both editable and protected", though only the folder was named."""
    root = make_task(tmp_path / "r", files={"src/model.py": "A = 1\n", "src/eval.py": "B = 2\n"},
                     toml=GOOD.replace('editable = ["exp.py"]', f'editable = ["{folder}"]')
                     .replace('protected = ["prepare.py"]', 'protected = ["prepare.py", "src/eval.py"]'))
    task = load_task(root)
    assert task.is_editable("src/model.py") and task.is_editable("src/new.py")
    assert not task.is_editable("src/eval.py") and task.is_protected("src/eval.py")
    only = make_task(tmp_path / "o", files={"src/eval.py": "B = 2\n"}, toml=GOOD.replace(
        'editable = ["exp.py"]', f'editable = ["{folder}"]').replace('protected = ["prepare.py"]', 'protected = ["src/eval.py"]'))
    with pytest.raises(TaskError, match="matches only protected files"):
        load_task(only)


def test_missing_task_file(tmp_path: Path) -> None:
    r = cli("run", str(tmp_path), "--tag", "x")
    assert r.returncode == 2 and "no autoresearch.toml" in r.stderr


@pytest.mark.parametrize("args,needle", [
    (["run", "--trials", "-3"], "--trials"),
    (["run", "--trials", "many"], "--trials"),
    (["run", "--hours", "0"], "--hours"),
    (["run", "--tag", "bad tag!"], "--tag"),
    (["run", "--agent", "nope"], "--agent"),
    (["run", "--agent", "cli"], "--agent-cmd"),
    (["nosuchcommand"], "invalid choice"),
    (["init", "x", "--template", "nope"], "--template"),
])
def test_bad_flags(task_repo: Path, args: list[str], needle: str) -> None:
    r = cli(*args, cwd=task_repo)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr


def test_a_large_time_budget_reaches_the_experiment_as_a_whole_number(tmp_path: Path) -> None:
    """`int(os.environ["AUTORESEARCH_TIME_BUDGET"])` failed on a budget of 1234567 s, exported
    with %g as 1.23457e+06; a fraction is exported whole too."""
    exp = "import os\nprint('loss:', int(os.environ['AUTORESEARCH_TIME_BUDGET']))\n"
    root = make_task(tmp_path / "task", experiment=exp)
    toml = root / "autoresearch.toml"
    toml.write_text(toml.read_text().replace("time_budget = 5\ntimeout = 10\n", "time_budget = 1234567\n"))
    git(root, "commit", "-qam", "a long budget")
    r = cli("run", str(root), "--tag", "t", "--trials", "0")
    assert r.returncode == 0, r.stderr
    assert trials(root)[0].metric == 1234567
    budgets = [load_task(make_task(tmp_path / f"b{i}", toml=GOOD.replace("time_budget = 5", f"time_budget = {v}")))
               for i, v in enumerate(("0.25", "1e-7"))]
    assert [t.budget_env for t in budgets] == ["0.25", "1e-07"]
