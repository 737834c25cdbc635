"""The audit: the diff of each trial that ran scanned for changes that touch the measurement.

A flag is a pointer for a human ("look at train.py:42, it opens the validation split"), not a
verdict: the trial keeps its status, the flags go to the ledger (`Trial.flags`) and are shown by
`status`, `show` and the report. What is looked for, on the lines the trial added (and, for
the budget and the seed, the lines it removed):

- evaluation data: a split named val/valid/test/holdout/eval read on a line that does I/O,
  or a new use of a protected module's evaluation names (e.g. `evaluate_bpb`, `VAL_PATH`);
- the figures: the metric's or the holdout's name written anywhere but a comment;
- time: rebinding time.time/perf_counter/monotonic, monkeypatching, signal handlers and
  alarms, anything that touches the time budget (AUTORESEARCH_TIME_BUDGET, TIME_BUDGET);
- the harness: reading the ledger (.autoresearch, ledger.sqlite, results.tsv), setting
  AUTORESEARCH_* variables, replacing modules through sys.modules or builtins, moving or
  ending the process's output (os.dup2, os._exit, sys.stdout =, ctypes);
- the seed (a seed change once passed for an improvement) and causal masking turned off.

Reading never fails a trial: an error becomes a flag that says the audit could not run.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass

from autoresearch.gitrepo import Git
from autoresearch.task import Task

MAX_FLAGS = 20
SPLIT = re.compile(r"(?i)(?:^|[^a-z])(val|valid|validation|test|tests|holdout|heldout|eval)(?:[^a-z]|$)")
STRING = re.compile(r"""(?:[rbfu]{0,2})("[^"\n]*"|'[^'\n]*')""", re.IGNORECASE)
IO = re.compile(r"\b\w*(open|load|loader|read|batch|batches|data|dataset|shard|shards|split|"
                r"memmap|fromfile|glob|listdir|scandir|iterdir|walk|Path|ParquetFile)\w*\s*\(|"
                r"\bsplit\s*=", re.IGNORECASE)


@dataclass(frozen=True)
class Rule:
    label: str
    pattern: re.Pattern[str]
    removed_too: bool = False  # also flag the line when the trial removed it


RULES = [
    Rule("rebinds a clock", re.compile(
        r"\btime\.(time|perf_counter|monotonic|process_time)(_ns)?\s*=[^=]|"
        r"setattr\(\s*time\b|faketime\b|LD_PRELOAD")),
    Rule("monkeypatches", re.compile(r"\bmonkeypatch\b|\bmock\.patch\b|\bunittest\.mock\b|"
                                     r"\bbuiltins\.\w+\s*=[^=]|__builtins__")),
    Rule("installs a signal handler or alarm", re.compile(
        r"\bsignal\.(signal|alarm|setitimer|pthread_kill|sigwait|pause)\b|\bSIGALRM\b")),
    Rule("touches the time budget", re.compile(r"TIME_BUDGET|\bTIME_LIMIT\b|\bBUDGET\b"),
         removed_too=True),
    Rule("sets harness variables", re.compile(
        r"(?=.*AUTORESEARCH_)(?=.*(environ\s*\[[^\]]*\]\s*=[^=]|environ\.(update|setdefault|pop)\b|"
        r"\bputenv\b|\bunsetenv\b|\bexport\s))")),
    Rule("reaches into the ledger", re.compile(
        r"\.autoresearch\b|ledger\.sqlite|results\.tsv|\.eval\.log|\bsealed/")),
    Rule("replaces a module", re.compile(r"\bsys\.modules\s*\[|\bimportlib\.reload\b|"
                                          r"\bsys\.meta_path\b|\bsys\.settrace\b|\bsys\.setprofile\b")),
    Rule("signals the harness", re.compile(r"\bos\.getppid\b|\bos\.killpg\b")),
    Rule("moves or ends the process's output", re.compile(
        r"\bos\.(dup2?|closerange|fdopen|_exit|exec\w*)\s*\(|\bsys\.(std(out|err)|__std(out|err)__)\s*=[^=]|"
        r"/proc/self/fd|\bctypes\b|\bimport\s+posix\b|\bposix\.")),
    Rule("changes the random seed", re.compile(
        r"\bmanual_seed(_all)?\s*\(|\brandom\.seed\s*\(|\bnp\.random\.seed\s*\(|"
        r"\bdefault_rng\s*\(|AUTORESEARCH_SEED|\b[A-Z_]*SEED\s*=[^=]"), removed_too=True),
    Rule("turns causal masking off", re.compile(
        r"\bis_causal\s*=\s*False\b|\bcausal\s*=\s*False\b|\bCAUSAL\s*=\s*False\b")),
]


