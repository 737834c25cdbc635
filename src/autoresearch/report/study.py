"""A `Study`: everything a report shows about one tag, read from its ledger or from any
results.tsv in autoresearch's format. Reading never writes: the ledger is opened read-only, so
a report or a live page may be built while a loop is writing it.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from autoresearch.decide import noise_groups, pooled_noise
from autoresearch.errors import UsageError, no_folder
from autoresearch.ledger import Ledger, clean_text
from autoresearch.process import last_lines, read_tail
from autoresearch.records import Status, Trial

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b.")
FAILED = (Status.CRASH, Status.TIMEOUT)
TSV_STATUS = {"keep": Status.KEEP, "discard": Status.DISCARD, "crash": Status.CRASH}


def plain(text: str) -> str:
    """Multi-line text safe to show: terminal escapes and control characters removed, tabs and
    line breaks kept."""
    text = _ANSI.sub("", text.replace("\r\n", "\n"))
    return "".join(ch if ch.isprintable() or ch in "\n\t" else " " for ch in text)


def outcome(t: Trial) -> str:
    """How a trial without a figure ended, as a verb: 'crashed', 'timed out', 'was interrupted'."""
    verbs = {Status.CRASH: "crashed", Status.TIMEOUT: "timed out",
             Status.INTERRUPTED: "was interrupted", Status.REJECTED: "was rejected"}
    return verbs.get(t.status, f"ended as {t.status.value}")


@dataclass
class Study:
    """The trials of one tag (or one results.tsv) and what a report needs beside them."""

    name: str
    source: str
    metric: str
    minimize: bool
    trials: list[Trial]
    noise: float = 0.0
    holdout: str | None = None
    diffs: dict[int, str] = field(default_factory=dict)  # kept trial -> diff against its parent
    tails: dict[int, str] = field(default_factory=dict)  # crashed trial -> its log's last lines
    task_name: str = ""
    tag: str = ""
    root: str | None = None  # the git repository holding the trials' commits, when known
    looping: bool = False  # a loop holds the tag now (its lock is taken)
    ended: str = ""  # why the last run ended, as it recorded it ('' when it did not)
    _keeps: dict[str, list[Trial]] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def finished(self) -> list[Trial]:
        return [t for t in self.trials if t.status.finished]

    @property
    def running(self) -> list[Trial]:
        return [t for t in self.trials if not t.status.finished]

    @property
    def baseline(self) -> Trial | None:
        return next((t for t in self.finished if t.status is Status.KEEP), None)

    @property
    def failed_baseline(self) -> Trial | None:
        """The baseline when it ended without a figure (crashed, timed out, interrupted):
        then no trial is kept and nothing can be compared to it. Its latest attempt: a baseline
        that failed is tried again as the next number by the next run."""
        if self.baseline is not None or not self.finished:
            return None
        return max(self.finished, key=lambda t: t.number)

    @property
    def kept(self) -> list[Trial]:
        """Kept trials other than the baseline: the improvements."""
        base = self.baseline
        return [t for t in self.finished if t.status is Status.KEEP and t is not base]

    @property
    def best(self) -> Trial | None:
        keeps = [t for t in self.finished if t.status is Status.KEEP and t.metric is not None]
        if not keeps:
            return None
        # every keep beat the best of its moment, so the best figure is the latest best
        return min(keeps, key=lambda t: (t.metric if self.minimize else -t.metric, -t.number))  # type: ignore[operator]

    def parent(self, t: Trial) -> Trial | None:
        """The kept trial `t` started from (None for the baseline or an unknown parent)."""
        if not t.parent:
            return None
        if self._keeps is None:  # (asked for every keep: a search of the trials each time took minutes)
            self._keeps = {}
            for p in self.trials:
                if p.status is Status.KEEP and p.commit:
                    self._keeps.setdefault(p.commit, []).append(p)
        return next((p for p in self._keeps.get(t.parent, []) if p.number != t.number), None)

    def gain(self, t: Trial, ref: Trial | None) -> tuple[float, float | None] | None:
        """`t`'s change of the metric against `ref`: (delta, percent; None against a figure of
        0, where a percentage means nothing); None when unknown."""
        if ref is None or t.metric is None or ref.metric is None or ref is t:
            return None
        delta = t.metric - ref.metric
        return delta, (100 * delta / abs(ref.metric) if ref.metric else None)

    def tally(self) -> tuple[int, int, int]:
        """(experiments, kept improvements, interrupted): the finished trials but the
        interrupted ones (no verdict on their change; the baseline counts), the keeps after
        the baseline, and the interrupted trials. The title, the page and `report` say these."""
        stopped = sum(t.status is Status.INTERRUPTED for t in self.finished)
        return len(self.finished) - stopped, len(self.kept), stopped

    def improved(self, delta: float) -> bool:
        return delta < 0 if self.minimize else delta > 0

    def running_best(self) -> list[tuple[int, float]]:
        """(trial number, best so far) at every kept trial, in trial order."""
        points: list[tuple[int, float]] = []
        for t in self.finished:
            if t.status is Status.KEEP and t.metric is not None:
                points.append((t.number, t.metric))
        return points

    @property
    def cost(self) -> float:
        return sum(t.cost for t in self.trials)

    @property
    def tokens(self) -> tuple[int, int]:
        return sum(t.tokens_in for t in self.trials), sum(t.tokens_out for t in self.trials)

    def version(self) -> str:
        """Changes whenever a trial starts or finishes, or the loop running one is gone (for
        live pages)."""
        import hashlib

        # not the phase of a running trial: the page shows that from state.json, no reload
        key = repr([(t.number, t.status.value, t.metric) for t in self.trials])
        return hashlib.sha1(f"{self.tag}{key}{self.noise}{self.looping}".encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------
# from a ledger


def _task_info(root: Path) -> tuple[str | None, str | None]:
    """The task's name and holdout figure, when its task file can be read."""
    try:
        from autoresearch.task import load_task

        task = load_task(root)
    except Exception:  # a report must not need a valid task file
        return None, None
    return task.name, task.metric.holdout


