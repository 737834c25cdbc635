"""The loop's own folders, kept where they are.

The repository's `.git` holds its history; `.autoresearch/` and the tag's folder in it hold the
record (ledger.sqlite, results.tsv, the logs) and the trials' worktrees. An agent or an experiment that runs unsealed can move either to
a folder of its choosing (/tmp, gone at the next reboot) and leave a link in its place: the loop
writes on through the link, and the files keep their inodes, so no guard of the record sees a
change. So the folders are known by their device and inode as the loop starts and looked at
after every agent call and experiment: one that is a link now is moved back (renamed, on the
same file system; else copied back) and the trial is rejected.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from autoresearch.filetree import copy_over_link


class PlaceWatch:
    def __init__(self, folders: list[Path]) -> None:  # (outer first)
        self._ids: dict[Path, tuple[int, int]] = {}
        for path in folders:
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                self._ids[path] = (st.st_dev, st.st_ino)

    def check_and_restore(self) -> str | None:
        """Why the trial is rejected (None: every folder is where it was)."""
        moved = []
        for path, ident in self._ids.items():
            if not path.is_symlink():
                continue
            target = Path(os.path.realpath(path))
            try:
                st = os.stat(target)
            except OSError:
                st = None
            if st is not None and (st.st_dev, st.st_ino) == ident:
                os.unlink(path)
                os.rename(target, path)  # the same folder, back in its place
            else:
                copy_over_link(path)
            moved.append(f"{path} (to {target})")
        if not moved:
            return None
        return (f"moved the loop's folder {', '.join(moved)} and left a link in its place (the record would "
                "live where the agent chose); moved back")