@dataclass(frozen=True)
class Line:
    path: str
    number: int  # in the new file for added lines, in the old one for removed lines
    text: str
    added: bool


def diff_lines(diff: str) -> list[Line]:
    """The added and removed lines of a unified diff (any context size)."""
    out: list[Line] = []
    path = old_path = ""
    old = new = 0
    hunk = re.compile(r"^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@")
    for raw in diff.splitlines():
        if raw.startswith("--- "):
            old_path = raw[4:].removeprefix("a/")
            continue
        if raw.startswith("+++ "):
            path = raw[4:].removeprefix("b/")
            path = old_path if path == "/dev/null" else path
            continue
        if raw.startswith("diff --git"):
            continue
        m = hunk.match(raw)
        if m:
            old, new = int(m.group(1)), int(m.group(2))
            continue
        if raw.startswith("+"):
            out.append(Line(path, new, raw[1:], True))
            new += 1
        elif raw.startswith("-"):
            out.append(Line(path, old, raw[1:], False))
            old += 1
        elif raw.startswith(" "):
            old += 1
            new += 1
    return out


def _code(text: str) -> str:
    """The line without a trailing or whole-line comment (strings with '#' are rare enough)."""
    stripped = text.strip()
    if stripped.startswith("#"):
        return ""
    return re.sub(r"\s+#[^'\"]*$", "", text)


def evaluation_names(source: str) -> set[str]:
    """Module-level names of a protected Python file that belong to the evaluation: functions,
    classes and variables whose name, or whose string value, mentions a held-out split."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return set()
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if SPLIT.search(node.name.replace("_", " ")) or node.name.lower().startswith("eval"):
                names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            strings = [c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant)
                       and isinstance(c.value, str)] if node.value is not None else []
            for t in targets:
                if isinstance(t, ast.Name) and (SPLIT.search(t.id.replace("_", " "))
                                                or any(SPLIT.search(s) for s in strings)):
                    names.add(t.id)
    return names


def scan(diff: str, metric_names: Iterable[str] = (), evaluation: Iterable[str] = ()) -> list[str]:
    """Flags for a unified diff: 'path:line: what: the line'."""
    figure_res = [(n, re.compile(rf"(?<![\w.]){re.escape(n)}(?!\w)")) for n in metric_names if n]
    eval_res = [(n, re.compile(rf"(?<![\w]){re.escape(n)}(?!\w)")) for n in sorted(set(evaluation))]
    flags: list[str] = []
    seen: set[tuple[str, str, int]] = set()

    def flag(line: Line, label: str) -> None:
        key = (label, line.path, line.number)
        if key in seen or len(flags) >= MAX_FLAGS:
            return
        seen.add(key)
        where = f"{line.path}:{line.number}" + ("" if line.added else " (removed)")
        flags.append(f"{where}: {label}: {' '.join(line.text.split())[:100]}")

    for line in diff_lines(diff):
        code = _code(line.text)
        if not code.strip():
            continue
        for rule in RULES:
            if (line.added or rule.removed_too) and rule.pattern.search(code):
                flag(line, rule.label)
        if not line.added:
            continue
        for name, rx in figure_res:
            if rx.search(code):
                flag(line, f"names the figure '{name}'")
        for name, rx in eval_res:
            if rx.search(code):
                flag(line, f"uses the evaluation's '{name}'")
        if IO.search(code) and any(SPLIT.search(s.strip("'\"")) for s in STRING.findall(code)):
            flag(line, "reads evaluation data")
    return flags


def audit_trial(git: Git, task: Task, parent: str, commit: str) -> list[str]:
    """The flags of one trial: its diff against its parent, read against the task's metric and
    the evaluation names of its protected Python files (as they were at the parent)."""
    try:
        evaluation: set[str] = set()
        for path in task.protected_files():
            if path.endswith(".py"):
                evaluation |= evaluation_names(git.show_file(parent, path) or "")
        diff = git.run("diff", "--no-color", "--no-ext-diff", "--no-textconv", "--ignore-cr-at-eol", "-U0", parent, commit,
                       check=False)  # (a file rewritten with other line endings changed nothing)
        names = [task.metric.name, *([task.metric.holdout] if task.metric.holdout else [])]
        return scan(diff, names, evaluation)
    except Exception as e:  # the audit must never cost a result
        return [f"the audit could not run: {type(e).__name__}: {e}"[:200]]
