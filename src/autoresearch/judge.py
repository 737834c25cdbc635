"""What a run means: the measurement a trial's experiment (and evaluator) gives, or why it
gives none (a crash, a timeout, a rejection by the evaluator)."""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from autoresearch.execute import ExecResult
from autoresearch.ledger import clean_text
from autoresearch.metrics import (
    MEMORY,
    MetricError,
    extract,
    figure_from_text,
    metric_problem,
    redact,
    reject_reason,
)
from autoresearch.process import exit_words, last_lines
from autoresearch.records import Status
from autoresearch.task import Task


@dataclass
class Measurement:
    status: Status | None  # None: a valid measurement
    figures: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    seconds: float = 0.0
    repeats: list[dict[str, float]] = field(default_factory=list)
    log: str = ""  # the log of the run that failed, when it is not the trial's first


def judge(task: Task, r: ExecResult, run_dir: Path, workdir: Path) -> Measurement:
    """What an experiment's result means: a valid measurement (status None) and its figures, or
    the status and reason of a run that is not one."""
    spec = task.metric
    # printed live: no escapes, one line; paths in the trial's worktree relative (a traceback's
    # `File "/.../.autoresearch/T/worktrees/w0/train.py"` would leave no room for the error)
    tail = clean_text(last_lines(r.output, 5).replace(f"{workdir}{os.sep}", ""), 1000) or "(no output)"
    failed = _run_failed(task, r, tail)
    if failed is not None:
        return failed
    if r.eval_output is not None:  # what the verdict rests on: the evaluator's output
        tail = clean_text(redact(last_lines(r.eval_output, 5), spec.holdout).replace(f"{workdir}{os.sep}", ""),
                          1000) or "(no output)"
    if r.outcome == "eval_timeout":
        return Measurement(Status.TIMEOUT, reason=f"the evaluator was killed after the {task.timeout:g} s "
                           f"timeout; last output: {tail[-300:]}", seconds=r.seconds)
    if r.outcome == "eval_failed":
        return Measurement(Status.CRASH, reason=f"the evaluator failed (exit {r.returncode}): "
                           f"{tail[-400:]}", seconds=r.seconds)
    try:
        if r.eval_output is not None:
            why = reject_reason(r.eval_output)
            if why:
                return Measurement(Status.REJECTED, reason=f"evaluator: {redact(why, spec.holdout)}",
                                   seconds=r.seconds)
            figures = extract(spec, r.eval_output, run_dir, workdir)  # its figures only: the
            # experiment's own lines (a `record` figure, peak_vram_mb) are not the evaluator's word
        else:
            figures = extract(spec, r.output, run_dir, workdir)
            figures.pop(spec.holdout or "", None)
    except MetricError as e:
        why = str(e) + (f"; the {r.stale} in the working folder was there before the experiment ran and "
                        "it did not write it (the committed one is not this run's result)" if r.stale else "")
        return Measurement(Status.CRASH, reason=why, seconds=r.seconds)
    if MEMORY not in figures:  # results.tsv's memory_gb: from a printed line, also beside a metric file
        text = r.eval_output if r.eval_output is not None else r.output
        memory = figure_from_text(text, MEMORY) if text else None
        if memory is not None:
            figures[MEMORY] = memory
    problem = metric_problem(spec, figures, r.eval_output if r.eval_output is not None else r.output)
    if problem:
        return Measurement(Status.CRASH, figures, f"{problem}; last output: {tail[-300:]}", r.seconds)
    return Measurement(None, figures, "", r.seconds)


def _run_failed(task: Task, r: ExecResult, tail: str) -> Measurement | None:
    """The status and reason of an experiment that gave no result to read (stopped, lost,
    rejected for what it did, timed out, crashed); None when it exited cleanly."""
    if r.outcome == "cancelled":
        return Measurement(Status.INTERRUPTED, reason="stopped while the experiment ran", seconds=r.seconds)
    if r.outcome == "lost":
        return Measurement(Status.CRASH, reason=f"its worker was lost twice: {r.output[-300:]}", seconds=r.seconds)
    if r.outcome == "escaped":
        return Measurement(Status.REJECTED, reason="processes it started outlived the process that supervises "
                           f"it, which something killed; they were killed, and no figure of this run is "
                           f"trusted: {'; '.join(r.escaped)[:300]}", seconds=r.seconds)
    if r.outcome == "tampered":
        return Measurement(Status.REJECTED, reason=f"the experiment changed protected file(s): "
                           f"{', '.join(r.tampered)}", seconds=r.seconds)
    if r.outcome == "drifted":
        return Measurement(Status.REJECTED, reason=f"the trial's code changed while it ran ({', '.join(r.tampered)[:300]}): "
                           "by its own experiment, or by a trial running beside it (its agent or experiment); "
                           "the figures are not of the trial's commit", seconds=r.seconds)
    if r.outcome == "timeout":
        return Measurement(Status.TIMEOUT, reason=f"killed after the {task.timeout:g} s timeout; "
                           f"last output: {tail[-300:]}", seconds=r.seconds)
    if r.outcome == "crash":
        return Measurement(Status.CRASH, reason=f"{exit_words(r.returncode)}: {tail[-400:]}", seconds=r.seconds)
    return None


def mean_figures(repeats: list[dict[str, float]]) -> dict[str, float]:
    names = {k for r in repeats for k in r}
    return {k: statistics.fmean([r[k] for r in repeats if k in r]) for k in sorted(names)}
