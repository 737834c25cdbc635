"""Bad input, beyond tests/test_task.py: more malformed task files, bad flags and unusable
repositories. Each is answered with one clear line naming the key, flag or path, and exit 2.

The cases run in-process through `autoresearch.cli.main` (fast); bench/bad_input.py runs these
and test_task.py's through the real command line and prints the tally.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import git, make_task
from test_task import GOOD

from autoresearch.cli import main

GOOD_FILES = {
    "exp.py": "X = 3.0\nprint(f'loss: {X}')\n",
    "prepare.py": "DATA = 'fixed'\n",
    "program.md": "# program\n",
}


def swap(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new, 1)


# (label, the task file (text or bytes), the text the one line must contain)
TASK_CASES: list[tuple[str, str | bytes, str]] = [
    ("empty task file", "", "missing required key 'command'"),
    ("not UTF-8", b"name = \"\xff\xfe\"\n", "not UTF-8"),
    ("name not a string", swap('name = "t"', "name = 5"), "'name' must be a string"),
    ("program not a string", swap('program = "program.md"', "program = 1"), "'program' must be a string"),
    ("program outside the repository (absolute)", swap('program = "program.md"', 'program = "/etc/hostname"'), "'program' must be a path inside"),
    ("program outside the repository (..)", swap('program = "program.md"', 'program = "../program.md"'), "'program' must be a path inside"),
    ("program is a folder", swap('program = "program.md"', 'program = "."'), "'program' file '.' not found"),
    ("setup not a string", swap('setup = "true"', "setup = true"), "'setup' must be a string"),
    ("evaluate not a string", swap('evaluate = "python prepare.py"', 'evaluate = ["python"]'), "'evaluate' must be a string"),
    ("time_budget nan", swap("time_budget = 5", "time_budget = nan"), "'time_budget' must be a positive"),
    ("time_budget inf", swap("time_budget = 5", "time_budget = inf"), "'time_budget' must be a positive"),
    ("timeout a string", swap("timeout = 10", 'timeout = "10s"'), "'timeout' must be a number"),
    ("protected not a list", swap('protected = ["prepare.py"]', 'protected = "prepare.py"'), "'protected' must be a list"),
    ("editable holds a number", swap('editable = ["exp.py"]', 'editable = ["exp.py", 1]'), "'editable' must be a list of non-empty strings, it holds an integer"),
    ("editable holds an empty string", swap('editable = ["exp.py"]', 'editable = ["exp.py", ""]'), "it holds an empty string"),
    ("editable absolute path", swap('editable = ["exp.py"]', 'editable = ["/etc/passwd"]'), "'/etc/passwd' matches no file"),
    ("editable outside the repository", swap('editable = ["exp.py"]', 'editable = ["../exp.py"]'), "'../exp.py' matches no file"),
    ("editable only the task file", swap('editable = ["exp.py"]', 'editable = ["*.toml"]'), "matches only protected files"),
    ("metric name with a space", swap('name = "loss"', 'name = "val loss"'), "'metric.name' must be a name such as val_bpb"),
    ("metric name empty", swap('name = "loss"', 'name = ""'), "'metric.name' must not be empty"),
    ("metric goal capitalised", swap('goal = "minimize"', 'goal = "Minimize"'), "'metric.goal' must be"),
    ("metric pattern and file", swap('goal = "minimize"', 'goal = "minimize"\npattern = "l=(.*)"\nfile = "m.json"'), "cannot both be set"),
    ("metric file not a string", swap('goal = "minimize"', 'goal = "minimize"\nfile = 3'), "'metric.file' must be a string"),
    ("metric holdout not a string", swap('holdout = "test_loss"', "holdout = 1"), "'metric.holdout' must be a string"),
    ("metric record holds a number", swap('record = ["peak_vram_mb"]', "record = [1]"), "'metric.record' must be a list"),
    ("metric named like a results.tsv column", swap('name = "loss"', 'name = "status"'), "a column of results.tsv"),
    ("metric record name with a space", swap('record = ["peak_vram_mb"]', 'record = ["a b"]'), "'metric.record' must be a name"),
    ("metric record lists a figure twice", swap('record = ["peak_vram_mb"]', 'record = ["a", "a"]'), "lists a figure twice"),
    ("metric as an array of tables", GOOD.replace("[metric]", "[[metric]]"), "'metric' must be a table"),
    ("acceptance not a table", 'acceptance = "strict"\n' + GOOD.split("[acceptance]")[0], "'acceptance' must be a table"),
    ("baseline_runs a boolean", swap("baseline_runs = 3", "baseline_runs = true"), "'acceptance.baseline_runs' must be an integer"),
    ("min_delta infinite", swap('min_delta = "auto"', "min_delta = inf"), "'acceptance.min_delta'"),
    ("confirm negative", swap("confirm = 2", "confirm = -1"), "'acceptance.confirm' must be at least 0"),
    ("agent not a table", swap('name = "t"', 'name = "t"\nagent = "cli"'), "'agent' must be a table"),
    ("agent key misspelt", GOOD + '[agent]\nmodle = "x"\n', "did you mean 'model'"),
    ("agent.cmd not a string", GOOD + "[agent]\ncmd = 5\n", "'agent.cmd' must be a string"),
    ("agent.kind not a string", GOOD + "[agent]\nkind = 3\n", "'agent.kind' must be a string"),
    ("agent.timeout a string", GOOD + '[agent]\ntimeout = "x"\n', "'agent.timeout' must be a number"),
    ("agent.timeout negative", GOOD + "[agent]\ntimeout = -5\n", "'agent.timeout' must be a positive"),
    ("agent.llm_share above 1", GOOD + "[agent]\nllm_share = 2.0\n", "'agent.llm_share' must be a number from 0 to 1"),
    ("agent.kind unknown", GOOD + '[agent]\nkind = "serch"\n', "'agent.kind' must be one of"),
    ("agent.kind misspelt", GOOD + '[agent]\nkind = "claud"\n', "(did you mean 'claude'?)"),
    ("agent.kind cli without cmd", GOOD + '[agent]\nkind = "cli"\n', "'agent.cmd' is not set"),
    ("agent.sampler unknown", GOOD + '[agent]\nsampler = "foo"\n', "'agent.sampler' must be one of"),
    ("metric.file outside", GOOD.replace("[metric]", '[metric]\nfile = "../m.json"', 1), "'metric.file' must be a path inside"),
    ("a table twice", GOOD + '[metric]\nname = "x"\n', "invalid TOML"),
    ("a key twice", swap('name = "t"', 'name = "t"\nname = "u"'), "invalid TOML"),
]


def write_task(root: Path, toml: str | bytes) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in GOOD_FILES.items():
        (root / name).write_text(text)
    (root / "autoresearch.toml").write_bytes(toml if isinstance(toml, bytes) else toml.encode())
    return root


def answer(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err


def assert_clear(code: int, err: str, needle: str) -> None:
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("autoresearch"), repr(err)
    assert needle in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("label,toml,needle", TASK_CASES, ids=[c[0] for c in TASK_CASES])
def test_bad_task_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], label: str, toml: str | bytes,
                       needle: str) -> None:
    repo = write_task(tmp_path / "r", toml)
    assert_clear(*answer(["run", str(repo), "--tag", "x", "--agent", "cli", "--agent-cmd", "true"], capsys), needle)


def test_a_task_file_with_a_bom_is_fine(tmp_path: Path) -> None:
    from autoresearch.task import load_task

    repo = write_task(tmp_path / "r", "\ufeff" + GOOD)
    assert load_task(repo).name == "t"


# ---------------------------------------------------------------------------
# flags and repositories: (label, argv with {repo} for a good task repository, needle, how to
# prepare the repository)


def _no_git(tmp: Path) -> Path:
    return write_task(tmp / "nogit", GOOD)


def _subfolder(tmp: Path) -> Path:
    make_task(tmp / "outer")
    return write_task(tmp / "outer" / "sub", GOOD)


def _no_commits(tmp: Path) -> Path:
    repo = write_task(tmp / "empty", GOOD)
    git(repo, "init", "-q")
    return repo


def _dirty(tmp: Path) -> Path:
    repo = make_task(tmp / "dirty")
    (repo / "exp.py").write_text("X = 4\n")
    return repo


def _editable_ignored(tmp: Path) -> Path:
    """The editable file is in the checkout but git ignores it: no trial's commit could hold it."""
    repo = make_task(tmp / "ign", files={".gitignore": "conf.py\n"})
    toml = repo / "autoresearch.toml"
    toml.write_text(toml.read_text().replace('editable = ["exp.py"]', 'editable = ["exp.py", "conf.py"]'))
    (repo / "conf.py").write_text("LR = 0.1\n")
    git(repo, "commit", "-qam", "conf.py editable")
    return repo


