"""The programs the harness itself runs (git, bwrap), as they were when it started.

programs.py finds them on PATH once, so that one put later in a folder before them is never
run. One rewritten in place is another matter: a git in a folder the user (and so an agent or an
experiment) can write, a conda environment's `bin`, Linuxbrew, `~/.local/bin`, would run as the
harness, outside any seal, at its next git command: it could show the guards whatever it likes.
So each is stamped and copied as the loop starts and looked at first after every agent call and
experiment: one changed is written back from the copy and the trial is rejected. The system's
own (under /usr), which a package update replaces, is not written back; its change is said and
held against the trial all the same.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from autoresearch.filetree import slurp
from autoresearch.pathwatch import COPY_LIMIT, SYSTEM, _stamp, mend
from autoresearch.programs import BWRAP, GIT


class ToolWatch:
    def __init__(self, programs: tuple[str | None, ...] = (GIT, BWRAP)) -> None:
        self._saved = {p: self._take(p) for p in programs if p and os.path.isabs(p)}

    @staticmethod
    def _take(path: str) -> tuple[tuple[object, ...], bytes | None]:
        data = None
        with contextlib.suppress(OSError):
            real = os.path.realpath(path)
            if os.path.getsize(real) <= COPY_LIMIT and not real.startswith(SYSTEM):
                data = slurp(Path(real))
        return _stamp(path), data

    def check_and_restore(self) -> str | None:
        """Why the trial is rejected (None: each program is as it was at the start)."""
        problems = []
        for path, (stamp, data) in self._saved.items():
            if _stamp(path) == stamp:
                continue
            said, system = mend(path, stamp, data, f"changed {path}, a program the harness itself runs")
            problems.append(said)
            self._saved[path] = self._take(path) if system else (_stamp(path), data)
        return "; ".join(problems) or None
