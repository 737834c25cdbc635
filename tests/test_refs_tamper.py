"""An agent at the loop's own refs in ways git allows but never does itself (found by a red
team): a trial ref listed twice in packed-refs, the trials folder replaced by a file or by a link
to a folder outside the repository, a lock planted for a later trial's ref, a ref planted for a
trial that a kill then leaves in flight, and the stash's list swapped. Each is caught on the
trial that did it (rejected), put back, and the loop goes on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DEED_AGENT, GIT_ENV, cli, git, make_task, run_deed, script_agent, trials

from autoresearch.ledger import Ledger
from autoresearch.records import Status, Trial


def assert_caught(repo: Path, r: subprocess.CompletedProcess[str], why: str) -> None:
    assert r.returncode == 0, r.stderr
    done = trials(repo)
    assert [t.status for t in done] == [Status.KEEP, Status.KEEP, Status.REJECTED, Status.KEEP, Status.KEEP], \
        [(t.status.value, t.reason) for t in done]
    assert why in done[2].reason, done[2].reason
    for t in done:  # every ref is the ledger's commit, as git itself resolves it
        assert git(repo, "rev-parse", f"refs/autoresearch/t/trials/{t.number}") == t.commit
    assert git(repo, "rev-parse", "autoresearch/t") == done[-1].commit
    assert "warning" not in cli("status", str(repo), "--tag", "t").stdout


def test_a_trial_ref_listed_twice_in_packed_refs_is_caught(tmp_path: Path) -> None:
    """git's binary search may find the forged line; the guard read the other one."""
    deed = """\
  git pack-refs --all
  FAKE=$(git commit-tree -p refs/autoresearch/t/trials/1 -m forged "refs/autoresearch/t/trials/1^{tree}")
  python3 - "$GD/packed-refs" "$FAKE" <<'PY'
import sys
path, fake = sys.argv[1], sys.argv[2]
lines = open(path).read().splitlines(keepends=True)
at = next(i for i, l in enumerate(lines) if l.endswith(" refs/autoresearch/t/trials/1\\n"))
lines.insert(at, f"{fake} refs/autoresearch/t/trials/1\\n")
open(path, "w").write("".join(lines))
PY
"""
    repo, r = run_deed(tmp_path, deed)
    assert_caught(repo, r, "deleted or moved the loop's refs")


def test_the_trials_folder_replaced_by_a_file_is_put_back(tmp_path: Path) -> None:
    deed = """\
  rm -rf "$GD/refs/autoresearch/t/trials"
  mkdir -p "$GD/refs/autoresearch/t"
  git rev-parse HEAD > "$GD/refs/autoresearch/t/trials"
"""
    repo, r = run_deed(tmp_path, deed)
    assert_caught(repo, r, "made refs where only the loop writes (refs/autoresearch/t/trials)")


def test_the_trials_folder_linked_outside_the_repository_is_put_back(tmp_path: Path) -> None:
    outside = tmp_path / "evil"
    deed = f"""\
  cp -r "$GD/refs/autoresearch/t/trials" {outside}
  rm -rf "$GD/refs/autoresearch/t/trials"
  ln -s {outside} "$GD/refs/autoresearch/t/trials"
"""
    repo, r = run_deed(tmp_path, deed)
    assert_caught(repo, r, "deleted or moved the loop's refs")
    assert not (repo / ".git/refs/autoresearch/t/trials").is_symlink()


@pytest.mark.parametrize("deed", [
    ': > "$GD/refs/autoresearch/t/trials/4.lock"',  # for no ref: planted, however new
    'mkdir "$GD/refs/autoresearch/t/trials/4.lock"',  # a folder
    pytest.param(': > "$GD/refs/autoresearch/t/trials/1.lock"\n  sleep 3', marks=pytest.mark.slow),  # beside a ref: once seconds old
    ': > "$GD/refs/autoresearch/t/trials/1.lock"\n  touch -d "+1 hour" "$GD/refs/autoresearch/t/trials/1.lock"',  # dated ahead
    ': > "$GD/refs/heads/autoresearch/t.lock"',  # beside the tag's branch, fresh: still there seconds on
])
def test_a_lock_planted_for_the_loops_refs_neither_stops_the_loop_nor_goes_unnoticed(tmp_path: Path, deed: str) -> None:
    repo, r = run_deed(tmp_path, "  " + deed)
    assert_caught(repo, r, "made refs where only the loop writes")
    assert not list((repo / ".git/refs/autoresearch/t/trials").glob("*.lock"))
    assert not (repo / ".git/refs/heads/autoresearch/t.lock").exists()