def _branch_without_ledger(tmp: Path) -> Path:
    repo = make_task(tmp / "b")
    git(repo, "branch", "autoresearch/x")
    return repo


def _refs_without_ledger(tmp: Path) -> Path:
    repo = _branch_without_ledger(tmp)
    git(repo, "update-ref", "refs/autoresearch/x/trials/0", "HEAD")
    return repo


def _repo(tmp: Path) -> Path:
    return make_task(tmp / "repo")


def _on_the_tags_branch(tmp: Path) -> Path:
    """A repository whose own branch is master, with the tag's branch checked out."""
    repo = make_task(tmp / "repo")
    git(repo, "branch", "-m", "main", "master")
    git(repo, "branch", "autoresearch/x")
    git(repo, "checkout", "-q", "autoresearch/x")
    return repo


def _task_file_a_folder(tmp: Path) -> Path:
    repo = tmp / "repo"
    (repo / "autoresearch.toml").mkdir(parents=True)
    return repo


RUN = ["run", "{repo}", "--agent", "cli", "--agent-cmd", "true"]
FLAG_CASES: list[tuple[str, list[str], str, Callable[[Path], Path]]] = [
    ("--trials not whole", [*RUN, "--trials", "1.5"], "--trials", _repo),
    ("--model with a provider and no name", ["run", "{repo}", "--model", "openai/", "--base-url", "http://127.0.0.1:9/v1"],
     "names no model after openai/", _repo),
    ("--agent-cmd empty", ["run", "{repo}", "--agent-cmd", ""], "--agent-cmd is empty", _repo),
    ("--trials missing its value", [*RUN, "--trials"], "--trials", _repo),
    ("--hours not a number", [*RUN, "--hours", "abc"], "--hours", _repo),
    ("--hours nan", [*RUN, "--hours", "nan"], "--hours", _repo),
    ("--hours negative", [*RUN, "--hours", "-1"], "--hours", _repo),
    ("--agent-timeout zero", [*RUN, "--agent-timeout", "0"], "--agent-timeout", _repo),
    ("--max-cost negative", [*RUN, "--max-cost", "-2"], "--max-cost", _repo),
    ("--seed not a number", [*RUN, "--seed", "x"], "--seed", _repo),
    ("--seed negative (the sampler refused it after the baseline, with a traceback)", [*RUN, "--seed", "-5"],
     "--seed: must be between 0 and 4294967295, got -5", _repo),
    ("--seed of 2**32", [*RUN, "--seed", str(2**32)], "--seed: must be between 0 and 4294967295", _repo),
    ("status --tag empty (it was read as the latest tag)", ["status", "{repo}", "--tag", ""], "--tag is empty", _repo),
    ("report --out empty (it wrote into the current folder)", ["report", "{repo}", "--out", ""], "--out is empty", _repo),
    ("--workers negative", [*RUN, "--workers", "-1"], "--workers", _repo),
    ("--workers not whole", [*RUN, "--workers", "two"], "--workers", _repo),
    ("--gpus not ids", [*RUN, "--gpus", "0,x"], "--gpus", _repo),
    ("--tag empty", [*RUN, "--tag", ""], "--tag", _repo),
    ("--gpus-per-trial without --gpus", [*RUN, "--gpus-per-trial", "2"], "--gpus-per-trial 2 needs --gpus", _repo),
    ("--gpus not a multiple of --gpus-per-trial", [*RUN, "--gpus", "0,1,2", "--gpus-per-trial", "2"],
     "GPU 2 would stay idle", _repo),  # (the id left idle, not a count of them)
    ("--ray-address with --backend local", [*RUN, "--backend", "local", "--ray-address", "127.0.0.1:1"], "--ray-address", _repo),
    ("--backend unknown", [*RUN, "--backend", "slurm"], "--backend", _repo),
    ("--sampler unknown", [*RUN, "--sampler", "grid"], "--sampler", _repo),
    ("--llm-share above 1 (with an agent that does not use it)", ["run", "{repo}", "--llm-share", "2"],
     "--llm-share: must be between 0 and 1", _repo),
    ("serve --port not a number", ["serve", "{repo}", "--port", "abc"], "--port: expected a whole number", _repo),
    ("serve --port too high", ["serve", "{repo}", "--port", "70000"], "--port: must be >= 0 and <= 65535, got 70000", _repo),
    ("--tag with a slash", [*RUN, "--tag", "a/b"], "--tag", _repo),
    ("--tag ..", [*RUN, "--tag", "a..b"], "--tag", _repo),
    ("--tag ending in .lock", [*RUN, "--tag", "x.lock"], "--tag", _repo),
    ("--tag too long", [*RUN, "--tag", "t" * 65], "--tag", _repo),
    ("a misspelt flag", [*RUN, "--trails", "3"], "unrecognized arguments: --trails", _repo),
    ("--agent cli with an empty --agent-cmd", ["run", "{repo}", "--agent", "cli", "--agent-cmd", ""], "--agent-cmd", _repo),
    ("DIR does not exist", ["run", "{repo}/nope", "--tag", "x"], "no such folder", _repo),
    ("status of a DIR that does not exist", ["status", "{repo}/nope"], "no such folder", _repo),
    ("serve a DIR that does not exist", ["serve", "{repo}/nope"], "no such folder", _repo),
    ("run with DIR a file", ["run", "{repo}/exp.py", "--tag", "x"], "not a folder:", _repo),
    ("status with DIR a file", ["status", "{repo}/exp.py"], "not a folder:", _repo),
    ("report with DIR a file", ["report", "{repo}/exp.py"], "not a folder:", _repo),
    ("DIR is not a git repository", [*RUN, "--tag", "x"], "not a git repository", _no_git),
    ("the tag's branch checked out", [*RUN, "--tag", "x"], "check out another branch first (e.g. `git checkout master`)",
     _on_the_tags_branch),
    ("the task file a folder", [*RUN, "--tag", "x"], "autoresearch.toml is not a file (a folder?)", _task_file_a_folder),
    ("DIR is a subfolder of the repository", [*RUN, "--tag", "x"], "not the root of its git repository", _subfolder),
    ("repository without commits", [*RUN, "--tag", "x"], "no commits yet", _no_commits),
    ("repository with uncommitted changes", [*RUN, "--tag", "x"], "uncommitted changes (exp.py)", _dirty),
    ("an editable file git ignores (the baseline failed, and its advice, `shared`, is refused for an editable file)",
     [*RUN, "--tag", "x", "--trials", "0"], "'editable' names 'conf.py', which git ignores", _editable_ignored),
    ("a branch of the tag's name made by the user", [*RUN, "--tag", "x"], "a branch autoresearch/x already exists",
     _branch_without_ledger),
    ("the tag's ledger deleted, its refs left", [*RUN, "--tag", "x"], "holds no ledger", _refs_without_ledger),
    ("status of an unknown tag", ["status", "{repo}", "--tag", "nope"], "no tag 'nope'", _repo),
    ("status with no runs", ["status", "{repo}"], "no autoresearch runs", _repo),
    ("show a negative trial", ["show", "-1", "{repo}"], "show", _repo),
    ("show a word", ["show", "abc", "{repo}"], "show", _repo),
    ("trial without -m", ["trial", "{repo}"], "-m/--message", _repo),
    ("init into a non-empty folder", ["init", "{repo}"], "already exists and is not empty", _repo),
    ("init onto a file", ["init", "{repo}/exp.py"], "exp.py is a file: give a new folder", _repo),
    ("--ray-address empty (it ran on this machine, not the cluster)", [*RUN, "--trials", "0", "--ray-address", ""],
     "--ray-address is empty", _repo),
    ("--mlflow empty (nothing was logged, silently)", [*RUN, "--trials", "0", "--mlflow", ""], "--mlflow is empty", _repo),
    ("--trial-resources blank", [*RUN, "--trials", "0", "--trial-resources", " "], "--trial-resources is empty", _repo),
    ("init --data empty (the default corpus was taken)", ["init", "{repo}/new", "--data", ""], "--data is empty", _repo),
    ("demo --budget inf (its task file did not load, and the folder was left so)",
     ["demo", "{repo}/new", "--budget", "inf", "--trials", "0"], "--budget: must be a finite number > 0", _repo),
    ("init --data that is not a folder", ["init", "{repo}/new", "--data", "/nonexistent"], "--data '/nonexistent' is not a folder", _repo),
]


