"""The task's setup, run once per loop before the baseline, and what reaches every trial from
outside git: what setup made (kept in the tag's `setup/` folder) and the task's `shared` paths
of the user's checkout, linked into each trial's worktree; and, when a baseline fails, a hint of
what it may not have found (ignored data, a submodule, /tmp under --sandbox).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from autoresearch.errors import AutoresearchError, UsageError
from autoresearch.events import Events
from autoresearch.filetree import read_regular, remove_path
from autoresearch.gitrepo import Workspace
from autoresearch.gitstatus import status_entries
from autoresearch.ledger import LEDGER_DIR
from autoresearch.process import last_lines, read_tail, run_command
from autoresearch.session import Session
from autoresearch.task import TASK_FILE, Task

# seconds: a download of a dataset's shards or a tokenizer's training may take hours; a setup
# that hangs is stopped (AUTORESEARCH_SETUP_TIMEOUT sets another limit)
SETUP_TIMEOUT = 6 * 3600.0


def setup_timeout() -> float:
    """Setup's time limit in seconds: AUTORESEARCH_SETUP_TIMEOUT, or SETUP_TIMEOUT."""
    raw = os.environ.get("AUTORESEARCH_SETUP_TIMEOUT", "").strip()
    try:
        limit = float(raw) if raw else SETUP_TIMEOUT
    except ValueError:
        limit = -1.0
    if not limit > 0 or limit == float("inf"):
        raise UsageError(f"AUTORESEARCH_SETUP_TIMEOUT must be a number of seconds above 0, got {raw!r}")
    return limit


@dataclass(frozen=True)
class SetupOutput:
    """What the setup command left in its worktree, kept in the tag's `setup/` folder, and the
    task's `shared` paths of the user's checkout (git-ignored data, a virtual environment):
    linked into every trial's worktree before each experiment and evaluation (trials start from
    clean worktrees of a commit, which hold neither)."""

    store: Path
    entries: tuple[str, ...] = ()  # worktree-relative files and folders
    changed: tuple[str, ...] = ()  # tracked files setup changed: not kept (trials run the commit)
    shared: tuple[tuple[str, Path], ...] = ()  # (worktree-relative path, the user's copy)

    def links(self) -> list[tuple[str, Path]]:
        return [(rel, self.store / rel) for rel in self.entries] + list(self.shared)

    def link_into(self, workdir: Path) -> None:
        shared = {rel for rel, _ in self.shared}
        for rel, target in self.links():
            link = workdir / rel
            if rel in shared and link.is_dir() and not link.is_symlink() and not any(link.iterdir()):
                link.rmdir()  # a submodule's empty folder: the user's checked-out copy takes its place
            if os.path.lexists(link):
                continue
            try:
                link.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(target, link)
            except OSError:
                continue


def clear_bytecode(store: Path) -> None:
    """Remove Python's bytecode caches (`__pycache__`, a link in its place too) from what setup
    made, before an evaluator runs: one an experiment wrote there (an unchecked hash-based .pyc,
    whose source Python never looks at) would run in place of a module setup made, with no file
    of setup's changed. Python writes them again from the sources."""
    for folder, dirs, _ in os.walk(store):  # (links are not followed)
        if "__pycache__" in dirs:
            remove_path(Path(folder) / "__pycache__")
        dirs[:] = [d for d in dirs if d != "__pycache__"]


def clear_cache_prefix(*folders: Path) -> None:
    """With PYTHONPYCACHEPREFIX set (an absolute folder; experiments get ours), Python keeps the
    bytecode of every source in that one folder, under the source's own path: outside the
    worktree its reset cleans, so a .pyc an experiment put there for a protected module (or one
    setup made) would run in its place. Removed for `folders` before an evaluator runs."""
    prefix = os.environ.get("PYTHONPYCACHEPREFIX", "")
    if not os.path.isabs(prefix):  # (a relative one lies in the working folder: cleaned with it)
        return
    for folder in folders:
        remove_path(Path(prefix) / os.path.realpath(folder).lstrip(os.sep))