@pytest.mark.parametrize("deed", [
    'for f in HEAD config packed-refs; do echo x > "$GD/$f.lock"; touch -d "-1 hour" "$GD/$f.lock"; done',  # stale
    ': > "$GD/ORIG_HEAD.lock"',  # fresh: still there seconds on
    ': > "$GD/refs/heads/main.lock"',  # beside your branch
    'mkdir -p "$GD/refs/remotes/origin"; : > "$GD/refs/remotes/origin/main.lock"; : > "$GD/refs/stash.lock"',
    # many, dated one after another in the coming seconds: all taken away, in one wait of at
    # most 2 s for all of them (not one each)
    'for i in $(seq 20); do : > "$GD/refs/tags/t$i.lock"; touch -d "+$((2 * i - 1)) seconds" "$GD/refs/tags/t$i.lock"; done',
])
def test_a_git_lock_left_in_git_is_taken_away_and_held_against_the_trial(tmp_path: Path, deed: str) -> None:
    """HEAD.lock, config.lock, packed-refs.lock or a ref's lock left by an agent: the loop went
    on, and in the morning every `git commit` (`git fetch`, `git stash`) of yours failed."""
    began = time.monotonic()
    repo, r = run_deed(tmp_path, "  " + deed)
    assert time.monotonic() - began < 30
    assert_caught(repo, r, "left git lock files in the repository's .git")
    assert not list((repo / ".git").glob("*.lock")) and not list((repo / ".git/refs").rglob("*.lock"))
    (repo / "notes.txt").write_text("mine\n")
    git(repo, "add", "notes.txt")
    git(repo, "commit", "-q", "-m", "a commit of yours the morning after")
    git(repo, "config", "user.note", "x")


