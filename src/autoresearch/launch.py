"""`autoresearch run` as one library call: the tag's flags settled, the agent built, the backend
and the session opened, the loop run in the foreground, and everything closed again whatever
happens (a backend opened here is closed before the session, so a Ray instance started here
ends before the watchdog is let go)."""

from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoresearch.errors import UsageError
from autoresearch.foreground import events_for, raise_interrupt, run_until_stopped, stop_signals


@dataclass(frozen=True)
class RunOutcome:
    """How a `run` ended: the best trial of the tag, where its results are, and whether a signal
    stopped it."""

    best: Any  # the loop's best trial (its number and short hash)
    results: Path
    interrupted: bool


def gpu_ids(text: str | None) -> tuple[str, ...]:
    gpus = tuple(g.strip() for g in (text or "").split(",") if g.strip())
    bad = [g for g in gpus if not (g.isdigit() or g.startswith(("GPU-", "MIG-")))]
    if bad or (text is not None and not gpus):
        raise UsageError(f"--gpus takes GPU ids separated by commas (e.g. 0,1 or GPU-<uuid>), got {text!r}")
    return gpus


def scale_flags(args: argparse.Namespace) -> tuple[str, tuple[str, ...], dict[str, float] | None]:
    """`run`'s backend, GPUs and trial resources, checked before anything is said or made (a
    resumed tag's note on its agent came before the error of a bad --gpus)."""
    from autoresearch.backends.local import gpu_groups
    from autoresearch.backends.ray import parse_resources  # (Ray itself is imported as it connects)

    gpus = gpu_ids(args.gpus)
    resources = None if args.trial_resources is None else parse_resources(args.trial_resources)
    if args.ray_address and args.backend == "local":
        raise UsageError("--ray-address is for --backend ray, not --backend local")
    kind = "ray" if args.ray_address else (args.backend or "local")
    if kind == "local" and not resources:  # (open_backend says so of these; Ray's are checked as it connects)
        gpu_groups(gpus, args.gpus_per_trial, args.workers)
    elif kind == "local":
        raise UsageError("--trial-resources is for --backend ray; locally use --gpus and --gpus-per-trial")
    return kind, gpus, resources


def _warn(line: str) -> None:
    print(f"autoresearch: warning: {line}", file=sys.stderr, flush=True)


def agent_for(args: argparse.Namespace, task, tag: str):  # noqa: ANN001, ANN201
    """The agent `run`'s flags name and its options (as the ledger keeps them), with what may
    keep it from working said first: a refused API key, a cost limit it cannot price."""
    from autoresearch.agents.registry import agent_options, build_agent, unpriced
    from autoresearch.agents.search import NoConstants, NothingToSearch

    opts = agent_options(args, task, tag)
    try:
        agent = build_agent(opts, task)
    except NoConstants:
        if args.trials != 0:
            raise
        agent = NothingToSearch()  # --trials 0: the baseline alone, which no agent proposes
    if args.trials != 0:
        for warning in getattr(agent, "preflight", list)():  # a refused API key: exit 2 now, not after the baseline
            _warn(warning)
    if args.max_cost is not None and (blind := unpriced(agent)):
        _warn(blind)
    return opts, agent


def open_backend_for(args: argparse.Namespace, task, tag: str, kind: str, gpus: tuple[str, ...],  # noqa: ANN001, ANN201
                     resources: dict[str, float] | None):
    """The backend `run`'s flags ask for (as `scale_flags` checked them)."""
    from autoresearch.backends import open_backend
    from autoresearch.backends.local import gpu_warnings
    from autoresearch.ledger import tag_dir

    backend = open_backend(task, kind, gpus=gpus,
                           gpus_per_trial=args.gpus_per_trial, workers=args.workers,
                           ray_address=args.ray_address, resources=resources, owner=str(tag_dir(task.root, tag)))
    for note in gpu_warnings(gpus, args.gpus_per_trial, args.workers) if backend.name == "local" else []:
        print(f"autoresearch: warning: {note}", file=sys.stderr)
    return backend


