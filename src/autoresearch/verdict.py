"""What `autoresearch trial` prints after its trial, and its exit code: the verdict, what became
of your change in the working tree, the figures, the best so far."""

from __future__ import annotations

from autoresearch.drive import (
    as_left,
    changed_outside,
    shell_word,
    touched_editable,
    working_changes,
)
from autoresearch.errors import LoopBusy, UsageError
from autoresearch.foreground import EXIT_INTERRUPTED
from autoresearch.gitrepo import Git
from autoresearch.records import Status, Trial, printable
from autoresearch.task import Task


def busy_default(error: LoopBusy, tags: list[str]) -> UsageError:
    """A loop runs on the tag `trial` took by default (the one written last, a loop's of course):
    say that no --tag was given, and what to give."""
    others = [t for t in tags if t != error.tag]
    return UsageError(f"{error} (the tag used last: no --tag was given; judge your change on another "
                      f"tag with `--tag T`" + (f", e.g. one of {', '.join(others)}" if others else "") + ")")


def print_verdict(task: Task, tag: str, trial: Trial, best: Trial, rewind: bool) -> int:
    """Print the verdict of `trial` and return the exit code: 0 when the change was measured,
    1 when it was not, 130 when stopped."""
    metric = task.metric.name
    figs = "  ".join(f"{k}: {v:.6g}" for k, v in trial.figures.items() if k != task.metric.holdout)
    print(f"trial {trial.number}: {trial.status.value}" + (f" ({trial.reason})" if trial.reason else ""))
    rewound = rewind and trial.commit and trial.status not in (
        Status.KEEP, Status.AGENT_ERROR, Status.INTERRUPTED) and not (
        trial.status is Status.REJECTED and changed_outside(task))  # (then left: see drive)
    if rewound and trial.commit and trial.parent and touched_editable(task, trial.commit, trial.parent):
        print(f"(your change to the editable files was rewound; it is kept in trial {trial.number}'s commit: "
              f"`git checkout refs/autoresearch/{tag}/trials/{trial.number} -- FILE` brings a file back)")
    if trial.status is Status.REJECTED:
        left = changed_outside(task)
        if left:
            shown = " ".join(shell_word(p) for p in left)
            git = Git(task.root)
            mine = [p for p in working_changes(git, task) if task.is_editable(p)
                    and not (best.commit and as_left(git, task.root, p, best.commit))]
            print(f"(left as it is in your working tree, outside the editable files: {printable(', '.join(left))}; "
                  f"every trial is rejected until it is undone: `git checkout -- {shown}`"
                  + ("; your change to the editable files was not measured and is left as it is too, "
                     "for the next `trial`)" if mine else ")"))
    if figs:
        print(figs)
    print(f"best: trial {best.number}, {metric} {best.metric:.6g} (tag {tag})")
    # (a duplicate of a crash is a crash: results.tsv says so, and so does the exit code)
    measured = trial.status in (Status.KEEP, Status.DISCARD) or (trial.status is Status.DUPLICATE
                                                                and trial.metric is not None)
    return 0 if measured else EXIT_INTERRUPTED if trial.status is Status.INTERRUPTED else 1
