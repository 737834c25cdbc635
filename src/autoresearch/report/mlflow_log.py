"""MLflow export: each trial one MLflow run with its figures (metrics), status, description and
record (tags and params), and its diff against its parent as the artifact `diff.patch`.

Two ways in: `MlflowEvents` wraps the Events of `run --mlflow URI` and logs every trial as it
finishes (the loop is not changed); `export_study` logs a finished tag or results.tsv after the
fact (`report --mlflow URI`). Trials already in the experiment (same number and commit) are
skipped, so exporting twice logs nothing new. A failure to log never stops the loop.

mlflow is imported lazily (`pip install -e '.[mlflow]' (in the autoresearch checkout)`, mlflow-skinny suffices).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from autoresearch.errors import UsageError
from autoresearch.ledger import clean_text
from autoresearch.records import Status, Trial

TRIAL_TAG = "autoresearch.trial"
COMMIT_TAG = "autoresearch.commit"
_NAME = re.compile(r"[^A-Za-z0-9_\-. /]")


def experiment_name(task_name: str, tag: str) -> str:
    return f"autoresearch/{task_name}/{tag}"


def _is_local_store(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file:")


def local_stores(uri: str) -> list[Path]:
    """The folders and files a tracking URI on this machine writes: a path or file: URI; a
    sqlite:/// database and the artifacts MLflow puts in ./mlruns beside it."""
    if uri.startswith("databricks"):  # (MLflow's own words for a remote workspace, not paths)
        return []
    if "://" not in uri and not uri.startswith("file:"):
        return [Path(uri)]
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return [Path(unquote(parts.path))]
    if parts.scheme == "sqlite" and parts.path not in ("", "/", "/:memory:"):
        return [Path(unquote(parts.path[1:])), Path("mlruns")]
    return []


def sealed_stores(uri: str) -> tuple[Path, ...]:
    """The local store's files and folders, which hold every trial's figures, the sealed holdout
    included: hidden from sealed agents and experiments as the ledgers are (a store a server
    keeps, on this machine or another, is out of the seal's reach: its network stays open)."""
    return tuple(Path(os.path.abspath(p)) for p in local_stores(uri))


def keep_out_of_git(uri: str, root: Path | str | None) -> None:
    """A store inside the task's repository is ignored through .git/info/exclude: made there, it
    would leave the repository dirty, and the next `run` would refuse to start. Not while a loop
    runs there (a change to that file is put back and the loop's trial in flight rejected): a
    note says what to do instead."""
    paths = local_stores(uri)
    git = _git(root) if paths and root is not None else None
    if git is None:
        return
    from autoresearch.ledger import ignore_in_git

    for path in paths:
        try:
            rel = (Path.cwd() / path).resolve().relative_to(git.root.resolve())
        except ValueError:
            continue
        if any(c in str(rel) for c in "\n\r"):
            raise UsageError(f"--mlflow {uri!r}: a path with a line break cannot be kept out of git: choose another")
        if rel.parts and rel.parts[0] != ".git" and ignore_in_git(git, [rel.as_posix()]):
            print(f"autoresearch: note: the MLflow store {path} is inside the repository, where a loop runs "
                  "now: add it to .gitignore, or a new `run` refuses the repository as dirty", file=sys.stderr)


def _metric_name(name: str) -> str:
    return _NAME.sub("_", name) or "_"


def run_status(status: Status) -> str:
    if status in (Status.KEEP, Status.DISCARD, Status.DUPLICATE):
        return "FINISHED"
    if status is Status.INTERRUPTED:
        return "KILLED"
    return "FAILED"