def _git(root: Path):  # noqa: ANN202
    from autoresearch.gitrepo import Git

    try:
        return Git.open(root)
    except Exception:
        return None


def load_study(root: str | Path, tag: str | None, details: bool = True,
               diff_cache: dict[tuple[str, str], str] | None = None) -> Study:
    """The study of a tag from its ledger (read-only). With `details`, the diffs of kept trials
    against their parents and the log tails of crashed trials are read too, each once with a
    `diff_cache` kept from call to call (neither changes once its trial has finished)."""
    from autoresearch.views import pick_tag

    root = Path(root).resolve()
    if not root.is_dir():
        raise UsageError(no_folder(root))
    tag = pick_tag(root, tag)
    led = Ledger.read(root, tag)
    try:
        trials = led.trials()
        minimize = (led.get_meta("goal") or "minimize") == "minimize"
        # as the loop's bar has it: pooled over the baseline's and the kept trials' repeated runs
        noise = pooled_noise(noise_groups(trials, led.metric_name)) or float(led.get_meta("noise") or 0.0)
        last_run = led.get_meta("last_run")
    finally:
        led.close()
    name, holdout = _task_info(root)
    study = Study(name=f"{name or root.name} · tag {tag}", source=str(root / ".autoresearch" / tag),
                  metric=led.metric_name, minimize=minimize, trials=trials, noise=noise,
                  holdout=holdout, task_name=name or root.name, tag=tag, root=str(root))
    study.looping = bool(study.running) and Ledger.loop_running(Path(study.source))
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        study.ended = str(json.loads(last_run or "{}").get("why") or "")
    if details:
        add_details(study, root, diff_cache)
    return study


def add_details(study: Study, root: Path, cache: dict[tuple[str, str], str] | None) -> None:
    """The diffs of kept trials and the log tails of crashed ones (each read once with `cache`)."""
    git = _git(root)
    cache = {} if cache is None else cache
    for t in study.finished:
        if t.status is Status.KEEP and t.parent and t.commit and git is not None:
            key = (t.parent, t.commit)
            if key not in cache:
                cache[key] = git.diff(t.parent, t.commit)
            study.diffs[t.number] = cache[key]
        if t.status in FAILED and t.log_path:  # (read once too: serve rebuilt its page twice a trial,
            key = ("tail", t.log_path)          # reading 256 KB of every crashed trial's log each time)
            if key not in cache:
                cache[key] = plain(last_lines(read_tail(Path(t.log_path), 256 * 1024), 30))
            if cache[key]:
                study.tails[t.number] = cache[key]


# ---------------------------------------------------------------------------
# from a results.tsv


