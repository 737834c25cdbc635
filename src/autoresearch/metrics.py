"""Extract figures from an experiment's output or a JSON file it wrote.

The default rule: the last line matching `^<name>:\\s*<number>`, as autoresearch's `grep
"^val_bpb:"` reads it: the name as written (case matters), anything after the number ignored
(`val_loss: 0.93 (best so far)`, `acc: 95.3%`; not `0.5abc`). A figure that is present but NaN or infinite is
returned as such: the caller treats it as a crash.

The output is read as a terminal shows it: a carriage return ends a line, and escape sequences
(SGR colours from loguru, colorlog or FORCE_COLOR, other CSI codes, OSC titles and links) are
removed before matching, for every figure and a custom `pattern` alike. A line that only nearly
matches (indented, behind a logging prefix, `name = value`, another case) is not the metric; when
the metric is missing, the crash reason quotes the last such line so the user sees what to change.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from autoresearch.filetree import NotRegular, read_regular
from autoresearch.task import MetricSpec

NUMBER = r"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|(?i:nan|inf(?:inity)?))"
END = r"(?![\w.]|,\d)"  # a number ends there: not `7ms`, `1.2.3`, nor a decimal comma (`1,5`)
MEMORY = "peak_vram_mb"  # always read when printed: results.tsv's memory_gb comes from it
REJECT_LINE = re.compile(r"^autoresearch_reject:[ \t]*(.*)$", re.MULTILINE)
# What a terminal draws as nothing: CSI (colours, cursor moves), OSC and the other string
# commands up to BEL or ST (never past a line end, so a broken one cannot swallow the metric
# line), two- and three-byte escapes (`tput sgr0` writes ESC ( B), and a stray ESC.
ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[\]PX^_][^\x07\x1b\n]*(?:\x07|\x1b\\)?|\x1b[ -/]*[0-~]|\x1b")
EXCERPT = 60  # characters of a near-miss line quoted in the crash reason


class MetricError(Exception):
    """The metric could not be read; the message says why."""


def parse_number(text: str) -> float:
    return float(text.strip().lower())


def screen(output: str) -> str:
    """`output` as a terminal shows it, one line per line on screen."""
    # A carriage return ends a line as on a terminal: a progress bar closed with '\r' (tqdm's
    # leave=False) is followed on the same raw line by the summary the experiment prints next.
    return ESCAPE.sub("", output).replace("\r\n", "\n").replace("\r", "\n")


def figure_from_text(output: str, name: str, pattern: str | None = None) -> float | None:
    """The value of `name` in `output` by the default rule, or by `pattern` (one group)."""
    return _figure(screen(output), name, pattern)


def _figure(text: str, name: str, pattern: str | None) -> float | None:
    if pattern is not None:
        regex = re.compile(pattern, re.MULTILINE)
    else:
        regex = re.compile(rf"^{re.escape(name)}:[ \t]*({NUMBER}){END}", re.MULTILINE)
    matches = regex.findall(text)
    if not matches:
        return None
    try:
        return parse_number(matches[-1])
    except ValueError:
        return None


def near_miss(output: str, name: str, holdout: str | None = None) -> str | None:
    """The last line of `output` that gives `name` a number but is not the metric line by the
    default rule (`  name: 1`, `INFO:root:name: 1`, `name = 1`, `{'name': 1}`, `NAME: 1`), as a
    short excerpt; None if there is none, or if the excerpt would show the `holdout` figure."""
    exact = rf"{re.escape(name)}:[ \t]*{NUMBER}{END}"
    regex = re.compile(rf"^(?!{exact})([^\n]*?)((?<![\w.\-])(?i:{re.escape(name)})['\"]?"
                       rf"(?:[ \t]*[:=][ \t]*|[ \t]+){NUMBER}(?![\w.]))([^\n]*)", re.MULTILINE)
    found = list(regex.finditer(screen(output)))
    if not found:
        return None
    prefix, figure, rest = found[-1].groups()
    line = (prefix + figure + rest).rstrip()
    if len(line) > EXCERPT:  # keep what precedes the name (what the user must change), drop the rest
        room = max(EXCERPT - len(figure), 0)
        line = (prefix if len(prefix) <= room else "..." + prefix[len(prefix) - room:]) + figure[:EXCERPT] + "..."
    line = "".join(ch if ch.isprintable() else " " for ch in line)
    if holdout and holdout.lower() in line.lower():
        return None
    return line


METRIC_FILE_BYTES = 16 << 20  # a metric file is a few figures; more is not one


def read_metric_file(path: Path) -> str:
    """The text of a regular file of at most METRIC_FILE_BYTES (a link to one is followed), read
    without waiting: a FIFO, a device (/dev/zero never ends) or a folder is an error of the
    trial's, not a hang of the loop."""
    try:
        data, size = read_regular(path, METRIC_FILE_BYTES + 1, follow=True)
    except FileNotFoundError:
        raise MetricError(f"metric file {path.name} was not written") from None
    except NotRegular:
        raise MetricError(f"metric file {path.name} is not a regular file") from None
    except OSError as e:
        raise MetricError(f"metric file {path.name} cannot be read: {e.strerror}") from None
    if size > METRIC_FILE_BYTES or len(data) > METRIC_FILE_BYTES:
        raise MetricError(f"metric file {path.name} holds {max(size, len(data))} bytes (at most {METRIC_FILE_BYTES})")
    return data.decode()


