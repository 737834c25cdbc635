"""Worktrees registered in the user's repository by an agent or an experiment.

A coding agent runs git in its trial's worktree, and `git worktree add ../x` (or `/tmp/x`) there
registers a worktree in the user's repository: it stays in `git worktree list`, holds its branch
(`git checkout BRANCH` in the user's checkout then fails, "already used by worktree"), and its
folder stays where the agent put it. After each agent call and each experiment the loop looks at
`.git/worktrees/`: a registration made since the last look that is not a loop's own (a loop's are
`.autoresearch/<tag>/worktrees/w<n>`, this tag's or another loop's) is taken out of
`.git/worktrees/`. Where its folder lies in the ledger's folder `.autoresearch/` (the harness's
own ground, which nothing of the user's is in) and is the checkout git made there (its `.git` file
names the registration), both are deleted. Anywhere else the worktree may be the user's, added
while the loop ran (nothing tells whose git added it, and a user working beside an overnight
loop adds worktrees): it is left as it is, registration and folder, as the user's own branches
are, and noted with the `git worktree remove` that takes it away if it is not the user's. A
registration of the user's that went is noted. Nothing is held against the trial: the
measurement is not touched by it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from shlex import quote

from autoresearch.filetree import read_plain, remove_path

LOOP_WORKTREE = re.compile(r"[^/]+/worktrees/w\d+")  # under .autoresearch/: <tag>/worktrees/w<n>


class WorktreeWatch:
    def __init__(self, common_dir: Path, ledgers: Path) -> None:
        self.admin = common_dir / "worktrees"
        self.ledgers = os.path.realpath(ledgers)  # the task's `.autoresearch/`
        self.known = self._read()

    def _read(self) -> dict[str, str]:
        """Registration name -> the folder of its worktree ('' when its `gitdir` file is not (yet)
        readable: a git adding it now, which the next look sees whole)."""
        try:
            names = [e.name for e in os.scandir(self.admin)]
        except OSError:
            return {}
        out = {}
        for name in names:
            pointer = read_plain(self.admin / name / "gitdir", 8192)
            out[name] = os.path.normpath(os.path.dirname(pointer.strip())) if pointer and pointer.strip().endswith("/.git") else ""
        return out

    def _inside(self, folder: str) -> str:
        """`folder` relative to the ledgers' folder ('' when it is not inside it)."""
        rel = os.path.relpath(folder, self.ledgers)
        return "" if rel.startswith("..") or os.path.isabs(rel) or rel == "." else rel

    def loops(self, folder: str) -> bool:
        return bool(LOOP_WORKTREE.fullmatch(self._inside(folder)))

    def check(self) -> list[str]:
        """What changed in the registrations since the last look, one line each; a new one not a
        loop's is removed with its folder where that is safe, else left (see the module's docstring)."""
        now = self._read()
        before, out = self.known, []
        for name, folder in sorted(now.items()):
            if name in before and before[name] == folder or not folder or self.loops(folder):
                continue
            said, removed = self._remove(name, folder)
            out.append(said)
            if removed:
                now.pop(name)
        for name, folder in sorted(before.items()):
            if name not in now and folder and not self.loops(folder):
                out.append(f"the worktree {folder} (registered before) is no longer registered")
        self.known = now
        return out

    def _remove(self, name: str, folder: str) -> tuple[str, bool]:
        """What is said of the worktree at `folder`, and whether it was taken away."""
        registration = self.admin / name
        what = f"`git worktree add` (or `move`) put a worktree at {folder}: its registration"
        rel = self._inside(os.path.realpath(folder))  # (where it really is: not through a link planted on the way)
        own = read_plain(Path(folder) / ".git", 8192)
        made = own is not None and os.path.realpath(own.strip().removeprefix("gitdir: ")) == os.path.realpath(registration)
        loops = [f for f in [*self.known.values(), *self._read().values()] if self.loops(f)]
        if rel.count(os.sep) >= 2 and made and not any(  # (not a tag's folder, nor one a loop's worktree is in)
                (f + os.sep).startswith(folder + os.sep) for f in loops):
            remove_path(registration)
            remove_path(Path(os.path.realpath(folder)))
            return what + " is removed, and its folder (in the ledger's folder) deleted", True
        # (elsewhere it may be yours, added while the loop ran: left as it is, as your branches are)
        return (f"`git worktree add` (or `move`) put a worktree at {folder}, outside the loop's folders: left as it "
                f"is, as it may be yours (if it is not: `git -C {quote(str(self.admin.parent.parent))} worktree remove --force "
                f"{quote(folder)}`)"), False


def unlock_under(common_dir: Path, folder: Path) -> None:
    """Unlock the registrations of the worktrees in `folder` (a tag's worktrees, about to be
    pruned): `git worktree lock`, which an agent can run in its worktree, keeps a registration
    from `git worktree prune` when its folder is gone, and it would stay in `git worktree list`."""
    inside = os.path.realpath(folder) + os.sep
    try:
        names = [e.name for e in os.scandir(common_dir / "worktrees")]
    except OSError:
        return
    for name in names:
        pointer = read_plain(common_dir / "worktrees" / name / "gitdir", 8192)
        if pointer and os.path.realpath(pointer.strip()).startswith(inside):
            remove_path(common_dir / "worktrees" / name / "locked")
