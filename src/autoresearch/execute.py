"""One measurement of a trial: the experiment, then (optionally) the evaluator.

This is what a backend runs wherever the code is (a local worktree, a Ray worker's folder).
It returns raw outputs; the driver extracts figures and decides. Guarantees: protected files
are read-only during the experiment and hash-checked after it; whatever the experiment left
running is killed when it ends; the evaluator runs in a fresh process after the tree has been
restored to the trial's commit (`restore`) and the protected files re-checked, with any metric
file the experiment wrote removed, so neither the experiment's prints nor its changes to files
can reach the figures of record. The evaluator's whole output goes to `eval_log` (sealed: never
shown to an agent); the experiment's log gets a copy with the holdout's lines redacted.
With `sandbox`, both commands run under bubblewrap (see sandbox.py); with `seal` (a task with
a holdout) they run with the ledger hidden where bwrap works. Both are built here from the
spec's own paths so that they hold wherever the trial runs.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from autoresearch import guard
from autoresearch.agents.secrets import URL_CREDENTIALS
from autoresearch.filetree import open_log
from autoresearch.metrics import redact
from autoresearch.objects import object_name
from autoresearch.process import ProcResult, read_tail, run_command, trim_log

# the names of secrets: *_API_KEY, *_KEY, *_TOKEN, *_PAT, anything with SECRET, PASSWORD,
# PASSWD, CREDENTIAL or PRIVATE_KEY, and the ssh agent (not MAX_TOKENS: _TOKEN only at the end)
SECRET_ENV = re.compile(r"(API_?KEY|_KEY$|^KEY$|_TOKEN$|^TOKEN$|_PAT$|SECRET|PASSWORD|PASSWD|CREDENTIAL|ACCESS_KEY"
                        r"|PRIVATE_KEY|^SSH_AUTH_SOCK$)", re.IGNORECASE)


@dataclass(frozen=True)
class ExecSpec:
    number: int
    workdir: Path
    run_dir: Path
    log_path: Path
    command: str
    timeout: float
    env: dict[str, str]
    protected: dict[str, str] = field(default_factory=dict)  # path -> expected sha256
    evaluate: str | None = None
    owner: str = ""
    wrap: list[str] | None = None  # a fixed prefix (argv) for both commands
    sandbox: bool = False  # run both commands under bubblewrap (sandbox.experiment_prefix)
    seal: bool = False  # else hide the `hidden` folders from both where bwrap works (sandbox.seal_prefix)
    hidden: tuple[Path, ...] = ()  # folders the sandbox hides (the ledgers)
    readable: tuple[Path, ...] = ()  # folders the sandbox keeps readable under /tmp or hidden ones
    holdout: str | None = None  # the sealed figure: its lines never reach log_path
    eval_log: Path | None = None  # the evaluator's whole output (default: next to log_path)
    eval_file: str | None = None  # a metric file only the evaluator may write into run_dir
    # trials side by side: the editable files of the commit (path -> git object name), which
    # must not change while its commands run (another trial's agent or experiment could write here)
    watched: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ExecResult:
    outcome: str  # ok | crash | timeout | cancelled | tampered | drifted | escaped | eval_failed | eval_timeout | lost (a remote worker died)
    returncode: int | None
    seconds: float
    output: str
    eval_output: str | None = None
    eval_seconds: float = 0.0
    tampered: tuple[str, ...] = ()
    escaped: tuple[str, ...] = ()  # processes that outlived their killed reaper (process.sweep_escaped)
    stale: str = ""  # the metric file the working folder had before the run and still had, unwritten


def experiment_env(base: dict[str, str], extra: dict[str, str], bin_dir: Path | None) -> dict[str, str]:
    """The environment of an experiment: ours minus anything that looks like a secret, plus
    the AUTORESEARCH_* variables, with `python` on PATH being this interpreter."""
    env = {k: v for k, v in base.items()  # (a value with a URL's credentials: DATABASE_URL=postgres://u:pw@h/db)
           if k.startswith("AUTORESEARCH_") or not (SECRET_ENV.search(k) or URL_CREDENTIALS.search(v))}
    env.update(extra)
    if bin_dir is not None:
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def active_environment(environ: Mapping[str, str] | None = None) -> Path | None:
    """The virtualenv or conda environment the user has activated, when autoresearch itself
    runs elsewhere (installed with pipx, say): experiments then run its `python`, as the user's
    shell would; else None."""
    for var in ("VIRTUAL_ENV", "CONDA_PREFIX"):
        prefix = (os.environ if environ is None else environ).get(var)
        if prefix and (Path(prefix) / "bin" / "python").exists() \
                and Path(prefix).resolve() != Path(sys.prefix).resolve():
            return Path(prefix)
    return None


def tool_environment() -> bool:
    """Whether autoresearch runs in a virtualenv of its own that pipx or `uv tool` made: it holds
    the tool alone, not the task's packages (torch...), so experiments keep the interpreter it
    was made from, with that one's site-packages."""
    parts = Path(sys.prefix).parts
    return "pipx" in parts or any(a == "uv" and b == "tools" for a, b in zip(parts, parts[1:], strict=False))


