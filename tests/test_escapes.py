"""Processes that outlive what started them. A command runs under reaper.py; one that kills its
reaper hands what it left to the loop's process (a subreaper), where the mark every command's
process carries (a hard RLIMIT_RTTIME it cannot lift) names it: it is killed and reported. The
harness's own git carries the mark too, so what a filter driver it ran leaves is swept the same
way. Real processes, a real git repository."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import git, make_task

from autoresearch import process
from autoresearch.gitrepo import Git

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="subreapers are Linux's")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def wait_for_file(path: Path, seconds: float = 5.0) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.02)
    raise AssertionError(f"{path} was not written")


def adopting() -> None:
    if not process.adopt_orphans():
        pytest.skip("this process cannot be a subreaper (it carries a finite RLIMIT_RTTIME)")


def test_a_daemon_left_by_a_command_that_killed_its_reaper_is_killed_and_named(tmp_path: Path) -> None:
    adopting()
    pid_file = tmp_path / "daemon.pid"
    script = tmp_path / "escape.py"
    script.write_text(f"""\
import os, subprocess, time
subprocess.Popen(["env", "-i", "setsid", "/bin/sh", "-c", "echo $$ > {pid_file}; exec sleep 60"])
time.sleep(0.3)
p = os.getpid()
while p > 1:
    p = int(open(f"/proc/{{p}}/stat").read().rsplit(")", 1)[1].split()[1])
    if b"reaper.py" in open(f"/proc/{{p}}/cmdline", "rb").read():
        os.kill(p, 9)
        break
time.sleep(1)
""")
    result = process.run_command([sys.executable, str(script)], tmp_path, dict(os.environ), 30,
                                 tmp_path / "log", owner="test-escape")
    daemon = int(wait_for_file(pid_file))
    assert any(e.startswith(f"pid {daemon} ") for e in result.escaped), result  # (its command line, if it was
    # caught between two execs, may read "?")
    assert not alive(daemon)


def test_what_a_filter_run_by_the_harness_git_leaves_is_swept(tmp_path: Path) -> None:
    adopting()
    if process.PRLIMIT is None:
        pytest.skip("prlimit (util-linux) is not installed")
    repo = make_task(tmp_path / "task")
    pid_file = tmp_path / "filter-daemon.pid"
    filt = tmp_path / "filter.sh"
    filt.write_text(f"#!/bin/sh\nsetsid /bin/sh -c 'echo $$ > {pid_file}; exec sleep 60' </dev/null >/dev/null 2>&1 &\ncat\n")
    filt.chmod(0o755)
    git(repo, "config", "filter.z.clean", str(filt))  # what an experiment beside it could slip in
    (repo / ".git" / "info" / "attributes").write_text("exp.py filter=z\n")
    (repo / "exp.py").write_text((repo / "exp.py").read_text() + "# touched\n")
    Git(repo).run("add", "exp.py")  # the harness's own git runs the filter
    daemon = int(wait_for_file(pid_file))
    deadline = time.monotonic() + 5
    swept: list[str] = []
    while alive(daemon) and time.monotonic() < deadline:
        swept += process.sweep_escaped(process.MARK)
        time.sleep(0.05)
    assert any(f"pid {daemon} " in e for e in swept), swept
    assert not alive(daemon)
    assert subprocess.run(["git", "status"], cwd=repo, capture_output=True).returncode == 0


def test_the_loop_is_out_of_a_debuggers_reach_and_its_commands_are_not(tmp_path: Path) -> None:
    """PR_SET_DUMPABLE 0: where no Yama stops it, a process of the same user could attach a
    debugger to the loop (or its watchdog, or a reaper) and make it run code of its own. A
    command's exec makes it dumpable again: its own code stays debuggable."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    process.adopt_orphans()
    assert libc.prctl(3, 0, 0, 0, 0) == 0  # PR_GET_DUMPABLE
    probe = tmp_path / "dumpable.py"
    probe.write_text("import ctypes; print('dumpable', ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))\n")
    process.run_command([sys.executable, str(probe)], tmp_path, dict(os.environ), 30, tmp_path / "log")
    assert "dumpable 1" in (tmp_path / "log").read_text()


def test_a_timeout_is_a_timeout_whatever_its_reaper_had_no_time_to_kill(tmp_path: Path) -> None:
    """At a timeout the harness stops the reaper itself: what the reaper had no time to kill
    comes back to the loop, which kills it; the command is not said to have escaped."""
    adopting()
    script = tmp_path / "stubborn.sh"  # a deep chain that ignores SIGTERM: slow to kill
    script.write_text("trap '' TERM\nif [ \"$1\" -gt 0 ]; then \"$0\" $(($1 - 1)) & fi\nsleep 30\n")
    script.chmod(0o755)
    result = process.run_command(["/bin/bash", "-c", f"trap '' TERM; {script} 150; sleep 30"], tmp_path,
                                 dict(os.environ), 1, tmp_path / "log", owner="test-timeout")
    assert result.timed_out and result.escaped == ()
    left = subprocess.run(["pgrep", "-f", str(script)], capture_output=True, text=True).stdout.split()
    assert left == []



def test_an_agent_whose_log_cannot_be_written_is_not_left_waiting_on_a_full_pipe(tmp_path: Path) -> None:
    """With its output read through pipes (split_stdout, as for a CLI agent), a log on a full
    disk stopped the thread that reads them, and the command waited on a full pipe until its
    timeout (30 min by default). What it prints is now read and dropped."""
    began = time.monotonic()
    result = process.run_command("head -c 20000000 /dev/zero; echo done", tmp_path, dict(os.environ), 30,
                                 Path("/dev/full"), split_stdout=True)
    assert result.returncode == 0 and not result.timed_out
    assert time.monotonic() - began < 15
    assert result.stdout.rstrip().endswith("done")


def test_a_flood_of_agent_output_is_held_to_its_end_while_it_comes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A runaway agent printing for its whole timeout (30 min by default) wrote every byte to its
    log, which was trimmed only once it ended: hundreds of GB. Past 2 x LOG_LIMIT written only
    the last LOG_LIMIT bytes are held, and the log says how much was left out."""
    monkeypatch.setattr(process, "LOG_LIMIT", 1 << 20)
    log = tmp_path / "agent.log"
    result = process.run_command("for i in $(seq 400); do head -c 50000 /dev/zero | tr '\\0' x; echo \" $i\"; done; echo last",
                                 tmp_path, dict(os.environ), 60, log, split_stdout=True)
    assert result.returncode == 0
    size = log.stat().st_size
    assert 3 * (1 << 20) <= size <= 3 * (1 << 20) + 200_000, size  # 20 MB came
    text = log.read_bytes()
    assert b"bytes of output left out here" in text and text.rstrip().endswith(b" 400\nlast")
    assert result.stdout.rstrip().endswith("last")
