"""The harness's private index is a file an agent (or an experiment) can write: a flag in it
(assume-unchanged) or a stat forged to match a changed file would make git skip that file, so
that the commit, or the code a trial starts from, is not what the worktree holds. The snapshot
and the reset trust no stat in it."""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import time
from pathlib import Path

import pytest
from conftest import git, make_task

from autoresearch.gitrepo import Git


def forge_entry(index: Path, name: str, sha: str) -> None:
    """Give `name`'s entry in a version-2 index another blob id, its stat kept; checksum fixed."""
    data = bytearray(index.read_bytes()[:-20])
    assert data[:4] == b"DIRC" and struct.unpack(">I", data[4:8])[0] == 2
    count, pos = struct.unpack(">I", data[8:12])[0], 12
    for _ in range(count):
        flags = struct.unpack(">H", data[pos + 60:pos + 62])[0]
        path = bytes(data[pos + 62:pos + 62 + (flags & 0xFFF)]).decode()
        if path == name:
            data[pos + 40:pos + 60] = bytes.fromhex(sha)
            break
        pos += (62 + len(path) + 8) // 8 * 8
    else:
        raise AssertionError(f"{name} not in the index")
    index.write_bytes(bytes(data) + hashlib.sha1(data).digest())
    later = time.time() + 5  # newer than every file: no entry is "racily clean", re-read by git
    os.utime(index, (later, later))


def forged_worktree(tmp_path: Path) -> tuple[Git, object, str, str]:
    """A trial worktree whose exp.py says X = 9.0 while its index says the commit's X = 3.0, with
    the stat of the changed file: git sees nothing to do."""
    repo = make_task(tmp_path / "task")
    g = Git(repo)
    commit = g.head()
    ws = g.add_worktree(tmp_path / "wt", commit)
    env = g.wt_env(ws)
    exp = ws.path / "exp.py"
    exp.write_text(exp.read_text().replace("X = 3.0", "X = 9.0"))
    g.run("add", "exp.py", env=env, cwd=ws.path)
    forge_entry(ws.index, "exp.py", g.run("rev-parse", f"{commit}:exp.py"))
    assert g.run("diff-files", "--name-only", env=env, cwd=ws.path) == ""  # the forgery holds
    return g, ws, commit, exp.read_text()


def test_a_forged_index_does_not_keep_a_changed_file_through_a_reset(tmp_path: Path) -> None:
    g, ws, commit, changed = forged_worktree(tmp_path)
    g.run("reset", "-q", "--hard", commit, env=g.wt_env(ws), cwd=ws.path)
    assert "X = 9.0" in (ws.path / "exp.py").read_text()  # what a plain reset leaves
    forge_entry(ws.index, "exp.py", g.run("rev-parse", f"{commit}:exp.py"))
    g.reset_worktree(ws, commit)
    assert (ws.path / "exp.py").read_text() == g.show_file(commit, "exp.py")


def test_a_forged_index_does_not_hide_a_change_from_the_snapshot(tmp_path: Path) -> None:
    g, ws, commit, changed = forged_worktree(tmp_path)
    trial, changes, _ = g.snapshot(ws, commit, "X to 9")
    assert g.show_file(trial, "exp.py") == changed
    assert [c.path for c in changes] == ["exp.py"]


