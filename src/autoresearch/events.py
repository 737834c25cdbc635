"""What the loop tells the person watching it. `Events` is the interface; `PlainEvents` prints
one line per event (for pipes, CI and nohup); the rich live view implements the same methods."""

from __future__ import annotations

import sys
import threading
import time
from typing import Protocol, TextIO

from autoresearch.prompt import fmt
from autoresearch.records import Trial, printable

TIMED = ("running", "evaluating", "confirming")  # the phases an experiment's time runs in


def phase_kind(phase: str) -> str:
    """A phase's name without its detail: "running (run 2 of 3, seed 1)" is "running"."""
    return phase.split(" (", 1)[0]


class Events(Protocol):
    def message(self, text: str) -> None: ...
    def trial_started(self, number: int, index: int, total: int | None) -> None: ...
    def phase(self, number: int, phase: str, budget: float | None = None) -> None: ...
    def trial_finished(self, trial: Trial, best: Trial, baseline: Trial | None, cost: float) -> None: ...
    def going_on(self, best: Trial, baseline: Trial | None, cost: float) -> None: ...  # a resumed tag's best
    def close(self) -> None: ...


class NullEvents:
    def message(self, text: str) -> None: ...
    def trial_started(self, number: int, index: int, total: int | None) -> None: ...
    def phase(self, number: int, phase: str, budget: float | None = None) -> None: ...
    def trial_finished(self, trial: Trial, best: Trial, baseline: Trial | None, cost: float) -> None: ...
    def going_on(self, best: Trial, baseline: Trial | None, cost: float) -> None: ...
    def close(self) -> None: ...


class Steady:
    """Events that never fail the loop: a terminal that went away (SIGHUP, a closed ssh session:
    EIO) or a closed pipe must not stop the recording of a trial."""

    def __init__(self, inner: Events) -> None:
        self.inner = inner

    def _call(self, name: str, *args: object) -> None:
        try:
            getattr(self.inner, name)(*args)
        except (OSError, ValueError):
            pass

    def message(self, text: str) -> None:
        self._call("message", text)

    def trial_started(self, number: int, index: int, total: int | None) -> None:
        self._call("trial_started", number, index, total)

    def phase(self, number: int, phase: str, budget: float | None = None) -> None:
        self._call("phase", number, phase, budget)

    def trial_finished(self, trial: Trial, best: Trial, baseline: Trial | None, cost: float) -> None:
        self._call("trial_finished", trial, best, baseline, cost)

    def going_on(self, best: Trial, baseline: Trial | None, cost: float) -> None:
        self._call("going_on", best, baseline, cost)

    def close(self) -> None:
        self._call("close")

    def __getattr__(self, name: str) -> object:  # what else a view offers (the MLflow wrapper's)
        return getattr(self.inner, name)


def dollars(amount: float) -> str:
    """A cost as people read it: cents under a dollar kept to four places ($0.0042: a cheap model's
    spend, and a `--max-cost 0.01` reached, are not shown as $0.00), cents above."""
    return f"${amount:,.2f}" if amount >= 1 or amount <= 0 else f"${amount:.4f}"


def percent(value: float) -> str:
    """A gain in percent: two decimals, or three figures past a million percent (a metric that
    blew up to 1e300 printed a number of 300 digits in every line)."""
    return f"{value:+.2f}%" if abs(value) < 1e6 else f"{value:+.3g}%"


def gain_text(best: Trial, baseline: Trial | None, minimize: bool) -> str:
    if baseline is None or baseline.metric is None or best.metric is None or baseline.number == best.number:
        return ""
    delta = best.metric - baseline.metric
    if not baseline.metric:  # a percentage of 0 means nothing
        return f" ({delta:+.6g} vs baseline)"
    return f" ({delta:+.6g}, {percent(100 * delta / abs(baseline.metric))} vs baseline)"


def clock(seconds: float) -> str:
    """A duration as a clock shows it: 1:02:03, or 2:03 under an hour."""
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def of_hours(start: float, hours: float | None) -> str:
    """', 1:02:03 of 8:00:00': the time since `start` (monotonic) against `--hours`, or ''."""
    return f", {clock(time.monotonic() - start)} of {clock(hours * 3600)}" if hours else ""


