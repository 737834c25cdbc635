"""An agent or an experiment that leaves, in the repository's .git or in the worktree, something
a plain read waits on forever: a FIFO (a named pipe: its open waits for a writer), or a link to
/dev/zero (its read never ends). Each stood in the harness's way in a red team's hands (the
loop hung on its next look at git's metadata). Each is caught on the trial that did it
(rejected), removed or put back, and the loop goes on to its last trial."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import git, run_deed, trials

from autoresearch.records import Status

DEEDS = {
    "info/exclude": 'rm -f "$GD/info/exclude"; mkfifo "$GD/info/exclude"',
    "a hook": 'mkdir -p "$GD/hooks"; mkfifo "$GD/hooks/post-commit"',
    "the stash's list": 'mkdir -p "$GD/logs/refs"; mkfifo "$GD/logs/refs/stash"',
    "a branch of yours": 'mkfifo "$GD/refs/heads/wedge"',
    "packed-refs": 'git pack-refs --all; rm -f "$GD/packed-refs"; mkfifo "$GD/packed-refs"',
    "HEAD": 'rm -f "$GD/HEAD"; ln -s /dev/zero "$GD/HEAD"',
    "config": 'cp "$GD/config" "$GD/config.real"; rm -f "$GD/config"; mkfifo "$GD/config"',
}


@pytest.mark.parametrize("where", list(DEEDS))
def test_a_fifo_or_endless_file_left_in_git_metadata_is_caught_and_removed(tmp_path: Path, where: str) -> None:
    repo, r = run_deed(tmp_path, DEEDS[where], timeout=120)
    head = "refs/heads/main"  # (make_task's branch)
    assert r.returncode == 0, r.stderr
    done = trials(repo)
    assert [t.status for t in done] == [Status.KEEP, Status.KEEP, Status.REJECTED, Status.KEEP, Status.KEEP], \
        [(t.status.value, t.reason) for t in done]
    assert "not a regular file" in done[2].reason, done[2].reason
    assert git(repo, "symbolic-ref", "HEAD") == head  # your repository works as it did
    assert git(repo, "rev-parse", "autoresearch/t") == done[-1].commit
    gd = repo / ".git"
    assert not any(p.is_fifo() or (p.is_symlink() and p.resolve() == Path("/dev/zero"))
                   for p in gd.rglob("*") if "objects" not in p.parts)


def test_a_protected_file_made_a_fifo_by_the_experiment_is_tampering(tmp_path: Path) -> None:
    """The experiment swaps the protected prepare.py for a FIFO: hashing it must not wait."""
    deed = r"""printf 'import os\nos.remove("prepare.py"); os.mkfifo("prepare.py")\n' >> exp.py"""
    repo, r = run_deed(tmp_path, deed, timeout=120)
    assert r.returncode == 0, r.stderr
    done = trials(repo)
    assert done[2].status is not Status.KEEP, [(t.status.value, t.reason) for t in done]
    assert "prepare.py" in done[2].reason, done[2].reason
    assert [t.status for t in done[3:]] == [Status.KEEP, Status.KEEP], [(t.status.value, t.reason) for t in done]


@pytest.mark.parametrize(("deed", "why"), [
    ('rm -rf "$GD/worktrees"; echo x > "$GD/worktrees"', "worktrees (a file, not a folder)"),
    ('git rev-parse HEAD > "$GD/shallow"', "modified the repository's git metadata (shallow)"),
])
def test_git_metadata_that_breaks_later_trials_is_caught_and_put_right(tmp_path: Path, deed: str, why: str) -> None:
    """.git/worktrees made a file (no `git worktree add` would work again: every later trial,
    and every resume, failed); a `shallow` file that cuts your history short at a commit."""
    repo, r = run_deed(tmp_path, deed, timeout=120)
    assert r.returncode == 0, r.stderr
    done = trials(repo)
    assert [t.status for t in done] == [Status.KEEP, Status.KEEP, Status.REJECTED, Status.KEEP, Status.KEEP], \
        [(t.status.value, t.reason) for t in done]
    assert why in done[2].reason, done[2].reason
    assert (repo / ".git/worktrees").is_dir() or not (repo / ".git/worktrees").exists()
    assert not (repo / ".git/shallow").exists()
    assert git(repo, "rev-list", "--count", "main") == "1"


def test_a_git_planted_early_on_path_mid_loop_is_never_run_by_the_harness(tmp_path: Path) -> None:
    """A folder on PATH before the system's (a venv's bin) that the agent can write: a `git` put
    there would run as the harness (and could, say, forge what `cat-file` shows). The harness
    runs the git it found as it started, and takes the planted one out (rejecting its trial)."""
    import shutil

    bindir, mark = tmp_path / "bin", tmp_path / "planted-git-ran"
    bindir.mkdir()
    deed = f"""printf '#!/bin/sh\\necho "$*" >> {mark}\\nexec {shutil.which("git")} "$@"\\n' > {bindir}/git
chmod +x {bindir}/git"""
    repo, r = run_deed(tmp_path, deed, env={"PATH": f"{bindir}:{os.environ['PATH']}"}, timeout=120)
    assert r.returncode == 0, r.stderr
    # it is taken out (a program put before the one found later on PATH), its trial rejected
    done = trials(repo)
    assert done[2].status is Status.REJECTED and "put a `git` on the experiments' PATH" in done[2].reason, done[2].reason
    assert not (bindir / "git").exists()
    assert "core.hooksPath" not in (mark.read_text() if mark.exists() else ""), mark.read_text()  # (never the harness's)
    assert [t.status for t in done][-1] is Status.KEEP


def test_git_metadata_made_a_link_is_put_back_in_its_place_not_written_through(tmp_path: Path) -> None:
    """info/exclude replaced by a link to another file (a sealed agent can name a file in the
    ledger folder it cannot see): putting it back wrote the old content into that file (the
    harness runs outside any seal) and left the link, so git went on reading the other file."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    repo, r = run_deed(tmp_path, f'rm -f "$GD/info/exclude"; ln -s {victim} "$GD/info/exclude"', timeout=120)
    assert r.returncode == 0, r.stderr
    done = trials(repo)
    assert done[2].status.value == "rejected" and "info/exclude" in done[2].reason, done[2].reason
    assert victim.read_text() == "precious\n"
    exclude = repo / ".git/info/exclude"
    assert not exclude.is_symlink() and "/.autoresearch/" in exclude.read_text()
    assert git(repo, "status", "--porcelain") == ""
