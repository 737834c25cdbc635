"""The nouns of the loop: a trial's status, its figures, its immutable record.

`Trial` is the frozen record of one trial as the ledger stores it (Optuna's FrozenTrial);
everything that reports, resumes or decides reads these.
"""

from __future__ import annotations

import enum
import statistics
from dataclasses import dataclass, field, replace
from typing import Any


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
        return statistics.stdev(values)


def measured_baseline(trials: list[Trial]) -> Trial | None:
    """The baseline gains are measured from: the first one with a figure (a baseline stopped
    and run again leaves an interrupted one before it)."""
    return next((t for t in trials if t.agent == "baseline" and t.metric is not None), None)
