"""What decides the Python code an experiment runs besides the trial's own files: the `python`
on its PATH (the link and the interpreter it runs), and the site folders and standard library
folder of that interpreter, whose `*.pth` files, `sitecustomize` and `usercustomize` run at
every start (the evaluator's too). An agent that plants one there fakes
the evaluation without a line in its diff, so the loop looks at them after every agent call and
every experiment (one listing of each site folder: about a millisecond).

Put back: the python links autoresearch made (or, where experiments run the python of a
virtualenv, its `python*` entries and its pyvenv.cfg), the interpreter itself, and the startup files (a `.pth`, sitecustomize,
usercustomize) as they were; what was found in their place is moved to the tag's `quarantine/`
folder, not deleted (on a shared interpreter it may be another process's). Reported and not
undone: any other change in a site folder (a package installed or removed), which may be the
user's own `pip install`.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from autoresearch.execute import python_shim
from autoresearch.filetree import NOT_REGULAR, free_name, remove_path, slurp

_SITE_DIRS = ("import json, os, site, sys, sysconfig; "
              "print(json.dumps([*site.getsitepackages(), site.getusersitepackages(), "
              "sysconfig.get_paths()['stdlib'], os.path.realpath(sys.executable)]))")


def _startup(name: str) -> bool:
    return name.endswith(".pth") or name.split(".")[0] in ("sitecustomize", "usercustomize")


def _content(entry: tuple[object, ...]) -> bytes | None:
    """What a startup file read as (None: no file's content to write back or keep)."""
    data = entry[1] if entry[0] == "file" else None
    return data if isinstance(data, bytes) and data != NOT_REGULAR else None


def path_dirs(value: str | None = None) -> list[Path]:
    """The folders of PYTHONPATH (experiments get ours; `value`: as the loop reads it), which
    Python searches before the standard library and the site folders: a sitecustomize there runs
    at every start, and a json.py there is every `import json`. One not made yet is watched too:
    an experiment could make it."""
    value = os.environ.get("PYTHONPATH", "") if value is None else value
    return [Path(p) for p in value.split(os.pathsep) if os.path.isabs(p) and (os.path.isdir(p) or not os.path.lexists(p))]


def _stdlib_name(name: str) -> bool:
    """Whether an entry of a folder would be imported as a standard-library module."""
    return name.split(".")[0] in sys.stdlib_module_names and name.split(".")[-1] in ("py", "pyc", "so", name)


def site_dirs(bin_dir: Path, env: dict[str, str]) -> list[Path]:
    """The site folders of the `python` in `bin_dir` and its standard library's folder (a
    sitecustomize there runs at every start too), then the interpreter itself; this
    interpreter's when that one cannot say."""
    python = bin_dir / "python"
    try:
        out = subprocess.run([str(python), "-c", _SITE_DIRS], env=env, capture_output=True, text=True,
                             timeout=60, start_new_session=True)
        return [Path(p) for p in json.loads(out.stdout)]
    except (OSError, ValueError, subprocess.SubprocessError):
        import site
        import sysconfig

        return [Path(p) for p in [*site.getsitepackages(), site.getusersitepackages(),
                                  sysconfig.get_paths()["stdlib"], os.path.realpath(sys.executable)]]


def shared_environments(root: Path, shared: list[str] | tuple[str, ...]) -> list[Path]:
    """What to watch of each virtual (or conda) environment among the task's `shared` paths,
    linked into every trial (`.venv`, which `.venv/bin/python prepare.py` or `uv run` runs): its
    site folders and standard library (site_dirs), its `python*` entries and its pyvenv.cfg. An
    unsandboxed experiment writes through the link into your copy: a `.pth` or a `python` put
    there would run as the evaluator."""
    out: list[Path] = []
    for rel in shared:
        env = root / rel
        if not ((env / "pyvenv.cfg").is_file() or (env / "conda-meta").is_dir()) or not (env / "bin" / "python").exists():
            continue
        with contextlib.suppress(OSError):
            out += sorted(env / "bin" / e.name for e in os.scandir(env / "bin") if e.name.startswith("python"))
        out += [env / "pyvenv.cfg", *site_dirs(env / "bin", dict(os.environ))]
    return out


def _launchers(bin_dir: Path, shim: bool) -> list[Path]:
    """What `python` on the experiments' PATH is: the pyvenv.cfg Python looks for beside it and
    one folder up (one put beside autoresearch's own links made them a virtualenv, with site
    folders of the agent's), and, when bin_dir is a virtualenv's or conda's (the user's, or the
    one autoresearch runs in), its `python*` entries."""
    names = []
    if not shim:
        with contextlib.suppress(OSError):
            names = sorted(e.name for e in os.scandir(bin_dir) if e.name.startswith("python"))
    return [bin_dir / n for n in names] + [bin_dir / "pyvenv.cfg", bin_dir.parent / "pyvenv.cfg"]


def _stamp(path: Path) -> tuple[object, ...]:
    """A launcher by what replacing or writing it changes (no process can set a ctime)."""
    try:
        st = os.lstat(path)
    except OSError:
        return ("missing",)
    if stat.S_ISLNK(st.st_mode):
        return ("link", os.readlink(path))
    return ("entry", st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class EnvGuard:
    def __init__(self, bin_dir: Path, shim: bool, dirs: list[Path], keep: Path | None = None,
                 pythonpath: str | None = None) -> None:
        self.bin_dir = bin_dir
        self.keep = keep  # where a startup file taken out is kept
        self.shim = shim  # bin_dir is autoresearch's own (links to this interpreter)
        self.first = path_dirs(pythonpath)  # (before the standard library on sys.path: a json.py there is `import json`)
        self.dirs = dirs + [d for d in self.first if d not in dirs]
        self.interpreter = [d for d in dirs if d.is_file()]  # (the binary `python` runs)
        self._saved = self._read()
        self._strangers()  # (one a trial of a killed loop left: never autoresearch's)
        # the interpreter, a pyvenv.cfg beside `python`, and (not autoresearch's own links) the
        # user's environment's bin or the virtualenv autoresearch runs in: a `python` written
        # there (a script that prints a figure) would run as the evaluator
        self._launchers = self._take_launchers()

    def _take_launchers(self) -> dict[Path, tuple[tuple[object, ...], bytes | None]]:
        return {p: (_stamp(p), slurp(p) if p.is_file() and not p.is_symlink() else None) for p in self._launcher_paths()}

    def _launcher_paths(self) -> list[Path]:
        return self.interpreter + _launchers(self.bin_dir, self.shim)

    def _read(self) -> dict[str, tuple[object, ...]]:
        """Each site folder's entries: a startup file by its content (through a link: what
        Python runs), another file by its size and mtime, a folder by its being there (its mtime
        moves when Python first writes its __pycache__); a site folder that is not there as one
        entry."""
        out: dict[str, tuple[object, ...]] = {}
        for d in self.dirs:
            if d in self.interpreter:  # (a launcher: see _launchers_changed)
                continue
            try:
                entries = list(os.scandir(d))
            except OSError:
                out[str(d)] = ("missing",)
                continue
            for e in entries:
                if e.name == "__pycache__":
                    continue
                try:
                    if _startup(e.name) and not e.is_dir(follow_symlinks=False):
                        out[e.path] = ("file", slurp(Path(e.path)))
                    elif e.is_dir(follow_symlinks=False):
                        out[e.path] = ("dir",)
                    else:
                        st = e.stat(follow_symlinks=False)
                        out[e.path] = ("entry", st.st_mode, st.st_size, st.st_mtime_ns)
                except OSError:
                    continue
        return out

    def _launchers_changed(self) -> list[str]:
        """The launchers written, replaced or made since the start; each put back (one that was
        not there removed)."""
        changed = []
        for path in sorted(set(self._launcher_paths()) | set(self._launchers)):
            stamp, content = self._launchers.get(path, (("missing",), None))
            if _stamp(path) == stamp:
                continue
            changed.append(path.name)
            with contextlib.suppress(OSError):
                remove_path(path)
                if stamp[0] == "link":
                    path.symlink_to(str(stamp[1]))
                elif content is not None and content != NOT_REGULAR:
                    path.write_bytes(content)
                    os.chmod(path, int(stamp[2]))  # type: ignore[call-overload]
            self._launchers[path] = (_stamp(path), content)
        return changed

    def _shim_broken(self) -> bool:
        if not self.shim:
            return False
        if self.bin_dir.is_symlink() or not self.bin_dir.is_dir():
            return True
        for name in ("python", "python3"):
            link = self.bin_dir / name
            if not (link.is_symlink() and os.readlink(link) == sys.executable):
                return True
        return False

    def _strangers(self) -> list[str]:
        """Take out what is in autoresearch's own links folder besides its links (it comes first on
        the experiments' PATH: a `tail` put there runs in place of the system's inside an
        evaluator's script); each kept in the keep folder. Their names."""
        if not self.shim:
            return []
        try:
            names = sorted(e.name for e in os.scandir(self.bin_dir))
        except OSError:
            return []
        out = []
        for name in names:  # (`.python.<pid>`: another loop's link on its way in, python_shim)
            if name in ("python", "python3") or re.fullmatch(r"\.python3?\.\d+", name):
                continue
            path = self.bin_dir / name
            with contextlib.suppress(OSError):
                if self.keep is not None:
                    with contextlib.suppress(OSError):
                        self._keep(path, None)
                remove_path(path)
                out.append(name)
        return out

    def _keep(self, path: Path, data: bytes | None) -> Path:
        """A copy of `data` (or of the folder), found at `path`, in the keep folder: a name not
        used yet."""
        assert self.keep is not None  # (an agent's file at keep/ is set aside: the copy failed on it,
        dest = free_name(self.keep, path.name)  # and the hook it was to keep stayed in place)
        if isinstance(data, bytes):
            dest.write_bytes(data)
        elif path.is_dir() and not path.is_symlink():  # (a package named sitecustomize or json)
            shutil.copytree(path, dest, symlinks=True)
        else:
            shutil.copyfile(path, dest, follow_symlinks=False)
        return dest

    def refresh(self) -> None:
        """Take the site folders as they are now for the starting point (after setup, which may
        `pip install -e .`)."""
        self._saved = self._read()
        self._launchers = self._take_launchers()

    def check_and_restore(self) -> tuple[str | None, str | None]:
        """What changed since the last look: (why the trial is rejected, a note for it); None
        when nothing. Put back: the python links, and a startup file (`.pth`, sitecustomize)
        that came or changed on its own. A package installed or removed meanwhile (a new or
        gone *.dist-info beside it: your own `pip install`, say) is noted, not undone."""
        problems, notes = [], []
        if self._shim_broken():
            python_shim(self.bin_dir)
            problems.append(f"changed the experiments' python ({self.bin_dir / 'python'}); restored")
        if launchers := self._launchers_changed():
            problems.append(f"changed the experiments' python ({', '.join(launchers[:3])} in {self.bin_dir}); restored")
        if strangers := self._strangers():
            problems.append(f"put {', '.join(strangers[:3])} in {self.bin_dir}, the folder first on the "
                            "experiments' PATH, which holds only autoresearch's python links; taken out")
        now = self._read()
        if now != self._saved:
            changed = sorted(p for p in set(now) | set(self._saved) if now.get(p) != self._saved.get(p))
            installs = {str(Path(p).parent) for p in changed if p.endswith((".dist-info", ".egg-info", ".egg-link"))}
            hooks = [p for p in changed if _startup(Path(p).name) and str(Path(p).parent) not in installs
                     or p not in self._saved and Path(p).parent in self.first and _stdlib_name(Path(p).name)]
            failed, kept = [], []
            for p in hooks:
                old = self._saved.get(p)
                try:
                    found = now.get(p)
                    if self.keep is not None and found is not None and (found[0] != "file" or _content(found) is not None):
                        with contextlib.suppress(OSError):  # (no copy is no reason to leave it running)
                            kept.append(self._keep(Path(p), _content(found)))
                    remove_path(Path(p))  # (a link or a folder put in its place: replaced, never written through)
                    if old is not None and (content := _content(old)) is not None:
                        Path(p).write_bytes(content)
                except OSError as e:
                    failed.append(f"{Path(p).name}: {e.strerror}")
            if hooks:
                problems.append(f"changed Python startup files ({', '.join(Path(p).name for p in hooks[:3])} "
                                f"in {Path(hooks[0]).parent}); "
                                + (f"could not restore ({'; '.join(failed)})" if failed else "restored")
                                + (f" (what was found is kept in {kept[0].parent}: if a process of yours "
                                   "wrote it, put it back)" if kept else ""))
            others = [p for p in changed if p not in hooks]
            if others:
                notes.append(f"the Python packages experiments import changed ({', '.join(Path(p).name for p in others[:3])}"
                             f"{' ...' if len(others) > 3 else ''} in {Path(others[0]).parent}): a `pip install`?")
            self._saved = self._read()
        return "; ".join(problems) or None, "; ".join(notes) or None


MODULE_SUFFIXES = tuple(importlib.machinery.all_suffixes())  # what an import takes: .py, .pyc, .so ...


class TreeWatch:
    """The files under a folder by their size, mtime and inode (what setup made: the data the
    evaluator reads). Nothing is put back: there is no copy. A file changed or removed means the
    evaluation data of later trials may not be what earlier ones were measured on: noted on the
    trial, not held against it (a database that rewrites its lock file on open does it too).
    Python's bytecode caches are left out; a folder of more than LIMIT files is not watched."""

    LIMIT = 20_000

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self._saved = self._read()
        if len(self._saved) > self.LIMIT:
            self.root, self._saved = None, {}

    def _read(self) -> dict[str, tuple[int, int, int]]:
        out: dict[str, tuple[int, int, int]] = {}
        if self.root is None or not self.root.is_dir():
            return out
        for folder, dirs, files in os.walk(self.root):  # (links are not followed)
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            if len(out) > self.LIMIT:
                break
            for name in files:
                path = os.path.join(folder, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                out[os.path.relpath(path, self.root)] = (st.st_size, st.st_mtime_ns, st.st_ino)
        return out

    def check(self) -> str | None:
        """What was changed or removed of the files there at the start, and a Python module
        added (a `consts/__init__.py` or an extension beside setup's `consts.py` is imported in
        its place); other files added since, such as a cache an experiment makes next to its
        data, are not looked at."""
        now = self._read()
        changed = sorted(p for p in self._saved if now.get(p) != self._saved[p])
        changed += sorted(p for p in now if p not in self._saved and p.endswith(MODULE_SUFFIXES))
        if not changed:
            return None
        self._saved = {p: now[p] for p in {*self._saved, *changed} if p in now}
        return f"changed what setup made ({', '.join(changed[:3])}{' ...' if len(changed) > 3 else ''} in {self.root})"
