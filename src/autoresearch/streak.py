"""Agent failures in a row, and what they call for. An agent that keeps failing must not spin
out thousands of trials overnight:

- a failure that will recur (a bad key, an unknown model, a command that is not there:
  `AgentError(fatal=True)`) FATAL_REPEATS times in a row stops the loop (exit 1);
- an agent with nothing left to propose (a search space tried through: `AgentError(done=True)`,
  said after the agent's own many asks) ends the loop as finished (exit 0) the first time, once
  no trial in flight could still open something new;
- from the fourth failure in a row, any other waits 0.5, 1, 2 ... up to 5 minutes before the
  next proposal, so that a provider's outage overnight costs some 12 failed trials an hour, not
  the whole of `--trials` (at a 60 s cap a 2-hour outage used up 120);
- an agent whose proposals are not measured (rejected: an empty change, one out of scope; or
  the same code as an earlier trial), each in an instant, waits so too from the IDLE_FROM-th in
  a row: one that only prints its help made some 10,000 trials, commits and refs in ten minutes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from autoresearch.records import Status

if TYPE_CHECKING:
    from autoresearch.events import Events
    from autoresearch.records import Trial

FATAL_REPEATS = 3
IDLE_FROM = 10  # proposals not measured in a row before the loop slows down
OUTAGE_CAP = 300.0  # seconds: the longest wait between failed proposals (an outage may last hours)

# what an agent's failure says of the next proposal
RECOVERABLE, FATAL, DONE = "", "fatal", "done"


def backoff(count: int, start: int, cap: float = 60.0) -> float:
    """Seconds to wait after the `count`-th failure in a row: none before the `start`-th, then
    0.5 s doubling up to `cap`."""
    return min(0.5 * 2.0 ** min(count - start, 64), cap) if count >= start else 0.0


@dataclass
class Streak:
    errors: int = 0  # agent errors in a row
    same: int = 0  # failures of one unrecoverable kind (FATAL or DONE) in a row
    kind: str = RECOVERABLE
    idle: int = 0  # proposals in a row that were not measured (rejected, duplicates)

    def ok(self) -> None:
        self.errors = self.same = 0
        self.kind = RECOVERABLE

    def failed(self, kind: str) -> str:
        """Count a failure of `kind`: DONE at once, FATAL when it has now come FATAL_REPEATS
        times in a row (the loop is to stop), else RECOVERABLE."""
        self.errors += 1
        if kind == RECOVERABLE:
            self.same = 0
        else:
            self.same = self.same + 1 if kind == self.kind else 1
        self.kind = kind
        return kind if kind == DONE or self.same >= FATAL_REPEATS else RECOVERABLE

    def hold(self) -> None:
        """The failure just counted is not one of the row yet (it may not recur: asked again)."""
        self.same = max(0, self.same - 1)

    def wait(self) -> float:
        """Seconds to wait before the next proposal."""
        return backoff(self.errors, 4, OUTAGE_CAP) if self.kind == RECOVERABLE else 0.0

    def pace(self, t: Trial, events: Events, cancel: threading.Event, last: bool) -> Trial:
        """Count proposal `t` as measured (still running: to be measured) or not (rejected, a
        duplicate); from the IDLE_FROM-th not measured in a row, wait before the next one (none
        when `last`), 0.5 s doubling up to 60 s. Returns `t`."""
        self.idle = self.idle + 1 if t.status in (Status.REJECTED, Status.DUPLICATE) else 0
        if (wait := backoff(self.idle, IDLE_FROM)) and not last:
            events.message(f"autoresearch: the agent's last {self.idle} proposals were not measured (rejected, or "
                           f"code already tried): waiting {wait:g} s before the next")
            cancel.wait(wait)
        return t