def shared_links(task: Task) -> tuple[tuple[str, Path], ...]:
    """The task's `shared` paths that exist in the user's checkout."""
    return tuple((rel, task.root / rel) for rel in task.shared if os.path.lexists(task.root / rel))


MISSING = re.compile(r"no such file|not found|does not exist|no module named|cannot open|can't open", re.IGNORECASE)


def missing_hint(s: Session, output: str, sandbox: bool = False) -> str:
    """Why a failed baseline may not have found what it needs: a path the user's checkout has
    but git does not (ignored data, a virtualenv) named in its output, a submodule (trial
    worktrees hold submodules empty), or under --sandbox a path in /tmp (each experiment has its
    own); else ''."""
    if not MISSING.search(output):  # only a run that looked for something and did not find it
        return ""
    if sandbox and re.search(r"(?<![\w.])/(tmp|dev/shm)/", output):
        return (" -- under --sandbox each experiment has a /tmp (and /dev/shm) of its own, empty: what "
                "setup wrote there is not seen; keep data and caches out of /tmp (e.g. under your home)")
    out = s.git.run("status", "--porcelain=v1", "-z", "--untracked-files=normal", "--ignored=traditional",
                    "--no-renames", strip=False, check=False)
    for code, path in status_entries(out):
        rel = path.rstrip("/")
        if code not in ("??", "!!") or rel in s.task.shared or rel.split("/")[0] == LEDGER_DIR:
            continue
        if re.search(rf"(?<![\w.-]){re.escape(rel)}(?![\w.-])", output):
            return (f" -- {rel!r} is in your checkout but not in git, and trials run in clean worktrees "
                    f"of the commit: add `shared = [\"{rel}\"]` to {TASK_FILE} (linked into every trial), "
                    "or make it in `setup`")
    staged = s.git.run("ls-files", "-s", "-z", strip=False, check=False)
    modules = [e.split("\t", 1)[1] for e in staged.split("\0") if e.startswith("160000 ") and "\t" in e]
    modules = [m for m in modules if m not in s.task.shared and (s.task.root / m).is_dir()
               and any((s.task.root / m).iterdir())]  # checked out by the user
    if modules:
        listed = ", ".join(f'"{m}"' for m in modules[:5])
        return (f" -- trial worktrees hold submodules empty ({listed[:200]}): add `shared = [{listed}]` to "
                f"{TASK_FILE} to link your checked-out copies into every trial")
    return ""


def run_setup(s: Session, ws: Workspace, env: dict[str, str], wrap: list[str] | None = None,
              cancel: threading.Event | None = None) -> SetupOutput:
    """Run the task's setup command once in a worktree; a failure stops the loop (exit 1).
    What it writes inside the worktree (untracked or ignored files) is moved to the tag's
    `setup/` folder, to be linked into each trial's worktree. The `shared` paths are linked in
    before it runs, so a setup that checks for its data finds what the user already has."""
    store, manifest = s.dir / "setup", s.dir / "setup.json"
    shared = shared_links(s.task)
    if not s.task.setup:
        return SetupOutput(store, shared=shared)
    _put_back(s, ws, store, manifest)
    SetupOutput(store, shared=shared).link_into(ws.path)
    _run_command(s, ws, s.task.setup, env, wrap, cancel)
    for rel, _ in shared:  # the links are not setup's output
        if os.path.islink(ws.path / rel):
            os.unlink(ws.path / rel)
    entries, changed = _keep_output(s, ws, store, manifest)
    return SetupOutput(store, tuple(entries), tuple(changed), shared)