def open_run_session(args: argparse.Namespace, task, tag: str, opts, scale: Any, backend):  # noqa: ANN001, ANN201
    """The tag's session and the events its loop reports to, with the run's flags kept in its
    ledger; the backend is closed if they cannot be opened."""
    from autoresearch.agents.registry import options_record
    from autoresearch.scaleflags import META_KEY as SCALE_KEY
    from autoresearch.session import open_session

    try:
        events = events_for(task, args.hours)
        if args.mlflow:  # each finished trial also becomes an MLflow run (checked before the tag is made)
            from autoresearch.report.mlflow_log import mlflow_events, sealed_stores

            events = mlflow_events(events, args.mlflow, task, tag)
        (session := open_session(task, tag)).sealed = sealed_stores(args.mlflow) if args.mlflow else ()  # (holdouts)
        session.ledger.set_meta("agent_options", options_record(opts))
        session.ledger.set_meta("sandbox", "1" if args.sandbox else "0")
        session.ledger.set_meta(SCALE_KEY, scale)
    except BaseException:
        backend.close()
        raise
    return session, events


def start_lines(loop, tag: str) -> list[str]:  # noqa: ANN001
    """What a starting loop says of itself: its tag, branch, agent, scale and ledger, commits of
    the user's beyond the tag, and smoke mode."""
    from autoresearch.session import ahead_of_tag
    from autoresearch.task import smoke

    session, backend = loop.s, loop.backend
    scale = (f", {len(loop.slots)} workers" if len(loop.slots) > 1 else "") + \
        (f", backend {backend.name}" if backend.name != "local" else "")
    state = ("started again from your HEAD: it had no trial" if session.restarted
             else "resumed" if session.resumed else "new")
    lines = [f"autoresearch: tag {tag} on branch autoresearch/{tag} ({state}), agent {loop.agent.name}{scale}, "
             f"ledger {session.dir}"]
    if ahead := ahead_of_tag(session):
        lines.append(ahead)
    if smoke():
        lines.append("autoresearch: AUTORESEARCH_SMOKE is set: a template runs in smoke mode (tiny data "
                     "and model; it may override constants such as DEPTH, and nanochat trains 10 s "
                     "whatever the budget shown), and the tag is pinned to it")
    return lines


def run_tag(task, tag: str, args: argparse.Namespace) -> RunOutcome:  # noqa: ANN001
    """`autoresearch run`: the loop of `tag` on `task` with the command's flags (`args`), in the
    foreground until its trials or hours are done or a signal stops it."""
    from autoresearch.loop import Loop, Options
    from autoresearch.pin import check_before
    from autoresearch.sandbox import for_tag as sandbox_for_tag
    from autoresearch.scaleflags import for_tag as scale_for_tag

    check_before(task, tag, checkout=True)  # a changed task file: refused before the lines on how the tag goes on
    args.sandbox = sandbox_for_tag(task.root, tag, args.sandbox)  # (before the tag's branch and ledger are made)
    scale = scale_for_tag(task.root, tag, args)  # --workers, --gpus, --backend ... not given: as the tag's last run
    args.gpus_per_trial = args.gpus_per_trial or 1
    kind, gpus, resources = scale_flags(args)
    opts, agent = agent_for(args, task, tag)
    originals = {s: signal.getsignal(s) for s in stop_signals()}
    for s in originals:  # until the loop's own handler: SIGTERM or SIGHUP while Ray connects, say
        if s != signal.SIGINT:
            signal.signal(s, raise_interrupt)
    backend = open_backend_for(args, task, tag, kind, gpus, resources)
    session, events = open_run_session(args, task, tag, opts, scale, backend)
    try:  # (a Loop that cannot be built closes what was opened for it too)
        loop = Loop(session, agent, Options(trials=args.trials, hours=args.hours, seed=args.seed,
                                            agent_timeout=args.agent_timeout, gpus=gpus,
                                            sandbox=args.sandbox, keep_runs=args.keep_runs,
                                            max_cost=args.max_cost, workers=args.workers,
                                            gpus_per_trial=args.gpus_per_trial,
                                            agent_concurrency=args.agent_concurrency), events, backend)
        for line in start_lines(loop, tag):
            events.message(line)
        best = run_until_stopped(loop, originals)
    finally:
        events.close()
        try:
            backend.close()  # first: a Ray instance started here ends before the watchdog is let go
        finally:
            session.close()
    return RunOutcome(best=best, results=session.dir / "results.tsv", interrupted=loop.cancel.is_set())