def figures_from_file(path: Path, names: list[str]) -> dict[str, float]:
    try:
        data = json.loads(read_metric_file(path))
    except (ValueError, UnicodeDecodeError) as e:  # (a 5000-digit integer is a ValueError too)
        raise MetricError(f"metric file {path.name} is not valid JSON: {str(e)[:200]}") from None
    except RecursionError:
        raise MetricError(f"metric file {path.name} nests too deep") from None
    if not isinstance(data, dict):
        raise MetricError(f"metric file {path.name} must hold a JSON object")
    out: dict[str, float] = {}
    for name in names:
        value = data.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
        elif isinstance(value, str):
            try:
                out[name] = parse_number(value)
            except ValueError:
                pass
    return out


def extract(spec: MetricSpec, output: str, run_dir: Path | None = None,
            workdir: Path | None = None, names: list[str] | None = None) -> dict[str, float]:
    """Every figure of `spec` (the metric, the record figures and the holdout, or `names`)
    that can be found. Missing ones are left out; NaN and inf are kept as they are."""
    if names is None:
        names = [spec.name, *spec.record] + ([spec.holdout] if spec.holdout else [])
        names += [MEMORY] if MEMORY not in names else []
    wanted = names
    if spec.file:
        for base in (run_dir, workdir):
            if base is not None and (base / spec.file).exists():
                return figures_from_file(base / spec.file, wanted)
        where = " or ".join(w for w, base in (("$AUTORESEARCH_RUN_DIR", run_dir), ("the working folder", workdir))
                            if base is not None)
        found = elsewhere(workdir, spec.file) if workdir is not None else ""
        hint = (f"; there is a {Path(spec.file).name} at {found}: if the experiment writes it there, set "
                f"file = {found!r} (a path from the repository's root)") if found else ""
        raise MetricError(f"metric file {spec.file} was not written (looked in {where or 'no folder'}){hint}")
    text = screen(output)  # once for all names: the output can be long
    out: dict[str, float] = {}
    for name in wanted:
        value = _figure(text, name, spec.pattern if name == spec.name else None)
        if value is not None:
            out[name] = value
    return out


def elsewhere(workdir: Path, file: str, most: int = 20000) -> str:
    """A file named like `file` somewhere else under `workdir` (its path from there), looked for
    among the first `most` entries (.git and links to folders skipped); '' when none is."""
    name, seen = Path(file).name, 0
    for top, dirs, files in os.walk(workdir):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        seen += len(dirs) + len(files)
        if name in files and (Path(top) / name) != workdir / file:
            return (Path(top) / name).relative_to(workdir).as_posix()
        if seen > most:
            break
    return ""


def unrecorded(spec: MetricSpec, figures: dict[str, float], evaluated: bool = False) -> str:
    """A warning when the baseline gave none of some `record` figures ('' when it gave all)."""
    missing = [n for n in spec.record if n not in figures]
    if not missing:
        return ""
    where = (f"keys of {spec.file}" if spec.file else
             "lines `name: number` (the metric's `pattern` reads the metric only)")
    source = " in the evaluator's output (with `evaluate`, the only one read)" if evaluated else ""
    return (f"autoresearch: warning: the baseline gave no {', '.join(missing)} (metric.record): "
            f"record figures are read as {where}{source}")


def metric_problem(spec: MetricSpec, figures: dict[str, float], output: str | None = None) -> str | None:
    """Why the figures are not a valid measurement, or None. A missing metric names the line of
    `output` (what the figures were read from) that nearly matched."""
    value = figures.get(spec.name)
    if value is None and spec.file:
        return f"no '{spec.name}' figure: metric file {spec.file} has no number under that key"
    if value is None and spec.pattern and output:
        found = re.findall(spec.pattern, screen(output), re.MULTILINE)
        if found:
            return (f"no '{spec.name}' figure in the output: metric.pattern captured "
                    f"{str(found[-1])[:80]!r}, which is not a number")
        return f"no '{spec.name}' figure in the output: metric.pattern matched nothing"
    comma = re.findall(rf"^{re.escape(spec.name)}:[ \t]*[-+]?\d+,\d+", screen(output or ""), re.MULTILINE)
    if value is None and comma:
        return f"no '{spec.name}' figure in the output: '{comma[-1]}' has a comma in its number (print 1.5, 1000)"
    if value is None:
        miss = near_miss(output, spec.name, spec.holdout) if output and not spec.pattern and not spec.file else None
        if miss:
            return (f"no '{spec.name}' figure in the output: a line holds '{miss}', but the metric line "
                    f"must start with '{spec.name}:' (or set metric.pattern)")
        return f"no '{spec.name}' figure in the output"
    if not math.isfinite(value):
        return f"'{spec.name}' is {value}"
    return None


def redact(text: str, holdout: str | None) -> str:
    """`text` with every line that names the sealed holdout figure replaced by a marker (an
    evaluator prints it as `NAME: value`; what agents may read must not carry it)."""
    if not holdout:
        return text
    needle = holdout.lower()
    return "".join(f"[{holdout}: sealed]\n" if needle in line.lower() else line
                   for line in text.splitlines(keepends=True))


def unsealed_mention(text: str, holdout: str | None) -> str:
    """`text` (a description: one line that must stay readable) with the holdout's name and the
    number after it sealed: an agent that found the figure somewhere must not put it in the
    history every later agent reads."""
    if not holdout:
        return text
    number = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
    said = rf"{re.escape(holdout)}(?:\W{{0,3}}(?:is|was|of|at|now|became|=|:|->|to)?)?\W{{0,3}}{number}"
    return re.sub(said, f"[{holdout}: sealed]", text, flags=re.IGNORECASE)


def reject_reason(output: str) -> str | None:
    """An `autoresearch_reject: why` line from an evaluator (e.g. a failed causality probe)."""
    found = REJECT_LINE.findall(screen(output))
    if not found:
        return None
    return found[-1].strip() or "rejected by the evaluator"
