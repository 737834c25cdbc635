"""The programs the task's commands name, as the experiments' PATH finds them.

`command = "bash run.sh"` or `evaluate = "env OMP_NUM_THREADS=1 make score"` run whatever
`bash`, `env` or `make` the PATH finds first. An agent or an experiment that runs unsealed can
write to a folder early on that PATH (a virtualenv's `bin`, `~/.local/bin`, the folder
autoresearch puts first for `python`) and put a `make` there that prints a figure: the
evaluation would be its own without a line in the trial's diff. So each program named in
`command` and `evaluate` is looked up as the harness starts and again after every agent call and
every experiment: one found in another place now (a new one before it) is moved to the tag's
`quarantine/path/` folder, one rewritten in place is written back from the copy taken at the
start (a program of up to COPY_LIMIT bytes; not the system's own, under /usr, which a package
update may replace), and the trial is rejected. `python` and `python3`
are envguard's (the links autoresearch makes, a virtualenv's `python*`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from autoresearch.filetree import free_name, remove_path, slurp

COPY_LIMIT = 16 << 20
SYSTEM = ("/usr/", "/bin/", "/sbin/", "/lib", "/etc/")  # (the package manager's to update)
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")


def named_programs(commands: list[str]) -> list[str]:
    """Every word of the commands that could be a program's name (no `/`, no `=`, no option):
    more than the programs run (an argument `train` too), never fewer, for what is looked up on
    PATH is only what is found there."""
    names: set[str] = set()
    for command in commands:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        try:
            words = list(lexer)
        except ValueError:  # (an unclosed quote: bash fails on it too)
            words = command.split()
        names.update(w for w in words if _NAME.fullmatch(w))
    return sorted(names)


def _stamp(path: str) -> tuple[object, ...]:
    """The entry PATH found and what it runs, by what writing or replacing either changes."""
    try:
        st, target = os.lstat(path), os.stat(path)
    except OSError:
        return ("missing",)
    link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None  # (a link by where it points: one put back
    return (link, 0 if link else st.st_ino, st.st_mode, target.st_ino, target.st_size, target.st_mtime_ns,
            target.st_ctime_ns)  # is another inode)


class PathWatch:
    def __init__(self, commands: list[str], path: str, keep: Path, skip: Callable[[str], bool]) -> None:
        self.path = path
        self.keep = keep  # where a program put before the one found at the start is kept
        self.candidates = [n for n in named_programs(commands) if not skip(n)]
        self.refresh()

    def refresh(self) -> None:
        """Take the programs as PATH finds them now for the starting point (after setup, which
        may install one)."""
        self.names = [n for n in self.candidates if shutil.which(n, path=self.path)]
        self._saved = {n: self._take(n) for n in self.names}
        self._listed = self._listing()

    def _listing(self) -> dict[str, set[str]]:
        """The names in each folder of PATH that is not the system's (a user's: `~/.local/bin`, a
        virtualenv's `bin`), where a program put would run in place of one found later on PATH by
        a script the task's commands run (`tail` in an evaluator's `... | tail`), not only by them."""
        out: dict[str, set[str]] = {}
        for folder in self.path.split(os.pathsep):
            if os.path.isabs(folder) and not (folder.rstrip("/") + "/").startswith(SYSTEM) and folder not in out:
                with contextlib.suppress(OSError):
                    out[folder] = {e.name for e in os.scandir(folder)}
        return out

    def _shadows(self) -> list[str]:
        """Programs put since the last look in a user's folder on PATH under the name of one found
        after it there: each moved to the keep folder; what to say of them."""
        now, said = self._listing(), []
        folders = self.path.split(os.pathsep)
        for folder, names in now.items():
            later = os.pathsep.join(folders[folders.index(folder) + 1:])
            for name in sorted(names - self._listed.get(folder, set())):
                found = os.path.join(folder, name)
                if name in self.names or not os.access(found, os.X_OK) or os.path.isdir(found) \
                        or not shutil.which(name, path=later):
                    continue  # (a program the commands name: check_and_restore's)
                kept = self._move_away(found)
                said.append(f"put a `{name}` on the experiments' PATH before the one found after it ({found}, "
                            f"before {shutil.which(name, path=later)}); " + (f"moved to {kept}" if kept else "removed"))
        self._listed = self._listing()
        return said

    def _take(self, name: str) -> tuple[str | None, tuple[object, ...], bytes | None]:
        """Where PATH finds `name`, its stamp, and a copy of what it runs (None: too big)."""
        found = shutil.which(name, path=self.path)
        if found is None:
            return None, ("missing",), None
        data = None
        with contextlib.suppress(OSError):  # (the system's own is never written back: no copy)
            if os.path.getsize(found) <= COPY_LIMIT and not os.path.realpath(found).startswith(SYSTEM):
                data = slurp(Path(os.path.realpath(found)))
        return found, _stamp(found), data

    def _move_away(self, found: str) -> Path | None:
        """The program at `found` moved to the keep folder (a name not used yet); None when it
        could not be: removed then."""
        try:
            dest = free_name(self.keep, Path(found).name)
            shutil.move(found, dest)
            return dest
        except OSError:
            with contextlib.suppress(OSError):
                remove_path(Path(found))
            return None

    @staticmethod
    def _put_back(path: str, stamp: tuple[object, ...], data: bytes | None) -> None:
        """The entry at `path` made what it was: a link pointed where it pointed, a file made
        anew (never written through a link put in its place), a link's file written back."""
        link, mode = stamp[0], int(stamp[2])  # type: ignore[call-overload]
        if isinstance(link, str) and not (os.path.islink(path) and os.readlink(path) == link):
            remove_path(Path(path))
            os.symlink(link, path)
        if _stamp(path) == stamp:
            return
        if data is None:
            raise OSError("no copy of it was taken: too big")
        if isinstance(link, str):
            Path(os.path.realpath(path)).write_bytes(data)
        else:
            remove_path(Path(path))
            Path(path).write_bytes(data)
            os.chmod(path, stat.S_IMODE(mode))

    def check_and_restore(self) -> str | None:
        """Why the trial is rejected (None: every program is the one found at the start): a
        program found before it on PATH now is moved away, one rewritten, replaced or removed
        is put back."""
        problems = self._shadows()
        for name in self.names:
            path, stamp, data = self._saved[name]
            assert path is not None
            now = shutil.which(name, path=self.path)
            if now == path and _stamp(path) == stamp:
                continue
            if now is not None and now != path and os.path.lexists(path):  # one put before it
                kept = self._move_away(now)
                problems.append(f"put a `{name}` on the experiments' PATH before the one the task's commands run "
                                f"({now}, before {path}); " + (f"moved to {kept}" if kept else "removed"))
            if _stamp(path) != stamp:
                said, system = mend(path, stamp, data, f"changed `{name}` ({path}), which the task's commands run",
                                    ": later trials run it as it is")
                problems.append(said)
                if system:
                    self._saved[name] = self._take(name)
                    continue
            self._saved[name] = (path, _stamp(path), data)
        return "; ".join(problems) or None


def mend(path: str, stamp: tuple[object, ...], data: bytes | None, what: str, after: str = "") -> tuple[str, bool]:
    """What to say of program `path`, found changed (`what`), once it is put back as `stamp` from
    its copy `data`; and whether it is the system's own, left as it is (to be stamped anew)."""
    if os.path.realpath(path).startswith(SYSTEM):
        return f"{what}; not put back (the system's own: a package update?)", True
    try:
        PathWatch._put_back(path, stamp, data)
        return f"{what}; restored", False
    except OSError as e:
        return f"{what}; could not restore it ({e.strerror or e}){after}", False
