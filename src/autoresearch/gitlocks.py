"""Lock files in a repository's .git that no git is holding.

Git writes HEAD, config, packed-refs, the index or a branch by creating `<name>.lock`
exclusively and renaming it over the file: a git holds one for milliseconds. One left there
stops every later write of that file (`git commit` in your checkout: "Unable to create
'.git/index.lock': File exists"), so an agent or an experiment that leaves one behind, on
purpose or by a git it killed, would break your repository for the morning while the loop went
on. The guard takes them away (see GitGuard.check_and_restore) and holds them against the trial.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from autoresearch.filetree import remove_path

LOCK_AGE = 2.0  # seconds: a lock file older than this is no git's at work

# the locks of the files every git command of yours may write: HEAD, the config, packed-refs
# (which deleting a ref takes), the checkout's index, shallow
TOP = ("HEAD.lock", "config.lock", "packed-refs.lock", "index.lock", "shallow.lock")


def lingers(path: str) -> bool:
    """Whether the lock file at `path` is no git's at work: LOCK_AGE old (or dated ahead), or
    still there LOCK_AGE on (a git holds one for milliseconds)."""
    deadline = time.monotonic() + LOCK_AGE
    while True:
        try:
            if abs(time.time() - os.lstat(path).st_mtime) > LOCK_AGE or time.monotonic() > deadline:
                return True
        except OSError:
            return False
        time.sleep(0.05)


def _key(path: Path) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def lock_files(common_dir: Path) -> dict[str, tuple[int, int] | None]:
    """The lock files there are now among TOP and beside your branches and tags (the loops'
    own refs are the guard's to check): name relative to .git -> (inode, mtime)."""
    found = {name: _key(common_dir / name) for name in TOP}
    for sub in ("refs/heads", "refs/tags"):
        for top, dirs, files in os.walk(common_dir / sub):
            if top == str(common_dir / "refs/heads"):
                dirs[:] = [d for d in dirs if d != "autoresearch"]
            for n in dirs + files:
                if n.endswith(".lock"):
                    path = Path(top) / n
                    found[str(path.relative_to(common_dir))] = _key(path)
    return {name: key for name, key in found.items() if key is not None}


class StaleLocks:
    """Lock files left in .git since the last look: the ones there when the loop started are
    yours (a git of yours that crashed) and left alone."""

    def __init__(self, common_dir: Path) -> None:
        self.common_dir = common_dir
        self.known = lock_files(common_dir)

    def take_away(self) -> list[str]:
        """The lock files new since the start (or the last look) that no git holds: removed."""
        removed = []
        for name, key in lock_files(self.common_dir).items():
            if self.known.get(name) == key:
                continue
            path = self.common_dir / name
            if path.is_dir() or path.is_symlink() or lingers(str(path)):
                remove_path(path)
                removed.append(name)
        self.known = {n: k for n, k in self.known.items() if _key(self.common_dir / n) == k}
        return removed
