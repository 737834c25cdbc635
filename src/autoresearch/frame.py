"""The trials of a tag as a pandas DataFrame, for notebooks: `autoresearch.load(DIR, tag)`.

One row per trial (index: the trial number), every figure a column (with `<name>_spread` where
the trial was repeated), then the record's other fields. Read-only: safe while a loop runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def load_frame(directory: str | os.PathLike[str] = ".", tag: str | None = None) -> Any:
    """The trials of `tag` in the task repository `directory` (the most recent tag when None),
    or of a results.tsv when `directory` is one. `df.attrs` holds metric, goal, noise, tag."""
    try:
        import pandas as pd
    except ImportError:
        from autoresearch.errors import UsageError

        raise UsageError("autoresearch.load needs pandas: pip install -e '.[data]' (in the autoresearch checkout)") from None
    from autoresearch.report.study import load_results, load_study

    path = Path(directory)
    if path.is_file():
        study = load_results(path)
    else:
        study = load_study(path, tag, details=False)
    names: list[str] = [study.metric]
    for t in study.trials:
        names += [k for k in t.figures if k not in names]
    best = None
    rows = []
    for t in study.trials:
        if t.status.value == "keep" and t.metric is not None:
            best = t.metric
        row: dict[str, Any] = {"number": t.number, "status": t.status.value,
                               "description": t.description}
        for k in names:
            row[k] = t.figures.get(k, float("nan"))
            spread = t.spread(k)
            if spread is not None:
                row[f"{k}_spread"] = spread
        row.update(best_so_far=best if best is not None else float("nan"), commit=t.commit,
                   parent=t.parent, reason=t.reason, agent=t.agent, model=t.model,
                   tokens_in=t.tokens_in, tokens_out=t.tokens_out, cost=t.cost, seed=t.seed,
                   started=pd.to_datetime(t.started, unit="s", utc=True) if t.started else pd.NaT,
                   ended=pd.to_datetime(t.ended, unit="s", utc=True) if t.ended else pd.NaT,
                   run_seconds=t.run_seconds, log_path=t.log_path or None, repeats=len(t.repeats))
        rows.append(row)
    columns = ["number", "status", "description", *names]
    df = pd.DataFrame(rows)
    if df.empty:
        df = pd.DataFrame(columns=columns)
    spreads = [c for c in df.columns if c.endswith("_spread")]
    rest = [c for c in df.columns if c not in columns and c not in spreads]
    df = df[columns + spreads + rest].set_index("number")
    df.attrs.update(metric=study.metric, goal="minimize" if study.minimize else "maximize",
                    noise=study.noise, tag=study.tag, source=study.source)
    return df
