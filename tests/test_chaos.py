"""Kills at any instant: a small run of bench/chaos.py, and the faults it found, pinned down."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli, git, make_task, script_agent

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from chaos import PHASES, run_chaos  # noqa: E402


def test_chaos_one_kill_per_phase(tmp_path: Path) -> None:
    report = run_chaos(kills=len(PHASES), seed=7, workdir=tmp_path)
    print(report.text())
    assert report.kills == len(PHASES) and report.survived == report.kills, report.text()
    assert not report.lost and not report.duplicated and not report.violations, report.text()


@pytest.mark.slow
def test_chaos_fifty_kills(tmp_path: Path) -> None:
    report = run_chaos(kills=56, seed=11, workdir=tmp_path)
    print(report.text())
    assert report.ok, report.text()


def test_worktree_add_killed_midway_does_not_block_the_next_run(task_repo: Path, tmp_path: Path) -> None:
    agent = script_agent(tmp_path / "a.sh", "sed -i 's/^X = 3.0/X = 2.0/' exp.py\necho better\n")
    assert cli("run", str(task_repo), "--tag", "t", "--agent", "cli", "--agent-cmd", agent,
               "--trials", "0").returncode == 0
    # What `git worktree add` leaves when it is killed before it finishes: its registration
    # locked as "initializing"; repair then removes the folder.
    git(task_repo, "worktree", "add", "-q", "--detach", str(task_repo / ".autoresearch/t/worktrees/w0"), "HEAD")
    admin = task_repo / ".git" / "worktrees" / "w0"
    assert admin.is_dir()
    (admin / "locked").write_text("initializing")
    r = cli("run", str(task_repo), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "1")
    assert r.returncode == 0, r.stderr
    assert "locked" not in git(task_repo, "worktree", "list", "--porcelain")


def test_resuming_one_tag_leaves_another_tags_experiment_alone(tmp_path: Path) -> None:
    """The owner token of tag `t` is a prefix of tag `t2`'s: resuming `t` used to kill the
    experiments of a loop running on `t2`."""
    started = tmp_path / "started"
    exp = (f"import os, pathlib, time\nif os.environ['AUTORESEARCH_TAG'] == 't2' and os.environ['AUTORESEARCH_TRIAL'] == '1':\n"
           f"    pathlib.Path({str(started)!r}).touch(); time.sleep(2.5)\nX = 3.0\nprint(f'loss: {{X}}')\n")
    repo = make_task(tmp_path / "r", experiment=exp)
    agent = script_agent(tmp_path / "a.sh", "sed -i 's/^X = .*/X = 1.0/' exp.py\necho one\n")
    assert cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", "true", "--trials", "0").returncode == 0
    other = subprocess.Popen([sys.executable, "-m", "autoresearch", "run", str(repo), "--tag", "t2", "--agent",
                              "cli", "--agent-cmd", agent, "--trials", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists()
        assert cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", "true", "--trials", "0").returncode == 0
        out, _ = other.communicate(timeout=60)
    finally:
        if other.poll() is None:
            other.send_signal(signal.SIGKILL)
            other.wait()
    assert other.returncode == 0, out
    assert "[trial 1] keep" in out, out


def test_agent_processes_left_by_a_kill_are_killed_on_resume(task_repo: Path, tmp_path: Path) -> None:
    marker = f"agent-left-{os.getpid()}"
    started = tmp_path / "started"
    agent = script_agent(tmp_path / "a.sh", f"""\
        if [ "$AUTORESEARCH_TRIAL" = 1 ]; then
          bash -c 'exec -a {marker} sleep 120' &
          touch {started}
          sleep 120
        fi
        sed -i 's/^X = .*/X = 2.0/' exp.py
        echo two
        """)
    proc = subprocess.Popen([sys.executable, "-m", "autoresearch", "run", str(task_repo), "--tag", "t",
                             "--agent", "cli", "--agent-cmd", agent, "--trials", "3"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    try:
        r = cli("run", str(task_repo), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "1")
        assert r.returncode == 0, r.stderr
        time.sleep(0.2)
        assert subprocess.run(["pgrep", "-f", marker], capture_output=True).stdout == b""
    finally:
        for pid in subprocess.run(["pgrep", "-f", f"^{marker}"], capture_output=True, text=True).stdout.split():
            os.kill(int(pid), signal.SIGKILL)


def test_a_baseline_killed_and_retried_leaves_duplicates_matched_to_their_own_code(tmp_path: Path) -> None:
    """A killed baseline and its retry share one commit; the trees of earlier trials were paired
    with a list that had that commit once, so after the next resume every code was matched to
    the trial after its own: new code called a duplicate, with another trial's figure."""
    marker = tmp_path / "baseline-started"
    exp = ("import os, pathlib, time\nVALUE = 1\n"
           f"if os.environ['AUTORESEARCH_TRIAL'] == '0':\n    pathlib.Path({str(marker)!r}).touch()\n    time.sleep(60)\n"
           "print(f'loss: {10 - VALUE}')\n")
    repo = make_task(tmp_path / "task", experiment=exp)
    proc = subprocess.Popen([sys.executable, "-m", "autoresearch", "run", str(repo), "--tag", "t", "--trials", "1",
                             "--agent-cmd", "true"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    setter = script_agent(tmp_path / "set.sh", 'sed -i "s/^VALUE = .*/VALUE = $(cat ' + str(tmp_path / "v") + ')/" exp.py\n'
                          'echo "VALUE to $(cat ' + str(tmp_path / "v") + ')"\n')
    for value in ("3", "5", "3", "4", "4"):  # trials 4 and 6 repeat trials 2 and 5
        (tmp_path / "v").write_text(value)
        r = cli("run", str(repo), "--tag", "t", "--agent-cmd", setter, "--trials", "1")
        assert r.returncode == 0, r.stderr
    rows = trials_of(repo)
    assert [(t.status.value, t.metric) for t in rows] == [
        ("interrupted", None), ("keep", 9.0), ("keep", 7.0), ("keep", 5.0), ("duplicate", 7.0), ("discard", 6.0),
        ("duplicate", 6.0)]
    assert [rows[4].reason, rows[6].reason] == ["same code as trial 2", "same code as trial 5"]


def trials_of(repo: Path) -> list:
    from autoresearch.ledger import Ledger

    led = Ledger.read(repo, "t")
    try:
        return led.trials()
    finally:
        led.close()
