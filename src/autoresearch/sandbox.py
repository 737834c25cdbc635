"""Bubblewrap wrappers: the experiment sandbox (`--sandbox`) and the seal of the ledger.

The experiment sandbox (`experiment_prefix`) gives a command no network (its own network
namespace: only a loopback nobody listens on; every Unix socket bound in the filesystem covered
by an empty file, since a read-only mount does not stop a connect()), its own System V IPC
namespace (no shared memory left for the next trial), no capabilities (root included: a root process
with CAP_SYS_ADMIN could otherwise remount `/` read-write), its own PID namespace (nothing it
starts outlives it, and it cannot reach the harness through /proc/<pid>/root) and this view of
the filesystem:

- everything read-only, the interpreter and site-packages included;
- a private, empty, writable /tmp;
- the ledger folders (`.autoresearch/`) hidden: an experiment cannot read the holdout figures
  or the evaluator's logs, nor write the ledger; so are the keys and logins of the home
  (`HOME_SECRETS`: ~/.ssh, ~/.aws, ~/.netrc, ...);
- writable: the trial's worktree and its run folder only; the protected files inside the
  worktree read-only even to root;
- /proc of its own, a minimal /dev, and the GPU device nodes (/dev/nvidia*) when present.

The seal (`seal_prefix`) keeps a process's ordinary world (network, home, /tmp, devices) and
takes only the ledger folders out of its sight, but for the folders it works in. It is what
makes the holdout sealed: when a task has one, every process an agent controls runs sealed
while bubblewrap works here: the CLI agent itself (`seal_agent`: its worktree, its prompt
folder, and the agent-visible logs and results.tsv stay) and the experiment and evaluator
(execute.py: the worktree and run folder stay), so that code an agent wrote cannot read the
holdout and print it where the agent will look. Both also get their own PID namespace and no
capabilities.

Both need a working `bwrap`; `require()` says clearly why not (exit 2 for `--sandbox`);
`seal_warning()` says when a holdout cannot be sealed here.
"""

from __future__ import annotations

import functools
import os
import stat
import subprocess
import sys
import sysconfig
from collections.abc import Iterable
from pathlib import Path

from autoresearch.errors import UsageError
from autoresearch.programs import BWRAP

INSTALL_HINT = ("install bubblewrap: `apt-get install bubblewrap` (Debian/Ubuntu), "
                "`dnf install bubblewrap` (Fedora), `pacman -S bubblewrap` (Arch)")


def bwrap_path() -> str | None:
    return BWRAP  # (found as the harness started: see programs.py)


