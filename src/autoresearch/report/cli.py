"""`autoresearch report`: check the flags, call the library, print where the files are."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autoresearch.errors import UsageError, no_folder


def _out_folder(out: str | None) -> Path | None:
    """The --out folder, looked at now, so a bad one is named before any work is done (and made
    only once there is a report to write: a refused command leaves nothing behind)."""
    if out is None:
        return None
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {out}: is a file, not a folder (give a folder for "
                         "progress.png and report.html)")
    return path


def _make(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {path}: cannot make the folder ({e.strerror})") from None
    for name in ("progress.png", "report.html"):  # (a folder there: the error named a temporary file)
        if (path / name).is_dir():
            raise UsageError(f"{path / name} is a folder, where the report's file goes: move it, "
                             "or give another --out")
    return path


def _keep_out_of_git(root: Path, out: Path) -> str:
    """A report written inside the task's repository, where git sees its files as untracked (and
    a new `run` then refuses the repository as dirty), is ignored through .git/info/exclude as
    the ledger is. Not while a loop runs in the repository: it watches that file (a change there
    is put back and the trial in flight rejected); a note says what to do instead, as it does
    for a path gitignore cannot name. Returns the note, or ''."""
    from autoresearch.gitrepo import Git
    from autoresearch.ledger import ignore_in_git

    try:
        git = Git.open(root)
        rel = out.resolve().relative_to(git.root.resolve())
    except (UsageError, ValueError):  # (not a repository's root; a report outside it)
        return ""
    paths = [(rel / name).as_posix() for name in ("progress.png", "report.html")]
    status = git.run("status", "--porcelain", "--untracked-files=all", "--", *paths, check=False)
    if not any(line.startswith("??") for line in status.splitlines()):
        return ""  # (ignored already, as under .autoresearch/, or tracked: the user's to commit)
    if ignore_in_git(git, paths):
        return (f"note: {out} is inside the repository and git sees the report as untracked: "
                "a new `run` refuses that, so add it to .gitignore (or write the report elsewhere)")
    return ""


def cmd_report(args: argparse.Namespace) -> int:
    from autoresearch.report import write_report
    from autoresearch.report.plot import title
    from autoresearch.report.study import load_results, load_study

    root = Path(args.dir).resolve()
    if args.results and args.tag:
        raise UsageError(f"--tag {args.tag} and --results cannot be combined: --results reports "
                         "the results.tsv given, --tag a tag's ledger; give one of them")
    if getattr(args, "goal", None) and not args.results:
        raise UsageError("--goal is for --results only (a tag's ledger records its goal)")
    if not root.is_dir():
        raise UsageError(no_folder(root))
    out = _out_folder(args.out)
    if args.results:
        study = load_results(args.results, root, getattr(args, "goal", None))
        out = out or Path(args.results).resolve().parent
    else:
        study = load_study(root, args.tag)
        out = out or Path(study.source) / "report"
    if args.mlflow:
        from autoresearch.report.mlflow_log import experiment_name, export_study

        logged = export_study(study, args.mlflow)
        print(f"mlflow: {logged} new run(s) in experiment "
              f"{experiment_name(study.task_name, study.tag)!r} at {args.mlflow}")
    page = write_report(study, _make(out))
    print(title(study))  # as status says it: the baseline is an experiment, not an improvement
    print(f"plot:   {out / 'progress.png'}")
    print(f"report: {page}")
    if note := _keep_out_of_git(root, out):
        print(f"autoresearch: {note}", file=sys.stderr)
    return 0
