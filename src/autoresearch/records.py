"""The nouns of the loop: a trial's status, its figures, its immutable record.

`Trial` is the frozen record of one trial as the ledger stores it (Optuna's FrozenTrial);
everything that reports, resumes or decides reads these.
"""

from __future__ import annotations

import enum
import math
import re
import statistics
from dataclasses import dataclass, field, replace
from typing import Any

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b.")


class Status(str, enum.Enum):
    RUNNING = "running"
    KEEP = "keep"
    DISCARD = "discard"
    CRASH = "crash"
    TIMEOUT = "timeout"
    REJECTED = "rejected"
    AGENT_ERROR = "agent_error"
    INTERRUPTED = "interrupted"
    DUPLICATE = "duplicate"

    @property
    def finished(self) -> bool:
        return self is not Status.RUNNING

    @property
    def shows_figure(self) -> bool:
        """Whether the trial's figure is a verdict on its code (a crash's is in its reason)."""
        return self in (Status.KEEP, Status.DISCARD, Status.DUPLICATE)

    @property
    def tsv(self) -> str:
        """The status as autoresearch's results.tsv spells it (keep, discard or crash)."""
        if self in (Status.KEEP, Status.DISCARD):
            return self.value
        if self is Status.DUPLICATE:
            return "discard"
        return "crash"


@dataclass(frozen=True)
class Trial:
    """One trial as recorded. `figures` holds the metric and every recorded figure (means
    where the trial was repeated); `repeats` holds each run's own figures."""

    number: int
    status: Status
    description: str = ""
    parent: str | None = None
    commit: str | None = None
    metric: float | None = None
    figures: dict[str, float] = field(default_factory=dict)
    repeats: list[dict[str, float]] = field(default_factory=list)
    reason: str = ""
    agent: str = ""
    model: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    seed: int = 0
    started: float = 0.0
    ended: float = 0.0
    run_seconds: float = 0.0
    log_path: str = ""
    flags: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def with_(self, **changes: Any) -> Trial:
        return replace(self, **changes)

    @property
    def short(self) -> str:
        return (self.commit or "")[:7]

    @property
    def why(self) -> str:
        """The reason to show beside the description: none for a keep, nor when the description
        already says it (an agent error's description is its reason)."""
        if not self.reason or self.status is Status.KEEP or self.reason[:60] in self.description:
            return ""
        return self.reason

    def spread(self, name: str) -> float | None:
        """The standard deviation of a figure over the trial's repeats (None when run once)."""
        values = [r[name] for r in self.repeats if name in r]
        if len(values) < 2:
            return None
        return stdev(values)


def stdev(values: list[float]) -> float:
    """The sample standard deviation of two or more figures. statistics.stdev computes it
    exactly and raises OverflowError when the variance is past float's end (runs of 1e200 and
    -1e200): an experiment printing such figures at two seeds stopped the loop, and every
    `status`, `report` and `serve` of its tag. Then it is computed scaled to the largest figure
    (inf when the deviation itself is past float's end). NaN when a figure is NaN or infinite
    (a recorded figure may be: statistics raised AttributeError on it)."""
    if not all(math.isfinite(v) for v in values):
        return math.nan
    try:
        return statistics.stdev(values)
    except OverflowError:
        top = max(abs(v) for v in values)
        return statistics.stdev([v / top for v in values]) * top


# code that was never measured (rejected, agent error, stopped) may be proposed again
UNMEASURED = (Status.REJECTED, Status.AGENT_ERROR, Status.INTERRUPTED, Status.RUNNING)
# results.tsv's memory_gb above this (a petabyte) is no measurement: a unit slip or a broken
# counter, written as 0.0 (none) rather than a figure of dozens of digits
MAX_MEMORY_GB = 1e6
AUDITED = (Status.KEEP, Status.DISCARD, Status.CRASH, Status.TIMEOUT)  # the trials whose code ran


def measured_baseline(trials: list[Trial]) -> Trial | None:
    """The baseline gains are measured from: the first one with a figure (a baseline stopped
    and run again leaves an interrupted one before it)."""
    return next((t for t in trials if t.agent == "baseline" and t.metric is not None), None)


def clean_text(text: str, limit: int = 200) -> str:
    """One printable line: terminal escapes removed, tabs/newlines/control characters turned
    into spaces, cut to `limit` characters."""
    text = _ANSI.sub("", text)
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(text.split())[:limit].rstrip()


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters in the middle: its start (the description) and its end
    (where a crash's reason has the error) stay."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 5
    return text[:head].rstrip() + " ... " + text[len(text) - (limit - head - 5):].lstrip()


def printable(text: str) -> str:
    """Text for a terminal, its lines kept: terminal escapes removed (an experiment's or an
    agent's output could set the window title, clear the screen or write the clipboard),
    carriage returns made line breaks, other control characters made spaces."""
    text = _ANSI.sub("", text).replace("\r\n", "\n").replace("\r", "\n")
    return "".join(ch if ch.isprintable() or ch in "\n\t" else " " for ch in text)


def tsv_row(t: Trial) -> str:
    """One row of autoresearch's results.tsv for a finished trial."""
    metric = t.metric if t.metric is not None and t.status in (Status.KEEP, Status.DISCARD, Status.DUPLICATE) else None
    if metric is not None and not math.isfinite(metric):
        metric = None
    peak = t.figures.get("peak_vram_mb")
    memory = 0.0  # none, or no memory figure: inf, nan, negative, or past MAX_MEMORY_GB (a 300-digit field)
    if isinstance(peak, (int, float)) and not isinstance(peak, bool) and 0 < peak <= MAX_MEMORY_GB * 1024 \
            and metric is not None:
        memory = peak / 1024
    # No double quote: csv readers (pandas' read_csv too) take a field that starts with one for a
    # quoted field and swallow every row after it up to the next quote.
    desc = clean_text(t.description).replace('"', "'") or "(no description)"
    status = "crash" if t.status is Status.DUPLICATE and metric is None else t.status.tsv  # a repeat of a crash
    text = f"{metric if metric is not None else 0.0:.6f}"
    if text == "-0.000000":  # a tiny negative figure rounds to zero, not to minus zero
        text = "0.000000"
    return f"{t.short}\t{text}\t{memory:.1f}\t{status}\t{desc}"


def finite(value: float | None) -> float | None:
    """The metric of record: none when the run gave NaN or inf (a crash; its figures keep it)."""
    return value if value is not None and math.isfinite(value) else None
