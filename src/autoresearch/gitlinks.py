"""The repository's own folders in .git made links to folders elsewhere.

git follows a link where it expects a folder: an agent that moves `.git/objects` (or `refs`,
`logs`, a fan-out folder `objects/ab`) to a folder of its own, /tmp say, and leaves a link in
its place has every object (every ref) of the repository live where it chose: outside the seal's
view of the repository, gone at the next reboot with all history, and written there by the
harness's own git from then on. So the folders of .git that are folders as a loop starts, and
every folder git makes under `objects/` and `refs/` later, are looked at after every agent call
and experiment: one made a link is replaced by a copy of what it points to (what git wrote
there meanwhile included) and the trial is rejected. A link that was there as the loop started
(a repository made with git-new-workdir) is the user's, and stays.
"""

from __future__ import annotations

import os
from pathlib import Path

from autoresearch.filetree import copy_over_link

WATCHED = ("objects", "refs", "logs", "info", "hooks", "worktrees", "objects/pack", "objects/info",
           "refs/heads", "refs/tags", "refs/remotes", "logs/refs")


class FolderLinks:
    def __init__(self, common_dir: Path) -> None:
        self.common_dir = common_dir
        self._users = {rel for rel in self._candidates() if os.path.islink(common_dir / rel)}

    def _candidates(self) -> list[str]:
        out = list(WATCHED)
        for parent in ("objects", "refs"):
            try:
                with os.scandir(self.common_dir / parent) as entries:
                    out += [f"{parent}/{e.name}" for e in entries  # (refs/autoresearch: GitGuard's)
                            if f"{parent}/{e.name}" not in WATCHED and f"{parent}/{e.name}" != "refs/autoresearch"]
            except OSError:
                continue
        return out

    def check_and_restore(self) -> str | None:
        """Why the trial is rejected (None: no folder of .git was made a link)."""
        made = []
        for rel in sorted(self._candidates(), key=lambda r: r.count("/")):
            path = self.common_dir / rel
            if rel in self._users or not path.is_symlink():
                continue
            made.append(rel)
            copy_over_link(path)
        if not made:
            return None
        return (f"made {', '.join(made[:5])} in the repository's .git a link to a folder elsewhere, where git "
                "would keep the repository's objects or refs from then on; a copy put back in its place")
