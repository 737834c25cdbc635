"""Lock files in a repository's .git that no git is holding.

Git writes HEAD, config, packed-refs or a ref by creating `<name>.lock` exclusively and
renaming it over the file: a git holds one for milliseconds. One left there stops every later
write of that file (`git commit` in your checkout: "Unable to create '.git/HEAD.lock': File
exists"), so an agent or an experiment that leaves one behind, on purpose or by a git it
killed, would break your repository for the morning while the loop went on. The guard takes
them away (see GitGuard.check_and_restore) and holds them against the trial.

Not watched: `index.lock` and `shallow.lock`, which a git of yours holds for as long as its
editor is open, a hook runs or a fetch lasts (taking them away broke your commit).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from autoresearch.filetree import remove_path

LOCK_AGE = 2.0  # seconds: a lock file older than this is no git's at work

# the locks of files git writes in a moment: HEAD, ORIG_HEAD, the config, packed-refs (which
# deleting a ref takes); and every ref's (refs/ but the loops' own, which the guard checks)
TOP = ("HEAD.lock", "ORIG_HEAD.lock", "config.lock", "packed-refs.lock")


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


def lock_files(common_dir: Path) -> dict[str, tuple[int, int]]:
    """The lock files there are now among TOP and beside the refs (not the loops' own):
    name relative to .git -> (inode, mtime)."""
    found = {name: _key(common_dir / name) for name in TOP}
    refs = common_dir / "refs"
    for top, dirs, files in os.walk(refs):
        if top in (str(refs), str(refs / "heads")):  # (refs/autoresearch, refs/heads/autoresearch)
            dirs[:] = [d for d in dirs if d != "autoresearch"]
        for n in dirs + files:
            if n.endswith(".lock"):
                path = Path(top) / n
                found[str(path.relative_to(common_dir))] = _key(path)
    return {name: key for name, key in found.items() if key is not None}


def remove_stale(common_dir: Path, locks: dict[str, tuple[int, int]]) -> list[str]:
    """Of `locks` (name -> inode and mtime, as lock_files gives them), those no git holds,
    removed: all watched at once, LOCK_AGE at most (however many there are); one is stale when
    the same file (inode and time) is still there then, or was already LOCK_AGE old or dated
    ahead, or is a folder or a link."""
    new, stale = dict(locks), []
    deadline = time.monotonic() + LOCK_AGE
    while new:
        for name, key in list(new.items()):
            path = common_dir / name
            if _key(path) != key:  # gone, or another file: a git at work
                del new[name]
            elif path.is_dir() or path.is_symlink() or abs(time.time() - key[1] / 1e9) > LOCK_AGE \
                    or time.monotonic() > deadline:
                stale.append(name)
                del new[name]
        if new:
            time.sleep(0.05)
    for name in stale:
        remove_path(common_dir / name)
    return sorted(stale)


def stale_since(common_dir: Path, since: float) -> list[str]:
    """The lock files made at `since` (a time) or later that no git holds: removed."""
    return remove_stale(common_dir, {n: key for n, key in lock_files(common_dir).items() if key[1] / 1e9 >= since})


class StaleLocks:
    """Lock files left in .git since the last look: the ones there when the loop started are
    yours (a git of yours that crashed) and left alone."""

    def __init__(self, common_dir: Path) -> None:
        self.common_dir = common_dir
        self.known = lock_files(common_dir)

    def take_away(self) -> list[str]:
        """The lock files new since the start (or the last look) that no git holds: removed."""
        stale = remove_stale(self.common_dir, {n: k for n, k in lock_files(self.common_dir).items()
                                               if self.known.get(n) != k})
        self.known = {n: k for n, k in self.known.items() if _key(self.common_dir / n) == k}
        return stale
