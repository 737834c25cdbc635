"""autoresearch's own code, held as it was when the loop started.

An agent or an experiment runs as you, and where autoresearch is installed in a folder you can
write (a virtual environment, an editable checkout) it can edit the harness itself: a module the
loop imports only later (the report, a provider's client), the reaper script each command runs
under, a `.pyc` in `__pycache__` that Python takes for its source. Code put there would run as
the harness and could write any figure. So the loop imports every module of its own as it
starts (nothing of it is read from disk later), and `OwnCode` keeps each file of the package
as it was: after every agent call and every experiment a changed one is written back, a new one
removed, and the trial rejected. A stat of each file (about a millisecond for the package) finds
a change; only a file whose stat moved is read.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import pkgutil
import py_compile
import time
from pathlib import Path

import autoresearch
from autoresearch.filetree import BIG, NOT_REGULAR, read_regular, remove_path, slurp

SKIP = ("autoresearch.templates", "autoresearch.__main__")  # (templates: files for `init`, not code the loop runs)


def import_all() -> None:
    """Import every module of the package now (a module an extra's library is missing for is
    left: its import fails as it would later)."""
    for mod in pkgutil.walk_packages(autoresearch.__path__, "autoresearch."):
        if not mod.name.startswith(SKIP):
            try:
                importlib.import_module(mod.name)
            except ImportError:
                pass
    main = Path(autoresearch.__file__).with_name("__main__.py")  # (run by `python -m`, never imported:
    with contextlib.suppress(OSError, py_compile.PyCompileError):  # its .pyc made now, as a first `-m` would)
        if not os.path.exists(importlib.util.cache_from_source(str(main))):
            py_compile.compile(str(main), doraise=True)


def _stat(path: str) -> tuple[int, int, int, int, int]:
    st = os.lstat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode


class OwnCode:
    def __init__(self, root: Path | None = None, keep: Path | None = None) -> None:
        import_all()  # (first: it may write the .pyc files, which are then held too)
        self.root = root or Path(autoresearch.__file__).parent
        self.keep = keep  # where what was found in a file's place is copied before it is put back
        self.skip = str(self.root / "templates")
        self._saved: dict[str, tuple[tuple[int, int, int, int, int], bytes | None]] = {}
        for path in self._files():
            self._saved[path] = (_stat(path), slurp(Path(path)))

    def _files(self) -> list[str]:
        out = []
        for top, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if os.path.join(top, d) != self.skip]
            out += [os.path.join(top, name) for name in files + [d for d in dirs if os.path.islink(os.path.join(top, d))]]
        return out

    def _keep(self, path: str) -> None:
        """A copy of what is at `path` in the keep folder (quarantine/own-code/<when>/...), so
        that an edit of yours made while a loop ran (an editable checkout) is not lost."""
        if self.keep is None:
            return
        with contextlib.suppress(OSError):
            data = read_regular(Path(path), BIG)[0]
            copy = self.keep / "own-code" / time.strftime("%Y%m%d-%H%M%S") / os.path.relpath(path, self.root.parent)
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(data)

    def check_and_restore(self) -> str | None:
        """Why the package's files are not as they were (each put back, what was there kept in
        the keep folder), or None."""
        changed = []
        now = set(self._files())
        for path in now - set(self._saved):  # made since: a module, a .pyc Python would take
            changed.append(path)
            self._keep(path)
            remove_path(Path(path))
        for path, (key, content) in self._saved.items():
            try:
                if path in now and _stat(path) == key:
                    continue
            except OSError:
                pass
            if path in now and slurp(Path(path)) == content:
                self._saved[path] = (_stat(path), content)  # (touched, the same)
                continue
            changed.append(path)
            if content is None or content == NOT_REGULAR:
                continue
            self._keep(path)
            remove_path(Path(path))  # (a new file: the one there may be a link, or read-only)
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_bytes(content)
            self._saved[path] = (_stat(path), content)
        if not changed:
            return None
        names = sorted(os.path.relpath(p, self.root.parent) for p in changed)
        kept = f" (what was there is copied under {self.keep / 'own-code'})" if self.keep is not None else ""
        return (f"changed autoresearch's own code ({', '.join(names[:4])}{' ...' if len(names) > 4 else ''}), "
                f"which would run as the harness; put back{kept}")
