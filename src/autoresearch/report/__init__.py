"""Reports of a tag: the live terminal view of `run` (live.py), progress.png (plot.py), the
self-contained report.html (page.py), the live page of `serve` (serve.py) and MLflow export
(mlflow_log.py). Importing this package is cheap; matplotlib and mlflow load on first use.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["build_report", "build_results_report", "write_report"]


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_report(study, out: str | Path) -> Path:  # noqa: ANN001 - a Study
    """Write progress.png and report.html for a Study into `out`; returns report.html's path."""
    from autoresearch.report.page import render
    from autoresearch.report.plot import progress_png

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    png = progress_png(study)
    _write(out / "progress.png", png)
    _write(out / "report.html", render(study, png).encode("utf-8"))
    return out / "report.html"


def build_report(root: str | Path, tag: str | None, out: str | Path | None = None) -> Path:
    """progress.png and report.html of a tag (the most recent one when `tag` is None), into
    `out` (default `.autoresearch/<tag>/report`); returns the path of report.html."""
    from autoresearch.report.study import load_study

    study = load_study(root, tag)
    return write_report(study, out or Path(study.source) / "report")


def build_results_report(results: str | Path, out: str | Path | None = None,
                         root: str | Path | None = None, goal: str | None = None) -> Path:
    """The same from any results.tsv in autoresearch's format (default `out`: its folder).
    `root`: the git repository holding its commits, for the diffs of kept trials."""
    from autoresearch.report.study import load_results

    study = load_results(results, root, goal)
    return write_report(study, out or Path(results).resolve().parent)
