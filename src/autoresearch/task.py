"""Load and validate `autoresearch.toml` into a frozen `Task`.

Every error a user can make in the task file becomes a `TaskError` whose message is one line
naming the key (exit code 2); nothing here raises anything else for bad input.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoresearch.errors import TaskError, no_folder

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

TASK_FILE = "autoresearch.toml"
SMOKE = "AUTORESEARCH_SMOKE"  # the templates' smoke mode: pinned with a tag like the task file's measurement


# read by the templates' prepare.py to choose what is scored (how many tokens, which text):
# pinned with a tag too, as they are set when it starts ("" when unset)
PINNED_ENV = ("AUTORESEARCH_EVAL_TOKENS", "AUTORESEARCH_DATA_DIR")


def smoke() -> str:
    """"1" when the templates run in smoke mode (AUTORESEARCH_SMOKE=1, as they read it), else ""."""
    return "1" if os.environ.get(SMOKE, "").strip() == "1" else ""

TOP_KEYS = {
    "name", "program", "editable", "protected", "setup", "command", "time_budget",
    "timeout", "evaluate", "metric", "acceptance", "agent", "shared",
}
METRIC_KEYS = {"name", "goal", "pattern", "file", "record", "holdout"}
ACCEPTANCE_KEYS = {"min_delta", "baseline_runs", "confirm"}
AGENT_KEYS = {"kind", "model", "base_url", "cmd", "timeout", "sampler", "llm_share"}
SAMPLERS = ("tpe", "random", "cmaes", "gp")
AGENT_KINDS = ("search", "llm", "hybrid", "cli", "claude", "codex", "aider", "gemini", "opencode")
SKIP_DIRS = {".git", ".autoresearch", "__pycache__", ".venv", "node_modules"}


@dataclass(frozen=True)
class MetricSpec:
    name: str
    goal: str = "minimize"
    pattern: str | None = None
    file: str | None = None
    record: tuple[str, ...] = ()
    holdout: str | None = None

    @property
    def minimize(self) -> bool:
        return self.goal == "minimize"


@dataclass(frozen=True)
class Acceptance:
    min_delta: float | str = 0.0  # a number, or "auto": twice the measured noise
    baseline_runs: int = 1
    confirm: int = 0


@dataclass(frozen=True)
class Task:
    root: Path
    name: str
    command: str
    metric: MetricSpec
    editable: tuple[str, ...]
    program: str = "program.md"
    protected: tuple[str, ...] = ()
    setup: str | None = None
    evaluate: str | None = None
    time_budget: float = 300.0
    timeout: float = 660.0
    acceptance: Acceptance = field(default_factory=Acceptance)
    agent: dict[str, Any] = field(default_factory=dict)
    shared: tuple[str, ...] = ()  # paths of the user's checkout (git-ignored data) linked into trials

    @property
    def always_protected(self) -> tuple[str, ...]:
        """The task file and the program: protected whatever the task file says."""
        return (TASK_FILE, self.program)

    def measurement(self) -> dict[str, Any]:
        """What defines how a trial is measured: a tag's trials are compared with each other, so
        these keys are pinned when the tag starts (the program, the agent, the scope, timeouts
        and acceptance repeats may change between runs of a tag)."""
        m = self.metric
        return {"command": self.command, "evaluate": self.evaluate, "setup": self.setup,
                "time_budget": self.time_budget, "metric.name": m.name, "metric.goal": m.goal,
                "metric.pattern": m.pattern, "metric.file": m.file,
                "acceptance.min_delta": self.acceptance.min_delta,
                # the templates' smoke mode (tiny data and model): its figures are no real run's
                SMOKE: smoke(), **{k: os.environ.get(k, "").strip() for k in PINNED_ENV}}

    @property
    def budget_env(self) -> str:
        """time_budget as AUTORESEARCH_TIME_BUDGET holds it: 1234567, not %g's 1.23457e+06."""
        return str(int(self.time_budget)) if self.time_budget == int(self.time_budget) else repr(self.time_budget)

    def is_editable(self, path: str) -> bool:
        return any(glob_match(path, g) for g in self.editable) and not self.is_protected(path)

    def is_protected(self, path: str) -> bool:
        return path in self.always_protected or any(glob_match(path, g) for g in self.protected)

    def protected_files(self, root: Path | None = None) -> list[str]:
        """Relative paths of every protected file that exists under `root` (the task root)."""
        files = list_files(root or self.root)
        return sorted(p for p in files if self.is_protected(p))

    def program_text(self, root: Path | None = None) -> str:
        """The research program; empty when the task file names none and program.md is absent."""
        try:
            return ((root or self.root) / self.program).read_text(errors="replace")
        except FileNotFoundError:
            return ""