class PlainEvents:
    """Plain lines; while an experiment runs, an agent works or the task's setup runs, a line
    every `tick` seconds with the elapsed time (against the budget, for an experiment). With
    `hours` (`run --hours`), each trial's first line also says how much of them has gone."""

    def __init__(self, metric: str, minimize: bool, out: TextIO | None = None, tick: float = 30.0,
                 hours: float | None = None) -> None:
        self.hours = hours
        self._t0 = time.monotonic()
        self.metric = metric
        self.minimize = minimize
        self.out = out or sys.stdout
        self.tick = tick
        self._lock = threading.Lock()
        self._running: dict[int, tuple[float, float | None, str]] = {}
        self._labels: dict[int, str] = {}
        self._busy: tuple[str, float] | None = None  # work outside any trial (the setup), since when
        self._best = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._ticker, daemon=True)
        self._thread.start()

    def _print(self, text: str) -> None:
        """One event, stamped with the time of day (a night's log read in the morning). A
        terminal that went away (SIGHUP, a closed pipe) is not a reason to fail the loop. Terminal
        escapes are taken out: a reason or warning may name a file an agent created, and the log
        may be read with `tail -f` (a name could set the window title or clear the screen)."""
        with self._lock:
            try:
                print(time.strftime("%H:%M:%S ") + printable(text), file=self.out, flush=True)
            except (OSError, ValueError):
                pass

    def message(self, text: str) -> None:
        self._print(text)

    def trial_started(self, number: int, index: int, total: int | None) -> None:
        label = "baseline" if index == 0 else f"{index}/{total}" if total else f"{index}"
        self._labels[number] = label
        self._print(f"[trial {number}] ({label}{of_hours(self._t0, self.hours)}) started{self._best}")

    def phase(self, number: int, phase: str, budget: float | None = None) -> None:
        if phase_kind(phase) in (*TIMED, "agent"):
            self._running[number] = (time.monotonic(), budget, phase)
        else:
            self._running.pop(number, None)
        self._print(f"[trial {number}] {phase}" + (f" (budget {budget:g} s)" if budget else ""))

    def trial_finished(self, trial: Trial, best: Trial, baseline: Trial | None, cost: float) -> None:
        self._running.pop(trial.number, None)
        why = f"  [{trial.why}]" if trial.why else ""  # (as `status` shows it; " - " read "- -5.4" of a negative figure)
        self._best = f"; {self._best_of(best)}"
        money = f"; cost {dollars(cost)}" if cost else ""
        shown = trial.metric if trial.status.shows_figure else None  # as `status` shows it
        self._print(f"[trial {trial.number}] {trial.status.value} {self.metric}={fmt(shown)} "
                    f"in {trial.run_seconds:.1f}s: {trial.description}{why}\n"
                    f"  {self._best_of(best)}{gain_text(best, baseline, self.minimize)}{money}")

    def _best_of(self, best: Trial) -> str:
        if best.metric is None:  # a baseline that failed: nothing to beat yet
            return f"no best {self.metric} yet (trial {best.number} has none)"
        return f"best {self.metric} {fmt(best.metric)} (trial {best.number})"

    def going_on(self, best: Trial, baseline: Trial | None, cost: float) -> None:
        self._best = f"; {self._best_of(best)}"

    def _ticker(self) -> None:
        while not self._stop.wait(self.tick):
            if busy := self._busy:
                self._print(f"{busy[0]}: {time.monotonic() - busy[1]:.0f} s")
            for number, (start, budget, phase) in list(self._running.items()):
                elapsed = time.monotonic() - start
                # "29 s / 20 s budget" read as an overrun: start-up and evaluation are outside the budget
                of = f" (time budget {budget:g} s)" if budget else ""
                self._print(f"[trial {number}] {phase} {elapsed:.0f} s{of}{self._best}")

    def busy(self, what: str | None) -> None:
        """Work outside any trial (the setup) started, or (None) ended: ticked like a phase."""
        self._busy = (what, time.monotonic()) if what else None

    def close(self) -> None:
        self._stop.set()

