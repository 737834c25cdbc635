"""`autoresearch report`: parse nothing, call the library, print where the files are."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_report(args: argparse.Namespace) -> int:
    from autoresearch.report import write_report
    from autoresearch.report.study import load_results, load_study

    root = Path(args.dir).resolve()
    if args.results:
        study = load_results(args.results, root, getattr(args, "goal", None))
        out = Path(args.out) if args.out else Path(args.results).resolve().parent
    else:
        study = load_study(root, args.tag)
        out = Path(args.out) if args.out else Path(study.source) / "report"
    if args.mlflow:
        from autoresearch.report.mlflow_log import experiment_name, export_study

        logged = export_study(study, args.mlflow)
        print(f"mlflow: {logged} new run(s) in experiment "
              f"{experiment_name(study.task_name, study.tag)!r} at {args.mlflow}")
    page = write_report(study, out)
    k = len(study.kept)
    print(f"{len(study.finished)} trial{'s' * (len(study.finished) != 1)} (the baseline included), {k} kept improvement{'s' * (k != 1)} over it")
    print(f"plot:   {out / 'progress.png'}")
    print(f"report: {page}")
    return 0