def glob_match(path: str, pattern: str) -> bool:
    """A task-file glob: fnmatch over the posix relative path (`*` crosses folders), and a
    folder name (`models/` or `models`) matches everything under it."""
    pattern = pattern.strip()
    while pattern.startswith("./"):
        pattern = pattern[2:]
    if fnmatch.fnmatchcase(path, pattern):
        return True
    if "**/" in pattern and fnmatch.fnmatchcase(path, pattern.replace("**/", "")):
        return True  # `src/**/*.py` also matches src/new.py (zero folders), as in git and pathlib
    if pattern.endswith("/**"):
        pattern = pattern[:-3]
    return path.startswith(pattern.rstrip("/") + "/")


def list_files(root: Path) -> list[str]:
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        rel = os.path.relpath(dirpath, root)
        for f in filenames:
            out.append(f if rel == "." else f"{rel}/{f}".replace(os.sep, "/"))
    return out


# ---------------------------------------------------------------------------
# validation helpers: each raises TaskError naming the key


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            near = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
            hint = f" (did you mean '{near[0]}'?)" if near else f" (known keys: {', '.join(sorted(allowed))})"
            raise TaskError(f"{TASK_FILE}: unknown key '{where}{key}'{hint}")


def _typename(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _nonblank(value: str | None) -> str | None:
    """An optional command: one of blanks only is none."""
    return value if value and value.strip() else None


def _get_str(table: dict[str, Any], key: str, where: str, default: str | None = None,
             required: bool = False) -> str | None:
    if key not in table:
        if required:
            raise TaskError(f"{TASK_FILE}: missing required key '{where}{key}'")
        return default
    value = table[key]
    if not isinstance(value, str):
        raise TaskError(f"{TASK_FILE}: '{where}{key}' must be a string, got {_typename(value)}")
    if required and not value.strip():
        raise TaskError(f"{TASK_FILE}: '{where}{key}' must not be empty")
    return value


def _get_number(table: dict[str, Any], key: str, where: str, default: float) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TaskError(f"{TASK_FILE}: '{where}{key}' must be a number, got {_typename(value)}")
    if not math.isfinite(value) or value <= 0:
        raise TaskError(f"{TASK_FILE}: '{where}{key}' must be a positive number of seconds, got {value}")
    return float(value)


def _get_int(table: dict[str, Any], key: str, where: str, default: int, minimum: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TaskError(f"{TASK_FILE}: '{where}{key}' must be an integer, got {_typename(value)}")
    if value < minimum:
        raise TaskError(f"{TASK_FILE}: '{where}{key}' must be at least {minimum}, got {value}")
    return value


def _get_list(table: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list):
        raise TaskError(f"{TASK_FILE}: '{where}{key}' must be a list of strings, got {_typename(value)}")
    for item in value:
        if not isinstance(item, str) or not item.strip():
            got = "an empty string" if isinstance(item, str) else _typename(item)
            raise TaskError(f"{TASK_FILE}: '{where}{key}' must be a list of non-empty strings, it holds {got}")
    return tuple(value)


def _table(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise TaskError(f"{TASK_FILE}: '{key}' must be a table ([{key}]), got {_typename(value)}")
    return value


# ---------------------------------------------------------------------------


TSV_COLUMNS = ("commit", "memory_gb", "status", "description")  # results.tsv's, beside the metric's


def _check_figure_name(name: str, key: str) -> None:
    if not re.fullmatch(r"[A-Za-z_][\w.\-/]*", name):
        raise TaskError(f"{TASK_FILE}: '{key}' must be a name such as val_bpb or eval/loss "
                        f"(letters, digits, _ . - /), got {name!r}")


def _load_metric(data: dict[str, Any]) -> MetricSpec:
    if "metric" not in data:
        raise TaskError(f"{TASK_FILE}: missing required table [metric] (with 'name' and 'goal')")
    table = _table(data, "metric")
    _check_keys(table, METRIC_KEYS, "metric.")
    name = _get_str(table, "name", "metric.", required=True)
    assert name is not None
    _check_figure_name(name, "metric.name")
    if name in TSV_COLUMNS:
        raise TaskError(f"{TASK_FILE}: 'metric.name' must not be {name!r}, a column of results.tsv "
                        f"({', '.join(TSV_COLUMNS)}): name the metric otherwise (and print it so)")
    goal = _get_str(table, "goal", "metric.", required=True)
    if goal not in ("minimize", "maximize"):
        raise TaskError(f"{TASK_FILE}: 'metric.goal' must be \"minimize\" or \"maximize\", got {goal!r}")
    pattern = _get_str(table, "pattern", "metric.")
    if pattern is not None:
        try:
            groups = re.compile(pattern, re.MULTILINE).groups
        except re.error as e:
            raise TaskError(f"{TASK_FILE}: 'metric.pattern' is not a valid regular expression: {e}") from None
        if groups != 1:
            raise TaskError(f"{TASK_FILE}: 'metric.pattern' must have exactly one group, it has {groups}")
    file = _get_str(table, "file", "metric.")
    if file is not None and (not file.strip() or Path(file).is_absolute() or ".." in Path(file).parts):
        raise TaskError(f"{TASK_FILE}: 'metric.file' must be a path inside the run or working folder "
                        f"(e.g. \"metrics.json\"), got {file!r}")
    if pattern is not None and file is not None:
        raise TaskError(f"{TASK_FILE}: 'metric.pattern' and 'metric.file' cannot both be set")
    file = Path(file).as_posix() if file is not None else None  # ("./metrics.json" is metrics.json)
    holdout = _get_str(table, "holdout", "metric.")
    if holdout is not None and holdout == name:
        raise TaskError(f"{TASK_FILE}: 'metric.holdout' must differ from 'metric.name'")
    if holdout is not None:
        _check_figure_name(holdout, "metric.holdout")
    record = _get_list(table, "record", "metric.")
    for extra in record:
        _check_figure_name(extra, "metric.record")
    if len(set(record)) != len(record):
        raise TaskError(f"{TASK_FILE}: 'metric.record' lists a figure twice: {record}")
    for figure in (name, holdout):
        if figure in record:
            raise TaskError(f"{TASK_FILE}: 'metric.record' must not list {figure!r}: it is the "
                            f"{'metric' if figure == name else 'holdout'}")
    return MetricSpec(name=name, goal=goal, pattern=pattern, file=file, record=record, holdout=holdout)


def _load_agent(data: dict[str, Any]) -> dict[str, Any]:
    table = _table(data, "agent")
    _check_keys(table, AGENT_KEYS, "agent.")
    for key in ("kind", "model", "base_url", "cmd", "sampler"):
        _get_str(table, key, "agent.")
    if "timeout" in table:
        _get_number(table, "timeout", "agent.", 0.0)
    kind = table.get("kind")
    if kind is not None and kind not in AGENT_KINDS:
        near = difflib.get_close_matches(str(kind), AGENT_KINDS, n=1, cutoff=0.6)
        raise TaskError(f"{TASK_FILE}: 'agent.kind' must be one of {', '.join(AGENT_KINDS)}, got {kind!r}"
                        + (f" (did you mean '{near[0]}'?)" if near else ""))
    if kind == "cli" and not table.get("cmd"):
        raise TaskError(f"{TASK_FILE}: 'agent.kind' is \"cli\" but 'agent.cmd' is not set (the command, "
                        "with {prompt_file})")
    if table.get("sampler", "tpe") not in SAMPLERS:
        raise TaskError(f"{TASK_FILE}: 'agent.sampler' must be one of {', '.join(SAMPLERS)}, got {table['sampler']!r}")
    share = table.get("llm_share", 0.0)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
        raise TaskError(f"{TASK_FILE}: 'agent.llm_share' must be a number from 0 to 1, got {share!r}")
    return table


def _load_acceptance(data: dict[str, Any]) -> Acceptance:
    table = _table(data, "acceptance")
    _check_keys(table, ACCEPTANCE_KEYS, "acceptance.")
    min_delta = table.get("min_delta", 0.0)
    if isinstance(min_delta, str):
        if min_delta != "auto":
            raise TaskError(f"{TASK_FILE}: 'acceptance.min_delta' must be a number or \"auto\", got {min_delta!r}")
    elif isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)):
        raise TaskError(f"{TASK_FILE}: 'acceptance.min_delta' must be a number or \"auto\", got {_typename(min_delta)}")
    elif not math.isfinite(min_delta) or min_delta < 0:
        raise TaskError(f"{TASK_FILE}: 'acceptance.min_delta' must be a finite number >= 0 (or \"auto\"), got {min_delta}")
    else:
        min_delta = float(min_delta)
    acceptance = Acceptance(
        min_delta=min_delta,
        baseline_runs=_get_int(table, "baseline_runs", "acceptance.", 1, 1),
        confirm=_get_int(table, "confirm", "acceptance.", 0, 0),
    )
    if acceptance.min_delta == "auto" and acceptance.baseline_runs < 2:
        raise TaskError(f"{TASK_FILE}: 'acceptance.min_delta' = \"auto\" needs "
                        "'acceptance.baseline_runs' >= 2 (the noise is measured on repeated baselines)")
    return acceptance


def task_above(folder: Path) -> Path | None:
    """The nearest folder above `folder`, within its git repository, that holds a task file."""
    for f in folder.parents if not (folder / ".git").exists() else ():
        if (f / TASK_FILE).is_file():
            return f
        if (f / ".git").exists():
            break
    return None


def elsewhere(above: Path) -> str:
    """What to do when the DIR given is below the folder that holds the task file."""
    return f"(the task's is in {above}: give that folder, or leave DIR out)"


def loop_worktree(folder: Path) -> tuple[Path, str] | None:
    """(the task's root, the tag) when `folder` is a trial worktree a loop made there,
    `<root>/.autoresearch/<tag>/worktrees/<name>`, else None."""
    parts = folder.resolve().parts
    if len(parts) < 5 or parts[-2] != "worktrees" or parts[-4] != ".autoresearch" or not (folder / ".git").is_file():
        return None
    root = Path(*parts[:-4])
    return (root, parts[-3]) if (root / TASK_FILE).is_file() else None


def _read_task_file(root: Path) -> dict:
    """The TOML of `root`'s task file, refused in one line where there is none or it is not TOML."""
    path = root / TASK_FILE
    if not root.is_dir():
        raise TaskError(no_folder(root))
    if path.exists() and not path.is_file():
        raise TaskError(f"{path} is not a file (a folder?): the task file must be one")
    if not path.is_file():
        above = task_above(root)
        raise TaskError(f"no {TASK_FILE} in {root} " + (
            elsewhere(above) if above is not None
            else "(create one with `autoresearch init`)"))
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))  # a BOM (Windows editors) is fine
    except tomllib.TOMLDecodeError as e:
        raise TaskError(f"{TASK_FILE}: invalid TOML: {e}") from None
    except UnicodeDecodeError:
        raise TaskError(f"{TASK_FILE}: not UTF-8 text") from None
    return data