def _loop_with_slow_trials(tmp_path: Path, trials_: int) -> tuple[Path, Path, subprocess.Popen[str]]:
    marker = tmp_path / "running"
    exp = f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(1)\nX = 3.0\nprint(f'loss: {{X}}')\n"
    repo = make_task(tmp_path / "task", experiment=exp)
    proc = subprocess.Popen([sys.executable, "-m", "autoresearch", "run", str(repo), "--tag", "t", "--agent", "search",
                             "--trials", str(trials_)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return repo, marker, proc


def test_your_commit_with_its_editor_open_while_the_loop_runs_is_not_broken(tmp_path: Path) -> None:
    """`git commit -a` holds index.lock while its editor is open: taken away as stale after 2 s,
    your commit failed ("unable to write new_index file") and the trial was rejected."""
    repo, _, proc = _loop_with_slow_trials(tmp_path, 4)
    (repo / "notes.txt").write_text("mine\n")
    git(repo, "add", "notes.txt")
    (repo / "notes.txt").write_text("mine, edited\n")
    done = subprocess.run(["git", "commit", "-a", "-q", "-e", "-m", "my notes"], cwd=repo, capture_output=True, text=True,
                          env={**os.environ, **GIT_ENV, "GIT_EDITOR": "sleep 5; true"})
    out, _ = proc.communicate(timeout=120)
    assert done.returncode == 0, done.stderr
    assert proc.returncode == 0, out
    assert Status.REJECTED not in [t.status for t in trials(repo)], out
    assert git(repo, "log", "-1", "--format=%s") == "my notes" and git(repo, "status", "--porcelain") == ""


@pytest.mark.extended  # (time: the default suite keeps its siblings)
def test_your_shallow_fetch_while_the_loop_runs_is_kept(tmp_path: Path) -> None:
    """`git fetch --depth 1` writes .git/shallow: the guard put it back to none (the trial
    rejected), and the repository was left broken ("Failed to traverse parents")."""
    remote = tmp_path / "remote"
    remote.mkdir()
    git(remote, "init", "-q", "-b", "main")
    for i in range(3):
        (remote / "f.txt").write_text(f"{i}\n")
        git(remote, "add", "f.txt")
        git(remote, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-q", "-m", f"r{i}")
    repo, _, proc = _loop_with_slow_trials(tmp_path, 3)
    git(repo, "fetch", "-q", "--depth", "1", f"file://{remote}", "main:refs/remotes/origin/main")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert Status.REJECTED not in [t.status for t in trials(repo)], out
    assert (repo / ".git/shallow").exists()
    assert git(repo, "log", "--format=%s", "origin/main") == "r2"
    subprocess.run(["git", "fsck", "--no-progress"], cwd=repo, check=True, capture_output=True)


def test_a_lock_of_yours_there_before_the_loop_started_is_left_alone(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    (repo / ".git/config.lock").write_text("a git of yours that crashed\n")
    agent = script_agent(tmp_path / "a.sh", DEED_AGENT.replace("{deed}", "  true"))
    r = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "2")
    assert r.returncode == 0, r.stderr
    assert [t.status for t in trials(repo)] == [Status.KEEP] * 3
    assert (repo / ".git/config.lock").read_text() == "a git of yours that crashed\n"


def test_the_loops_refs_folder_linked_to_your_branches_is_cleared_and_your_branches_stay(tmp_path: Path) -> None:
    """refs/autoresearch made a link to refs/heads: the loop's refs would be written as your
    branches, and your branches read as refs the loop did not make (and removed)."""
    outside = tmp_path / "moved"
    deed = f"""\
  mv "$GD/refs/autoresearch" {outside}
  ln -s "$GD/refs/heads" "$GD/refs/autoresearch"
"""
    repo = make_task(tmp_path / "task")
    git(repo, "branch", "t/feature")
    agent = script_agent(tmp_path / "a.sh", DEED_AGENT.replace("{deed}", deed))
    r = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "4")
    assert_caught(repo, r, "deleted or moved the loop's refs")
    assert git(repo, "rev-parse", "t/feature") == git(repo, "rev-parse", "main")
    assert not (repo / ".git/refs/autoresearch").is_symlink()


def test_a_swapped_entry_in_the_stash_list_is_held_against_a_cli_agent(tmp_path: Path) -> None:
    """`git stash pop` reads the stash's reflog: an entry swapped there moves no ref."""
    repo = make_task(tmp_path / "task")
    (repo / "notes.txt").write_text("mine\n")
    git(repo, "add", "notes.txt")
    git(repo, "stash", "-q")
    git(repo, "stash", "list")
    deed = """\
  REAL=$(git rev-parse stash@{0})
  FAKE=$(git commit-tree -p "$REAL^1" -p "$REAL^2" -m "WIP forged" "$REAL^{tree}")
  sed -i "s/^\\([0-9a-f]*\\) $REAL/\\1 $FAKE/" "$GD/logs/refs/stash"
"""
    agent = script_agent(tmp_path / "a.sh", DEED_AGENT.replace("{deed}", deed))
    r = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "3")
    assert r.returncode == 0, r.stderr
    done = trials(repo)
    assert [t.status for t in done] == [Status.KEEP, Status.KEEP, Status.REJECTED, Status.KEEP], \
        [(t.status.value, t.reason) for t in done]
    assert "git's stash changed while the agent ran" in done[2].reason
    assert any("logs/refs/stash" in f for f in done[2].flags), done[2].flags


def test_a_ref_planted_for_a_trial_a_kill_left_in_flight_is_not_taken_as_its_commit(tmp_path: Path) -> None:
    """The loop writes a trial's ref only once the ledger holds its commit: a ref for a trial in
    flight without one (planted by its agent, then the loop killed) is not the trial's."""
    repo, r = run_deed(tmp_path, "  true", trials_=1)
    assert r.returncode == 0, r.stderr
    best = git(repo, "rev-parse", "autoresearch/t")
    forged = git(repo, "commit-tree", "-p", best, "-m", "forged", f"{best}^{{tree}}")
    led = Ledger.open(repo, "t", "loss")
    led.begin(Trial(2, Status.RUNNING, "", parent=best, started=1.0))
    led.close()
    git(repo, "update-ref", "refs/autoresearch/t/trials/2", forged)
    r = cli("run", str(repo), "--tag", "t", "--trials", "0")
    assert r.returncode == 0, r.stderr
    t = trials(repo)[2]
    assert t.status is Status.INTERRUPTED and t.commit and t.commit != forged
    assert git(repo, "rev-parse", "refs/autoresearch/t/trials/2") == t.commit
    assert git(repo, "rev-parse", f"{t.commit}^{{tree}}") == git(repo, "rev-parse", f"{best}^{{tree}}")


@pytest.mark.extended  # (importing mlflow takes seconds)
def test_an_mlflow_path_with_a_line_break_is_refused(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    r = cli("run", "--tag", "t", "--trials", "0", "--mlflow", "mlruns\nexp.py", cwd=repo)
    if "needs mlflow" in r.stderr:
        return  # (mlflow not installed: refused before any path is looked at)
    assert r.returncode == 2 and "a path with a line break" in r.stderr, r.stderr
    assert "exp.py" not in (repo / ".git/info/exclude").read_text()


def test_a_trial_ref_listed_twice_while_no_loop_watched_is_warned_of_and_repaired(tmp_path: Path) -> None:
    """Another tag's agent (a loop watches only its own tag) lists trial 1 twice in packed-refs:
    `status` warns, and `run --trials 0` writes the ref again, so git resolves the ledger's commit."""
    repo, r = run_deed(tmp_path, "  true", trials_=2)
    assert r.returncode == 0, r.stderr
    real = trials(repo)[1].commit
    forged = git(repo, "commit-tree", "-p", real, "-m", "forged", f"{real}^{{tree}}")
    git(repo, "pack-refs", "--all")
    packed = repo / ".git" / "packed-refs"
    lines = packed.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.endswith(" refs/autoresearch/t/trials/1\n"))
    packed.write_text("".join(lines[:at] + [f"{forged} refs/autoresearch/t/trials/1\n"] + lines[at:]))
    assert "warning: the refs of trial 1 are gone or moved" in cli("status", str(repo), "--tag", "t").stdout
    assert cli("run", str(repo), "--tag", "t", "--trials", "0").returncode == 0
    assert git(repo, "rev-parse", "refs/autoresearch/t/trials/1") == real
    assert "warning" not in cli("status", str(repo), "--tag", "t").stdout


def test_a_lock_an_agent_left_as_the_loop_was_killed_is_taken_away_on_resume(tmp_path: Path) -> None:
    """Locks left by the trial in flight when the loop was killed were there when it started
    again, so they passed for yours: left, and your commits failed from then on."""
    mark = tmp_path / "planted"
    deed = f'  : > "$GD/HEAD.lock"; : > "$GD/refs/heads/main.lock"; touch {mark}; sleep 60'
    repo = make_task(tmp_path / "task")
    agent = script_agent(tmp_path / "a.sh", DEED_AGENT.replace("{deed}", deed))
    proc = subprocess.Popen([sys.executable, "-m", "autoresearch", "run", str(repo), "--tag", "t", "--agent-cmd", agent,
                             "--trials", "3"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while not mark.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert (repo / ".git/HEAD.lock").exists()
    r = cli("run", str(repo), "--tag", "t", "--agent-cmd", "true", "--trials", "0")
    assert r.returncode == 0, r.stderr
    assert "removed git lock files left in .git while the loop was killed" in r.stderr, r.stderr
    assert not (repo / ".git/HEAD.lock").exists() and not (repo / ".git/refs/heads/main.lock").exists()
    (repo / "notes.txt").write_text("mine\n")
    git(repo, "add", "notes.txt")
    git(repo, "commit", "-q", "-m", "a commit of yours")