class MlflowSink:
    """One MLflow experiment at one tracking URI; `log` records a finished trial once."""

    def __init__(self, uri: str, experiment: str, root: Path | str | None = None) -> None:
        if _is_local_store(uri):
            # MLflow keeps its file store behind an opt-in; the user asked for this store.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise UsageError("--mlflow needs mlflow: pip install -e '.[mlflow]' (in the autoresearch checkout) "
                             "(mlflow-skinny suffices)") from None
        for name in ("mlflow", "alembic"):  # (its INFO lines as it makes a database's tables: not
            logging.getLogger(name).setLevel(logging.WARNING)  # ours to print among the loop's)
        keep_out_of_git(uri, root)
        self.uri = uri
        self._lock = threading.Lock()
        try:
            self.client = MlflowClient(tracking_uri=uri)
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = (found.experiment_id if found is not None
                                  else self.client.create_experiment(experiment))
            self.logged = self._already_logged()
        except UsageError:
            raise
        except Exception as e:
            raise UsageError(f"--mlflow {uri}: cannot use this tracking store "
                             f"({type(e).__name__}: {clean_text(str(e), 300)})") from None

    def _already_logged(self) -> set[tuple[str, str]]:
        seen: set[tuple[str, str]] = set()
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], max_results=1000, page_token=token)
            for run in page:
                tags = run.data.tags
                if TRIAL_TAG in tags:
                    seen.add((tags[TRIAL_TAG], tags.get(COMMIT_TAG, "")))
            token = page.token
            if not token:
                return seen

    def log(self, trial: Trial, metric: str, tag: str = "", diff: str | None = None,
            log_tail: str | None = None) -> bool:
        """Log a finished trial as one run; False when it was logged before."""
        from mlflow.entities import Metric, Param, RunTag

        key = (str(trial.number), trial.commit or "")
        with self._lock:
            if key in self.logged:
                return False
            ended = int((trial.ended or trial.started) * 1000)
            tags = {TRIAL_TAG: str(trial.number), COMMIT_TAG: trial.commit or "",
                    "autoresearch.tag": tag, "autoresearch.status": trial.status.value,
                    "autoresearch.parent": trial.parent or "", "autoresearch.agent": trial.agent,
                    "autoresearch.reason": clean_text(trial.reason, 5000),
                    "mlflow.note.content": trial.description}
            name = f"{trial.number}: {clean_text(trial.description, 80)}"
            run = self.client.create_run(self.experiment_id, start_time=int(trial.started * 1000) or None,
                                         tags=tags, run_name=name)
            rid = run.info.run_id
            figures = dict(trial.figures)
            for k in list(trial.figures):
                spread = trial.spread(k)
                if spread is not None:
                    figures[f"{k}_spread"] = spread
            figures.update(run_seconds=trial.run_seconds, cost=trial.cost,
                           tokens_in=trial.tokens_in, tokens_out=trial.tokens_out)
            metrics = [Metric(_metric_name(k), float(v), ended, 0) for k, v in figures.items()
                       if isinstance(v, (int, float)) and v == v]
            params = [Param("status", trial.status.value), Param("agent", trial.agent or "-"),
                      Param("model", trial.model or "-"), Param("seed", str(trial.seed)),
                      Param("metric", metric),
                      Param("description", clean_text(trial.description, 500) or "-")]
            self.client.log_batch(rid, metrics=metrics, params=params,
                                  tags=[RunTag("mlflow.source.name", "autoresearch")])
            if diff:
                self.client.log_text(rid, diff, "diff.patch")
            if log_tail:
                self.client.log_text(rid, log_tail, "log_tail.txt")
            self.client.set_terminated(rid, run_status(trial.status), end_time=ended or None)
            self.logged.add(key)
            return True


def export_study(study: Any, uri: str) -> int:
    """Log every finished trial of a Study not logged before; returns how many were new."""
    sink = MlflowSink(uri, experiment_name(study.task_name, study.tag), study.root)
    git = _git(study.root)
    new = 0
    for t in study.finished:
        diff = study.diffs.get(t.number)
        if diff is None and git is not None and t.parent and t.commit:
            a, b = git.rev(t.parent), git.rev(t.commit)
            diff = git.diff(a, b) if a and b else None
        new += sink.log(t, study.metric, study.tag, diff, study.tails.get(t.number))
    return new


def _git(root: Path | str | None):  # noqa: ANN202
    if not root:
        return None
    from autoresearch.gitrepo import Git

    try:
        return Git.open(Path(root))
    except Exception:
        return None


class MlflowEvents:
    """Events that forward to another Events and log each finished trial to MLflow."""

    def __init__(self, inner: Any, sink: MlflowSink, metric: str, tag: str, root: Path) -> None:
        self.inner = inner
        self.sink = sink
        self.metric = metric
        self.tag = tag
        self.root = Path(root)
        self._warned = False

    def message(self, text: str) -> None:
        self.inner.message(text)

    def trial_started(self, number: int, index: int, total: int | None) -> None:
        self.inner.trial_started(number, index, total)

    def phase(self, number: int, phase: str, budget: float | None = None) -> None:
        self.inner.phase(number, phase, budget)

    def trial_finished(self, trial: Trial, best: Trial, baseline: Trial | None, cost: float) -> None:
        self.inner.trial_finished(trial, best, baseline, cost)
        try:
            self.sink.log(trial, self.metric, self.tag, self._diff(trial), self._tail(trial))
        except Exception as e:  # MLflow being down must not stop a two-day loop
            if not self._warned:
                self._warned = True
                self.inner.message(f"mlflow: could not log trial {trial.number} "
                                   f"({type(e).__name__}: {clean_text(str(e), 200)}); the loop goes on")

    def going_on(self, best: Trial, baseline: Trial | None, cost: float) -> None:
        self.inner.going_on(best, baseline, cost)

    def _diff(self, t: Trial) -> str | None:
        if not (t.parent and t.commit) or t.status in (Status.AGENT_ERROR,):
            return None
        from autoresearch.gitrepo import Git

        return Git(self.root).diff(t.parent, t.commit) or None

    def _tail(self, t: Trial) -> str | None:
        if t.status not in (Status.CRASH, Status.TIMEOUT) or not t.log_path:
            return None
        from autoresearch.process import last_lines, read_tail
        from autoresearch.report.study import plain

        return plain(last_lines(read_tail(Path(t.log_path), 256 * 1024), 50)) or None

    def close(self) -> None:
        self.inner.close()


def mlflow_events(inner: Any, uri: str, task: Any, tag: str) -> MlflowEvents:
    """Wrap the Events of `run` so that every finished trial is logged to MLflow at `uri`."""
    sink = MlflowSink(uri, experiment_name(task.name, tag), task.root)
    return MlflowEvents(inner, sink, task.metric.name, tag, task.root)