def _program_path(data: dict, root: Path) -> str:
    """The task's `program`, a path inside the repository (program.md when not named)."""
    program = _get_str(data, "program", "", default="program.md") or "program.md"
    if Path(program).is_absolute() or ".." in Path(program).parts:
        raise TaskError(f"{TASK_FILE}: 'program' must be a path inside the task repository, got {program!r}")
    if "program" in data and not (root / program).is_file():  # unnamed, program.md may be absent
        raise TaskError(f"{TASK_FILE}: 'program' file {program!r} not found in {root}")
    return program


def load_task(root: str | os.PathLike[str]) -> Task:
    """Read and validate `<root>/autoresearch.toml`."""
    root = Path(root).resolve()
    data = _read_task_file(root)
    _check_keys(data, TOP_KEYS, "")
    command = _get_str(data, "command", "", required=True)
    assert command is not None
    program = _program_path(data, root)
    time_budget = _get_number(data, "time_budget", "", 300.0)
    timeout = _get_number(data, "timeout", "", 2 * time_budget + 60)
    metric = _load_metric(data)
    acceptance = _load_acceptance(data)
    agent = _load_agent(data)
    if "editable" not in data:
        raise TaskError(f"{TASK_FILE}: missing required key 'editable' (globs of the files an agent may change)")
    editable = _get_list(data, "editable", "")
    if not editable:
        raise TaskError(f"{TASK_FILE}: 'editable' must list at least one glob")
    protected = _get_list(data, "protected", "")
    shared = tuple(_shared_path(p) for p in _get_list(data, "shared", ""))
    evaluate = _nonblank(_get_str(data, "evaluate", ""))
    if metric.holdout and not (evaluate or "").strip():
        raise TaskError(f"{TASK_FILE}: 'metric.holdout' needs 'evaluate': the sealed figure is "
                        "read only from the evaluate command's output")
    task = Task(
        root=root, name=_get_str(data, "name", "", default=root.name) or root.name,
        command=command, metric=metric, editable=editable, program=program,
        protected=protected, setup=_nonblank(_get_str(data, "setup", "")),
        evaluate=evaluate, time_budget=time_budget, timeout=timeout,
        acceptance=acceptance, agent=agent, shared=shared,
    )
    _check_paths(task)
    return task


