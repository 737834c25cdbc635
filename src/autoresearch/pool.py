"""Keeping the slots busy: the threads of a loop with several trials in flight.

A slot measures one trial at a time, with its own GPUs; a worktree belongs to one trial from
its proposal to its verdict. Without proposals ahead each slot asks the agent when it is free
(`Loop._serve`); with K ahead, `pipeline` runs K proposers that fill a queue of ready trials,
which the slots take the moment they free up; one recorder thread writes the verdicts (ledger,
refs, branch) in the order the trials ended, so that a slot does not wait for the fsyncs either.

Guarantees: a trial is opened (recorded as running) only once a worktree is free for it, so at
most W + K trials are open at once; every opened trial is finished before `pipeline` returns (one
left ready by a failed thread is recorded as interrupted); the first error of any thread stops
the loop and is raised in the calling thread.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from autoresearch.gitrepo import Workspace
from autoresearch.records import Status, Trial

if TYPE_CHECKING:
    from autoresearch.loop import Loop


@dataclass(frozen=True)
class Place:
    """Where a trial is measured: its worktree and the GPUs pinned for it."""

    ws: Workspace
    gpus: tuple[str, ...] = ()


def pipeline(loop: Loop, trees: list[Workspace]) -> None:
    """`loop.ahead` proposers and one thread per slot; the last proposer to stop closes the
    queue of ready trials."""
    _Pipeline(loop, trees).run()


class _Pipeline:
    """The queues between the threads: free worktrees -> proposers -> ready trials -> slots ->
    decided trials -> the one recorder, which frees the worktrees again."""

    def __init__(self, loop: Loop, trees: list[Workspace]) -> None:
        self.loop = loop
        self.free: queue.Queue[Workspace] = queue.Queue()
        for w in trees:
            self.free.put(w)
        self.ready: queue.Queue[tuple[Trial, Workspace] | None] = queue.Queue()
        self.done: queue.Queue[tuple[Trial, Workspace] | None] = queue.Queue()
        self.proposers = loop.ahead  # still running (under loop.lock): the last closes `ready`
        self.servers = len(loop.slots)  # ... and the last of these closes `done`

    def run(self) -> None:
        loop = self.loop
        try:
            together([self.propose] * loop.ahead + [partial(self.serve, g) for g in loop.slots] + [self.record],
                     loop.cancel)
        finally:  # a thread failed: record what it left, decided or not
            self.record_left()

    def propose(self) -> None:
        loop = self.loop
        try:
            while (ws := take(self.free, loop.cancel)) is not None:
                try:
                    t = loop._prepare(ws)
                except BaseException:
                    self.free.put(ws)
                    raise
                if t is None or t.status.finished:
                    self.free.put(ws)
                if t is None:
                    return
                if not t.status.finished:
                    loop.events.phase(t.number, "queued")  # proposed; waits for a free slot
                    self.ready.put((t, ws))
        finally:
            with loop.lock:
                self.proposers -= 1
                if self.proposers == 0:
                    for _ in loop.slots:
                        self.ready.put(None)

    def serve(self, gpus: tuple[str, ...]) -> None:
        loop = self.loop
        try:
            while (item := self.ready.get()) is not None:
                try:
                    verdict = loop._verdict(Place(item[1], gpus), item[0])
                except BaseException:
                    self.free.put(item[1])
                    raise
                self.done.put((verdict, item[1]))  # recorded by `record`; this slot goes on at once
        finally:
            with loop.lock:
                self.servers -= 1
                if self.servers == 0:
                    self.done.put(None)

    def record(self) -> None:
        """One thread writes the verdicts (ledger, refs, branch) in the order trials ended; the
        worktree is freed after, so that the next proposal starts from the best it made."""
        while (item := self.done.get()) is not None:
            try:
                self.loop._finish(item[0])
            finally:
                self.free.put(item[1])

    def record_left(self) -> None:
        """Finish every trial a failed thread left decided or ready (the latter as interrupted)."""
        for left in (self.done, self.ready):
            while not left.empty():
                item = left.get_nowait()
                if item is not None:
                    t = item[0] if item[0].status.finished else item[0].with_(
                        status=Status.INTERRUPTED, reason="the loop stopped before it ran")
                    self.loop._finish(t)


def take(free: queue.Queue[Workspace], cancel: threading.Event) -> Workspace | None:
    """A free worktree; None once the loop is stopped (a failed thread may never free one)."""
    while True:
        try:
            return free.get(timeout=0.2)
        except queue.Empty:
            if cancel.is_set():
                return None


def together(jobs: list[Callable[[], None]], cancel: threading.Event) -> None:
    """Run the jobs at once, one thread each (a single job runs in this thread). The first
    error sets `cancel` and is raised when every thread has ended."""
    if len(jobs) == 1:
        jobs[0]()
        return
    errors: list[BaseException] = []

    def guarded(job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as e:  # noqa: BLE001 - re-raised in the calling thread
            errors.append(e)
            cancel.set()

    threads = [threading.Thread(target=guarded, args=(job,), daemon=True, name=f"autoresearch-{i}")
               for i, job in enumerate(jobs)]
    for th in threads:
        th.start()
    for th in threads:
        while th.is_alive():  # timed: a SIGTERM the kernel gave to another thread is handled only
            th.join(0.25)  # once this, the main thread, runs again (an untimed join: never)
    if errors:
        raise errors[0]


def past_the_end(loop: Loop, t: Trial) -> str:
    """Why a proposal prepared ahead must not run its experiment, or "": past the deadline, or
    once the trials that came before it (settled, or measured first: the order they came, not
    their numbers) spent the --max-cost cap. One that may run counts as measured from now on."""
    cap = loop.opt.max_cost
    with loop.lock:
        if cap is not None and sum(x.cost for x in loop.s.ledger.trials()
                                   if x.number != t.number and (x.status.finished or x.number in loop.begun)) >= cap:
            return f"--max-cost ${cap:g}"
        loop.begun.add(t.number)
    return f"--hours {loop.opt.hours:g}" if time.monotonic() >= loop.deadline else ""