def test_assume_unchanged_does_not_hide_a_change_from_the_snapshot(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    g = Git(repo)
    commit = g.head()
    ws = g.add_worktree(tmp_path / "wt", commit)
    git(ws.path, "update-index", "--assume-unchanged", "exp.py")  # through the worktree's own .git
    env = g.wt_env(ws)
    g.run("update-index", "--assume-unchanged", "exp.py", env=env, cwd=ws.path)  # the private index
    exp = ws.path / "exp.py"
    exp.write_text(exp.read_text() + 'print("loss: -100")\n')
    trial, changes, _ = g.snapshot(ws, commit, "hidden line")
    assert 'print("loss: -100")' in g.show_file(trial, "exp.py")


def test_a_worktree_git_cannot_reset_is_made_writable_or_set_aside(tmp_path: Path) -> None:
    """An experiment that takes write permission away (or, as root, makes a file immutable)
    stopped the loop at the next reset. Permissions are given back; failing that, the worktree
    is set aside and made anew."""
    from autoresearch.filetree import writable

    locked = tmp_path / "locked"
    (locked / "sub").mkdir(parents=True)
    (locked / "sub" / "f.py").write_text("x = 1\n")
    os.chmod(locked / "sub" / "f.py", 0o444)
    os.chmod(locked / "sub", 0o555)
    writable(locked)
    assert os.stat(locked / "sub").st_mode & 0o700 == 0o700
    assert os.stat(locked / "sub" / "f.py").st_mode & 0o600 == 0o600

    repo = make_task(tmp_path / "task")
    g = Git(repo)
    commit = g.head()
    ws = g.add_worktree(tmp_path / "wt" / "w0", commit)
    exp = ws.path / "exp.py"
    exp.write_text("print('changed')\n")
    if subprocess.run(["chattr", "+i", str(exp)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i needs root (CAP_LINUX_IMMUTABLE)")
    try:
        g.reset_worktree(ws, commit)
        assert exp.read_text() == g.show_file(commit, "exp.py")
        aside = list(ws.path.parent.glob(".w0.unusable-*"))
        assert len(aside) == 1 and (aside[0] / "exp.py").read_text() == "print('changed')\n"
    finally:
        subprocess.run(["chattr", "-R", "-i", str(ws.path.parent)], capture_output=True)


def test_a_gitattributes_that_is_not_a_plain_file_is_refused_not_waited_on(tmp_path: Path) -> None:
    """A FIFO named .gitattributes held the harness's read (and git's) forever."""
    from autoresearch.gitrepo import Refused

    repo = make_task(tmp_path / "task")
    g = Git(repo)
    commit = g.head()
    ws = g.add_worktree(tmp_path / "wt", commit)
    os.mkfifo(ws.path / ".gitattributes")
    with pytest.raises(Refused, match=".gitattributes"):
        g.snapshot(ws, commit, "a fifo")
    g.reset_worktree(ws, commit)
    assert not (ws.path / ".gitattributes").exists()


def test_a_change_in_the_second_git_saw_the_file_is_not_trusted_away(tmp_path: Path) -> None:
    """git compares whole seconds: a file rewritten in the second its stat was taken, with its
    size, inode and an old mtime kept (so git does not take it for "racily clean"), looks
    unchanged to a reset that trusts the index. The ctime's nanoseconds (no process can set
    them) say it changed."""
    repo = make_task(tmp_path / "task")
    g = Git(repo)
    commit = g.head()
    ws = g.add_worktree(tmp_path / "wt", commit)
    exp = ws.path / "exp.py"
    for attempt in range(5):
        time.sleep(1.02 - time.time() % 1)  # early in a second
        exp.write_text(exp.read_text().replace("Y = ", f"Y = {attempt} + "))  # the agent's change
        os.utime(exp, (1e9, 1e9))  # an old mtime: not "racily clean" for git
        trial, _, _ = g.snapshot(ws, commit, "the agent's change")  # git takes the stat now
        before = os.stat(exp)
        data = exp.read_bytes()
        with open(exp, "r+b") as f:  # the experiment: in place, the same inode and size
            f.write(data.replace(b"X = 3.0", b"X = 1.0"))
        os.utime(exp, ns=(before.st_atime_ns, before.st_mtime_ns))
        if os.stat(exp).st_ctime_ns // 10**9 == before.st_ctime_ns // 10**9:
            break
    else:
        pytest.skip("could not change the file within the second of its stat")
    assert not g.index_untouched(ws)  # (a git built to compare nanoseconds sees it too; others do not)
    g.reset_worktree(ws, trial)  # the evaluator's restore: the commit's file, not the changed one
    assert exp.read_text() == g.show_file(trial, "exp.py")
