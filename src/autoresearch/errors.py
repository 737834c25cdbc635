"""Errors a user can cause carry one clear sentence and an exit code; anything else is our bug."""

from __future__ import annotations

from pathlib import Path

from autoresearch.records import printable


class AutoresearchError(Exception):
    """A failure the user should read as one line (exit code 1). Its text has no terminal
    escapes: it may name a file an agent made (`run` on a repository it left dirty)."""

    exit_code = 1

    def __str__(self) -> str:
        return printable(super().__str__())


class UsageError(AutoresearchError):
    """Bad usage or a bad task file (exit code 2)."""

    exit_code = 2


class LoopBusy(UsageError):
    """A second `run` on a tag while a loop holds its lock: said as the only line."""

    def __init__(self, tag: str) -> None:
        super().__init__(f"another autoresearch loop is running on tag {tag!r}")
        self.tag = tag


class TaskError(UsageError):
    """The task file is invalid; the message names the key."""


def no_folder(path: Path) -> str:
    """What is wrong with a DIR that is not a folder: it is missing, or it is a file."""
    return f"not a folder: {path}" if path.exists() else f"no such folder: {path}"
