"""What a Ray task of `--backend ray` runs on its worker: the trial's code unpacked into a
temporary folder, the task's setup once per node, the measurement by `autoresearch.execute`, and
what comes back to the driver (backends/ray.py, which sends it)."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import platform
import re
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from autoresearch.execute import ExecResult, ExecSpec, execute, experiment_env, python_shim
from autoresearch.filetree import read_log
from autoresearch.process import kill_owned, last_lines, read_tail, run_command

MAX_LOG_BYTES = 64 * 2**20
SETUP_TIMEOUT = 6 * 3600.0
SETUP_KEEP = 7 * 86400.0  # seconds a node keeps a setup folder that no trial has used
SETUP_KEY = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True)
class Returned:
    result: ExecResult
    log: bytes
    eval_log: bytes | None
    metric: bytes | None
    node: str
    setup_log: bytes | None = None  # the setup's output, when it ran on the node for this task


def pack(workdir: Path) -> bytes:
    """A gzipped tarball of a worktree's files (its `.git` pointer left out)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for entry in sorted(workdir.iterdir()):
            if entry.name != ".git":
                tar.add(entry, arcname=entry.name)
    return buf.getvalue()


def unpack(code: bytes, workdir: Path) -> None:
    """Make `workdir` exactly the tarball's content. Links stay as the commit holds them (one to
    a data set at an absolute path, as in a worktree): the "tar" filter, not "data", which
    refuses them; no member lands outside `workdir` all the same."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(code), mode="r:gz") as tar:
        if hasattr(tarfile, "tar_filter"):
            tar.extractall(workdir, filter="tar")
        else:  # pragma: no cover - Python < 3.10.12
            tar.extractall(workdir)


def eval_log_path(spec: ExecSpec) -> Path:
    return spec.eval_log or spec.log_path.with_name(spec.log_path.stem + ".eval.log")


def _tail_bytes(path: Path) -> bytes:
    """The log's bytes as the experiment wrote them (binary, Latin-1), as the local backend keeps them."""
    return read_log(path, MAX_LOG_BYTES)


def _setup_once(setup: str, key: str, spec: ExecSpec, code: bytes) -> tuple[ExecResult | None, Path, list[str]]:
    """Run the task's setup on this node unless it ran here already, in a folder of its own
    that lasts (the code unpacked there, as locally in the loop's first worktree): returns a
    failure as a crash (or None), that folder and what the setup made in it, to be linked into
    every trial's code on this node as the local backend links it into every worktree."""
    marks = setup_marks()
    marks.mkdir(exist_ok=True)
    home, made_file = marks / key, marks / f"{key}.made"
    with _held(marks / f"{key}.lock"):  # two trials starting on one node: one setup
        os.utime(marks / f"{key}.lock")  # (its last use: see prune_setups)
        try:  # (a /tmp cleaner may have taken the folder: then set up again)
            made = json.loads(made_file.read_text()) if (marks / f"{key}.done").exists() and home.is_dir() else None
        except (OSError, ValueError):
            made = None
        if isinstance(made, list) and all(isinstance(m, str) for m in made):
            return None, home, made
        unpack(code, home)
        before = set(_paths(home))
        r = run_command(setup, home, spec.env, SETUP_TIMEOUT, spec.log_path, owner=spec.owner)
        if r.returncode == 0:
            new = [rel for rel in _paths(home) if rel not in before]
            fresh = set(new)
            made = [rel for rel in new if Path(rel).parent.as_posix() not in fresh]  # a new folder, whole
            made_file.write_text(json.dumps(made))
            (marks / f"{key}.done").touch()
            return None, home, made
    out = read_tail(spec.log_path)
    return ExecResult("crash", r.returncode, r.seconds,
                      f"setup `{setup}` failed on {platform.node()}:\n{last_lines(out, 10)}"), home, []


def setup_marks() -> Path:
    """Where a node keeps its setup folders (<key>/) and their marks (<key>.made, .done, .lock)."""
    return Path(tempfile.gettempdir()) / "autoresearch-setup"


