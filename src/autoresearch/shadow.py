"""A new file that Python would import in place of a module the protected code uses.

Python looks for a module first in the folder of the script it runs (or the working folder,
for `python -m` and `-c`), before the standard library and the installed packages. A trial that
adds `json.py` beside a protected `prepare.py` therefore has the evaluator, which runs from the
protected files, import the agent's code as `json`: the figures of record would be the agent's.
Such a file is refused when the trial's change adds it, in the task's root or in the folder of
a protected Python file, under the name of a standard-library module or of a module a protected
file imports, or of a protected module itself: Python takes a package folder (`data/__init__.py`)
or an extension (`data.abi3.so`) before the `data.py` beside it, so an agent's `model/data/`
would stand in for a protected `model/data.py` however it is imported (`from .data import`,
`from model.data import`), nor under the name of an installed package's module (`markupsafe.py`:
an evaluator that imports jinja2 has jinja2 import markupsafe from the first folder that holds
one, this one). The folders a relative PYTHONPATH entry names (`PYTHONPATH=src`, or an empty
entry: the root) are searched first too, at Python's start as well: there a `sitecustomize.py` or
`usercustomize.py` is refused besides, as `site` runs it before the evaluator's own code. A file
already there at the baseline is the task author's, and stays.
So is a bytecode cache of a protected file (`model/__pycache__/data.cpython-311.pyc`), in any
change: Python runs it in place of its source when its check of the source passes, and that
check can be forged (the source's mtime and size) or left out (an unchecked hash-based .pyc).
"""

from __future__ import annotations

import ast
import functools
import importlib.machinery
import json
import os
import pkgutil
import shutil
import subprocess
import sys
from collections.abc import Callable, MutableMapping
from pathlib import Path

from autoresearch.gitstatus import Change
from autoresearch.ledger import LEDGER_DIR
from autoresearch.task import Task

# what an import finds in a folder: a.py, a.pyc, a.cpython-311-x86_64-linux-gnu.so, a.abi3.so, a.so
SUFFIXES = sorted(importlib.machinery.all_suffixes(), key=len, reverse=True)


def module_of(path: str) -> tuple[str, str] | None:
    """(the folder, the module name) of a file an import would take, or None: `pkg/json.py` is
    json in pkg; `json/__init__.py` is json in the root."""
    folder, _, name = path.rpartition("/")
    for suffix in SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            stem = name[: -len(suffix)]
            if stem == "__init__":
                if not folder:
                    return None
                parent, _, package = folder.rpartition("/")
                return parent, package
            return (folder, stem) if stem.isidentifier() else None
    return None


