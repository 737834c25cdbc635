"""Extract figures from an experiment's output or a JSON file it wrote.

The default rule: the last line matching `^<name>:\\s*<number>`, as autoresearch's `grep
"^val_bpb:"` reads it: the name as written (case matters), anything after the number ignored
(`val_loss: 0.93 (best so far)`, `acc: 95.3%`; not `0.5abc`). A figure that is present but NaN or infinite is
returned as such: the caller treats it as a crash.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from autoresearch.task import MetricSpec

NUMBER = r"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|(?i:nan|inf(?:inity)?))"
MEMORY = "peak_vram_mb"  # always read when printed: results.tsv's memory_gb comes from it
REJECT_LINE = re.compile(r"^autoresearch_reject:[ \t]*(.*)$", re.MULTILINE)


class MetricError(Exception):
    """The metric could not be read; the message says why."""


def parse_number(text: str) -> float:
    return float(text.strip().lower())


def figure_from_text(output: str, name: str, pattern: str | None = None) -> float | None:
    """The value of `name` in `output` by the default rule, or by `pattern` (one group)."""
    # A carriage return ends a line as on a terminal: a progress bar closed with '\r' (tqdm's
    # leave=False) is followed on the same raw line by the summary the experiment prints next.
    output = output.replace("\r\n", "\n").replace("\r", "\n")
    if pattern is not None:
        regex = re.compile(pattern, re.MULTILINE)
    else:
        regex = re.compile(rf"^{re.escape(name)}:[ \t]*({NUMBER})(?![\w.])", re.MULTILINE)
    matches = regex.findall(output)
    if not matches:
        return None
    try:
        return parse_number(matches[-1])
    except ValueError:
        return None


def figures_from_file(path: Path, names: list[str]) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise MetricError(f"metric file {path.name} was not written") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MetricError(f"metric file {path.name} is not valid JSON: {e}") from None
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
        raise MetricError(f"metric file {spec.file} was not written (looked in {where or 'no folder'})")
    out: dict[str, float] = {}
    for name in wanted:
        value = figure_from_text(output, name, spec.pattern if name == spec.name else None)
        if value is not None:
            out[name] = value
    return out


def metric_problem(spec: MetricSpec, figures: dict[str, float]) -> str | None:
    """Why the figures are not a valid measurement, or None."""
    value = figures.get(spec.name)
    if value is None:
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


def reject_reason(output: str) -> str | None:
    """An `autoresearch_reject: why` line from an evaluator (e.g. a failed causality probe)."""
    found = REJECT_LINE.findall(output)
    if not found:
        return None
    return found[-1].strip() or "rejected by the evaluator"
