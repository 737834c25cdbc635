"""A loop run in the foreground (`run`, `trial`, `demo`): what it reports to, the signals that
stop it (Ctrl-C once: cleanly; twice: at once), and how it ended, kept for `status`."""

from __future__ import annotations

import contextlib
import signal
import sys

from autoresearch.errors import AutoresearchError

EXIT_INTERRUPTED = 130


def events_for(task, hours: float | None = None):  # noqa: ANN001, ANN201
    """The events a loop in a terminal reports to: the live view, else plain lines; `hours`:
    `run --hours`, shown against the time gone."""
    from autoresearch.events import PlainEvents, Steady

    try:
        from autoresearch.report.live import make_events
    except ImportError:
        return Steady(PlainEvents(task.metric.name, task.metric.minimize, hours=hours))
    return Steady(make_events(task, hours))


def ended_by(error: BaseException) -> str:
    """Why a run that raised `error` ended, in a few words for `status` (a long reason is cut in
    the middle: its end names the log and what to do)."""
    from autoresearch.records import clip

    if isinstance(error, KeyboardInterrupt):
        return "stopped by a signal"
    if isinstance(error, AutoresearchError):
        return clip(f"stopped: {error}", 500)
    return clip(f"crashed: {type(error).__name__}: {error}", 500)


def stop_signals() -> list[signal.Signals]:
    """The signals that stop a loop cleanly: Ctrl-C, SIGTERM (docker stop, systemd, SLURM) and
    SIGHUP (the terminal closed), unless it is ignored (`nohup`: the loop goes on)."""
    return [signal.SIGINT, signal.SIGTERM] + (
        [] if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN else [signal.SIGHUP])


def raise_interrupt(signum, frame) -> None:  # noqa: ANN001
    """A signal handler: the signal stops what runs as Ctrl-C would."""
    raise KeyboardInterrupt


class _Stopper:
    """Ctrl-C (or SIGTERM, or SIGHUP: the terminal closed) once: stop cleanly; twice: stop now.
    (Under `nohup`, SIGHUP is ignored before we start, and the loop goes on.)"""

    def __init__(self, loop) -> None:  # noqa: ANN001
        self.loop = loop
        self.hits = 0

    def __call__(self, signum, frame) -> None:  # noqa: ANN001
        self.hits += 1
        if self.hits == 1:
            with contextlib.suppress(OSError, ValueError):  # (a terminal that went away)
                print("\nautoresearch: stopping: the trials in flight are killed and recorded "
                      "(Ctrl-C again to quit at once)", file=sys.stderr, flush=True)
            self.loop.stop()
        else:
            raise KeyboardInterrupt


def run_until_stopped(loop, restore: dict | None = None):  # noqa: ANN001, ANN201
    """loop.run() with Ctrl-C, SIGTERM and SIGHUP stopping it cleanly and how it ended recorded;
    afterwards the signal handlers of `restore` (else those it found) are put back."""
    old = restore or {s: signal.getsignal(s) for s in stop_signals()}
    stopper = _Stopper(loop)
    for s in old:
        signal.signal(s, stopper)
    try:
        best = loop.run()
    except BaseException as e:
        loop.record_end(ended_by(e))
        raise
    else:
        loop.record_end()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return best
