"""The live terminal view of `run` (rich): the trials in flight with their phase and elapsed time
against the budget, the best so far with its gain over the baseline, the last trials, the cost.

`make_events(task)` returns it when stdout is a terminal, and the plain-line `PlainEvents`
otherwise (CI, nohup, pipes). Every method may be called from any thread: the state is guarded
by one lock, and rich redraws from its own thread under the same lock. The sealed holdout figure
is not shown here (the terminal may be read by an agent driving the loop).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass

from rich.cells import cell_len, set_cell_size
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from autoresearch.events import TIMED, Events, PlainEvents, clock, dollars, gain_text, phase_kind
from autoresearch.ledger import clean_text
from autoresearch.prompt import fmt
from autoresearch.records import Status, Trial

DESCRIBED = 32  # columns the last trials' descriptions keep: a figure column gives way first
PHASES = {"agent": "agent thinking", "queued": "queued, waiting to start", "running": "experiment running",
          "evaluating": "evaluating", "confirming": "confirming (re-run)"}
STYLES = {Status.KEEP: "bold green", Status.DISCARD: "dim", Status.DUPLICATE: "dim",
          Status.CRASH: "bold red", Status.TIMEOUT: "bold red", Status.REJECTED: "yellow",
          Status.AGENT_ERROR: "yellow", Status.INTERRUPTED: "yellow"}


def make_events(task, hours: float | None = None) -> Events:  # noqa: ANN001 - a Task
    """The rich live view on a terminal, plain lines anywhere else; `hours`: `run --hours`."""
    if not sys.stdout.isatty() or os.environ.get("TERM") == "dumb":
        return PlainEvents(task.metric.name, task.metric.minimize, hours=hours)
    return LiveEvents(task.name, task.metric.name, task.metric.minimize, holdout=task.metric.holdout, hours=hours)


@dataclass
class Flight:
    label: str
    phase: str = "starting"
    since: float = 0.0  # monotonic start of the phase
    budget: float | None = None
    started: float = 0.0  # monotonic start of the trial


class LiveEvents:
    """A rich Live display fed by the loop's events."""

    def __init__(self, task_name: str, metric: str, minimize: bool, holdout: str | None = None,
                 console: Console | None = None, last: int = 8, refresh: float = 1.0,
                 hours: float | None = None) -> None:
        self.task_name = task_name
        self.hours = hours
        self.metric = metric
        self.minimize = minimize
        self.holdout = holdout
        self.console = console or Console()
        self._lock = threading.RLock()
        self._flight: dict[int, Flight] = {}
        self._recent: deque[Trial] = deque(maxlen=last)
        self._best: Trial | None = None
        self._baseline: Trial | None = None
        self._cost = 0.0
        self._done = 0
        self._kept = 0
        self._total: int | None = None
        self._index = 0
        self._t0 = time.monotonic()
        self._live = Live(console=self.console, get_renderable=self.render,
                          refresh_per_second=refresh, transient=False)
        self._state = "new"  # new -> live -> closed

    # -- the Events interface ---------------------------------------------------------------

    def message(self, text: str) -> None:
        self._ensure_started()
        self.console.print(Text(clean_text(text, 2000)), soft_wrap=True)

    def trial_started(self, number: int, index: int, total: int | None) -> None:
        label = "baseline" if index == 0 else f"{index}/{total}" if total else str(index)
        now = time.monotonic()
        with self._lock:
            self._total = total
            self._index = max(self._index, index)
            self._flight[number] = Flight(label, since=now, started=now)
        self._ensure_started()

    def phase(self, number: int, phase: str, budget: float | None = None) -> None:
        now = time.monotonic()
        with self._lock:
            flight = self._flight.setdefault(number, Flight(str(number), started=now))
            flight.phase, flight.since, flight.budget = phase, now, budget
        self._ensure_started()
        self._live.refresh()  # (each phase drawn at least once: the view redraws once a second)

    def trial_finished(self, trial: Trial, best: Trial, baseline: Trial | None, cost: float) -> None:
        with self._lock:
            self._flight.pop(trial.number, None)
            self._recent.append(trial)
            self._best, self._baseline, self._cost = best, baseline, cost
            self._done += 1
            self._kept += trial.status is Status.KEEP and trial.number != (baseline.number if baseline else 0)
        self._ensure_started()
        self._live.refresh()

    def going_on(self, best: Trial, baseline: Trial | None, cost: float) -> None:
        with self._lock:  # (a resumed tag: its best is shown before the first new trial ends)
            self._best, self._baseline, self._cost = best, baseline, cost

    def close(self) -> None:
        with self._lock:
            if self._state != "live":
                self._state = "closed"
                return
            self._state = "closed"
        self._live.stop()

    def _ensure_started(self) -> None:
        with self._lock:
            if self._state != "new":
                return
            self._state = "live"
        self._live.start()

    # -- drawing --------------------------------------------------------------------------

    def render(self) -> RenderableType:
        with self._lock:
            parts: list[RenderableType] = [self._header()]
            if self._flight:
                parts.append(self._flights())
            if self._best is not None:
                parts.append(self._best_line())
            if self._recent:
                parts.append(self._recent_table())
            return Group(*parts)

    def _header(self) -> Text:
        """One line at any width: the words give way to a terse form, then the task's name is cut
        (an 80-column terminal wrapped `... elapsed of 8:00:00` onto a second line)."""
        elapsed, i, total = clock(time.monotonic() - self._t0), self._index, self._total
        limit = clock(self.hours * 3600) if self.hours else ""
        wordy = [f" · {self.metric} ({'lower' if self.minimize else 'higher'} is better)",
                 f" · trial {i}" + (f" of {total}" if total else ""),
                 f" · {elapsed} elapsed" + (f" of {limit}" if limit else "")]
        terse = [f" · {self.metric} ({'min' if self.minimize else 'max'})",
                 f" · trial {i}" + (f"/{total}" if total else ""), f" · {elapsed}" + (f" / {limit}" if limit else "")]
        width, name = self.console.width, f" · {self.task_name}"
        for parts in (wordy, terse):
            if cell_len("autoresearch" + name + "".join(parts)) <= width:
                break
        else:  # (still too long: the task's name gives way, then the end of the line)
            room = width - cell_len("autoresearch" + "".join(parts))
            name = "" if room < 6 else set_cell_size(name, room - 1) + "…" if cell_len(name) > room else name
        text = Text.assemble(("autoresearch", "bold"), name, *parts)
        text.no_wrap, text.overflow = True, "ellipsis"
        return text

    def _flights(self) -> Table:
        """One line a trial at any width (at 80 columns `experiment running (run 2 of 3, seed 1)`
        and `0 s / 600 s budget` wrapped): the bar shrinks, then gives way, then the phase is cut;
        a phase with no bar may run on into the bar's place, and the clocks stay in line."""
        now, rows = time.monotonic(), []
        for number, f in sorted(self._flight.items()):
            elapsed, kind = now - f.since, phase_kind(f.phase)
            budget = f.budget if f.budget and kind in TIMED else 0.0
            clock = (f"{elapsed:.0f} s / {budget:g} s budget" + (" (over)" if elapsed > budget else "")
                     if budget else f"{elapsed:.0f} s")
            rows.append((f"▶ trial {number}", f"({f.label})", PHASES.get(kind, kind) + f.phase[len(kind):],
                         min(elapsed / budget, 1.0) if budget else None, clock))
        label_w, index_w, clock_w = (max(cell_len(str(r[i])) for r in rows) for i in (0, 1, 4))
        room = self.console.width - label_w - index_w - clock_w - 6  # (three gaps of two)
        timed = [cell_len(name) for _, _, name, done, _ in rows if done is not None]
        bar = min(30, room - max(timed) - 2) if timed else 0
        bar = bar if bar >= 8 else 0
        phase_w = max(1, min(max(timed or [cell_len(r[2]) for r in rows]), room - (bar + 2 if bar else 0)))
        span = phase_w + (bar + 2 if bar else 0)  # (a phase with no bar)
        table = Table.grid(padding=(0, 2))
        for _ in range(3):
            table.add_column(no_wrap=True, overflow="ellipsis")
        for label, index, name, done, clock in rows:
            fit = phase_w if done is not None and bar else span
            name = name if cell_len(name) <= fit else set_cell_size(name, fit - 1) + "…"
            rest = Text(set_cell_size(name, fit) + "  ")
            if done is not None and bar:
                rest.append("━" * round(bar * done), "bar.complete")
                rest.append("━" * (bar - round(bar * done)) + "  ", "bar.back")
            rest.append(clock)
            table.add_row(Text(label, style="bold cyan"), Text(index, style="dim"), rest)
        return table

    def _best_line(self) -> Text:
        """One line at any width, as the top line: a terse form keeps every figure, and past it
        the end is cut (with a gain, a baseline and a cost it wrapped at 80 columns)."""
        best, base = self._best, self._baseline
        assert best is not None
        base = base if base is not None and base.number != best.number else None
        if best.metric is None:  # (a baseline that crashed or was stopped: nothing to beat yet)
            heads = [Text(f"no best {self.metric} yet (trial {best.number} has none)")] * 2
        else:
            figure = (f"{self.metric} {fmt(best.metric)}", "bold green")
            gain = gain_text(best, base, self.minimize)  # ' (-0.123, -9.09% vs baseline)' or ''
            short = gain[2:-1].split(", ")[-1].removesuffix(" vs baseline")  # '-9.09%' (or the delta)
            heads = [Text.assemble("best ", figure, f" (trial {best.number})", (gain, "green")),
                     Text.assemble("best ", figure, f" (#{best.number}", (f", {short}" if gain else "", "green"), ")")]
        baseline = f" · baseline {fmt(base.metric)}" if base is not None else ""
        tails = [f"{baseline} · {self._kept} kept of {self._done} finished · cost {dollars(self._cost)}",
                 f"{baseline} · {self._kept}/{self._done} kept · {dollars(self._cost)}"]
        for head, tail in zip(heads, tails, strict=True):
            line = head + tail
            if line.cell_len <= self.console.width:
                break
        line.no_wrap, line.overflow = True, "ellipsis"
        return line

    def _recent_table(self) -> Table:
        names: list[str] = []
        for t in self._recent:
            names += [k for k in t.figures if k not in names and k not in (self.metric, self.holdout)]
        names = names[:3]

        def width(head: str, cells: list[str]) -> int:  # (a column's and its gap's)
            return max(cell_len(c) for c in [head, *cells]) + 2

        recent = list(self._recent)
        fixed = (width("#", [str(t.number) for t in recent]) + width("status", [t.status.value for t in recent])
                 + width(self.metric, [fmt(t.metric) for t in recent])
                 + width("s", [f"{t.run_seconds:.1f}" for t in recent]))
        # the description keeps DESCRIBED columns: at 80 columns three figures left it 4 ("a de…")
        while names and fixed + sum(width(n, [fmt(t.figures.get(n)) for t in recent]) for n in names) \
                + DESCRIBED > self.console.width:
            names.pop()
        table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold dim")
        for head, justify in [("#", "right"), ("status", "left"), (self.metric, "right"),
                              *((n, "right") for n in names), ("s", "right"), ("description", "left")]:
            table.add_column(head, justify=justify, no_wrap=head != "description",  # type: ignore[arg-type]
                             overflow="ellipsis")
        for t in self._recent:
            why = f"  [{clean_text(t.why, 80)}]" if t.why else ""
            table.add_row(str(t.number), Text(t.status.value, style=STYLES.get(t.status, "")),
                          fmt(t.metric), *(fmt(t.figures.get(n)) for n in names),
                          f"{t.run_seconds:.1f}",
                          Text(clean_text(t.description, 120) + why, overflow="ellipsis", no_wrap=True))
        return table