@pytest.mark.parametrize("label,argv,needle,prepare", FLAG_CASES, ids=[c[0] for c in FLAG_CASES])
def test_bad_flag_or_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str], label: str, argv: list[str],
                                needle: str, prepare: Callable[[Path], Path]) -> None:
    repo = prepare(tmp_path)
    before = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout
    assert_clear(*answer([a.replace("{repo}", str(repo)) for a in argv], capsys), needle)
    after = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout
    assert before == after  # nothing was left behind by a refused command


def test_at_least_thirty_new_cases() -> None:
    assert len(TASK_CASES) + len(FLAG_CASES) >= 30


def test_a_ledger_that_is_not_a_database_is_one_line_for_run_and_trial(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # (status and show said so in one line; run and trial ended in sqlite3's traceback)
    repo = make_task(tmp_path / "r")
    (repo / ".autoresearch" / "x").mkdir(parents=True)
    (repo / ".autoresearch" / "x" / "ledger.sqlite").write_text("not a database\n")
    for argv in ([*RUN, "--tag", "x", "--trials", "0"], ["trial", "{repo}", "--tag", "x", "-m", "m"]):
        if argv[0] == "trial":
            (repo / "exp.py").write_text("X = 4.0\nprint(f'loss: {X}')\n")
        code, err = answer([a.replace("{repo}", str(repo)) for a in argv], capsys)
        assert code == 1, err
        assert "Traceback" not in err and err.count("\n") == 1, err
        assert "ledger" in err and "not a database" in err, err


@pytest.mark.parametrize("flags,needle", [(["--gpus", "x"], "--gpus takes GPU ids"),
                                          (["--gpus-per-trial", "2"], "--gpus-per-trial 2 needs --gpus")])
def test_a_bad_scale_flag_on_a_resumed_tag_is_the_only_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            flags: list[str], needle: str) -> None:
    # (the note "tag x goes on with the agent it ran with" came first, then the error)
    repo = make_task(tmp_path / "r")
    assert main(["run", str(repo), "--tag", "x", "--trials", "0"]) == 0
    assert_clear(*answer(["run", str(repo), "--tag", "x", "--trials", "1", *flags], capsys), needle)


@pytest.mark.parametrize("table,needle,flag", [
    ('model = "gpt-4o"', "autoresearch.toml: 'agent.model' = 'gpt-4o' must be PROVIDER/NAME", "--model"),
    ('model = "foo/x"', "autoresearch.toml: 'agent.model' = 'foo/x': unknown provider 'foo'", "--model"),
    ('model = "openai/x"\nbase_url = "notaurl"', "autoresearch.toml: 'agent.base_url' = 'notaurl' is not an http(s) URL",
     "--base-url"),
])
def test_a_bad_agent_model_in_the_task_file_is_named_as_its_key(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                 table: str, needle: str, flag: str) -> None:
    """The user gave no --model: the line names the task file's key, not a flag."""
    repo = make_task(tmp_path / "r", toml_extra=f'\n[metric]\nname = "loss"\ngoal = "minimize"\n[agent]\n{table}\n')
    assert_clear(*answer(["run", str(repo), "--tag", "x", "--trials", "1"], capsys), needle)
    code, err = answer(["run", str(repo), "--tag", "x", "--trials", "1", flag, "nope"], capsys)
    assert code == 2 and f"{flag} 'nope'" in err, err  # (given as a flag, named as one)