def task_warnings(task: Task, files: list[str], shared_found: set[str], remote: bool) -> list[str]:
    """What in a valid task file is likely a mistake, said when a loop starts."""
    out = []
    if task.timeout <= task.time_budget:
        out.append(f"timeout ({task.timeout:g} s) is not above time_budget ({task.time_budget:g} s): an "
                   "experiment that uses its budget will be killed (the timeout should leave room for "
                   "start-up and evaluation)")
    for pattern in task.protected:  # a typo here leaves the real file unprotected
        if not any(glob_match(p, pattern) for p in files):
            out.append(f"'protected' glob {pattern!r} matches no file (a trial that makes or changes a "
                       "file it names is still rejected)")
    out += [f"'shared' path {rel!r} is not in your checkout; trials will not see it"
            for rel in task.shared if rel not in shared_found]
    if task.shared and remote:
        out.append("'shared' paths are linked on a Ray node only where it has them at the same absolute "
                   f"path as here ({task.root}/...); elsewhere, make them in `setup`")
    return out


def _shared_path(raw: str) -> str:
    """One `shared` entry: a relative path inside the repository, in git's spelling."""
    path = Path(raw.strip())
    rel = path.as_posix().rstrip("/")
    if path.is_absolute() or ".." in path.parts or rel in ("", "."):
        raise TaskError(f"{TASK_FILE}: 'shared' entries must be paths inside the task repository, got {raw!r}")
    if any(c in rel for c in "*?["):
        raise TaskError(f"{TASK_FILE}: 'shared' entries are paths, not globs: {raw!r}")
    if rel.split("/")[0] in (".git", ".autoresearch"):
        raise TaskError(f"{TASK_FILE}: 'shared' cannot name {rel.split('/')[0]}")
    return rel.removeprefix("./")


