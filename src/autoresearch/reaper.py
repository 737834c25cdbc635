"""Run a command so that nothing it starts outlives it: `python -I -S reaper.py ARGV...`.

The process becomes a child subreaper (Linux's PR_SET_CHILD_SUBREAPER), then runs ARGV as its
child. Whatever that child leaves behind (a double fork, a `setsid` daemon, one started with
`env -i` so that it carries no AUTORESEARCH_OWNER mark) is re-parented to this process when its
own parent dies, instead of to init; once the child has exited, every process left under this
one is killed and reaped. The exit status is the child's (a child killed by a signal kills this
process with the same signal, so the caller sees it as its own).

On SIGTERM (the harness stopping the command's group at its timeout) the child has GRACE seconds
to end, then is killed with the rest: less than the harness's own grace, so the cleanup is done
before the harness kills this process.

Standalone on purpose: run with -I -S, it imports nothing of autoresearch and starts in ~10 ms.
Where the kernel has no subreaper, it runs ARGV in its place (exec), as if it were not there.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import select
import signal
import sys
import time

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 1, 4, 36
GRACE = 1.5  # seconds; autoresearch.process.GRACE_SECONDS is 2


def parents() -> dict[int, int]:
    """Every process's parent, from /proc."""
    out: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    out[int(name)] = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    return out


def freeze_and_kill(roots: set[int]) -> None:
    """Kill everything under `roots`, at any depth, and the roots themselves but this process.
    All are stopped first, until no new one appears: a process that forks when its parent dies
    (PR_SET_PDEATHSIG), or forks and exits in a loop, cannot outrun a kill of one generation at
    a time. (Also the loop's sweep of what a killed reaper left: autoresearch.process.)"""
    me, frozen = os.getpid(), set[int]()
    for _ in range(50):
        links, family, grew = parents(), set(roots) | frozen, True
        while grew:
            more = {pid for pid, parent in links.items() if parent in family} - family
            family |= more
            grew = bool(more)
        new = family - frozen - {me}
        if not new:
            break
        for pid in new:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGSTOP)
        frozen |= new
    for pid in frozen:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def has_children() -> bool:
    try:  # (the usual end: no child left, no scan of /proc)
        with open(f"/proc/self/task/{os.getpid()}/children") as f:
            return bool(f.read().split())
    except OSError:  # (a kernel without CONFIG_PROC_CHILDREN)
        return True


def reap_all(limit: float = 5.0) -> None:
    """Kill and reap every process under this one, including those re-parented here while it
    works (a killed parent hands its own children over), all stopped before any is killed."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if has_children():
            freeze_and_kill({os.getpid()})
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return  # nothing left
        time.sleep(0.005)


def wait_child(pid: int, stopped: list[float], wakeup: int) -> int:
    """The child's wait status; after a SIGTERM to this process (which writes to `wakeup`),
    kill it GRACE seconds later. Orphans that end meanwhile are reaped as they go (a long run
    that starts `cmd &` each step must not pile up zombies)."""
    try:
        fd: int | None = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    poller = select.poll()
    poller.register(wakeup, select.POLLIN)
    if fd is not None:
        poller.register(fd, select.POLLIN)
    killed = False
    while True:
        while True:  # whatever has ended: the child, or orphans handed over to us
            try:
                done, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                done, status = 0, 0
            if done == pid:
                if fd is not None:
                    os.close(fd)
                return status
            if not done:
                break
        wait = 1.0 if fd is not None else 0.01  # (orphans' ends wake nobody: look each second)
        if stopped and not killed:
            left = stopped[0] + GRACE - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                killed = True
            else:
                wait = min(wait, left)
        for ready, _ in poller.poll(wait * 1000):
            if ready == wakeup:
                with contextlib.suppress(OSError):
                    os.read(wakeup, 64)


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit("usage: reaper.py COMMAND [ARGS...]")
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = getattr(libc, "prctl", None)  # (Linux only)
    if prctl is None or prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        os.execvp(argv[0], argv)
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # no debugger of the command's makes it run code (the command's exec resets it)
    stopped: list[float] = []
    r, w = os.pipe()
    for end in (r, w):
        os.set_blocking(end, False)
    signal.set_wakeup_fd(w)  # a SIGTERM wakes the wait below
    signal.signal(signal.SIGTERM, lambda *_: stopped.append(time.monotonic()) if not stopped else None)
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.close(w)
        # as a shell would start it: Python ignores SIGPIPE and SIGXFSZ, and exec keeps that
        for default in (signal.SIGTERM, signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(default, signal.SIG_DFL)
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # dies with this process
        try:
            os.execvp(argv[0], argv)
        except OSError as e:
            os.write(2, f"{argv[0]}: {e.strerror}\n".encode())
            os._exit(127 if isinstance(e, FileNotFoundError) else 126)
    status = wait_child(pid, stopped, r)
    reap_all()
    if os.WIFSIGNALED(status):  # end the same way, so the caller sees the child's signal
        sig = os.WTERMSIG(status)
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # (the child dumped core, if any: not us too)
            signal.signal(sig, signal.SIG_DFL)  # (SIGKILL has no handler to reset)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)  # a signal whose default is not to end a process
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


if __name__ == "__main__":
    main(sys.argv[1:])
