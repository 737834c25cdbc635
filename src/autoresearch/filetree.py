"""A worktree's files seen and cleaned without git: one walk of the folder (no links followed),
and the removal of what a commit does not hold, the work of `git clean -ffdx` without its
process on every trial."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

SPECIAL = -1  # walk()'s size of what is neither a file, a folder nor a link


def walk(root: Path) -> dict[str, tuple[bool, int]]:
    """Everything under `root` but .git, worktree-relative: path -> (a folder, size). Links are
    entries, never followed. The worktree holds the commit and what was made there: a few files."""
    found: dict[str, tuple[bool, int]] = {}
    stack = [(str(root), "")]  # (a folder, its path from root with a / at the end; "" for root)
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if not prefix and entry.name == ".git":
                continue
            rel = prefix + entry.name  # (worktree-relative by its folder's: no relpath per file)
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, rel + "/"))
                    found[rel] = (True, 0)
                elif entry.is_file(follow_symlinks=False):
                    found[rel] = (False, entry.stat(follow_symlinks=False).st_size)
                else:  # a link: 0; a FIFO, socket or device: SPECIAL (a read of it may never end)
                    found[rel] = (False, 0 if entry.is_symlink() else SPECIAL)
            except OSError:
                continue
    return found


def remove_unknown(root: Path, known: set[str]) -> bool:
    """Delete what is under `root` (but .git) and not in `known` (what the worktree held when its
    commit was made): `git clean -ffdx` without the process. False when something could not be
    removed (a read-only folder, say): then git must clean."""
    ok = True

    def failed(*_: object) -> None:
        nonlocal ok
        ok = False

    for rel, (is_dir, size) in sorted(walk(root).items(), key=lambda item: item[0].count("/")):
        if (rel in known and size != SPECIAL) or not os.path.lexists(root / rel):  # (or gone with its folder)
            continue
        path = root / rel
        if is_dir:
            if sys.version_info >= (3, 12):
                shutil.rmtree(path, onexc=failed)
            else:
                shutil.rmtree(path, onerror=failed)
        else:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError:
                ok = False
    return ok


def ctimes(root: Path, entries: dict[str, tuple[bool, int]] | None = None) -> dict[str, tuple[int, int]]:
    """The ctime and mtime, in nanoseconds, of every regular file walk() finds under `root`
    (`entries`: what it found, when the caller has just walked there)."""
    out = {}
    top = str(root)
    for rel, (is_dir, size) in (walk(root) if entries is None else entries).items():
        if not is_dir and size != SPECIAL:
            with contextlib.suppress(OSError):
                st = os.lstat(f"{top}/{rel}")
                if stat.S_ISREG(st.st_mode):  # (not a link)
                    out[rel] = (st.st_ctime_ns, st.st_mtime_ns)
    return out


def remove_specials(root: Path) -> None:
    """Delete the FIFOs, sockets and devices under `root`: git would wait forever reading one
    named .gitattributes (or one it is asked to add)."""
    for rel, (_, size) in walk(root).items():
        if size == SPECIAL:
            with contextlib.suppress(OSError):
                (root / rel).unlink()


def fresh_dir(path: Path) -> Path:
    """An empty folder at `path`, whatever stood there (a link is removed, not followed)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)  # (rmtree does not follow links inside)
        if path.exists():  # something in it could not be removed: set it aside
            path.rename(path.with_name(f"{path.name}.old.{os.getpid()}.{len(list(path.parent.iterdir()))}"))
    path.mkdir(parents=True)
    return path


