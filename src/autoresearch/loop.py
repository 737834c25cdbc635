"""The loop: propose -> guard -> commit -> run -> measure -> decide -> record -> repeat.

Guarantees (with the ledger's): every trial is recorded as running before anything of it
happens and as finished after its fate is known; its commit is reachable under
refs/autoresearch/<tag>/trials/<n> whatever that fate; the branch moves only on keep, after the
ledger says keep (a kill in between is repaired on resume); the user's checkout is never used.

Concurrency: W slots measure W trials at once, each trial in its own worktree (with its own GPUs
when given). With agent concurrency K > 0 up to K proposals are prepared while the slots run
(pipelining), so that a slot that frees up starts the next trial at once; with K = 0 a slot asks
the agent when it frees up. A trial starts from the best commit of the moment its proposal
begins; when it finishes it is kept only if it beats the best of that later moment (decisions
are taken one at a time under `lock`), and then its whole tree becomes the new best. Calls to one
agent are serialised unless it declares `concurrent = True`; the agent is told of finished trials
before its next proposal. W = 1 and K = 0 is the plain sequential loop, in the calling thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import threading
import time
from functools import partial
from pathlib import Path

from autoresearch import audit, decide, guard
from autoresearch.accept import Acceptance
from autoresearch.agents.base import Agent, AgentError, Context
from autoresearch.agents.secrets import redact as redact_keys
from autoresearch.backends import Backend
from autoresearch.backends.local import LocalBackend
from autoresearch.envguard import site_dirs
from autoresearch.errors import AutoresearchError
from autoresearch.events import Events, NullEvents, dollars
from autoresearch.execute import python_bin
from autoresearch.gitrepo import GitError, Refused, Workspace
from autoresearch.judge import Measurement
from autoresearch.ledger import clean_text
from autoresearch.measure import Measurer
from autoresearch.metrics import unrecorded, unsealed_mention
from autoresearch.options import Options
from autoresearch.pool import Place, past_the_end, pipeline, together
from autoresearch.process import adopt_orphans, log_digests, read_tail
from autoresearch.prompt import visible
from autoresearch.records import AUDITED, UNMEASURED, Status, Trial, finite
from autoresearch.session import Session, hold_ref, stand_in, trees_of, trial_message, write_refs
from autoresearch.setupstep import missing_hint, setup_in_view
from autoresearch.streak import DONE, FATAL, FATAL_REPEATS, RECOVERABLE, Streak
from autoresearch.task import list_files, task_warnings
from autoresearch.watch import Watch


class Loop:
    def __init__(self, session: Session, agent: Agent, options: Options | None = None,
                 events: Events | None = None, backend: Backend | None = None) -> None:
        self.s = session
        self.task = session.task
        self.agent = agent
        self.opt = options or Options()
        self.events: Events = events or NullEvents()
        self.cancel = threading.Event()
        # one shim folder per interpreter (two loops run by different Pythons: each its `python`)
        shim_dir = session.dir.parent / "bin" / hashlib.sha256(sys.executable.encode()).hexdigest()[:8]
        self.bin_dir, note = python_bin(shim_dir)
        if note:
            self.events.message(note)
        from autoresearch.sandbox import require, seal_warning

        if self.opt.sandbox and not (backend and backend.remote):  # built per trial in execute();
            require()  # here only: can it be built? (a remote worker's bwrap is checked there)
        self.backend: Backend = backend or LocalBackend(self.opt.gpus, self.opt.gpus_per_trial)
        self.slots = self.backend.slots(self.opt.workers)  # the GPUs of each trial in flight
        ahead = self.opt.agent_concurrency
        self.ahead = ahead if ahead is not None else (0 if len(self.slots) == 1 else 1)
        self.lock = threading.RLock()  # the best, the trees, the count: one decision at a time
        self.begun: set[int] = set()  # trials whose experiment started (prepared ahead: for --max-cost)
        self.agent_lock: contextlib.AbstractContextManager[object] = (
            contextlib.nullcontext() if getattr(agent, "concurrent", False) else threading.Lock())
        self.untold: list[Trial] = []  # finished trials the agent is yet to observe
        self.done = 0
        self.trees: dict[str, int] = {}
        self.best: Trial | None = session.ledger.best()
        self.baseline: Trial | None = session.ledger.get(0)
        self.deadline = time.monotonic() + (self.opt.hours * 3600 if self.opt.hours is not None else float("inf"))
        self.streak = Streak()  # agent errors in a row
        self.snapshot_errors = 0  # changes git could not commit, in a row
        self.observe_failed = False  # (said once)
        self.failure = ""  # why the loop stopped itself (exit 1)
        self.ended = ""  # why it stopped, whatever the reason
        self.measure = Measurer(session, self.backend, self.events, self.cancel, self.bin_dir, self.opt.sandbox)
        self.measure.beside = len(self.slots) + self.ahead > 1  # (an agent working ahead runs beside too)
        self.measure.fail = partial(self._fail, at_once=False)
        self.accept = Acceptance(self.task, session.ledger, self.measure, self.events)
        if unsealed := "" if self.opt.sandbox else seal_warning(self.task, self.measure.beside and not self.backend.remote):
            self.events.message(f"autoresearch: {unsealed}")  # (as every warning of the loop's)
        root_files = list_files(self.task.root)
        for warning in task_warnings(self.task, root_files, {r for r, _ in self.measure.setup.shared}, self.backend.remote):
            self.events.message(f"autoresearch: warning: {warning}")
        shim = self.bin_dir == shim_dir  # (else the user's active environment's)
        self.watch = Watch(session, self.events, root_files, self.bin_dir, shim,
                           [] if self.backend.remote else site_dirs(self.bin_dir, self.measure.env(0, self.opt.seed)),
                           several=len(self.slots) + self.ahead > 1)

    # -- the whole loop -------------------------------------------------------------------

    def run(self) -> Trial:
        if not adopt_orphans() and sys.platform.startswith("linux") and not self.backend.remote:
            self.events.message("autoresearch: warning: this process cannot be a subreaper (it carries a finite "
                                "RLIMIT_RTTIME): what an experiment leaves after killing its reaper is not found")
        start = self.best.commit if self.best and self.best.commit else self.s.base
        if forged := self.watch.forged(start):
            raise AutoresearchError(f"{forged}: the code it would start from is not the code it names")
        ws = self.s.workspace(0, start)
        self.measure.protected = guard.hash_files(ws.path, self.task.protected_files(ws.path))
        history = self.s.ledger.trials()
        for t in history:
            if t.status.finished:
                self._observe(visible(t, self.task.metric.holdout))
        self._index_trees(history)
        if not self.backend.remote:  # a remote backend sets up each node where the code runs
            env = self.measure.env(0, self.opt.seed, self.slots[0])
            self.measure.setup = setup_in_view(self.s, ws, env, self.events, self.cancel)  # (no sandbox)
            self.watch.after_setup(self.measure.setup)
        if self.best is None:
            self.best = self._baseline(Place(ws, self.slots[0]))
        else:
            if going_on := getattr(self.events, "going_on", None):  # (an Events of a library user's may lack it)
                going_on(self.best, self.baseline, self.total_cost())
        assert self.best.commit
        trees = [ws] + [self.s.workspace(i, self.best.commit)
                        for i in range(1, len(self.slots) + self.ahead)]
        if self.ahead == 0:
            together([partial(self._serve, Place(w, g)) for w, g in zip(trees, self.slots, strict=True)],
                     self.cancel)
        else:
            pipeline(self, trees)
        with self.agent_lock:
            self._tell_agent()
        self.watch.at_end()
        if self.failure:
            raise AutoresearchError(self.failure)
        return self.best

    def record_end(self, why: str = "") -> None:
        """Keep in the ledger how this run ended (when, why, how many trials), for `status`."""
        stopped = "stopped by a signal (Ctrl-C, SIGTERM or SIGHUP)" if self.cancel.is_set() else ""
        why = why or self.failure or stopped or self.ended or "ended"  # (a signal after the last trial
        # was opened ended the run, not "--trials N done")
        with contextlib.suppress(Exception):  # (a full disk must not hide the real error)
            self.s.ledger.set_meta("last_run", json.dumps({"ended": time.time(), "why": why, "trials": self.done}))

    def stop(self) -> None:
        """Ask the loop to stop (Ctrl-C): the experiments in flight are killed and recorded."""
        self.cancel.set()

    def _should_stop(self, done: int) -> bool:
        """Whether to open no more trials; `ended` says why (kept in the ledger for `status`)."""
        if self.cancel.is_set():
            self.ended = self.ended or "stopped by a signal (Ctrl-C, SIGTERM or SIGHUP)"
            return True
        if self.ended or self.failure:  # (the agent has nothing left to propose; a failure that recurs)
            return True
        if self.opt.trials is not None and done >= self.opt.trials:
            self.ended = f"--trials {self.opt.trials} done"
            return True
        if time.monotonic() >= self.deadline:
            self.ended = f"--hours {self.opt.hours:g} reached"
            self.events.message(f"{self.ended}: stopping")
            return True
        if self.opt.max_cost is not None and self.total_cost() >= self.opt.max_cost:
            self.ended = f"--max-cost ${self.opt.max_cost:g} reached ({dollars(self.total_cost())} spent)"
            self.events.message(f"{self.ended}: stopping")
            return True
        return False

    def total_cost(self) -> float:
        return self.s.ledger.total_cost()

    def _serve(self, at: Place) -> None:
        """A slot without proposals ahead (pool.py has those): ask the agent when free,
        measure; until the loop stops."""
        while (t := self._prepare(at.ws)) is not None:
            if not t.status.finished:
                self._run(at, t)

    # -- the baseline ---------------------------------------------------------------------

    def _baseline(self, at: Place) -> Trial:
        number = self.s.ledger.next_number()
        commit = self.s.base
        self.events.trial_started(number, 0, self.opt.trials)
        t = Trial(number=number, status=Status.RUNNING, description="baseline", parent=None,
                  commit=commit, agent="baseline", started=time.time(), seed=self.opt.seed,
                  log_path=str(self.measure.log(number)))
        self.s.ledger.begin(t)
        runs = self.task.acceptance.baseline_runs
        m = self.measure.repeats(at, t, commit, runs, first_seed=self.opt.seed)
        if self.cancel.is_set() and m.status is not Status.INTERRUPTED:  # (Ray: it came back after the stop)
            m = Measurement(Status.INTERRUPTED, m.figures, "stopped while the baseline ran", m.seconds)
        with self.lock:  # what its experiment did to your checkout is noted on it, not on trial 1
            t = self.watch.note(t, "experiment")
        if m.status is not None:
            self._finish(t.with_(status=m.status, reason=m.reason, run_seconds=m.seconds, figures=m.figures))
            if m.status is Status.INTERRUPTED:
                raise KeyboardInterrupt
            log = m.log or self.measure.log(number)
            hint = missing_hint(self.s, read_tail(Path(log)), self.opt.sandbox)
            raise AutoresearchError(f"the baseline (trial {number}) failed: {m.reason}{hint}; "
                                    f"see {log} (tag {self.s.tag} stays on the code it started "
                                    f"from, {self.s.base[:7]}: if the code is at fault, commit a fix and start a new --tag; if "
                                    "the machine was (a package, a file), run the same command again)")
        missing = unrecorded(self.task.metric, m.figures, bool(self.task.evaluate))
        if missing:
            self.events.message(missing)
        noise = decide.noise([r[self.task.metric.name] for r in m.repeats])
        self.s.ledger.set_meta("noise", repr(noise))
        t = t.with_(status=Status.KEEP, figures=m.figures, repeats=m.repeats if runs > 1 else [],
                    metric=m.figures[self.task.metric.name], run_seconds=m.seconds,
                    extra={"noise": noise} if runs > 1 else {})
        self._finish(t)
        self._index_trees([t])  # a change that takes the code back to the baseline's is a duplicate
        self.baseline = t
        return t

    # -- one trial ------------------------------------------------------------------------

    def _open(self) -> tuple[Trial, Trial] | None:
        """Record the next trial as running, child of the best of this moment; returns it and
        that best, or None when the loop should stop."""
        with self.lock:
            if self._should_stop(self.done):
                return None
            self.done += 1
            parent = self.best
            assert parent is not None and parent.commit
            t = self.s.ledger.begin_next(lambda n: Trial(
                number=n, status=Status.RUNNING, parent=parent.commit, agent=self.agent.name,
                started=time.time(), seed=self.opt.seed, log_path=str(self.measure.log(n))))
            self.events.trial_started(t.number, self.done, self.opt.trials)
        return t, parent

    def _prepare(self, ws: Workspace) -> Trial | None:
        """Open a trial and have the agent change the best code in `ws`; commit the change.
        None when the loop should stop; the trial still running when it is to be measured,
        finished when it is not (agent error, rejected, duplicate)."""
        with self.agent_lock:
            opened = self._open()
            if opened is None:
                return None
            t, parent = opened
            parent_commit = t.parent or ""
            self.s.git.reset_worktree(ws, parent_commit)
            self.events.phase(t.number, "agent")
            self._tell_agent()
            history = tuple(visible(x, self.task.metric.holdout) for x in self.s.ledger.trials())
            ctx = Context(task=self.task, workdir=ws.path, number=t.number,
                          best=visible(parent, self.task.metric.holdout), history=history,
                          log_path=self.s.dir / "agent" / f"{t.number}.log", ledger_dir=self.s.dir,
                          time_limit=self.opt.agent_timeout, cancel=self.cancel, beside=self.measure.beside,
                          sealed=self.s.sealed)
            t, error, fatal = self._ask_agent(ctx, t)
        with self.lock:  # before git reads the worktree: a filter driver, a hook put in place is gone
            tamper = self.watch.tampering(t.number, "agent", ws)
        t, changes, tree = self._commit(ws, t, parent_commit, tamper, error, fatal)
        if changes is None:  # finished: git could not commit the change
            return t
        self.s.ledger.update(t)  # (and its ref now, not at the verdict: a `git prune` must not take it)
        with self.lock:
            self.watch.git.took(hold_ref(self.s, t))
        if error and self.cancel.is_set():
            return self._finish(t.with_(status=Status.INTERRUPTED, reason="stopped while the agent ran"))
        if error:
            return self._agent_failed(t, error, fatal)
        self.streak.ok()
        with self.lock:
            reason = "; ".join(w for w in (guard.check_changes(self.task, changes, ws.path), tamper) if w)
            t = self.watch.note(t, "agent")
            if not reason and getattr(self.agent, "runs_commands", True) and any("refs/stash" in f for f in t.flags):
                reason = ("git's stash changed while the agent ran: it is shared with your repository and "
                          "with other trials, so the change may hold work that is not the agent's")
            same = self.trees.get(tree)
            if not reason and same is None:
                self.trees[tree] = t.number
        if reason:
            t = self._finish(t.with_(status=Status.REJECTED, reason=reason))
        elif same is not None:
            t = self._repeat(t, tree, same)
        return self.streak.pace(t, self.events, self.cancel, last=self.opt.trials is not None and self.done >= self.opt.trials)

    def _repeat(self, t: Trial, tree: str, same: int) -> Trial:
        """`t` is the same code as trial `same`: a duplicate with its figures, not run again.
        While `same` is in flight this waits for its verdict; one that was not measured
        (interrupted, rejected) leaves the code to `t`, which is then run."""
        first = self.s.ledger.get(same)
        if first is not None and first.status is Status.RUNNING:
            self.events.phase(t.number, f"same code as trial {same}, in flight: waiting for its figures")
            while (first := self.s.ledger.get(same)) is not None and first.status is Status.RUNNING:
                if self.cancel.wait(0.2):
                    return self._finish(t.with_(status=Status.INTERRUPTED,
                                                reason=f"stopped while it waited for trial {same} (the same code)"))
        if first is None or first.status in UNMEASURED:
            with self.lock:
                if self.trees.get(tree) is None:  # (its entry went with the first's verdict)
                    self.trees[tree] = t.number
                    return t
                same = self.trees[tree]  # another proposal took the code meanwhile
            return self._repeat(t, tree, same)
        copied = {"metric": first.metric, "figures": dict(first.figures)} if first.metric is not None else {}
        return self._finish(t.with_(status=Status.DUPLICATE, reason=f"same code as trial {same}", log_path=first.log_path,
                                    **copied))  # (not run: its log is the one of the run its figures come from)

    def _commit(self, ws: Workspace, t: Trial, parent: str, tamper: str | None, error: str,
                fatal: str) -> tuple[Trial, list | None, str]:
        """(the trial with its commit, the changes, the tree), or (the trial finished, None, "")
        when git could not commit the change: refused (lib/.GIT/x.py, a new .gitattributes), it
        is rejected; another failure (a full disk) three times in a row stops the loop."""
        try:
            commit, changes, tree = self.s.git.snapshot(ws, parent, trial_message(self.s, t))
        except GitError as e:
            if self.cancel.is_set():
                return self._finish(t.with_(status=Status.INTERRUPTED, reason="stopped while its change was committed")), None, ""
            said = str(e).strip().splitlines()[0] if str(e).strip() else "git failed"
            said = said if isinstance(e, Refused) else f"git could not commit the change, so it was not run: {said}"
            with self.lock:  # a commit of the parent's code stands for it: every trial is a commit
                t = self.watch.note(t, "agent").with_(commit=stand_in(self.s, t, parent, f"({said[:300]})"))
            if error:  # the agent failed too: that is what the trial says
                return self._agent_failed(t, error, fatal), None, ""
            self.snapshot_errors += 0 if isinstance(e, Refused) else 1
            if self.snapshot_errors >= FATAL_REPEATS:
                raise
            return self._finish(t.with_(status=Status.REJECTED, reason=clean_text(tamper or said, 300))), None, ""
        self.snapshot_errors = 0
        left = guard.ignored_editable(self.task, self.s.git.ignored.get(ws.path, []))
        return t.with_(commit=commit, flags=[*t.flags, left] if left else t.flags), changes, tree

    def _ask_agent(self, ctx: Context, t: Trial) -> tuple[Trial, str, str]:
        """The agent's proposal made in ctx.workdir: the trial with its description, model and
        spending, the error ('' when none) and whether that error will recur (a `streak` kind)."""
        try:
            proposal = self.agent.propose(ctx)
        except AgentError as e:
            error = self._agents_words(str(e), 500) or "agent error"
            said = "(stopped while the agent worked)" if self.cancel.is_set() else f"agent error: {error}"[:200]
            return (t.with_(description=said, model=e.model, tokens_in=e.tokens_in,
                            tokens_out=e.tokens_out, cost=e.cost), error, DONE if e.done else FATAL if e.fatal else RECOVERABLE)
        except Exception as e:  # a bug in an agent must not kill a two-day loop
            import traceback

            ctx.log(traceback.format_exc())
            error = clean_text(f"{type(e).__name__}: {e}", 500)
            return t.with_(description=f"agent error: {error}"[:200]), error, RECOVERABLE
        return (t.with_(description=self._agents_words(proposal.description) or "(no description)",
                        model=proposal.model, tokens_in=proposal.tokens_in, tokens_out=proposal.tokens_out,
                        cost=proposal.cost, extra=dict(proposal.extra)), "", RECOVERABLE)

    def _agents_words(self, text: str, limit: int = 200) -> str:
        """What an agent said, as the record keeps it: keys redacted, the held-out figure sealed."""
        return clean_text(unsealed_mention(redact_keys(text), self.task.metric.holdout), limit)

    def _run(self, at: Place, t: Trial) -> Trial:
        """Measure a prepared trial, decide on it and record it."""
        return self._finish(self._verdict(at, t))

    def _verdict(self, at: Place, t: Trial) -> Trial:
        """A prepared trial measured and decided, not yet recorded. Deciding against a best
        that a pending record is about to improve is safe: the best only gets better, so a
        discard stays one, and `_finish` checks a keep again."""
        commit = t.commit or ""
        if self.cancel.is_set():
            return t.with_(status=Status.INTERRUPTED, reason="stopped before the experiment")
        if self.failure:  # (a failure that stops the loop, not what is in flight: a proposal ahead waits)
            return t.with_(status=Status.INTERRUPTED, reason="not run: the loop was stopping")
        if self.ahead and (past := past_the_end(self, t)):
            return t.with_(status=Status.INTERRUPTED, reason=f"not run: {past} was reached before its experiment")
        m = self.measure.repeats(at, t, commit, 1, first_seed=self.opt.seed)
        if self.cancel.is_set() and m.status is not Status.INTERRUPTED:
            # stopped while it ran (a remote one may finish as its cancel lands): recorded as stopped
            m = Measurement(Status.INTERRUPTED, m.figures, "stopped while the experiment ran", m.seconds)
        if m.status is None:
            assert self.best is not None
            m = self.accept.judge(at, t, commit, m, self.best, self.opt.seed)
        t = t.with_(status=m.status or Status.DISCARD, figures=m.figures,
                    repeats=m.repeats if len(m.repeats) > 1 else [],
                    reason=m.reason, run_seconds=m.seconds, metric=finite(m.figures.get(self.task.metric.name)))
        with self.lock:
            tamper = self.watch.tampering(t.number, "experiment")
            t = self.watch.note(t, "experiment")
        if tamper:
            t = t.with_(status=Status.REJECTED, reason=tamper)
        return t

    def _agent_failed(self, t: Trial, error: str, kind: str) -> Trial:
        """Record `t` as an agent error; stop, end or wait as the `streak` of failures says."""
        t = self._finish(t.with_(status=Status.AGENT_ERROR, reason=error))
        with self.lock:
            stop, n = self.streak.failed(kind), self.streak.errors
            if busy := stop == DONE and self._in_flight(t.number):  # one may yet be kept, and the best
                self.streak.hold()  # it makes have changes untried: asked again once they end
            elif stop == DONE and not self.ended:  # a finished search: the loop ends as it would at --trials
                self.ended = f"the agent has nothing left to propose: {error[:300]}"
                self.events.message(f"autoresearch: stopping: {self.ended}")
            if stop == FATAL:
                self._fail(f"the agent failed {FATAL_REPEATS} times in a row with an error that will not "
                           f"go away by itself: {error[:300]}")
            if stop and not busy:
                return t
        while busy and self._in_flight(t.number) and not self.cancel.wait(0.5):
            continue
        last = self.opt.trials is not None and self.done >= self.opt.trials  # no next proposal to wait for
        if (wait := min(self.streak.wait(), max(0.0, self.deadline - time.monotonic()))) and not last:  # (--hours)
            self.events.message(f"the agent failed {n} times in a row: waiting {wait:g} s before the next proposal")
            self.cancel.wait(wait)
        return t

    def _in_flight(self, but: int) -> bool:
        return any(x.status is Status.RUNNING and x.number != but for x in self.s.ledger.trials())

    def _fail(self, why: str, at_once: bool = True) -> None:
        """Stop the loop for a failure that will recur (exit 1): `at_once`, what is in flight is
        stopped; else it ends as it would. The first failure is what the loop says."""
        with self.lock:
            if not self.failure:
                self.failure = why
                self.events.message(f"autoresearch: stopping: {why}")
                if at_once:
                    self.cancel.set()

    # -- recording --------------------------------------------------------------------------

    def _finish(self, t: Trial) -> Trial:
        """Record the verdict, then make the refs say it: the trial's ref always, the branch
        on keep (checked against the best it should still point to)."""
        log = self.measure.log(t.number)  # `show` says when a log no longer holds what was recorded
        seal = {log.name: "", **log_digests(log, self.s.dir / "sealed" / f"{t.number}.eval.log")}
        t = t.with_(extra={**t.extra, "log_sha256": seal})  # ("": there was none; hashed before the lock)
        with self.lock:  # one decision at a time: a keep must beat the best of this moment
            t = self.accept.still_better(t, self.best).with_(ended=time.time())
            if t.status in AUDITED and t.parent and t.commit:  # (a baseline is checked in run())
                forged = self.watch.forged(t.commit, t.status is Status.KEEP, t.parent)
                if forged:
                    t = t.with_(status=Status.REJECTED, reason=forged)
            lost = self.measure.take_lost(t.number)
            if lost:
                t = t.with_(extra={**t.extra, "lost_workers": lost})
            if t.status in AUDITED and t.parent and t.commit:  # discarded too: how an agent would learn the holdout
                t = t.with_(flags=[*t.flags, *audit.audit_trial(self.s.git, self.task, t.parent, t.commit)])
            self.s.ledger.finish(t)
            self.accept.recorded(t)
            if t.status in UNMEASURED:  # its code may be proposed again
                for tree in [k for k, n in self.trees.items() if n == t.number]:
                    del self.trees[tree]
            self.watch.git.took(write_refs(self.s, t, self.best.commit if self.best else None))
            if not self.opt.keep_runs:
                self.measure.tidy_runs(t, self.best)
            if t.status is Status.KEEP:
                self.best = t
            self.untold.append(visible(t, self.task.metric.holdout))
            self.events.trial_finished(t, self.best or t, self.baseline, self.total_cost())
        return t

    def _tell_agent(self) -> None:
        """Tell the agent of the trials finished since its last proposal (agent lock held)."""
        with self.lock:
            told, self.untold = self.untold, []
        for t in told:
            self._observe(t)

    def _observe(self, t: Trial) -> None:
        """Tell the agent of a finished trial: a bug in an agent must not kill a two-day loop."""
        try:
            self.agent.observe(t)
        except Exception as e:  # noqa: BLE001 - said once; its proposals say the rest
            if not self.observe_failed:
                self.observe_failed = True
                self.events.message(f"autoresearch: warning: the agent could not take in trial {t.number}: "
                                    f"{clean_text(f'{type(e).__name__}: {e}', 300)} (it goes on without it)")

    def _index_trees(self, history: list[Trial]) -> None:
        """The code of each measured trial (a duplicate's is its first's, which stands for it)."""
        measured = [t for t in history if t.status not in UNMEASURED and t.status is not Status.DUPLICATE]
        for tree, number in trees_of(self.s.git, measured).items():
            self.trees.setdefault(tree, number)