@contextlib.contextmanager
def _held(path: Path, wait: bool = True) -> Iterator[bool]:
    """An exclusive lock on the file at `path` (made if missing); with `wait` False, False at
    once when another holds it. prune_setups removes a lock file it holds: one who waited on it
    meanwhile takes the lock again on the file now there, not on the removed one."""
    while True:
        with open(path, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                same = os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
            except OSError:
                same = False
            if same:
                yield True
                return


def _last_use(marks: Path, key: str) -> float:
    """When a trial last used (or set up) the setup folder `key`: its lock file's time, which
    each trial sets (or, for a folder made before that, the newest of its files)."""
    times = []
    for name in (key, f"{key}.lock", f"{key}.done", f"{key}.made"):
        with contextlib.suppress(OSError):
            times.append((marks / name).lstat().st_mtime)
    return max(times, default=0.0)


def prune_setups(keep: float = SETUP_KEEP) -> list[str]:
    """Remove this node's setup folders that no trial has used for `keep` seconds (each new
    change of the files setup reads makes a folder of its own, and each task another; a tag
    resumed after that long sets up anew: setup is idempotent). One being set up, or being
    looked up by a trial starting, is kept. Returns the keys removed."""
    marks, gone = setup_marks(), list[str]()
    cutoff = time.time() - keep
    try:
        keys = {p.name.split(".", 1)[0] for p in marks.iterdir()}
    except OSError:
        return gone
    for key in sorted(k for k in keys if SETUP_KEY.fullmatch(k)):
        if _last_use(marks, key) > cutoff:
            continue
        try:
            with _held(marks / f"{key}.lock", wait=False) as held:
                if not held or _last_use(marks, key) > cutoff:  # (in use, or used just now)
                    continue
                (marks / f"{key}.done").unlink(missing_ok=True)  # first: no trial takes it for set up
                shutil.rmtree(marks / key, ignore_errors=True)
                for suffix in (".made", ".lock"):
                    (marks / f"{key}{suffix}").unlink(missing_ok=True)
                gone.append(key)
        except OSError:
            continue  # (another user's folder, say: not ours to remove)
    return gone


def _paths(folder: Path) -> list[str]:
    """Every path under `folder`, relative, parents first (links not followed)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        rel = Path(dirpath).relative_to(folder)
        out += [(rel / n).as_posix() for n in sorted(dirnames) + sorted(filenames)]
    return out


def _link(workdir: Path, links: list[tuple[str, Path]]) -> None:
    """What setup made on this node, and the task's `shared` paths where this node has them at
    the driver's absolute path, linked into the trial's code (what the code holds stays)."""
    for rel, target in links:
        at = workdir / rel
        try:
            if at.is_dir() and not at.is_symlink() and not any(at.iterdir()):
                at.rmdir()  # a submodule's empty folder in the code: the node's copy instead
            if os.path.lexists(at) or not os.path.lexists(target):
                continue
            at.parent.mkdir(parents=True, exist_ok=True)
            at.symlink_to(target)
        except OSError:
            continue  # what the code holds there stays; the experiment says what it misses


def sweep_stale() -> None:
    """Remove the folders of tasks whose worker is gone (a driver SIGKILLed takes its tasks'
    workers with it, before they could clean up): a run folder may hold checkpoints."""
    for folder in Path(tempfile.gettempdir()).glob("autoresearch-*-*"):
        try:
            host, pid = (folder / "pid").read_text().split()
        except (OSError, ValueError):
            continue  # not one of ours, or one being made now
        # (a /tmp shared by containers: another one's pids are not ours to look up)
        if host == platform.node() and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            remove(folder)


def remove(folder: Path) -> None:
    """A task's folder removed, its pid file last: a worker killed halfway through leaves a
    folder that the next sweep still knows for one of ours (a run folder may hold checkpoints)."""
    with contextlib.suppress(OSError):
        for item in folder.iterdir():
            if item.name != "pid":
                shutil.rmtree(item, ignore_errors=True) if item.is_dir() and not item.is_symlink() else item.unlink()
    (folder / "pid").unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)


def measure_remote(spec: ExecSpec, code: bytes, setup: str | None, setup_key: str,
                   metric_file: str | None, shared: tuple[tuple[str, str], ...] = ()) -> Returned:
    """Runs on a Ray worker: unpack the code, set up once per node, measure with execute()."""
    sweep_stale()
    root = Path(tempfile.mkdtemp(prefix=f"autoresearch-{spec.number}-"))
    (root / "pid").write_text(f"{platform.node()} {os.getpid()}")  # while this worker lives, it is in use
    try:
        workdir = root / "code"
        unpack(code, workdir)
        (root / "logs").mkdir()
        local = _local_spec(spec, root, workdir)
        result, links, setup_log = None, [(rel, Path(path)) for rel, path in shared], None
        if setup:
            result, home, made = _setup_once(setup, setup_key, local, code)
            links = [(rel, home / rel) for rel in made] + links
            if result is None and local.log_path.exists():  # it ran now: its output, which the
                setup_log = _tail_bytes(local.log_path)  # experiment's log would replace
        prune_setups()  # (after this task's own was marked used)
        _link(workdir, links)
        # what the links point to stays visible under --sandbox (its /tmp is a private one)
        local = replace(local, readable=(*local.readable, *(target for _, target in links if target.exists())))
        if result is None:
            result = _execute_here(local, code, links)
        metric = _metric_bytes(metric_file, local.run_dir, workdir)
        eval_log = eval_log_path(local)
        return Returned(result, _tail_bytes(local.log_path),
                        _tail_bytes(eval_log) if eval_log.exists() else None, metric, platform.node(), setup_log)
    finally:
        remove(root)


def _local_spec(spec: ExecSpec, root: Path, workdir: Path) -> ExecSpec:
    """The driver's spec with its paths made this node's, under `root`: the ledger folders are
    hidden where they exist (a worker on the driver's machine), the python shim stays readable
    under a sandbox."""
    env = experiment_env(dict(os.environ), spec.env, python_shim(root / "bin"))
    import ray

    if not ray.get_gpu_ids():  # granted no GPU: it sees none (whatever Ray's default becomes)
        env["CUDA_VISIBLE_DEVICES"] = ""
    return replace(spec, workdir=workdir, run_dir=root / "run", env=env,
                   log_path=root / "logs" / spec.log_path.name,
                   eval_log=root / "sealed" / eval_log_path(spec).name,
                   hidden=tuple(h for h in spec.hidden if h.exists()),
                   readable=(root / "bin", *(p for p in spec.readable if p.exists())))


def _metric_bytes(metric_file: str | None, *bases: Path) -> bytes | None:
    """The metric file's bytes from the first of `bases` that holds it (with `evaluate`, execute
    removed the run's own first), or None."""
    for base in bases:
        if metric_file and (base / metric_file).is_file():
            return (base / metric_file).read_bytes()
    return None


def _execute_here(local: ExecSpec, code: bytes, links: list[tuple[str, Path]]) -> ExecResult:
    """execute() on this node, its code unpacked and linked again where it must be restored."""
    def restore() -> None:
        unpack(code, local.workdir)
        _link(local.workdir, links)

    try:  # a cancel event makes execute poll, so that a polite ray.cancel lands at once
        return execute(local, restore=restore, cancel=threading.Event())
    except KeyboardInterrupt:  # ray.cancel(force=False): take the experiment with us
        kill_owned(local.owner)
        raise




def measure_stream(spec: ExecSpec, code: bytes, setup: str | None, setup_key: str, metric_file: str | None,
                   shared: tuple[tuple[str, str], ...] = ()) -> Iterator[str | Returned]:
    """The Ray task (a streaming generator): first the name of the node it started on, the
    moment Ray starts it (until then it waits in Ray's queue for a node with the resources
    free), then what measure_remote returns."""
    yield platform.node()
    yield measure_remote(spec, code, setup, setup_key, metric_file, shared)