def setup_in_view(s: Session, ws: Workspace, env: dict[str, str], events: Events,
                  cancel: threading.Event | None = None) -> SetupOutput:
    """run_setup() as the loop shows it: the command and its log, the view busy while it runs,
    the time it took, and a warning where it changed tracked files."""
    if s.task.setup:
        events.message(f"setup: `{s.task.setup}` (its output: {s.dir / 'logs' / 'setup.log'})")
    began = time.monotonic()
    busy = getattr(events, "busy", None) if s.task.setup else None  # (a view may not tick)
    if busy:
        busy("setup")
    try:
        setup = run_setup(s, ws, env, cancel=cancel)
    finally:
        if busy:
            busy(None)
    if s.task.setup:
        events.message(f"setup done in {time.monotonic() - began:.1f} s")
    if setup.changed:
        events.message(f"autoresearch: warning: setup changed tracked files ({', '.join(setup.changed[:5])}); "
                       "trials run the committed code, so those changes are not kept")
    return setup


def _put_back(s: Session, ws: Workspace, store: Path, manifest: Path) -> None:
    """An earlier run's output back in place in the worktree: an idempotent setup finds it made."""
    try:  # the list is the ledger's (watched while a loop runs: an agent that adds a name to
        # setup.json, its copy for people, gets nothing of its own linked into every trial)
        recorded = s.ledger.get_meta("setup_entries")
        before = [str(e) for e in json.loads(recorded if recorded is not None else read_regular(manifest, 1 << 24)[0])]
    except (OSError, ValueError, TypeError):
        before = []
    for rel in before:
        if (store / rel).exists() and not os.path.lexists(ws.path / rel) and ".." not in Path(rel).parts:
            (ws.path / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(store / rel), str(ws.path / rel))


def _run_command(s: Session, ws: Workspace, setup: str, env: dict[str, str], wrap: list[str] | None,
                 cancel: threading.Event | None) -> None:
    """The setup command (`setup`) run in the worktree (in `wrap`, the sandbox, where given);
    raises when it fails, runs past its time limit, or is stopped."""
    log = s.dir / "logs" / "setup.log"
    command: str | list[str] = [*wrap, "/bin/bash", "-c", setup] if wrap else setup
    limit = setup_timeout()
    result = run_command(command, ws.path, env, limit, log, owner=s.owner, cancel=cancel)
    if result.cancelled:  # Ctrl-C or SIGTERM while it ran: stop now, not after it and a baseline
        raise KeyboardInterrupt
    tail = last_lines(read_tail(log), 15).strip("\n")
    shown = f"log {log}:\n{tail}" if tail.strip() else f"it printed nothing (log {log})"
    if result.timed_out:
        raise AutoresearchError(f"setup command `{setup}` was killed at setup's time limit, {limit:g} s "
                                f"(AUTORESEARCH_SETUP_TIMEOUT); {shown}")
    if result.returncode != 0:
        raise AutoresearchError(f"setup command `{setup}` failed (exit {result.returncode}); {shown}")


def _keep_output(s: Session, ws: Workspace, store: Path, manifest: Path) -> tuple[list[str], list[str]]:
    """What setup wrote in the worktree (untracked or ignored files) moved to `store` and listed
    in the ledger and `manifest`, and the tracked files it changed put back as committed; returns
    those paths and the tracked ones it changed."""
    out = s.git.run("status", "--porcelain=v1", "-z", "--untracked-files=normal", "--ignored=traditional",
                    "--no-renames", env=s.git.wt_env(ws), cwd=ws.path, strip=False, check=False)
    entries: list[str] = []
    changed: list[str] = []
    for code, path in status_entries(out):
        (entries if code in ("??", "!!") else changed).append(path.rstrip("/"))
    if changed:  # trials run the commit: the baseline's worktree too (a protected file setup changed
        # there read as the experiment's doing, and the baseline was rejected)
        s.git.run("checkout", "-f", "HEAD", "--", *changed, env={**s.git.wt_env(ws), "GIT_LITERAL_PATHSPECS": "1"},
                  cwd=ws.path, check=False)
    shutil.rmtree(store, ignore_errors=True)
    for rel in entries:
        store.joinpath(rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(ws.path / rel), str(store / rel))
    s.ledger.set_meta("setup_entries", json.dumps(entries))
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text(json.dumps(entries))
    os.replace(tmp, manifest)
    return entries, changed
