"""A command's output read through pipes (process.run_command with split_stdout): its stdout
told apart from its stderr, its log written as it comes and held to a size while it comes."""

from __future__ import annotations

import collections
import contextlib
import os
import select
import threading
import time
from pathlib import Path


class StdoutCopy:
    """A command's stdout and stderr through pipes of their own: each piece is written on to its
    log as it comes (one reader for both, so the log keeps them in the order they came, but for
    lines that come within the same moment on both), and the last KEEP bytes of stdout are kept
    apart, so that what it printed can be told from its warnings."""

    KEEP = 1 << 16

    def __init__(self, log_path: Path, limit: int) -> None:
        self.out_fd, self.out_end = os.pipe()
        self.err_fd, self.err_end = os.pipe()
        self.log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND)
        self.tail = bytearray()
        # past 2 x `limit` written (a runaway agent printing for its whole timeout filled the
        # disk before the log was trimmed), only the last `limit` bytes are held, written at the end
        self.limit = limit
        self.written = 0
        self.end: collections.deque[bytes] = collections.deque()
        self.end_size = self.dropped = 0
        self.stop_at = float("inf")
        self.thread = threading.Thread(target=self._copy, name="output-copy", daemon=True)

    def started(self) -> None:
        """The command has its ends of the pipes: ours are closed, so the pipes end with it."""
        for fd in (self.out_end, self.err_end):
            os.close(fd)
        self.thread.start()

    def _copy(self) -> None:
        poller = select.poll()  # (select.select cannot watch a descriptor past 1023)
        open_fds = {self.out_fd, self.err_fd}
        for fd in open_fds:
            poller.register(fd, select.POLLIN)
        while open_fds and time.monotonic() < self.stop_at:
            for fd, _ in poller.poll(200):
                data = os.read(fd, 1 << 16)
                if not data:  # (POLLHUP with nothing left to read: that end is closed)
                    poller.unregister(fd)
                    open_fds.discard(fd)
                    continue
                if self.written >= 2 * self.limit:
                    self.end.append(data)
                    self.end_size += len(data)
                    while self.end_size - len(self.end[0]) >= self.limit:
                        self.end_size -= len(first := self.end.popleft())
                        self.dropped += len(first)
                else:
                    self._write(data)
                if fd == self.out_fd:
                    self.tail += data
                    del self.tail[:-self.KEEP]

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                n = os.write(self.log_fd, view)
                self.written += n
                view = view[n:]
        except OSError:  # (a full disk: what it prints is lost, but it is still read, so
            pass  # the command never waits on a full pipe until its timeout)

    def finish(self, grace: float = 2.0) -> str:
        """The end of what came on stdout, once the pipes ended, or `grace` seconds on when
        something that outlived the command still holds one."""
        self.stop_at = time.monotonic() + grace
        self.thread.join(grace + 1.0)
        if self.dropped:
            self._write(f"\n=== autoresearch: {self.dropped} bytes of output left out here (more than "
                        f"{2 * self.limit // 2**20} MB came) ===\n".encode())
        while self.end:
            self._write(self.end.popleft())
        for fd in (self.out_fd, self.err_fd, self.log_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        return bytes(self.tail).decode("utf-8", errors="replace")