def infer_minimize(trials: list[Trial]) -> bool | None:
    """The goal of a results.tsv, from its rows in order: each keep improved on the best before
    it, and a discard did not (a discard above the best says lower is better). None when the
    rows do not say (a baseline alone, discards equal to it)."""
    lower = higher = 0
    best: float | None = None
    for t in trials:
        if t.metric is None or t.status not in (Status.KEEP, Status.DISCARD):
            continue
        if best is not None and t.metric != best:
            better_if_higher = t.metric > best
            if t.status is Status.KEEP:
                higher, lower = higher + better_if_higher, lower + (not better_if_higher)
            else:  # no better than the best: the other way is better
                lower, higher = lower + better_if_higher, higher + (not better_if_higher)
        if t.status is Status.KEEP:
            best = t.metric
    return None if lower == higher else lower > higher


def parse_results(text: str, where: str) -> tuple[str, list[Trial]]:
    """The metric name and the trials of a results.tsv (commit, metric, memory_gb, status,
    description); a bad file raises UsageError naming the line."""
    # rows end at \n, \r\n or \r, as csv readers and pandas read them: splitlines() also cut a
    # description at a form feed, U+2028 or U+0085, and the file was refused for that row
    lines = [(i, line) for i, line in enumerate(re.split(r"\r\n|\r|\n", text), start=1) if line.strip()]
    if not lines:
        raise UsageError(f"{where} is empty: expected autoresearch's results.tsv")
    first, top = lines[0]
    head = top.split("\t")
    if len(head) < 5 or head[0].strip() != "commit" or head[2].strip() != "memory_gb" \
            or head[3].strip() != "status":
        raise UsageError(f"{where}: line {first} is not autoresearch's header "
                         "(commit, <metric>, memory_gb, status, description, tab-separated)")
    metric = clean_text(head[1]) or "metric"
    trials: list[Trial] = []
    best_commit: str | None = None
    for i, line in lines[1:]:
        cells = line.split("\t", 4)
        if len(cells) < 4:
            raise UsageError(f"{where}: line {i} has {len(cells)} columns, expected 5 "
                             "(commit, metric, memory_gb, status, description; tab-separated)")
        commit, value, memory, status_text = (c.strip() for c in cells[:4])
        status = TSV_STATUS.get(status_text.lower())
        if status is None:
            cols = "" if len(cells) == 5 else f" (the line has {len(cells)} columns, expected 5)"
            raise UsageError(f"{where}: line {i}: status {status_text!r} is not keep, discard or crash{cols}")
        try:
            number, mem = float(value), float(memory or 0)
        except ValueError:
            raise UsageError(f"{where}: line {i}: {value!r} or {memory!r} is not a number") from None
        measured = status is not Status.CRASH
        if measured and not math.isfinite(number):
            raise UsageError(f"{where}: line {i}: the metric {value!r} of a {status_text} row is not a finite number")
        figures = {metric: number, "memory_gb": mem} if measured else {}
        trials.append(Trial(number=len(trials), status=status, commit=commit or None,
                            description=cells[4].strip() if len(cells) > 4 else "",
                            parent=best_commit if trials else None,
                            metric=number if measured else None, figures=figures))
        if status is Status.KEEP:
            best_commit = commit or best_commit
    return metric, trials


def load_results(path: str | Path, root: str | Path | None = None,
                 goal: str | None = None) -> Study:
    """The study of a results.tsv in autoresearch's format. When `root` is the git repository
    the commits live in, the diffs of kept trials are read from it."""
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        raise UsageError(f"--results {path}: cannot read it ({e.strerror})") from None
    metric, trials = parse_results(text, str(path))
    if goal not in (None, "minimize", "maximize"):
        raise UsageError(f"--goal {goal!r} must be minimize or maximize")
    minimize = goal == "minimize" if goal else infer_minimize(trials)
    if minimize is None:
        minimize = True
        print(f"autoresearch: note: the rows of {path} do not show whether a lower or a higher {metric} is "
              "better: taken as lower (give --goal maximize if higher is)", file=sys.stderr)
    study = Study(name=path.name, source=str(path.resolve()), metric=metric, minimize=minimize,
                  trials=trials, task_name=path.resolve().parent.name, tag=path.stem)
    git = _git(Path(root).resolve()) if root is not None else None
    if git is not None:
        study.root = str(git.root)
        for t in study.kept:
            a = git.rev(t.parent or "") if t.parent else None
            b = git.rev(t.commit or "") if t.commit else None
            if a and b:
                study.diffs[t.number] = git.diff(a, b)
    return study