def submodule_paths(root: Path) -> list[str]:
    """The paths .gitmodules names: a commit of this repository holds a submodule's commit, not
    its files, so none of them can be a trial's change."""
    try:
        text = (root / ".gitmodules").read_text(errors="replace")
    except OSError:
        return []
    return [m.strip().strip('"').rstrip("/") for m in re.findall(r"^\s*path\s*=\s*(.+)$", text, re.M)]


def _check_paths(task: Task) -> None:
    files = list_files(task.root)
    subs = submodule_paths(task.root)
    for glob in task.editable:
        matched = [f for f in files if glob_match(f, glob)]
        in_sub = next(((f, m) for f in matched for m in subs if f.startswith(m + "/")), None)
        if in_sub and not any(c in glob for c in "*?["):
            raise TaskError(f"{TASK_FILE}: 'editable' names {in_sub[0]!r}, a file of the git submodule "
                            f"{in_sub[1]!r}: a trial's commit cannot hold a submodule's files (make them "
                            "part of this repository to let an agent edit them)")
        wild = any(c in glob for c in "*?[")  # a wildcard may name files yet to be made, not all of them
        if not matched and (not wild or len(task.editable) == 1):
            raise TaskError(f"{TASK_FILE}: 'editable' glob {glob!r} matches no file")
        # `*.py` or a folder `src` beside `protected = ["prepare.py"]` (or "src/eval.py"): the
        # protected files are left out of it; a file named in both is an error
        named = [] if wild else [f for f in matched if fnmatch.fnmatchcase(f, glob.strip().removeprefix("./"))]
        if matched and not named:
            if len(task.editable) == 1 and all(task.is_protected(f) for f in matched):
                raise TaskError(f"{TASK_FILE}: 'editable' glob {glob!r} matches only protected files "
                                f"({', '.join(matched[:3])}{', ...' if len(matched) > 3 else ''}; the task file and "
                                "the program are always protected)")
            continue
        for f in named:
            if f in task.always_protected:
                raise TaskError(f"{TASK_FILE}: {f!r} is matched by 'editable' but is always protected")
            if any(glob_match(f, p) for p in task.protected):
                raise TaskError(f"{TASK_FILE}: {f!r} is both editable and protected")
    for rel in task.shared:  # a link to the user's copy: an agent's edit there would escape the record
        inside = [f for f in files if f == rel or f.startswith(rel + "/")] or [rel]
        bad = next((f for f in inside if task.is_editable(f) or task.is_protected(f)), None)
        if bad is not None:
            raise TaskError(f"{TASK_FILE}: 'shared' entry {rel!r} holds {bad!r}, which is "
                            f"{'editable' if task.is_editable(bad) else 'protected'}; shared paths are "
                            "for files outside the code (git-ignored data, a virtual environment)")