def write_new(path: Path, text: str) -> None:
    """Write `text` to a file that must not exist yet (never through a link someone put there)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def open_log(path: Path, append: bool = False) -> BinaryIO:
    """`path` opened for the harness to write a log into. A link, a FIFO or a socket put in its
    place (an agent or an experiment that runs unsealed can write in the ledger folder) is
    removed first, a folder set aside (it would stop the loop at that trial, and every run of
    the tag after it): a FIFO's open waits for a reader forever (a signal only restarts the wait),
    and a link has the log written into the file it names. The open never waits and never
    follows a link: one put there meanwhile fails it (OSError)."""
    with contextlib.suppress(OSError):
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            path.unlink()
        elif stat.S_ISDIR(mode):  # (one made ahead for a later trial's log: kept, out of the way)
            set_aside(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, 0o644)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "ab" if append else "wb")


def write_log(path: Path, data: bytes, append: bool = False) -> None:
    """`data` written to the log at `path` as open_log opens it."""
    with open_log(path, append) as f:
        f.write(data)


def read_log(path: Path, max_bytes: int) -> bytes:
    """The last `max_bytes` of the log at `path`, b"" when it is not a regular file (a FIFO
    there is not waited on, a link not followed) or cannot be read."""
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                f.seek(size - max_bytes)
            return f.read()
    except OSError:
        return b""


class NotRegular(OSError):
    """What read_regular found at the path is a FIFO, a device, a socket or a folder."""


def open_regular(path: Path, follow: bool = False) -> BinaryIO:
    """The regular file at `path` opened for reading without waiting (a FIFO would wait for a
    writer forever) and, unless `follow`, without following a link (ELOOP); anything but a
    regular file raises NotRegular, before any read (/dev/zero never ends). OSError for all
    else, FileNotFoundError where nothing is there."""
    f = os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)), "rb")
    if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
        f.close()
        raise NotRegular(f"{path} is not a regular file")
    return f


def read_regular(path: Path, limit: int, follow: bool = False) -> tuple[bytes, int]:
    """The first `limit` bytes of the regular file at `path` (see open_regular), and its size."""
    with open_regular(path, follow) as f:
        return f.read(limit), os.fstat(f.fileno()).st_size


def hash_regular(path: Path, follow: bool = False) -> str:
    """The sha256 of the regular file at `path` (see open_regular)."""
    with open_regular(path, follow) as f:
        h = hashlib.sha256()
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
        return h.hexdigest()


def endless(path: str) -> bool:
    """Whether reading `path` could wait or go on forever: a FIFO, a socket or a device, or a
    link to one (a file, a folder, a dangling link and nothing at all are not)."""
    try:
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def remove_endless(git_dir: Path) -> list[str]:
    """Remove the FIFOs, sockets and devices (and links to them) under a repository's .git,
    where git would wait forever on their read (git makes none), and say which (relative). The
    loose objects are not searched, only objects/info and objects/pack: git reads an object
    file only where a ref leads it, and a FIFO there is no object git wrote."""
    found = []
    for start, deep in [(git_dir, True), (git_dir / "objects" / "info", False), (git_dir / "objects" / "pack", False)]:
        for top, dirs, files in os.walk(start):
            for name in dirs + files:
                path = os.path.join(top, name)
                if endless(path):
                    found.append(os.path.relpath(path, git_dir))
                    remove_path(Path(path))
            dirs[:] = [d for d in dirs if d not in ("objects", "lfs")] if deep else []
    return found


NOT_REGULAR = b"\0(not a regular file)\0"  # what slurp reads of a FIFO, a device, a socket
BIG = 1 << 34  # read to the end


def slurp(path: Path) -> bytes | None:
    """A file's content (a link followed), never waited on: NOT_REGULAR for a FIFO or a device
    (or a link to one), None where there is no file."""
    try:
        return read_regular(path, BIG, follow=True)[0]
    except NotRegular:
        return NOT_REGULAR
    except OSError:
        return None


def read_plain(path: Path, limit: int = 1 << 16) -> str | None:
    """The first `limit` bytes of a regular file, None when there is none at `path`: a link, a
    FIFO or a device is not read (what an untrusted program left there may point anywhere)."""
    try:
        return read_regular(path, limit)[0].decode("utf-8", errors="replace")
    except OSError:
        return None


def writable(root: Path) -> None:
    """Give the owner read and write permission back on every folder and file under `root`
    (links left alone), as an experiment may have taken it away."""
    with contextlib.suppress(OSError):
        os.chmod(root, os.stat(root).st_mode | stat.S_IRWXU)
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = os.path.join(folder, name)
            with contextlib.suppress(OSError):
                st = os.lstat(path)
                need = stat.S_IRUSR | stat.S_IWUSR | (stat.S_IXUSR if stat.S_ISDIR(st.st_mode) else 0)
                if not stat.S_ISLNK(st.st_mode) and st.st_mode & need != need:
                    os.chmod(path, st.st_mode | need)


def clear_for_folder(path: Path) -> bool:
    """Remove a file or a link standing at `path`, where a folder belongs (git would fail there,
    or write through the link); whether there was one."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
        return True
    return False


def set_aside(path: Path, belongs: Callable[[int], bool] = stat.S_ISREG) -> bool:
    """What stands at `path` and is not what belongs there (by its mode: a regular file unless
    told, `stat.S_ISDIR` for a folder; a link never) renamed to `<name>.replaced.<time>`, kept
    and out of the way (an agent's, where the harness keeps a file or a folder: nothing could be
    made there again). True when something was."""
    try:
        if belongs(os.lstat(path).st_mode):
            return False
        os.replace(path, path.with_name(f"{path.name}.replaced.{time.time_ns()}"))
    except OSError:
        return False
    return True


def free_name(folder: Path, name: str) -> Path:
    """A path for `name` in `folder` (made, and set aside first when something else stands
    there: an agent's file) that nothing uses yet: `name`, else `name.2`, `name.3` ..."""
    set_aside(folder, stat.S_ISDIR)
    folder.mkdir(parents=True, exist_ok=True)
    n = 1
    while (dest := folder / (name if n == 1 else f"{name}.{n}")).exists():
        n += 1
    return dest


def remove_path(path: Path) -> None:
    """Remove a file, a link or a folder, whichever stands at `path` (nothing if none does)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def copy_over_link(path: Path) -> Path:
    """Put a copy of the folder the link `path` points to in its place (an empty folder when it
    points to none): the link's target stays where it is. Returns that target."""
    target = Path(os.path.realpath(path))
    fresh = path.with_name(f".{path.name}.autoresearch-{os.getpid()}-{time.monotonic_ns()}")
    if target.is_dir():
        shutil.copytree(target, fresh, symlinks=True)
    else:
        fresh.mkdir()
    os.unlink(path)
    os.rename(fresh, path)
    return target
