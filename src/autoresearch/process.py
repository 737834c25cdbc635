"""Run one command as its own process group, with a hard timeout that kills the whole group.

The command runs under reaper.py, a child subreaper: whatever it leaves behind (a `setsid`
daemon, a double fork, one started with `env -i`) comes back to the reaper when its parent
dies, and is killed when the command ends. Every process we start also carries
AUTORESEARCH_OWNER=<token> in its environment, so that what escaped both (the harness killed
before the reaper could act) is still found through /proc. The reaper dies with us
(PR_SET_PDEATHSIG) if the harness is SIGKILLed, and the command with the reaper.

An experiment may kill its reaper (it runs as you) and leave a daemon that has neither the mark
nor a reaper above it. Against that, the loop's process is a subreaper too (adopt_orphans):
what a killed reaper leaves comes back to it, and every process a command starts carries a
mark it cannot take off (a finite hard limit on real-time CPU time, which an unprivileged
process may lower but never lift back to unlimited). After each command, what came back with
the mark is killed and named (ProcResult.escaped): the trial is not trusted.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import os
import resource
import select
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoresearch.filetree import open_log, read_log
from autoresearch.outputcopy import StdoutCopy
from autoresearch.reaper import freeze_and_kill, parents

OWNER_VAR = "AUTORESEARCH_OWNER"
REAPER = Path(__file__).with_name("reaper.py")  # run under it: see reaper.py
GRACE_SECONDS = 2.0
SHORT_SECONDS = 5.0  # a command this short cannot have seen the pids wrap around
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_SET_CHILD_SUBREAPER = 1, 4, 36
# the mark of a command's processes: RLIMIT_RTTIME's hard limit (microseconds a real-time
# scheduled process may run without blocking: 146,000 years, a limit nobody reaches). MARK for
# the harness's own git; MARK - n for the n-th command, so that a stray names its command
MARK = 2**62 - 20251130
_RTTIME = getattr(resource, "RLIMIT_RTTIME", None)
_LIVE: set[int] = set()  # the reapers of the commands running now: children of ours by right
_LIVE_LOCK = threading.Lock()
_FOUND: dict[int, list[str]] = {}  # strays killed, by their mark, for their command to take
_numbers = itertools.count(1)
_issued = 0  # the last command number handed out: a mark below MARK - _issued names no command
_adopting = False


@dataclass(frozen=True)
class ProcResult:
    returncode: int | None
    seconds: float
    timed_out: bool = False
    cancelled: bool = False
    escaped: tuple[str, ...] = ()  # processes that outlived a killed reaper (see sweep_escaped)
    stdout: str = ""  # the end of what it wrote on stdout alone (with split_stdout)


try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - not Linux
    _LIBC = None


def _die_with_parent(mark: int = MARK) -> None:
    # Runs in the child between fork and exec: calls into already loaded modules only.
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if _RTTIME is not None:
        try:
            resource.setrlimit(_RTTIME, (mark, mark))
        except (OSError, ValueError):
            pass


def undebuggable() -> None:
    """Take this process out of reach of a debugger run as the same user (PR_SET_DUMPABLE 0):
    where the kernel lets a process trace others of its user (no Yama), an experiment could
    otherwise make the loop or its watchdog run code of its own. (Root with CAP_SYS_PTRACE
    still can; docker's default set has no CAP_SYS_PTRACE.)"""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


def adopt_orphans() -> bool:
    """Make this process a subreaper (Linux), so that what a killed reaper leaves comes back
    here, where run_command finds it by its mark, and out of a debugger's reach. Whether it is
    a subreaper."""
    undebuggable()
    global _adopting
    if not _adopting and _LIBC is not None and _RTTIME is not None and not _marked(os.getpid()):
        # (a loop started from inside an experiment carries the mark: its own git would look stray)
        _adopting = _LIBC.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    return _adopting


def _mark_of(pid: int) -> int | None:
    """The process's hard RLIMIT_RTTIME; None when unlimited (no mark) or unknown."""
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max realtime timeout"):
                    hard = line.split()[4]
                    return None if hard == "unlimited" else int(hard)
    except (OSError, IndexError, ValueError):
        pass
    return None


def _marked(pid: int) -> bool:
    return _mark_of(pid) is not None  # lowered or not: never lifted back to unlimited


def _children() -> list[int]:
    """The processes whose parent is this process (any of its threads)."""
    me = os.getpid()
    return [pid for pid, parent in parents().items() if parent == me]


# util-linux's, which sets the mark on a command it then runs in its place: the system's own
# only (not one put earlier on PATH, which every git the harness runs would run first)
PRLIMIT = next((p for p in ("/usr/bin/prlimit", "/bin/prlimit") if os.access(p, os.X_OK)), None)


def run_harness(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """subprocess.run for a command of the harness's own that may run code the repository
    names (git's filter drivers, set in a config an experiment beside it rewrote for an
    instant): marked like a trial's processes while this process adopts orphans, so that what
    such code leaves behind is swept; known while it runs, so that the sweep spares it."""
    if not _adopting or PRLIMIT is None:
        return subprocess.run(argv, **kwargs)
    data = kwargs.pop("input", None)
    kwargs.pop("capture_output", None)
    with _LIVE_LOCK:
        proc = subprocess.Popen([PRLIMIT, f"--rttime={MARK}:{MARK}", *argv], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.PIPE if data is not None else None,
                                **kwargs)
        _LIVE.add(proc.pid)
    try:
        out, err = proc.communicate(data)
    finally:
        with _LIVE_LOCK:
            _LIVE.discard(proc.pid)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def sweep_escaped(mine: int | None = None, limit: float = 3.0) -> list[str]:
    """Kill and reap the marked processes that came back to this subreaper (their reaper was
    killed), and those they hand over in turn. Returns those of mark `mine` (found now or by
    another thread's sweep), and those whose mark names no command (lowered), each named as
    "pid N (command line)"; the others are kept for their own command to take."""
    if not _adopting:
        return []
    unnamed: list[str] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with _LIVE_LOCK:
            strays = [(pid, mark) for pid in _children() if pid not in _LIVE
                      and (mark := _mark_of(pid)) is not None]
        if not strays:
            break
        for pid, mark in strays:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    line = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                line = ""
            said = f"pid {pid} ({line[:120] or '?'})"
            if MARK - _issued <= mark <= MARK:  # (one lowered past every command issued: unnamed)
                with _LIVE_LOCK:
                    _FOUND.setdefault(mark, []).append(said)
            else:
                unnamed.append(said)
        freeze_and_kill({pid for pid, _ in strays})
        for pid, _ in strays:  # reaped as they die (a process stuck in the kernel: left as a zombie)
            while time.monotonic() < deadline:
                try:
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        break
                except ChildProcessError:
                    break
                time.sleep(0.005)
    with _LIVE_LOCK:
        return _FOUND.pop(mine, []) + unnamed if mine is not None else unnamed


def exit_words(code: int | None) -> str:
    """How a command ended, for a reason a person reads: `exit code 3`; a death by a signal
    named (`killed by signal 9 (SIGKILL: out of memory, or a kill -9)`), also as a shell
    reports it (`exit code 137 (128 + signal 9, ...)`)."""
    number = 0 if code is None else -code if code < 0 else code - 128 if 128 < code < 128 + 65 else 0
    try:
        name = signal.Signals(number).name if number else ""
    except ValueError:
        name = ""
    if not name or code is None:
        return f"exit code {code}"
    what = f"{name}: out of memory, or a kill -9" if number == signal.SIGKILL else name
    return f"killed by signal {number} ({what})" if code < 0 else f"exit code {code} (128 + signal {number}, {what})"


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _last_pid() -> int | None:
    """The pid most recently handed out (in our pid namespace), from /proc/loadavg."""
    try:
        with open("/proc/loadavg") as f:
            return int(f.read().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def _born_after(first: int | None) -> Callable[[int], bool]:
    """A test for "this pid was handed out after `first`": pids are handed out in increasing
    order, wrapping at pid_max, so what a process started at `first` made lies between it and
    the last pid. Only for a short span (see run_command): a long one may wrap past it."""
    last = _last_pid() if first is not None else None
    if first is None or last is None:
        return lambda pid: True
    if last >= first:
        return lambda pid: first <= pid <= last
    return lambda pid: pid >= first or pid <= last


def kill_owned(token: str, sig: int = signal.SIGKILL, first_pid: int | None = None) -> int:
    """Kill every process whose environment carries AUTORESEARCH_OWNER=`token` or a token under
    it (`token:...`): the owner of tag t is not a prefix of tag t2's, nor trial 1 of trial 12.
    With `first_pid`, only processes born since that pid are looked at. Returns how many were
    signalled."""
    needle = f"{OWNER_VAR}={token}".encode()
    under = needle + b":"
    me = os.getpid()
    born = _born_after(first_pid)
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me or not born(int(entry.name)):
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if any(item == needle or item.startswith(under) for item in env.split(b"\0")):
            try:
                os.kill(int(entry.name), sig)
                count += 1
            except OSError:
                pass
    return count


def kill_all_owned(tokens: list[str], passes: int = 50) -> None:
    """kill_owned for each token, again until a pass finds none (at most `passes`, 0.1 s apart):
    what a marked process forked while a pass went by (a Ray raylet starting a worker) is not in
    that pass's listing. For a loop's end, not for each experiment."""
    for _ in range(passes):
        if not sum(kill_owned(token) for token in tokens):
            return
        time.sleep(0.1)


class ExitWaiter:
    """wait(seconds) -> whether the process has exited (and is reaped). Through a pidfd where
    Linux has one, which wakes the moment the process ends: Popen.wait(timeout) polls with
    growing sleeps, and returned up to milliseconds late on every experiment."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        try:
            self.fd: int | None = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            self.fd = None

    def wait(self, seconds: float) -> bool:
        if self.fd is None:
            try:
                self.proc.wait(timeout=seconds)
                return True
            except subprocess.TimeoutExpired:
                return False
        poller = select.poll()  # (select.select cannot watch a descriptor past 1023)
        poller.register(self.fd, select.POLLIN)
        if not poller.poll(seconds * 1000):
            return False
        self.close()
        self.proc.wait()
        return True

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def run_command(command: str | list[str], cwd: Path, env: dict[str, str], timeout: float,
                log_path: Path, cancel: threading.Event | None = None,
                append: bool = False, owner: str = "", split_stdout: bool = False) -> ProcResult:
    """Run `command` (a shell string or an argv list) with output to `log_path`.

    The command gets its own session; at `timeout` seconds (or when `cancel` is set) its group
    gets SIGTERM, then SIGKILL after a grace period, and any process carrying `owner` in its
    environment is killed too. Children left behind by a command that exited are killed as well.
    With `split_stdout` its stdout also comes back apart (ProcResult.stdout), the log still
    holding both.
    """
    env = dict(env)
    if owner:
        env[OWNER_VAR] = owner
    start = time.monotonic()
    proc, copy, mark = _spawn(_argv(command), cwd, env, log_path, append, split_stdout)
    exited = ExitWaiter(proc)
    try:
        how = _wait_or_stop(proc, exited, start + timeout, cancel)
    finally:
        exited.close()
        _end_group(proc)
    escaped = sweep_escaped(mark)
    if how != "exited":  # the reaper was stopped by us, its cleanup cut short: what it left is ours to kill
        escaped = []
    if owner:  # what escaped the group (setsid, double fork), whatever the exit status; after a
        # short command only the pids handed out since it started can be its (a long one may
        # have seen the pids wrap around, and a full look costs little beside it)
        kill_owned(owner, first_pid=proc.pid if time.monotonic() - start < SHORT_SECONDS else None)
    return ProcResult(returncode=proc.returncode, seconds=time.monotonic() - start,
                      timed_out=how == "timeout", cancelled=how == "cancelled", escaped=tuple(escaped),
                      stdout=copy.finish() if copy is not None else "")


def _argv(command: str | list[str]) -> list[str]:
    """The argv that runs `command` (a shell string or an argv list), under the reaper where
    there is one: nothing it starts outlives it."""
    argv = ["/bin/bash", "-c", command] if isinstance(command, str) else list(command)
    if sys.platform.startswith("linux") and REAPER.exists() and sys.executable:
        argv = [sys.executable, "-I", "-S", str(REAPER), *argv]
    return argv


def _spawn(argv: list[str], cwd: Path, env: dict[str, str], log_path: Path, append: bool,
           split_stdout: bool) -> tuple[subprocess.Popen[bytes], StdoutCopy | None, int]:
    """Start `argv` in a session of its own with its output to `log_path` (and its stdout apart
    too with `split_stdout`), marked so that what escapes it can be found; returns the process,
    the stdout copy, and the mark."""
    global _issued
    with _LIVE_LOCK:
        _issued = next(_numbers)
        mark = MARK - _issued
    with open_log(log_path, append) as log, _LIVE_LOCK:
        copy = StdoutCopy(log_path, LOG_LIMIT) if split_stdout else None
        try:
            proc = subprocess.Popen(
                argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=copy.out_end if copy else log,
                stderr=copy.err_end if copy else subprocess.STDOUT,
                start_new_session=True, preexec_fn=functools.partial(_die_with_parent, mark),
            )
        except BaseException:
            if copy is not None:
                copy.started()
                copy.finish(0.0)
            raise
        if copy is not None:
            copy.started()
        _LIVE.add(proc.pid)
    return proc, copy, mark


def _end_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill whatever is left of `proc`'s group, always, and reap `proc`."""
    _kill_group(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    with _LIVE_LOCK:
        _LIVE.discard(proc.pid)


def _wait_or_stop(proc: subprocess.Popen[bytes], exited: ExitWaiter, deadline: float,
                  cancel: threading.Event | None) -> str:
    """Wait for `proc` until `deadline` or `cancel`; then SIGTERM its group and give it a grace
    period. Returns "exited", "timeout" or "cancelled"."""
    while True:
        left = deadline - time.monotonic()
        if exited.wait(max(min(0.1, left) if cancel is not None else left, 0.0)):
            return "exited"
        if cancel is not None and cancel.is_set():
            how = "cancelled"
        elif time.monotonic() >= deadline:
            how = "timeout"
        else:
            continue
        _kill_group(proc.pid, signal.SIGTERM)
        exited.wait(GRACE_SECONDS)
        return how


LOG_LIMIT = 32 * 1024 * 1024  # bytes of an experiment's output kept: 700 trials stay under 23 GB
LOG_HEAD = 1024 * 1024  # of which the start (the configuration it printed); the rest is the end


def trim_log(path: Path, limit: int = LOG_LIMIT, head: int = LOG_HEAD) -> int:
    """Cut a log longer than `limit` bytes to its first `head` bytes, a line that says how much
    was left out, and its last bytes; returns the bytes left out (0: nothing done). The metric
    lines are at the end, where the summary is printed."""
    try:
        st = os.lstat(path)
    except OSError:
        return 0
    size = st.st_size
    if size <= limit or not stat.S_ISREG(st.st_mode):  # (a FIFO put in its place is not waited on)
        return 0
    tail = limit - head
    dropped = size - head - tail
    tmp = path.with_name(path.name + ".trim")
    with open(path, "rb") as src, open_log(tmp) as out:
        out.write(src.read(head))
        out.write(f"\n=== autoresearch: {dropped} bytes of output left out here (a log keeps "
                  f"{limit // 2**20} MB: its first {head // 2**20} MB and its end) ===\n".encode())
        src.seek(size - tail)
        shutil.copyfileobj(src, out, 1024 * 1024)
    os.replace(tmp, path)
    return dropped


def read_tail(path: Path, max_bytes: int = 32 * 1024 * 1024) -> str:
    """The end of a log (all of it when small), decoded leniently; "" when it is not a regular
    file (a FIFO put in its place would wait for a writer forever)."""
    return read_log(path, max_bytes).decode("utf-8", errors="replace")


def last_lines(text: str, n: int = 30) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-n:])


def log_digests(*paths: Path) -> dict[str, str]:
    """sha256 of each log that is there, by file name: kept in the record, so that a log
    changed afterwards (by an agent of a later trial, say) shows as changed."""
    from autoresearch.filetree import hash_regular

    out = {}
    for path in paths:
        try:  # (a FIFO put in a log's place is skipped, not waited on)
            out[path.name] = hash_regular(path, follow=True)
        except OSError:
            continue
    return out
