"""`autoresearch trial`: the uncommitted change of the task repository as the next trial.

For an agent that drives itself (program.md style): it edits the editable files in the task
repository, runs `autoresearch trial -m "what I changed"`, and reads the verdict. The change is
laid over the tag's best commit in the harness's own worktree and judged like any trial. The
changed files are then set to the best code in the user's working tree (so a discarded change
is rewound and a kept one stays), unless rewind=False.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from autoresearch.agents.base import BaseAgent, Context, Proposal
from autoresearch.events import Events
from autoresearch.gitrepo import Git, status_entries
from autoresearch.loop import Loop, Options
from autoresearch.records import Trial
from autoresearch.session import open_session
from autoresearch.task import Task


def working_changes(git: Git, task: Task) -> list[str]:
    """Paths of the user's working tree that differ from HEAD: tracked ones, and untracked
    ones the task would consider (editable or protected)."""
    out = git.run("status", "--porcelain", "-z", "-uall", "--no-renames", check=False, strip=False)
    paths = []
    for code, path in status_entries(out):
        if path.startswith(".autoresearch/"):
            continue
        if code == "??" and not (task.is_editable(path) or task.is_protected(path)):
            continue
        paths.append(path)
    return paths


class WorkingTreeAgent(BaseAgent):
    """Copies the user's changed files into the trial's worktree."""

    name = "self"

    def __init__(self, root: Path, paths: list[str], description: str) -> None:
        self.root = root
        self.paths = paths
        self.description = description

    def propose(self, ctx: Context) -> Proposal:
        for rel in self.paths:
            src, dst = self.root / rel, ctx.workdir / rel
            if src.is_symlink() or src.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                if dst.exists() or dst.is_symlink():
                    dst.unlink()
                shutil.copy2(src, dst, follow_symlinks=False)
            elif dst.exists():
                dst.unlink()
        ctx.log(f"working-tree change: {', '.join(self.paths) or '(none)'}")
        return Proposal(description=self.description)


def run_working_tree_trial(task: Task, tag: str, description: str, rewind: bool = True,
                           events: Events | None = None, seed: int = 0) -> tuple[Trial, Trial]:
    """Judge the working tree's change; returns (the trial, the best after it)."""
    session = open_session(task, tag, allow_dirty=True)
    try:
        paths = working_changes(session.git, task)
        loop = Loop(session, WorkingTreeAgent(task.root, paths, description),
                    Options(trials=1, seed=seed), events)
        best = loop.run()
        trial = session.ledger.get(session.ledger.next_number() - 1)
        assert trial is not None
        if rewind and best.commit:
            for rel in paths:
                content = session.git.show_file(best.commit, rel)
                target = task.root / rel
                if content is None:
                    if target.exists() and task.is_editable(rel):
                        target.unlink()
                else:
                    target.write_text(content)
        return trial, best
    finally:
        session.close()
