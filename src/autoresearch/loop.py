"""The loop: propose -> guard -> commit -> run -> measure -> decide -> record -> repeat.

Guarantees (with the ledger's): every trial is recorded as running before anything of it
happens and as finished after its fate is known; its commit is reachable under
refs/autoresearch/<tag>/trials/<n> whatever that fate; the branch moves only on keep, after the
ledger says keep (a kill in between is repaired on resume); the user's checkout is never used.
"""

from __future__ import annotations

import shutil
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from autoresearch import decide, guard
from autoresearch.agents.base import Agent, AgentError, Context
from autoresearch.errors import AutoresearchError
from autoresearch.events import Events, NullEvents
from autoresearch.execute import ExecResult, ExecSpec, execute, experiment_env, python_shim
from autoresearch.gitrepo import GitError, Workspace
from autoresearch.ledger import clean_text
from autoresearch.metrics import MetricError, extract, metric_problem, reject_reason
from autoresearch.process import last_lines
from autoresearch.records import Status, Trial
from autoresearch.session import Session, branch_ref, run_setup, trial_ref


@dataclass
class Options:
    trials: int | None = None  # new trials in this invocation (the baseline not counted)
    hours: float | None = None
    seed: int = 0
    agent_timeout: float | None = None
    gpus: tuple[str, ...] = ()
    sandbox: bool = False
    keep_runs: bool = False
    max_cost: float | None = None


@dataclass
class Measurement:
    status: Status | None  # None: a valid measurement
    figures: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    seconds: float = 0.0
    repeats: list[dict[str, float]] = field(default_factory=list)


def visible(trial: Trial, holdout: str | None) -> Trial:
    """The trial as an agent may see it: the sealed holdout figure removed."""
    if not holdout:
        return trial
    return trial.with_(figures={k: v for k, v in trial.figures.items() if k != holdout},
                       repeats=[{k: v for k, v in r.items() if k != holdout} for r in trial.repeats])