def python_bin(shim: Path) -> tuple[Path, str]:
    """The folder put first on an experiment's PATH for `python`, and what to tell the user:
    the user's activated environment's own bin (a link to its python would not find its
    pyvenv.cfg), else the bin of the virtualenv autoresearch runs in, else a folder whose
    `python` is the interpreter running autoresearch."""
    active = active_environment()
    if active is None and sys.prefix != sys.base_prefix and not tool_environment():  # autoresearch's own
        return Path(sys.executable).parent, ""  # virtualenv: its bin, as activated (its pyvenv.cfg is found)
    if active is None:
        return python_shim(shim), ""
    return active / "bin", (f"autoresearch: experiments run `python` from your active environment {active} "
                            f"(autoresearch itself runs on {sys.executable})")


def python_shim(directory: Path) -> Path:
    """A folder holding `python` and `python3` pointing at this interpreter."""
    target = sys.executable
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):  # (an agent's: mkdir
        directory.unlink()  # would fail on it, and the loop with it; a link would point at other links)
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("python", "python3"):
        link = directory / name
        if not (link.is_symlink() and os.readlink(link) == target):
            tmp = directory / f".{name}.{os.getpid()}"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(target)
            os.replace(tmp, link)
    return directory


def _wrapped(spec: ExecSpec, command: str) -> str | list[str]:
    from autoresearch import sandbox

    prefix = spec.wrap
    if spec.sandbox:
        prefix = sandbox.experiment_prefix(
            spec.workdir, spec.run_dir, hidden=spec.hidden,
            readable=[*spec.readable, *sandbox.python_paths(spec.env)],
            protected=list(spec.protected), bwrap=sandbox.require())
    elif spec.seal and sandbox.problem() is None:
        prefix = sandbox.seal_prefix(
            spec.workdir, hidden=spec.hidden, writable=[spec.run_dir],
            readable=[p for p in spec.readable if any(h in p.parents for h in spec.hidden)]
            + [spec.workdir / p for p in spec.protected], bwrap=sandbox.bwrap_path() or "bwrap")
    return [*prefix, "/bin/bash", "-c", command] if prefix else command


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    """What changes when a file is written or replaced (None: there is none)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size


def execute(spec: ExecSpec, restore: Callable[[], None] | None = None,
            cancel: threading.Event | None = None) -> ExecResult:
    if spec.run_dir.exists():
        shutil.rmtree(spec.run_dir, ignore_errors=True)
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in spec.env.items() if k != "AUTORESEARCH_EVALUATE"}  # (the user's own is not the task's)
    env["AUTORESEARCH_RUN_DIR"] = str(spec.run_dir)
    if spec.evaluate:  # an experiment may leave the scoring to it (the nanochat template's train.py does)
        env["AUTORESEARCH_EVALUATE"] = spec.evaluate
    protected = list(spec.protected)
    # without an evaluator, the metric file in the working folder counts only when this run wrote
    # it: one the commit has (or an earlier step left) is not this code's result
    metric = spec.workdir / spec.eval_file if spec.eval_file and not spec.evaluate \
        and spec.eval_file not in spec.protected else None
    before = _identity(metric) if metric is not None else None
    guard.set_readonly(spec.workdir, protected, True)
    seen, early = _identities(spec.workdir, spec.watched), _not_commit(spec.workdir, spec.watched)
    try:
        proc = run_command(_wrapped(spec, spec.command), spec.workdir, env, spec.timeout,
                           spec.log_path, cancel=cancel, owner=spec.owner)
    finally:  # (run_command has killed what it left: no daemon touches the tree while the evaluator runs)
        guard.set_readonly(spec.workdir, protected, False)
    trim_log(spec.log_path)
    output = read_tail(spec.log_path)
    tampered = tuple(guard.changed_files(spec.protected, spec.workdir))
    if proc.cancelled:
        return ExecResult("cancelled", proc.returncode, proc.seconds, output, tampered=tampered)
    if proc.escaped and not proc.timed_out:
        return ExecResult("escaped", proc.returncode, proc.seconds, output, escaped=proc.escaped)
    if tampered:
        return ExecResult("tampered", proc.returncode, proc.seconds, output, tampered=tampered)
    drifted = early or _drifted(spec.workdir, spec.watched, seen)  # (a run made to fail is no crash of its code)
    if drifted:
        return ExecResult("drifted", proc.returncode, proc.seconds, output, tampered=drifted)
    if proc.timed_out:
        return ExecResult("timeout", proc.returncode, proc.seconds, output)
    if proc.returncode != 0:
        return ExecResult("crash", proc.returncode, proc.seconds, output)
    if not spec.evaluate:
        stale = ""
        if metric is not None and before is not None and _identity(metric) == before:
            metric.unlink(missing_ok=True)
            stale = spec.eval_file or ""
        return ExecResult("ok", 0, proc.seconds, output, stale=stale)
    return _evaluate(spec, spec.evaluate, env, proc, output, restore, cancel)


def _evaluate(spec: ExecSpec, command: str, env: dict[str, str], proc: ProcResult, output: str,
              restore: Callable[[], None] | None, cancel: threading.Event | None) -> ExecResult:
    """The evaluator: a fresh process on the trial's committed files and what the run left."""
    if restore is not None:
        restore()
    tampered = tuple(guard.changed_files(spec.protected, spec.workdir))
    if tampered:  # the restored tree is not the committed one (the object store was altered)
        return ExecResult("tampered", proc.returncode, proc.seconds, output, tampered=tampered)
    if spec.eval_file:  # the evaluator's to write, in the run folder or its working folder
        (spec.run_dir / spec.eval_file).unlink(missing_ok=True)
        if spec.eval_file not in spec.protected:
            (spec.workdir / spec.eval_file).unlink(missing_ok=True)
    eval_log = spec.eval_log or spec.log_path.with_name(spec.log_path.stem + ".eval.log")
    eval_log.parent.mkdir(parents=True, exist_ok=True)
    # the experiment's wall time, measured here: an evaluator may hold it against the time budget
    eval_env = {**env, "AUTORESEARCH_EXPERIMENT_SECONDS": f"{proc.seconds:.3f}"}
    seen, early = _identities(spec.workdir, spec.watched), _not_commit(spec.workdir, spec.watched)
    ev = run_command(_wrapped(spec, command), spec.workdir, eval_env, spec.timeout, eval_log,
                     cancel=cancel, owner=spec.owner)
    trim_log(eval_log)
    eval_output = read_tail(eval_log)
    with open_log(spec.log_path, append=True) as log:  # (what the experiment put in its place: not followed)
        log.write(f"\n=== evaluate: {command} (exit {ev.returncode}, {ev.seconds:.1f}s) ===\n"
                  f"{redact(eval_output, spec.holdout)}".encode("utf-8", errors="replace"))
    if ev.cancelled:
        return ExecResult("cancelled", ev.returncode, proc.seconds, output, eval_output, ev.seconds)
    if ev.escaped and not ev.timed_out:
        return ExecResult("escaped", ev.returncode, proc.seconds, output, eval_output, ev.seconds, escaped=ev.escaped)
    outcome = "eval_timeout" if ev.timed_out else "ok" if ev.returncode == 0 else "eval_failed"
    tampered = tuple(guard.changed_files(spec.protected, spec.workdir))
    if tampered:
        outcome = "tampered"
    elif drifted := early or _drifted(spec.workdir, spec.watched, seen):
        outcome, tampered = "drifted", drifted
    return ExecResult(outcome, ev.returncode, proc.seconds, output, eval_output, ev.seconds, tampered)


def _identities(root: Path, paths: dict[str, str]) -> dict[str, tuple[int, int, int, int] | None]:
    return {rel: _identity(root / rel) for rel in paths}


def _same(path: Path, name: str) -> bool | None:
    """Whether `path` holds the git object `name`'s content (None: it cannot be read)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return object_name(name, data) == name


def _not_commit(root: Path, watched: dict[str, str]) -> tuple[str, ...]:
    """The watched files that are not the commit's as a command starts (written meanwhile)."""
    return tuple(rel for rel, name in watched.items() if not _same(root / rel, name))


def _drifted(root: Path, watched: dict[str, str], seen: dict[str, tuple[int, int, int, int] | None]) -> tuple[str, ...]:
    """The watched files written while a command ran: their content no longer the commit's, or
    rewritten (back to it, maybe after another trial's code was run from them)."""
    out = []
    for rel, name in watched.items():
        if _identity(root / rel) == seen.get(rel):
            continue
        same = _same(root / rel, name)
        out.append(f"{rel} (removed)" if same is None else f"{rel} (rewritten, the same content at the end)"
                   if same else rel)
    return tuple(out)
