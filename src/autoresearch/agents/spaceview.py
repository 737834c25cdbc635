"""`autoresearch space`: the table of the search space a task's editable files give the search
agent (`space.space_of`), with notes where the search knows a value otherwise than the file has
it; with `--tag T`, the constants of the run's best code beside its baseline's, in the ranges the
search gives them (fixed from the baseline's code, not worked out again from the best's)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import TYPE_CHECKING

from autoresearch.agents.constants import FileScan, short
from autoresearch.agents.space import (
    Param,
    Space,
    above_note,
    editable_sources,
    scan_files,
    space_of,
)
from autoresearch.errors import UsageError
from autoresearch.task import Task, load_task

if TYPE_CHECKING:
    from autoresearch.gitrepo import Git
    from autoresearch.records import Trial


def space_table(space: Space, baseline: dict[str, str] | None = None) -> str:
    """The table of `autoresearch space`; with `baseline` (a tag's best against its trial 0), a
    column of the baseline's value for each constant the tag moved."""
    head = ("name", "where", "value") + (("baseline",) if baseline is not None else ()) + ("range", "scale")
    rows = [head]
    for p in space.params:
        now = " ".join(p.text.split())[:24]
        was = () if baseline is None else (baseline.get(p.key, "(new)") if baseline.get(p.key) != now else "=",)
        rows.append((p.key, f"{p.path}:{p.line}", now, *was, p.range_text,
                     p.scale_text + ("" if p.annotated else ", inferred")))
    n = len(head) - 1
    widths = [max(len(r[i]) for r in rows) for i in range(n)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:n], widths, strict=True)) + "  " + r[n] for r in rows]
    for where, why in space.skipped:
        lines.append(f"not searched: {where} {why}")
    for p in space.params:
        note = _note(p)
        if note:
            lines.append(f"note: {p.path}:{p.line} {p.name} = {' '.join(p.text.split())[:24]} is {note}")
    lines += [f"note: {where} {above_note(name)}" for where, name in space.above]
    lines += [f"note: {where} {note}" for where, note in space.again]
    return "\n".join(lines)


def _note(p: Param) -> str | None:
    """Why the search knows an annotated constant's value otherwise than the file has it: off
    its range, not among its choices, not a whole number for an int range, off its steps."""
    if not p.annotated or p.kind == "bool":
        return None
    if p.kind == "choice":
        return "not among its `# search:` choices" if p.sampled(p.value) is None else None
    if isinstance(p.value, bool) or not isinstance(p.value, (int, float)) or p.base is not None:
        return None
    x, known = p.value * p.sign, p.sampled(p.value)
    if not p.low <= x <= p.high:
        return (f"outside its `# search:` range {p.range_text}; the search knows it as the nearest "
                "value inside")
    if known is None or abs(known - x) <= 1e-9 * max(1.0, abs(x)):
        return None
    what = (f"off the steps of its `# search:` range {p.range_text}"
            if p.step and (p.kind == "float" or x == int(x)) else
            f"not a whole number (its `# search:` range {p.range_text} is of ints)")
    return f"{what}; the search knows it as {short(known * p.sign)}"


def cmd_space(args: argparse.Namespace) -> int:
    task = load_task(args.dir)
    if getattr(args, "tag", None):
        return _tag_space(task, args.tag)
    space = space_of(editable_sources(task.root, task))
    if not space.params:
        files = ", ".join(space.files) or "none"
        for where, why in space.skipped:
            print(f"not searched: {where} {why}")
        raise UsageError(f"no constants to search in the editable Python files of {task.root} "
                                f"({files}): the search agent tunes module-level UPPER_CASE numbers "
                                "and booleans, and strings or tuples given choices (`# search: A | B`)")
    print(space_table(space))
    print(f"{len(space.params)} constant{'s' * (len(space.params) != 1)} in {', '.join(space.searched_files)}; set a range with "
          "`# search: LOW..HIGH [log] [int]`, leave one out with `# search: off`")
    return 0


def _tag_space(task: Task, tag: str) -> int:
    """`space --tag T`: the constants of the tag's best code, beside its baseline's, in the
    search's ranges."""
    from autoresearch.gitrepo import Git
    from autoresearch.ledger import Ledger, list_tags
    from autoresearch.objects import task_blobs

    if tag not in list_tags(task.root):
        known = ", ".join(list_tags(task.root)) or "none"
        raise UsageError(f"no tag {tag!r} in {task.root} (tags: {known})")
    led = Ledger.read(task.root, tag)
    try:
        best, base = led.best(), led.get(0)
        trials = led.trials()
    finally:
        led.close()
    if best is None or not best.commit or base is None or not base.commit:
        raise UsageError(f"--tag {tag}: no trial kept yet, so no best code to show")
    git = Git(task.root)

    def files(commit: str) -> dict[str, bytes]:
        wanted = lambda p: p.endswith(".py") and task.is_editable(p)  # noqa: E731
        return {path: data for path, _, data in task_blobs(git, commit, wanted)}

    base_files, best_files = files(base.commit), files(best.commit)
    searched = space_of(base_files)
    baseline = {p.key: " ".join(p.text.split())[:24] for p in searched.params}
    best_scan = scan_files(best_files)
    _add_later(searched, best_scan, git, [t for t in trials if 0 < t.number < best.number],
               sorted({*base_files, *best_files}))
    space = _in_best_code(searched, best_scan)
    if not space.params:
        raise UsageError(f"no constants to search in the editable Python files of the best "
                                f"code of tag {tag} (trial {best.number}, {best.commit[:7]})")
    moved = sum(1 for p in space.params if baseline.get(p.key) != " ".join(p.text.split())[:24])
    print(f"tag {tag}: the best code (trial {best.number}, {best.commit[:7]}, {led.metric_name} "
          f"{best.metric:.6g}) beside its baseline (trial 0, {base.commit[:7]}); '=' unchanged; "
          "ranges as the search has them, from the baseline's code")
    print(space_table(space, baseline))
    print(f"{len(space.params)} constant{'s' * (len(space.params) != 1)} in {', '.join(space.searched_files)}, {moved} moved from the baseline")
    return 0


def _add_later(searched: Space, best_scan: dict[str, FileScan], git: Git, trials: list[Trial],
               paths: list[str]) -> None:
    """The constants the search adds after the baseline's, as it adds them (`SearchAgent.observe`):
    each with the range of its value in the first trial that has it, then the best code's."""
    if any(searched.find(c.path, c.name) is None for scan in best_scan.values() for c in scan.constants):
        # (only then: the best code has a constant the baseline's code has not)
        reader = git.blob_reader()  # (one `git cat-file` for every trial's files)
        try:
            for t in trials:
                if t.commit:
                    at = {path: reader.read(t.commit, path) for path in paths}
                    searched.add(scan_files({path: data for path, data in at.items() if data is not None}))
        finally:
            reader.close()
    searched.add(best_scan)


def _in_best_code(searched: Space, best_scan: dict[str, FileScan]) -> Space:
    """The searched constants the best code has, with its values and lines; what it has that the
    search leaves out, with the reason."""
    shown = [replace(p, line=c.line, value=c.value, text=c.text)
             for path, scan in best_scan.items() for c in scan.constants
             if (p := searched.find(path, c.name)) is not None]
    own = Space()
    own.add(best_scan)
    at = {f"{p.path}:{p.line}" for p in shown}
    return Space(params=shown, skipped=[s for s in own.skipped if s[0] not in at], files=list(best_scan))