def imported(root: Path, files: list[str]) -> set[str]:
    """The top-level modules the Python files import (absolute imports; unreadable files skipped)."""
    names: set[str] = set()
    for rel in files:
        try:
            tree = ast.parse((root / rel).read_bytes())
        except (OSError, SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


@functools.lru_cache(maxsize=1)
def _search_path() -> tuple[str, ...]:
    """The folders an import searches outside the task: this interpreter's path (its site
    folders, what their .pth files add, PYTHONPATH) and the user's active environment's
    site-packages, where experiments may run."""
    from autoresearch.execute import active_environment

    here = os.path.realpath(os.getcwd())
    dirs = [p for p in sys.path if p and os.path.isabs(p) and os.path.isdir(p) and os.path.realpath(p) != here]
    if (env := active_environment()) is not None:
        dirs += [str(d) for d in (env / "lib").glob("python*/site-packages")]
    return tuple(dirs)


@functools.lru_cache(maxsize=1)
def _scan() -> tuple[frozenset[str], frozenset[str]]:
    """(the modules and regular packages there, the identifier folders without __init__.py)."""
    regular = frozenset(m.name for m in pkgutil.iter_modules(list(_search_path())))
    bare: set[str] = set()
    for d in _search_path():
        try:
            bare.update(e.name for e in os.scandir(d) if e.name.isidentifier() and not e.name.startswith("__")
                        and e.is_dir() and not os.path.exists(os.path.join(e.path, "__init__.py")))
        except OSError:
            continue
    return regular, frozenset(bare)


@functools.lru_cache(maxsize=1)
def installed() -> frozenset[str]:
    """The top-level names an import finds outside the task: modules and packages, a namespace
    package's folder included."""
    regular, bare = _scan()
    return regular | bare


@functools.lru_cache(maxsize=1)
def namespaces() -> frozenset[str]:
    """The namespace packages installed (`google`, `nvidia`): a folder of the same name in the
    task's root is a part of it, searched first (`google/protobuf/__init__.py` there is what
    `import google.protobuf` gets)."""
    regular, bare = _scan()
    return bare - regular


def cached_source(path: str) -> str | None:
    """The source file a bytecode cache stands for (`m/__pycache__/data.cpython-311.pyc` is
    m/data.py's), or None."""
    folder, _, name = path.rpartition("/")
    parent, _, cache = folder.rpartition("/")
    if cache != "__pycache__" or not name.endswith(".pyc"):
        return None
    return f"{parent}/{name.split('.')[0]}.py".lstrip("/")


# files a program reads on its own from its working folder, which an evaluator's `make`, `pytest`,
# `tox` or `pip` would take up (GNU make reads GNUmakefile, then makefile, before Makefile), or
# which choose the interpreter a pyenv or asdf shim (`pytest`, `torchrun`, `python3.12`) or `uv run`
# runs: one of a version folder the agent made
IMPLICIT = {"GNUmakefile", "makefile", "Makefile", "conftest.py", "pytest.ini", ".pytest.ini", "tox.ini",
            "setup.cfg", "pyproject.toml", ".env", ".python-version", ".tool-versions", "uv.toml"}


# modules `site` imports at every start of Python from the first folder of its path that holds one
STARTUP = frozenset({"sitecustomize", "usercustomize"})


def relative_folders(var: str = "PYTHONPATH", environ: dict[str, str] | None = None) -> set[str]:
    """The task's folders a relative entry of PYTHONPATH (or PATH) names (`src`; an empty entry
    or `.` its root), from the root: Python run there searches them first, at its start too (a
    `sitecustomize.py` in one runs in the evaluator before its own code), and a shell takes a
    program from them before the system's."""
    raw = (os.environ if environ is None else environ).get(var, "")
    out: set[str] = set()
    for entry in raw.split(os.pathsep) if raw else []:
        if os.path.isabs(entry):
            continue
        norm = os.path.normpath(entry or ".").replace(os.sep, "/")
        if norm == ".." or norm.startswith("../"):
            continue
        out.add("" if norm == "." else norm)
    return out


def anchor_paths(root: Path, tracked: Callable[[str], bool], environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Make each PYTHONPATH or PATH entry name, from a trial's worktree, the folder you meant, in
    our environment (which experiments, agents and the evaluator get). One that points upward
    (`..`, `../lib`) is made absolute from the task's root: from a worktree it would name a folder
    of the harness (`.autoresearch/T/worktrees/lib`), where an experiment could plant a
    `sitecustomize.py` (or a `tail`) for the evaluator to run, unwatched; from the root it names
    yours, watched as an absolute entry is. An absolute one inside your checkout that holds files
    of git's (`/home/you/task/src`, a src layout) is made relative (`src`): else every trial would
    import your checkout's code, never the trial's own (a change the agent made measured as no
    change), and an evaluator your checkout's protected files, which an experiment could rewrite.
    The entries changed, as `../lib -> /abs/lib`."""
    env = os.environ if environ is None else environ
    here = os.path.realpath(root)
    said = []
    for var in ("PYTHONPATH", "PATH"):
        entries = env.get(var, "").split(os.pathsep) if env.get(var) else []
        changed = False
        for i, entry in enumerate(entries):
            if not entry:
                continue
            if not os.path.isabs(entry):
                norm = os.path.normpath(entry)
                new = os.path.normpath(os.path.join(here, norm)) if norm == ".." or norm.startswith("../") else entry
            else:
                rel = os.path.relpath(os.path.realpath(entry), here).replace(os.sep, "/")
                inside = rel != ".." and not rel.startswith("../") and rel.split("/")[0] != LEDGER_DIR
                new = rel if inside and tracked(rel) else entry
            if new != entry:
                said.append(f"{var} {entry} -> {new}")
                entries[i], changed = new, True
        if changed:
            env[var] = os.pathsep.join(entries)
    return said


def through_shared(task: Task, value: str) -> str:
    """`value` (PATH or PYTHONPATH) with each relative entry that names a `shared` path, or a
    folder in one, made absolute from the task's root: in a trial it is a link to your copy, which
    an unsandboxed experiment writes through (a `sitecustomize.py`, a `tail` the evaluator would
    run), so it is watched there as an absolute entry is."""
    def rooted(entry: str) -> str:
        norm = os.path.normpath(entry).replace(os.sep, "/") if entry and not os.path.isabs(entry) else ""
        shared = norm and any(norm == s or norm.startswith(s.rstrip("/") + "/") for s in task.shared)
        return str(task.root / norm) if shared else entry
    return os.pathsep.join(rooted(e) for e in value.split(os.pathsep)) if value else value


def shadowing(task: Task, changes: list[Change], workdir: Path) -> str | None:
    """Why a file the change adds would be imported in place of another module (or read by the
    evaluator's program as its own), or None."""
    if task.evaluate and (implicit := _read_by_evaluator(task, changes, workdir)):
        return implicit
    if program := _program(task, changes):
        return program
    if task.evaluate and (venv := _virtualenv(task, changes, workdir)):
        return venv
    for c in changes:
        if c.status != "D" and (source := cached_source(c.path)) and task.is_protected(source):
            return (f"{'added' if c.status == 'A' else 'changed'} {c.path}, Python's bytecode for the protected "
                    f"{source}, which Python would run in place of that file")
    return _module_shadowing(task, changes, workdir)


def _read_by_evaluator(task: Task, changes: list[Change], workdir: Path) -> str | None:
    """An added file that the evaluator's program reads on its own from its folder (a makefile,
    a conftest.py), in the root or beside a protected file, where it may run from."""
    implicit = [c.path for c in changes if c.status == "A" and c.path.rpartition("/")[2] in IMPLICIT]
    if not implicit:
        return None
    folders = {""} | {p.rpartition("/")[0] for p in task.protected_files(workdir)}
    for path in implicit:
        if path.rpartition("/")[0] in folders:
            return (f"added {path}, which the evaluator's program would read on its own from its folder "
                    "(make takes a GNUmakefile or makefile before the Makefile; pytest a conftest.py or an ini "
                    "file): name it otherwise")
    return None


def _module_shadowing(task: Task, changes: list[Change], workdir: Path) -> str | None:
    """An added module, in a folder searched first, that Python would import in place of a
    protected file's, the standard library's, or an installed one (or as a part of an
    installed namespace package)."""
    added = [(c.path, m) for c in changes if c.status == "A" and (m := module_of(c.path))]
    if not added:
        return None
    python = [p for p in task.protected_files(workdir) if p.endswith(".py")]
    early = relative_folders()
    folders = {""} | {p.rpartition("/")[0] for p in python} | early
    if part := _namespace_part([path for path, _ in added], folders):
        return part
    used = imported(workdir, python)
    own = {m: p for p in python if (m := module_of(p)) is not None}
    for path, (folder, name) in added:
        if folder not in folders:
            continue
        if name in STARTUP and folder in early:
            whose = f"Python's {name} (the folder is on PYTHONPATH: it would run at every start of the evaluator)"
        elif (folder, name) in own and own[(folder, name)] != path:
            whose = f"the protected {own[(folder, name)]}"
        elif name in sys.stdlib_module_names:
            whose = f"Python's own {name}"
        elif name in used:
            whose = f"the {name} the protected files import"
        elif name in installed():  # (one the packages they import may import in turn)
            whose = f"the installed {name}"
        else:
            continue
        return (f"added {path}, which Python would import in place of {whose} (the protected code and "
                "the evaluator run from this folder, so they would run the agent's file): name it otherwise")
    return None


def _namespace_part(paths: list[str], folders: set[str]) -> str | None:
    """An added file that is a part of an installed namespace package, in a folder searched first."""
    for path in paths:
        for folder in folders:
            below = path[len(folder) + 1:] if folder else path
            if (not folder or path.startswith(folder + "/")) and "/" in below \
                    and below.split("/")[0] in namespaces():
                return (f"added {path}, which Python would import as a part of the installed namespace package "
                        f"{below.split('/')[0]} (the protected code and the evaluator run from this folder, "
                        "so they would run the agent's file): name its folder otherwise")
    return None


def _virtualenv(task: Task, changes: list[Change], workdir: Path) -> str | None:
    """Why a file the change adds or changes would make a virtual environment the evaluator may
    run (`uv run` takes the project's `.venv`; `.venv/bin/python prepare.py` names it), or None:
    a file in a `.venv` folder in the root or beside a protected file, or a `pyvenv.cfg` anywhere
    (it makes a virtualenv of the folder it is in, with site folders of the agent's)."""
    folders = {""} | {p.rpartition("/")[0] for p in task.protected_files(workdir)}
    for c in changes:
        if c.status == "D":
            continue
        parts = c.path.split("/")
        if parts[-1] == "pyvenv.cfg" or any(p == ".venv" and "/".join(parts[:i]) in folders for i, p in enumerate(parts)):
            return (f"{'added' if c.status == 'A' else 'changed'} {c.path}, part of a virtual environment (a `.venv`, "
                    "a pyvenv.cfg) whose python `uv run` or the task's commands would run as the evaluator: "
                    "a trial does not change the environment it is measured in")
    return None


def _program(task: Task, changes: list[Change]) -> str | None:
    """Why a file the change adds would be run in place of a program (a folder of the task on
    PATH, by a relative entry: `bin`, or an empty one, the root), or None."""
    if not task.evaluate or not (early := relative_folders("PATH")):
        return None
    system = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if os.path.isabs(p))
    named = set(f"{task.command} {task.evaluate}".split())
    for c in changes:
        folder, _, name = c.path.rpartition("/")
        made = c.status == "A" or (c.new_mode == "100755" and c.old_mode != "100755")  # (made executable)
        if made and folder in early and (name in named or shutil.which(name, path=system)):
            return (f"added {c.path}, which the evaluator's shell would run in place of the program {name} "
                    f"(the folder is on PATH): name it otherwise")
    return None


_FIND = ("import importlib.util, json, sys\nout = {}\nfor n in json.loads(sys.argv[1]):\n"
         "    try:\n        s = importlib.util.find_spec(n)\n    except Exception:\n        continue\n"
         "    where = s and (s.origin if s.origin not in (None, 'namespace') else next(iter(s.submodule_search_locations or []), None))\n"
         "    if where:\n        out[n] = where\nprint(json.dumps(out))\n")


def checkout_imports(root: Path, files: list[str], python: Path, env: dict[str, str],
                     shared: tuple[str, ...] = ()) -> list[str]:
    """The task's modules that the experiments' `python` imports from your checkout, outside any
    trial's worktree, as `name (path)`: a `pip install -e .` of a src layout (its .pth or finder
    names your `src`) has every trial run your checkout's code, never its own. Looked up from
    outside the checkout (`find_spec`, which runs none of their code)."""
    names: set[str] = set()
    for rel in files:
        if rel.endswith(".py") and rel.split("/")[0] != LEDGER_DIR:
            parts = rel[:-3].split("/")
            names.update(p for p in parts if p.isidentifier() and p != "__init__")
    if not names:
        return []
    try:
        out = subprocess.run([str(python), "-c", _FIND, json.dumps(sorted(names)[:2000])], cwd="/", env=env,
                             capture_output=True, text=True, timeout=60, start_new_session=True)
        found = json.loads(out.stdout)
    except (OSError, ValueError, subprocess.SubprocessError):
        return []
    here = os.path.realpath(root)
    said = []
    for name, where in sorted(found.items()):
        rel = os.path.relpath(os.path.realpath(where), here)
        rel = rel.replace(os.sep, "/")
        if not rel.startswith("..") and rel.split("/")[0] != LEDGER_DIR \
                and not any(rel == s or rel.startswith(s.rstrip("/") + "/") for s in shared):  # (linked: yours)
            said.append(f"{name} ({where})")
    return said
