"""Scope and integrity checks on a trial.

A trial may change only editable paths; protected files (the task file and the program
always among them) must hash the same before and after the experiment; the repository's own
git configuration and hooks must not change. Each check returns the reason a trial is rejected,
or None.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from autoresearch.gitrepo import Change
from autoresearch.task import Task

MAX_FILE_BYTES = 20 * 1024 * 1024
SYMLINK, SUBMODULE = "120000", "160000"


def check_changes(task: Task, changes: list[Change], workdir: Path,
                  max_file_bytes: int = MAX_FILE_BYTES) -> str | None:
    """Why this set of changes is out of bounds, or None when it may be run."""
    if not changes:
        return "empty change: the agent changed nothing"
    for ch in changes:
        if task.is_protected(ch.path):
            return f"changed protected file {ch.path}"
        if not task.is_editable(ch.path):
            verb = {"A": "created", "D": "deleted"}.get(ch.status, "changed")
            return f"{verb} {ch.path}, outside the editable scope ({', '.join(task.editable)})"
        if ch.status == "D" and ch.path in task.editable:
            return f"deleted {ch.path}, a file the task names as editable"
        if ch.new_mode == SYMLINK:
            return f"{ch.path} became a symbolic link"
        if ch.new_mode == SUBMODULE:
            return f"{ch.path} became a submodule"
        if ch.status != "D":
            try:
                size = os.lstat(workdir / ch.path).st_size
            except OSError:
                size = 0
            if size > max_file_bytes:
                return f"{ch.path} is {size / 2**20:.1f} MiB (limit {max_file_bytes / 2**20:.0f} MiB)"
    return None


def hash_files(root: Path, paths: list[str]) -> dict[str, str]:
    """sha256 of each path under root ('missing' or 'symlink' where it is not a plain file)."""
    out: dict[str, str] = {}
    for rel in paths:
        p = root / rel
        if p.is_symlink():
            out[rel] = "symlink"
            continue
        try:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        except OSError:
            out[rel] = "missing"
    return out


def changed_files(expected: dict[str, str], root: Path) -> list[str]:
    """The protected files whose content differs from `expected`."""
    now = hash_files(root, list(expected))
    return [p for p, h in expected.items() if now.get(p) != h]


def set_readonly(root: Path, paths: list[str], readonly: bool) -> None:
    for rel in paths:
        p = root / rel
        try:
            if p.is_symlink() or not p.is_file():
                continue
            mode = p.stat().st_mode
            p.chmod(mode & ~0o222 if readonly else mode | 0o200)
        except OSError:
            pass


class GitGuard:
    """Fingerprints the repository's git config and hooks; restores them if a trial changed them."""

    def __init__(self, common_dir: Path) -> None:
        self.common_dir = common_dir
        self._saved = self._read()

    def _files(self) -> list[Path]:
        files = [self.common_dir / "config", self.common_dir / "info" / "attributes"]
        hooks = self.common_dir / "hooks"
        if hooks.is_dir():
            files += sorted(p for p in hooks.iterdir() if not p.name.endswith(".sample"))
        return files

    def _read(self) -> dict[Path, bytes | None]:
        out: dict[Path, bytes | None] = {}
        for f in self._files():
            try:
                out[f] = f.read_bytes()
            except OSError:
                out[f] = None
        return out

    def check_and_restore(self) -> str | None:
        now = self._read()
        if now == self._saved:
            return None
        changed = sorted(str(p.relative_to(self.common_dir)) for p in set(now) | set(self._saved)
                         if now.get(p) != self._saved.get(p))
        for path in set(now) | set(self._saved):
            old = self._saved.get(path)
            if old is None:
                path.unlink(missing_ok=True)
            elif now.get(path) != old:
                path.write_bytes(old)
        return f"modified the repository's git metadata ({', '.join(changed)}); restored"