@functools.lru_cache(maxsize=1)
def _probe(bwrap: str) -> str | None:
    """None when `bwrap` can build both our wrappers here, else why not."""
    probes = [
        [bwrap, "--unshare-net", "--unshare-pid", "--die-with-parent", "--cap-drop", "ALL",
         "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "true"],
        [bwrap, "--die-with-parent", "--unshare-pid", "--cap-drop", "ALL", "--bind", "/", "/",
         "--dev-bind", "/dev", "/dev", "--proc", "/proc", "true"],
    ]
    for argv in probes:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            return str(e)
        if out.returncode != 0:
            return (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]
    return None


def problem() -> str | None:
    """Why a sandbox cannot be made here (None when it can)."""
    bwrap = bwrap_path()
    if bwrap is None:
        return f"bubblewrap (bwrap) is not installed; {INSTALL_HINT}"
    why = _probe(bwrap)
    if why:
        return (f"bubblewrap cannot create a sandbox here ({why}); it needs user namespaces "
                "(e.g. sysctl kernel.unprivileged_userns_clone=1, or a container started with "
                "them allowed)")
    return None


def require() -> str:
    """The path of a working bwrap, or a UsageError (exit 2) saying what to do."""
    why = problem()
    if why:
        raise UsageError(f"--sandbox: {why}")
    bwrap = bwrap_path()
    assert bwrap is not None
    return bwrap


# ---------------------------------------------------------------------------
# the experiment sandbox


def gpu_devices(dev: Path = Path("/dev")) -> list[Path]:
    """The NVIDIA device nodes (and the nvidia-caps folder) to pass through."""
    try:
        return sorted(p for p in dev.iterdir() if p.name.startswith("nvidia"))
    except OSError:
        return []


def python_paths(env: dict[str, str] | None = None) -> list[Path]:
    """What a Python experiment must be able to read: this interpreter, its prefixes and
    site-packages, and every PATH and PYTHONPATH entry of its environment."""
    paths = {sys.prefix, sys.exec_prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    for key in ("purelib", "platlib", "stdlib", "platstdlib"):
        value = sysconfig.get_paths().get(key)
        if value:
            paths.add(value)
    for var in ("PATH", "PYTHONPATH"):
        paths.update(p for p in (env or {}).get(var, "").split(os.pathsep) if p)
    return [Path(p) for p in sorted(paths)]


def _stdlib_read_only() -> list[tuple[Path, str]]:
    """This interpreter's standard library read-only (an edit to json/__init__.py would run in
    every experiment, a sibling's included), its site-packages inside it writable again (an
    agent's `pip install` is noted on its trial, not refused)."""
    paths = sysconfig.get_paths()
    std = {Path(paths[k]).resolve() for k in ("stdlib", "platstdlib") if paths.get(k) and Path(paths[k]).is_dir()}
    site = {Path(paths[k]).resolve() for k in ("purelib", "platlib") if paths.get(k) and Path(paths[k]).is_dir()}
    return [(p, "--ro-bind") for p in sorted(std)] + [(p, "--bind") for p in sorted(site) if _under(p, std)]


def _hiding(hidden: list[Path]) -> list[tuple[Path, str]]:
    """A hidden folder under an empty tmpfs, a hidden file (an MLflow store's database) under
    an empty file; one that is not there is left (bwrap cannot mount over nothing)."""
    return [(h, "--tmpfs" if h.is_dir() else "null") for h in hidden if h.exists()]


def _under(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def _mounts(ops: list[tuple[Path, str]]) -> list[str]:
    """bwrap mount options, parents before children (bwrap applies them in order); "null": an
    empty file bound over the path."""
    out: list[str] = []
    for path, op in sorted(ops, key=lambda o: len(o[0].parts)):  # stable: same depth keeps order
        if op == "null":
            out += ["--ro-bind", "/dev/null", str(path)]
        else:
            out += [op, str(path)] if op == "--tmpfs" else [op, str(path), str(path)]
    return out


def host_sockets(skip: Iterable[Path] = ()) -> list[Path]:
    """The Unix sockets bound in this machine's filesystem (/proc/net/unix), but those under
    `skip`: a read-only mount does not stop a connect(), and a daemon's socket (docker's, the
    session bus, an ssh agent) is a way out of any sandbox. Abstract sockets are the network
    namespace's, and so already out of reach."""
    try:
        lines = Path("/proc/net/unix").read_text(errors="replace").splitlines()[1:]
    except OSError:
        return []
    skip = list(skip)
    found: set[Path] = set()
    for line in lines:
        fields = line.split(None, 7)
        if len(fields) < 8 or not fields[7].startswith("/"):
            continue
        path = Path(os.path.realpath(fields[7]))  # (/var/run/x.sock is /run/x.sock)
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode) and not _under(path, skip):
                found.add(path)
        except OSError:  # (gone since)
            continue
    return sorted(found)


# where a home keeps its keys and logins: covered in the sandbox (an experiment has no network to
# use them, but what it reads it can print to the log an agent reads and sends to its provider)
HOME_SECRETS = (".ssh", ".gnupg", ".aws", ".azure", ".kube", ".docker/config.json", ".netrc", ".git-credentials",
                ".pypirc", ".config/gcloud", ".config/gh", ".huggingface/token", ".cache/huggingface/token",
                ".ray/auth_token")


def home_secrets(home: Path | None = None) -> list[Path]:
    """The key and login files and folders of `home` (the user's) that are there."""
    try:
        home = Path(home or Path.home()).resolve()
    except (OSError, RuntimeError):  # (no home)
        return []
    return [(home / rel).resolve() for rel in HOME_SECRETS if (home / rel).exists()]


def experiment_prefix(workdir: Path, run_dir: Path, *, hidden: Iterable[Path] = (),
                      readable: Iterable[Path] = (), protected: Iterable[str] = (),
                      devices: Iterable[Path] | None = None, bwrap: str = "bwrap") -> list[str]:
    """The argv prefix that runs a command in the experiment sandbox (see the module doc).

    `hidden`: folders replaced by an empty read-only tmpfs (the ledger); `readable`: folders
    that stay readable even when they lie under /tmp or a hidden folder (the task's checkout,
    the python shim); `protected`: worktree-relative files bound read-only."""
    workdir, run_dir = workdir.resolve(), run_dir.resolve()
    writable = [workdir, run_dir]
    hidden = [h.resolve() for h in hidden] + [s for s in home_secrets() if not _under(workdir, [s])]
    masked = [Path("/tmp"), *hidden]
    ops: list[tuple[Path, str]] = []
    for p in readable:
        p = p.resolve()
        if p.exists() and _under(p, masked) and not _under(p, writable):
            ops.append((p, "--ro-bind"))
    ops += _hiding(hidden)
    ops += [(workdir, "--bind"), (run_dir, "--bind")]
    for rel in protected:
        f = workdir / rel
        if f.is_file() and not f.is_symlink():
            ops.append((f, "--ro-bind"))
    ops += [(sock, "null") for sock in host_sockets(skip=[*masked, *writable, Path("/dev"), Path("/proc")])]
    argv = [bwrap, "--unshare-net", "--unshare-pid", "--unshare-ipc", "--die-with-parent", "--cap-drop", "ALL",
            "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    for d in gpu_devices() if devices is None else devices:
        argv += ["--dev-bind", str(d), str(d)]
    argv += _mounts(ops)
    for h in hidden:
        argv += ["--remount-ro", str(h)] if h.is_dir() else []
    argv += ["--setenv", "TMPDIR", "/tmp", "--chdir", str(workdir)]
    if "TRITON_CACHE_DIR" not in os.environ:  # its default (~/.triton) is read-only here
        argv += ["--setenv", "TRITON_CACHE_DIR", "/tmp/triton-cache"]
    return argv


# ---------------------------------------------------------------------------
# the seal


def seal_prefix(workdir: Path, *, hidden: Iterable[Path], writable: Iterable[Path] = (),
                readable: Iterable[Path] = (), bwrap: str = "bwrap") -> list[str]:
    """The argv prefix that runs a command with the `hidden` folders out of its sight, except
    its worktree and `writable` folders (read-write) and `readable` paths (read-only)."""
    workdir = workdir.resolve()
    hidden = [h.resolve() for h in hidden]
    ops: list[tuple[Path, str]] = _hiding(hidden) + _stdlib_read_only()
    ops += [(workdir, "--bind")] + [(p.resolve(), "--bind") for p in writable if p.exists()]
    ops += [(p.resolve(), "--ro-bind") for p in readable if p.exists()]
    argv = [bwrap, "--die-with-parent", "--unshare-pid", "--cap-drop", "ALL",
            "--bind", "/", "/", "--dev-bind", "/dev", "/dev", "--proc", "/proc"]
    argv += _mounts(ops)
    for h in hidden:
        argv += ["--remount-ro", str(h)] if h.is_dir() else []
    return argv + ["--chdir", str(workdir)]


def seal_agent(task: object, workdir: Path, ledger_dir: Path, own_dir: Path, beside: bool = False,
               also: Iterable[Path] = ()) -> list[str]:
    """The prefix for a CLI agent of `task`: every ledger hidden from it but its worktree, its
    own prompt folder and the agent-visible logs and results.tsv (so, with trials `beside` it,
    the worktrees of the others too). Empty when the task has no holdout to seal and no trial
    runs beside it, or bubblewrap cannot run here (see `seal_warning`)."""
    if not (task.metric.holdout or beside) or problem():  # type: ignore[attr-defined]
        return []
    return seal_prefix(workdir, hidden=[ledger_dir.parent, *also], writable=[own_dir],
                       readable=[ledger_dir / "logs", ledger_dir / "results.tsv"],
                       bwrap=bwrap_path() or "bwrap")


def seal_warning(task: object, beside: bool = False) -> str:
    """Why `task`'s holdout, or trials run `beside` each other, cannot be sealed here ('' when
    they can, or there is nothing to seal)."""
    why = problem() if task.metric.holdout or beside else None  # type: ignore[attr-defined]
    if not why:
        return ""
    what = [*(["the holdout is not sealed: agents and the code they write could read the ledger"]
              if task.metric.holdout else []),  # type: ignore[attr-defined]
            *(["trials side by side are not sealed from each other: an agent or experiment could write into "
               "another trial's worktree (a change to its editable files while it runs rejects it) or append "
               "to its log, whose last metric line is its figure (not caught: use --workers 1)"] if beside else [])]
    return f"warning: {'; '.join(what)} ({why})"


# ---------------------------------------------------------------------------
# a tag's choice, kept across runs


def for_tag(root: Path, tag: str, flag: bool | None, *, trial: bool = False) -> bool:
    """Whether `run` (or `trial`) of `tag` runs its experiments sandboxed: `flag` when given
    (`--sandbox`, `--no-sandbox`), else as the tag's last run did (recorded in its ledger), so a
    loop resumed with `run --tag T` after a kill does not quietly lose its sandbox. Sandboxed,
    bubblewrap must work here (`require`)."""
    on = flag
    if on is None:
        from autoresearch.errors import AutoresearchError
        from autoresearch.ledger import Ledger, tag_dir

        on = False
        if (tag_dir(root, tag) / "ledger.sqlite").exists():
            try:
                led = Ledger.read(root, tag)
                try:
                    on = led.get_meta("sandbox") == "1"
                finally:
                    led.close()
            except AutoresearchError:
                on = False
        if on:
            print(f"autoresearch: the trial runs under --sandbox, as tag {tag}'s last run did" if trial else
                  f"autoresearch: tag {tag} goes on under --sandbox, as its last run did "
                  "(--no-sandbox to run without it)", file=sys.stderr, flush=True)
    if on:
        require()
    return on