class Loop:
    def __init__(self, session: Session, agent: Agent, options: Options | None = None,
                 events: Events | None = None) -> None:
        self.s = session
        self.task = session.task
        self.agent = agent
        self.opt = options or Options()
        self.events: Events = events or NullEvents()
        self.cancel = threading.Event()
        self.bin_dir = python_shim(session.dir.parent / "bin")
        self.gitguard = guard.GitGuard(session.git.common_dir)
        self.wrap: list[str] | None = None
        if self.opt.sandbox:
            from autoresearch.sandbox import sandbox_prefix

            self.wrap = sandbox_prefix(self.s)
        self.trees: dict[str, int] = {}
        self.best: Trial | None = session.ledger.best()
        self.baseline: Trial | None = session.ledger.get(0)
        self.protected: dict[str, str] = {}
        self.started = time.monotonic()

    # -- the whole loop -------------------------------------------------------------------

    def run(self) -> Trial:
        ws = self.s.workspace(0, self.best.commit if self.best and self.best.commit else self.s.base)
        self.protected = guard.hash_files(ws.path, self.task.protected_files(ws.path))
        history = self.s.ledger.trials()
        for t in history:
            if t.status.finished:
                self.agent.observe(visible(t, self.task.metric.holdout))
        self._index_trees(history)
        run_setup(self.s, ws, self._env(0, self.opt.seed), self.wrap)
        if self.best is None:
            self.best = self._baseline(ws)
        done = 0
        while not self._should_stop(done):
            number = self.s.ledger.next_number()
            done += 1
            self.events.trial_started(number, done, self.opt.trials)
            self._trial(ws, number)
        return self.best

    def stop(self) -> None:
        """Ask the loop to stop (Ctrl-C): the in-flight experiment is killed and recorded."""
        self.cancel.set()

    def _should_stop(self, done: int) -> bool:
        if self.cancel.is_set():
            return True
        if self.opt.trials is not None and done >= self.opt.trials:
            return True
        if self.opt.hours is not None and time.monotonic() - self.started >= self.opt.hours * 3600:
            self.events.message(f"--hours {self.opt.hours:g} reached: stopping")
            return True
        if self.opt.max_cost is not None and self.total_cost() >= self.opt.max_cost:
            self.events.message(f"--max-cost ${self.opt.max_cost:g} reached (${self.total_cost():.2f}): stopping")
            return True
        return False

    def total_cost(self) -> float:
        return sum(t.cost for t in self.s.ledger.trials())

    # -- the baseline ---------------------------------------------------------------------

    def _baseline(self, ws: Workspace) -> Trial:
        number = self.s.ledger.next_number()
        commit = self.s.base
        self.events.trial_started(number, 0, self.opt.trials)
        t = Trial(number=number, status=Status.RUNNING, description="baseline", parent=None,
                  commit=commit, agent="baseline", started=time.time(), seed=self.opt.seed,
                  log_path=str(self._log(number)))
        self.s.ledger.begin(t)
        runs = self.task.acceptance.baseline_runs
        m = self._measure_repeats(ws, t, commit, runs, first_seed=self.opt.seed)
        if m.status is not None:
            self._finish(t.with_(status=m.status, reason=m.reason, run_seconds=m.seconds, figures=m.figures))
            if m.status is Status.INTERRUPTED:
                raise KeyboardInterrupt
            raise AutoresearchError(f"the baseline (trial {number}) failed: {m.reason}; "
                                    f"see {self._log(number)}")
        noise = decide.noise([r[self.task.metric.name] for r in m.repeats])
        self.s.ledger.set_meta("noise", repr(noise))
        t = t.with_(status=Status.KEEP, figures=m.figures, repeats=m.repeats if runs > 1 else [],
                    metric=m.figures[self.task.metric.name], run_seconds=m.seconds,
                    extra={"noise": noise} if runs > 1 else {})
        self._finish(t)
        self.baseline = t
        return t

    # -- one trial ------------------------------------------------------------------------

    def _trial(self, ws: Workspace, number: int) -> Trial:
        assert self.best is not None and self.best.commit
        parent = self.best
        parent_commit: str = self.best.commit
        t = Trial(number=number, status=Status.RUNNING, parent=parent.commit, agent=self.agent.name,
                  started=time.time(), seed=self.opt.seed, log_path=str(self._log(number)))
        self.s.ledger.begin(t)
        self.s.git.reset_worktree(ws, parent_commit)
        self.events.phase(number, "agent")
        history = tuple(visible(x, self.task.metric.holdout) for x in self.s.ledger.trials())
        ctx = Context(task=self.task, workdir=ws.path, number=number,
                      best=visible(parent, self.task.metric.holdout), history=history,
                      log_path=self.s.dir / "agent" / f"{number}.log", ledger_dir=self.s.dir,
                      time_limit=self.opt.agent_timeout)
        error = ""
        try:
            proposal = self.agent.propose(ctx)
            t = t.with_(description=clean_text(proposal.description) or "(no description)",
                        model=proposal.model, tokens_in=proposal.tokens_in,
                        tokens_out=proposal.tokens_out, cost=proposal.cost,
                        extra=dict(proposal.extra))
        except AgentError as e:
            error = clean_text(str(e), 500) or "agent error"
            t = t.with_(description=f"agent error: {error}"[:200])
        except Exception as e:  # a bug in an agent must not kill a two-day loop
            import traceback

            ctx.log(traceback.format_exc())
            error = clean_text(f"{type(e).__name__}: {e}", 500)
            t = t.with_(description=f"agent error: {error}"[:200])
        commit, changes, tree = self.s.git.snapshot(ws, parent_commit, t.description)
        t = t.with_(commit=commit)
        self.s.ledger.update(t)  # its ref is made with the verdict; resume remakes it from here
        if error:
            return self._finish(t.with_(status=Status.AGENT_ERROR, reason=error))
        if self.cancel.is_set():
            return self._finish(t.with_(status=Status.INTERRUPTED, reason="stopped before the experiment"))
        reason = guard.check_changes(self.task, changes, ws.path) or self.gitguard.check_and_restore()
        if reason:
            return self._finish(t.with_(status=Status.REJECTED, reason=reason))
        if tree in self.trees:
            return self._finish(t.with_(status=Status.DUPLICATE,
                                        reason=f"same code as trial {self.trees[tree]}"))
        self.trees[tree] = number
        m = self._measure_repeats(ws, t, commit, 1, first_seed=self.opt.seed)
        if m.status is None:
            m = self._decide(ws, t, commit, m)
        t = t.with_(status=m.status or Status.DISCARD, figures=m.figures,
                    repeats=m.repeats if len(m.repeats) > 1 else [],
                    reason=m.reason, run_seconds=m.seconds, metric=m.figures.get(self.task.metric.name))
        tamper = self.gitguard.check_and_restore()
        if tamper:
            t = t.with_(status=Status.REJECTED, reason=tamper)
        return self._finish(t)

    def _decide(self, ws: Workspace, t: Trial, commit: str, m: Measurement) -> Measurement:
        assert self.best is not None and self.best.metric is not None
        name = self.task.metric.name
        minimize = self.task.metric.minimize
        bar = decide.threshold(self.task.acceptance.min_delta, self.noise())
        if not decide.better(m.figures[name], self.best.metric, minimize, bar):
            return Measurement(Status.DISCARD, m.figures, self._why_not(m.figures[name], bar),
                               m.seconds, m.repeats)
        confirm = self.task.acceptance.confirm
        if confirm == 0:
            return Measurement(Status.KEEP, m.figures, "", m.seconds, m.repeats)
        self.events.phase(t.number, "confirming", self.task.time_budget)
        more = self._measure_repeats(ws, t, commit, confirm, first_seed=self.opt.seed + 1, offset=1)
        if more.status is not None:
            return Measurement(more.status, m.figures, f"confirmation run failed: {more.reason}",
                               m.seconds + more.seconds)
        repeats = m.repeats + more.repeats
        figures = mean_figures(repeats)
        seconds = m.seconds + more.seconds
        if decide.better(figures[name], self.best.metric, minimize, bar):
            return Measurement(Status.KEEP, figures, "", seconds, repeats)
        return Measurement(Status.DISCARD, figures, f"did not hold up over {len(repeats)} runs: "
                           + self._why_not(figures[name], bar), seconds, repeats)

    def _why_not(self, value: float, bar: float) -> str:
        assert self.best is not None and self.best.metric is not None
        best = self.best.metric
        if value == best:
            return f"equal to the best ({best:.6g})"
        if decide.better(best, value, self.task.metric.minimize):
            return f"{value:.6g}, worse than the best {best:.6g}"
        return f"{value:.6g} vs best {best:.6g}: better by less than the bar {bar:.3g}"

    def noise(self) -> float:
        raw = self.s.ledger.get_meta("noise")
        return float(raw) if raw else 0.0

    # -- measuring --------------------------------------------------------------------------

    def _measure_repeats(self, ws: Workspace, t: Trial, commit: str, runs: int, first_seed: int,
                         offset: int = 0) -> Measurement:
        """Run the experiment `runs` times (seeds first_seed, first_seed+1, ...); figures are the
        means, each run's figures under '__repeats__'."""
        repeats: list[dict[str, float]] = []
        seconds = 0.0
        for i in range(runs):
            self.events.phase(t.number, "running", self.task.time_budget)
            m = self._measure_once(ws, t, commit, first_seed + i, offset + i)
            seconds += m.seconds
            if m.status is not None:
                m.seconds = seconds
                return m
            repeats.append(m.figures)
        return Measurement(None, mean_figures(repeats), "", seconds, repeats)

    def _measure_once(self, ws: Workspace, t: Trial, commit: str, seed: int, index: int) -> Measurement:
        n = t.number
        suffix = "" if index == 0 else f".{index}"
        spec = ExecSpec(
            number=n, workdir=ws.path, run_dir=self.s.dir / "runs" / f"{n}{suffix}",
            log_path=self._log(n, suffix), command=self.task.command,
            timeout=self.task.timeout, env=self._env(n, seed), protected=self.protected,
            evaluate=self.task.evaluate, owner=f"{self.s.owner}:{n}", wrap=self.wrap,
        )
        result = execute(spec, restore=lambda: self.s.git.reset_worktree(ws, commit), cancel=self.cancel)
        return self._judge(result, spec.run_dir, ws.path)

    def _judge(self, r: ExecResult, run_dir: Path, workdir: Path) -> Measurement:
        spec = self.task.metric
        tail = last_lines(r.output, 5)
        if r.outcome == "cancelled":
            return Measurement(Status.INTERRUPTED, reason="stopped while the experiment ran", seconds=r.seconds)
        if r.outcome == "tampered":
            return Measurement(Status.REJECTED, reason=f"the experiment changed protected file(s): "
                               f"{', '.join(r.tampered)}", seconds=r.seconds)
        if r.outcome == "timeout":
            return Measurement(Status.TIMEOUT, reason=f"killed after the {self.task.timeout:g} s timeout; "
                               f"last output: {tail[-300:]}", seconds=r.seconds)
        if r.outcome == "crash":
            return Measurement(Status.CRASH, reason=f"exit code {r.returncode}: {tail[-400:]}", seconds=r.seconds)
        if r.outcome == "eval_failed":
            return Measurement(Status.CRASH, reason=f"the evaluator failed (exit {r.returncode}): "
                               f"{last_lines(r.eval_output or '', 5)[-400:]}", seconds=r.seconds)
        try:
            if r.eval_output is not None:
                why = reject_reason(r.eval_output)
                if why:
                    return Measurement(Status.REJECTED, reason=f"evaluator: {why}", seconds=r.seconds)
                figures = extract(spec, r.eval_output, run_dir, None)
                record_only = [n for n in spec.record if n not in figures]
                if record_only and not spec.file:
                    figures.update(extract(spec, r.output, names=record_only))
            else:
                figures = extract(spec, r.output, run_dir, workdir)
                figures.pop(spec.holdout or "", None)
        except MetricError as e:
            return Measurement(Status.CRASH, reason=str(e), seconds=r.seconds)
        problem = metric_problem(spec, figures)
        if problem:
            return Measurement(Status.CRASH, figures, f"{problem}; last output: {tail[-300:]}", r.seconds)
        return Measurement(None, figures, "", r.seconds)

    # -- recording --------------------------------------------------------------------------

    def _finish(self, t: Trial) -> Trial:
        """Record the verdict, then make the refs say it: the trial's ref always, the branch
        on keep (checked against the best it should still point to)."""
        t = t.with_(ended=time.time())
        self.s.ledger.finish(t)
        refs = {trial_ref(self.s.tag, t.number): t.commit} if t.commit else {}
        if t.status is Status.KEEP and t.commit:
            refs[branch_ref(self.s.tag)] = t.commit
        old = self.best.commit if self.best else None
        if refs:
            try:
                self.s.git.update_refs(refs, verify={branch_ref(self.s.tag): old} if old else None)
            except GitError:  # something moved the branch (an experiment running git): the ledger is the truth
                self.s.git.update_refs({**refs, branch_ref(self.s.tag): (t.commit if t.status is Status.KEEP else old) or ""})
        if t.status is Status.KEEP:
            if self.best and not self.opt.keep_runs:
                shutil.rmtree(self.s.dir / "runs" / str(self.best.number), ignore_errors=True)
            self.best = t
        elif not self.opt.keep_runs:
            shutil.rmtree(self.s.dir / "runs" / str(t.number), ignore_errors=True)
        self.agent.observe(visible(t, self.task.metric.holdout))
        self.events.trial_finished(t, self.best or t, self.baseline, self.total_cost())
        return t

    def _index_trees(self, history: list[Trial]) -> None:
        commits = [t.commit for t in history if t.commit and t.status not in (Status.REJECTED, Status.AGENT_ERROR)]
        if not commits:
            return
        out = self.s.git.run("show", "-s", "--format=%T", *commits, check=False)
        for t, tree in zip([t for t in history if t.commit in commits], out.split(), strict=False):
            self.trees.setdefault(tree, t.number)

    def _log(self, number: int, suffix: str = "") -> Path:
        return self.s.dir / "logs" / f"{number}{suffix}.log"

    def _env(self, number: int, seed: int) -> dict[str, str]:
        import os

        extra = {"AUTORESEARCH_TIME_BUDGET": f"{self.task.time_budget:g}",
                 "AUTORESEARCH_SEED": str(seed), "AUTORESEARCH_TRIAL": str(number),
                 "AUTORESEARCH_TAG": self.s.tag}
        if self.opt.gpus:
            extra["CUDA_VISIBLE_DEVICES"] = ",".join(self.opt.gpus)
        return experiment_env(dict(os.environ), extra, self.bin_dir)


def mean_figures(repeats: list[dict[str, float]]) -> dict[str, float]:
    names = {k for r in repeats for k in r}
    return {k: statistics.fmean([r[k] for r in repeats if k in r]) for k in sorted(names)}
