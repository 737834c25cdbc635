"""Measuring a trial: its experiment (then its evaluator) run in the trial's worktree on the
loop's backend, once per seed, and judged into figures.

What a measurement needs besides the trial is fixed for a loop: the task, the hashes of the
protected files, what setup made (linked into every worktree), the interpreter shim, the
backend. A remote worker that dies under a trial costs it one more attempt, noted in `lost`
(the loop puts it in the trial's record).
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path

from autoresearch.backends import Backend
from autoresearch.events import Events
from autoresearch.execute import ExecResult, ExecSpec, experiment_env
from autoresearch.filetree import open_log
from autoresearch.judge import Measurement, judge, mean_figures
from autoresearch.objects import tree_blobs
from autoresearch.pool import Place
from autoresearch.process import MARK, sweep_escaped
from autoresearch.records import Status, Trial
from autoresearch.sandbox import problem as sandbox_problem
from autoresearch.session import Session
from autoresearch.setupstep import SetupOutput, clear_bytecode, clear_cache_prefix, shared_links

LOST_REPEATS = 3  # trials in a row that lost their worker twice: the loop stops
HEAD_GONE = "the Ray cluster's head went away while it ran"
QUEUED = "queued (in Ray, until a node has the resources it asks for free)"  # a remote trial not started yet


class Measurer:
    def __init__(self, session: Session, backend: Backend, events: Events, cancel: threading.Event,
                 bin_dir: Path, sandbox: bool) -> None:
        self.s = session
        self.task = session.task
        self.backend = backend
        self.events = events
        self.cancel = cancel
        self.bin_dir = bin_dir
        self.sandbox = sandbox
        self.protected: dict[str, str] = {}  # path -> sha256, taken from the starting code
        self.setup = SetupOutput(session.dir / "setup", shared=shared_links(self.task))  # linked into each trial
        self.beside = False  # other trials run beside these (--workers): their processes may write here
        self.lost: dict[int, list[str]] = {}  # trial -> the remote workers lost under it
        self._lost_lock = threading.Lock()
        self.lost_twice = 0  # trials in a row whose second attempt lost its worker too
        self.fail: Callable[[str], None] = lambda why: None  # stops the loop (exit 1): the Loop's

    def tidy_runs(self, t: Trial, best: Trial | None) -> None:
        """Keep the best trial's run folder only: a repeat's (runs/<n>.<i>) goes at once (its
        figures are recorded), a trial's when it is not kept, the old best's when it is."""
        runs = self.s.dir / "runs"
        gone = list(runs.glob(f"{t.number}.*"))
        if t.status is not Status.KEEP:
            gone.append(runs / str(t.number))
        elif best is not None:
            gone.append(runs / str(best.number))
        for folder in gone:
            shutil.rmtree(folder, ignore_errors=True)

    def log(self, number: int, suffix: str = "") -> Path:
        return self.s.dir / "logs" / f"{number}{suffix}.log"

    def env(self, number: int, seed: int, gpus: tuple[str, ...] = (), commit: str = "") -> dict[str, str]:
        extra = {"AUTORESEARCH_TIME_BUDGET": self.task.budget_env,
                 "AUTORESEARCH_SEED": str(seed), "AUTORESEARCH_TRIAL": str(number),
                 "AUTORESEARCH_TAG": self.s.tag}
        if commit:  # (on Ray the code travels without .git: this is how a run there knows it)
            extra["AUTORESEARCH_COMMIT"] = commit
        if gpus:
            extra["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        return experiment_env(dict(os.environ), extra, self.bin_dir)

    def repeats(self, at: Place, t: Trial, commit: str, runs: int, first_seed: int,
                offset: int = 0) -> Measurement:
        """Run the experiment `runs` times (seeds first_seed, first_seed+1, ... below 2**32, as
        --seed is: what numpy takes); figures are the means, each run's own in `repeats`. Stops
        at the first run that fails."""
        repeats: list[dict[str, float]] = []
        seconds = 0.0
        for i in range(runs):
            if i and self.cancel.is_set():  # (a run of a few ms ends before its wait looks at the stop)
                return Measurement(Status.INTERRUPTED, reason=f"stopped before run {offset + i + 1} of "
                                   f"{offset + runs}", seconds=seconds)
            seed = (first_seed + i) % 2**32
            which = f" (run {offset + i + 1} of {offset + runs}, seed {seed})" if runs > 1 or offset else ""
            running = partial(self.events.phase, t.number, f"running{which}", self.task.time_budget)
            m = self.once(at, t, commit, seed, offset + i, running)
            seconds += m.seconds
            if m.status is not None:
                m.seconds = seconds
                if runs > 1 or offset:  # which of them, and its own log
                    index = offset + i
                    m.log = str(self.log(t.number, f".{index}" if index else ""))
                    m.reason = f"run {i + 1} of {runs} (seed {seed}, log {Path(m.log).name}): {m.reason}"
                return m
            repeats.append(m.figures)
        return Measurement(None, mean_figures(repeats), "", seconds, repeats)

    def once(self, at: Place, t: Trial, commit: str, seed: int, index: int,
             running: Callable[[], None] | None = None) -> Measurement:
        """One run of the experiment; `running()` when it starts (a remote backend's trial is
        queued until a node takes it)."""
        spec = self._spec(at, t.number, commit, seed, index)
        restore = partial(self._restore, at, t.number, commit)
        if not self.backend.remote:
            self._fresh_worktree(at, t.number, commit, index)
        result = self._run(spec, restore, running)
        if result.outcome == "lost" and not self._head_gone():  # a remote worker died under it:
            result = self._second_attempt(t, spec, restore, running, result.output)  # recorded, run once more
            if result.outcome == "lost" and self._head_gone():
                return Measurement(Status.INTERRUPTED, reason=HEAD_GONE, seconds=result.seconds)
            self._count_lost_twice(result)
        elif result.outcome == "lost":  # (and the head is gone)
            return Measurement(Status.INTERRUPTED, reason=HEAD_GONE, seconds=result.seconds)
        elif not self.cancel.is_set():
            with self._lost_lock:
                self.lost_twice = 0
        return judge(self.task, result, spec.run_dir, at.ws.path)

    def _spec(self, at: Place, n: int, commit: str, seed: int, index: int) -> ExecSpec:
        """What the backend needs to run trial `n`'s `index`-th run (its log, run folder, env)."""
        suffix = "" if index == 0 else f".{index}"
        return ExecSpec(
            number=n, workdir=at.ws.path, run_dir=self.s.dir / "runs" / f"{n}{suffix}",
            log_path=self.log(n, suffix), command=self.task.command,
            timeout=self.task.timeout, env=self.env(n, seed, at.gpus, commit), protected=self.protected,
            evaluate=self.task.evaluate, owner=f"{self.s.owner}:{n}", sandbox=self.sandbox,
            seal=bool(self.task.metric.holdout) or (self.beside and not self.backend.remote),  # (sealed from
            # the other worktrees; a Ray worker's are elsewhere)
            hidden=(self.s.dir.parent, *self.s.sealed),
            readable=(self.task.root, self.bin_dir, self.setup.store, *(p.resolve() for _, p in self.setup.shared)),
            holdout=self.task.metric.holdout, eval_file=self.task.metric.file,
            eval_log=self.s.dir / "sealed" / f"{n}{suffix}.eval.log",
            watched=self._editable_blobs(commit) if self.beside and not self.backend.remote and not self.sandbox
            and sandbox_problem() is not None else {},  # (unsealed: what is left is to see a write)
        )

    def _restore(self, at: Place, n: int, commit: str) -> None:
        """The committed tree, and what setup made, for the evaluator."""
        if self.task.evaluate and not self.backend.remote:  # (no budget: the evaluator has its
            self.events.phase(n, "evaluating")  # own timeout; a remote backend restores to send the code)
        self.s.git.reset_worktree(at.ws, commit)
        if not self.backend.remote:  # (a remote node links its own: the code travels without links)
            self.setup.link_into(at.ws.path)
            clear_bytecode(self.setup.store)  # (a .pyc the experiment planted beside a module setup made)
            clear_cache_prefix(at.ws.path, self.setup.store)  # (or under PYTHONPYCACHEPREFIX)

    def _fresh_worktree(self, at: Place, n: int, commit: str, index: int) -> None:
        """What came back to the loop meanwhile (a driver git ran, planted by an experiment beside
        this one) goes first; then the worktree is made the commit again: a repeat must not find
        what the first run left, nor any run what a process beside it wrote."""
        stray = sweep_escaped(MARK)  # (the harness's git's, and unnamed ones)
        if stray:
            self.events.message(f"autoresearch: warning: killed before trial {n} ran, left running by "
                                f"another command: {'; '.join(stray)[:300]}")
        if index or stray or self.beside:  # (alone, the worktree is the commit the snapshot made)
            self.s.git.reset_worktree(at.ws, commit)
        self.setup.link_into(at.ws.path)

    def _run(self, spec: ExecSpec, restore: Callable[[], None],
             running: Callable[[], None] | None) -> ExecResult:
        try:
            if self.backend.remote:
                self.events.phase(spec.number, QUEUED)
            return self.backend.run(spec, restore, self.cancel, running)
        except OSError as e:  # what the experiment left defeats the harness (a folder where its log
            if e.errno in (errno.ENOSPC, errno.EDQUOT):  # or metric file goes): the trial's fault, not
                raise  # the loop's; a full disk stops the loop (docs/reliability.md)
            return ExecResult("crash", None, 0.0, f"the harness could not handle what the experiment left: {e}")

    def _second_attempt(self, t: Trial, spec: ExecSpec, restore: Callable[[], None],
                        running: Callable[[], None] | None, first: str) -> ExecResult:
        """Run a trial whose remote worker was lost (`first` says how) once more, the loss noted
        in its record and at the head of its log."""
        self._note_lost(t, first)
        self.events.phase(t.number, QUEUED)
        result = self.backend.run(spec, restore, self.cancel, running)
        try:  # (the note heads the log: what follows it is the second attempt's output)
            second = spec.log_path.read_bytes()
        except OSError:
            second = b""
        with open_log(spec.log_path) as log:
            log.write(f"=== autoresearch: second attempt, whose output follows; the worker of the first was "
                      f"lost: {first[:200]} ===\n".encode("utf-8", errors="replace") + second)
        return result

    def _count_lost_twice(self, result: ExecResult) -> None:
        """A cluster whose nodes are gone loses every trial in a second: the loop stops after
        LOST_REPEATS such trials in a row (not all night)."""
        with self._lost_lock:
            self.lost_twice = self.lost_twice + 1 if result.outcome == "lost" else 0
            n = self.lost_twice
        if n >= LOST_REPEATS:  # (outside the lock: the loop's, taken in there, is held around take_lost)
            self.fail(f"the Ray workers of {n} runs in a row were lost, each run twice: has the "
                      f"cluster lost its nodes (`ray status`)? The last: {result.output[:200]}")

    def _head_gone(self) -> bool:
        """Whether the remote cluster's head is gone (the backend says why): the loop stops."""
        if gone := getattr(self.backend, "gone", ""):
            self.fail(gone)
        return bool(gone)

    def _editable_blobs(self, commit: str) -> dict[str, str]:
        """The editable files of `commit` (path -> git object name), less the metric file."""
        return {path: sha for path, mode, sha, _ in tree_blobs(self.s.git, commit, check=False)
                if mode != "120000" and self.task.is_editable(path) and path != self.task.metric.file}

    def _note_lost(self, t: Trial, why: str) -> None:
        with self._lost_lock:
            lost = self.lost.setdefault(t.number, [])
            lost.append(why)
            self.s.ledger.update(t.with_(extra={**t.extra, "lost_workers": list(lost)}))
        self.events.message(f"[trial {t.number}] its worker was lost ({why[:200]}); re-queued once")

    def take_lost(self, number: int) -> list[str]:
        """The workers lost under trial `number` (forgotten here: the trial records them)."""
        with self._lost_lock:
            return self.lost.pop(number, [])
