"""Whether a measured trial is kept, with the task's [acceptance] policy.

A trial is kept when its metric beats the best by more than the bar: `min_delta`, or with
"auto" twice the run-to-run noise (pooled over every trial run more than once, else the
baseline's repeated runs). With `confirm` > 0, a candidate is run again with new seeds and kept
only if the mean of all its runs still beats the best. A keep decided while other trials ran is
checked again when it is recorded: a trial kept meanwhile may have raised the best.
"""

from __future__ import annotations

from autoresearch import decide
from autoresearch.events import Events
from autoresearch.judge import Measurement, mean_figures
from autoresearch.ledger import Ledger
from autoresearch.measure import Measurer
from autoresearch.pool import Place
from autoresearch.records import Status, Trial
from autoresearch.task import Task


class Acceptance:
    def __init__(self, task: Task, ledger: Ledger, measure: Measurer, events: Events) -> None:
        self.task = task
        self.ledger = ledger
        self.measure = measure
        self.events = events
        self.repeated: list[list[float]] | None = None  # the metric's repeated runs, for noise()

    def noise(self) -> float:
        """Run-to-run noise, pooled over the runs of decide.noise_groups (else the baseline's)."""
        if self.repeated is None:  # read once; `recorded` adds each trial's (not a ledger scan a trial)
            self.repeated = decide.noise_groups(self.ledger.trials(), self.task.metric.name)
        pooled = decide.pooled_noise(self.repeated)
        raw = self.ledger.get_meta("noise")
        return pooled if pooled or not raw else float(raw)

    def recorded(self, t: Trial) -> None:
        """A trial's verdict is in the ledger: its repeated runs count in the noise from now on."""
        if self.repeated is not None:
            self.repeated += decide.noise_groups([t], self.task.metric.name)

    def judge(self, at: Place, t: Trial, commit: str, m: Measurement, best: Trial, seed: int) -> Measurement:
        """Keep or discard a trial measured once (`m`) against `best`: confirmed by re-runs
        (seeds seed+1, ...) when the task asks for them."""
        assert best.metric is not None
        name = self.task.metric.name
        minimize = self.task.metric.minimize
        bar = decide.threshold(self.task.acceptance.min_delta, self.noise())
        if not decide.better(m.figures[name], best.metric, minimize, bar):
            moved = f" (trial {best.number} was kept while it ran)" if best.commit != t.parent else ""
            return Measurement(Status.DISCARD, m.figures, decide.why_not(m.figures[name], best.metric, bar, minimize)
                               + moved, m.seconds, m.repeats)
        confirm = self.task.acceptance.confirm
        if confirm == 0:
            return Measurement(Status.KEEP, m.figures, "", m.seconds, m.repeats)
        self.events.phase(t.number, "confirming", self.task.time_budget)
        more = self.measure.repeats(at, t, commit, confirm, first_seed=seed + 1, offset=1)
        if more.status is not None:
            return Measurement(more.status, m.figures, f"confirmation run failed: {more.reason}",
                               m.seconds + more.seconds)
        repeats = m.repeats + more.repeats
        figures = mean_figures(repeats)
        seconds = m.seconds + more.seconds
        if decide.better(figures[name], best.metric, minimize, bar):
            return Measurement(Status.KEEP, figures, "", seconds, repeats)
        return Measurement(Status.DISCARD, figures, f"did not hold up over {len(repeats)} runs: "
                           + decide.why_not(figures[name], best.metric, bar, minimize), seconds, repeats)

    def still_better(self, t: Trial, best: Trial | None) -> Trial:
        """A keep decided while other trials ran must still beat the best of now."""
        if t.status is not Status.KEEP or best is None or t.metric is None or best.metric is None:
            return t
        bar = decide.threshold(self.task.acceptance.min_delta, self.noise())
        if decide.better(t.metric, best.metric, self.task.metric.minimize, bar):
            return t
        return t.with_(status=Status.DISCARD, reason=f"{decide.why_not(t.metric, best.metric, bar, self.task.metric.minimize)} "
                       f"(trial {best.number} was kept while it ran)")
