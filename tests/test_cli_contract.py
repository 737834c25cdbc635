"""The external CLI agent's contract, checked from outside with scripted agents (DESIGN.md,
"Agents"): what a hostile or sloppy coding agent leaves behind is seen, said and, where it is safe,
taken away; what the harness records of it tells a user what it did."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import DEED_AGENT, cli, git, make_task, run_deed, script_agent, trials

from autoresearch.records import Status


def test_a_timed_out_agent_s_reason_quotes_its_last_line(tmp_path: Path) -> None:
    """`show N` of an agent stopped at its time limit said only "timed out after 1 s": not what it
    was doing when it hung. Its last non-empty line is quoted, terminal codes taken out, cut."""
    repo = make_task(tmp_path / "task")
    long = "y" * 300
    agent = script_agent(tmp_path / "a.sh", f"""\
        echo "reading exp.py"
        printf '\\033[1;31mrunning the tests {long}\\033[0m\\n\\n'
        sleep 30
        """)
    r = cli("run", str(repo), "--tag", "t", "--agent-cmd", agent, "--agent-timeout", "1", "--trials", "1")
    assert r.returncode == 0, r.stderr
    t = trials(repo)[1]
    assert t.status is Status.AGENT_ERROR
    assert t.reason.startswith("the agent command timed out after 1 s: running the tests yyy"), t.reason
    assert "\033" not in t.reason and "[1;31m" not in t.reason
    assert len(t.reason) < 300, len(t.reason)


def test_worktrees_an_agent_adds_to_your_repository_are_unregistered_or_said(tmp_path: Path) -> None:
    """`git worktree add` run by an agent in its worktree left a worktree registered in your
    repository (in `git worktree list`, holding its branch: `git checkout other` failed) and its
    folder, unnoted. Now one in the ledger's folder is removed with its folder; one elsewhere may
    be yours, added while the loop ran: it is left as it is, and noted with the command that
    removes it."""
    elsewhere, yours = tmp_path / "elsewhere", tmp_path / "yours"
    yours.mkdir()  # an empty folder of the user's: git checks out into it
    deed = f"""\
  git worktree add -q --detach {elsewhere} HEAD
  git worktree add -q --detach {yours} HEAD
  git worktree add -q ../x other
"""
    repo = make_task(tmp_path / "task")
    git(repo, "branch", "other")
    agent = script_agent(tmp_path / "a.sh", DEED_AGENT.replace("{deed}", deed))
    r = cli("run", str(repo), "--tag", "t", "--agent-cmd", agent, "--trials", "3")
    assert r.returncode == 0, r.stderr
    assert not (repo / ".autoresearch/t/worktrees/x").exists()
    git(repo, "checkout", "-q", "other")  # no longer "used by worktree"
    done = trials(repo)
    assert [t.status for t in done] == [Status.KEEP] * 4  # (the measurement is not touched by it)
    notes = " ".join(done[2].flags)
    assert "worktrees/x: its registration is removed, and its folder (in the ledger's folder) deleted" in notes
    listed = git(repo, "worktree", "list", "--porcelain")
    for folder in (elsewhere, yours):  # (they may be yours, added meanwhile: left, and said)
        assert f"worktree {folder}\n" in listed and (folder / "exp.py").is_file()
        assert f"put a worktree at {folder}, outside the loop's folders: left as it is" in notes, notes
        remove = next(f for f in done[2].flags if f"at {folder}," in f).split("if it is not: `")[1].split("`")[0]
        subprocess.run(remove, shell=True, check=True)
        assert not folder.exists()
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1  # the checkout alone
    assert not done[1].flags and not done[3].flags  # (said once, on the trial that made them)
    assert f"while trial 2's agent ran: `git worktree add` (or `move`) put a worktree at {elsewhere}" in r.stdout + r.stderr
    assert f"put a worktree at {elsewhere}" in (repo / ".autoresearch/t/agent/2.log").read_text()


def test_refs_an_agent_makes_in_another_tag_s_namespace_are_put_back_and_noted(tmp_path: Path) -> None:
    """An agent's refs in another tag's namespace went unseen: a trial ref planted ahead for tag o
    (its next loop would take it for its own), o's refs and branch moved, a branch `autoresearch/foo`
    of no tag; and refs outside branches and tags (refs/foo) too. With no loop on o, what
    o's ledger records is put back, what it does not is removed, and the trial says so."""
    repo = make_task(tmp_path / "task")
    honest = script_agent(tmp_path / "h.sh", 'sed -i "s/^X = .*/X = 2.5/" exp.py\necho honest\n')
    assert cli("run", str(repo), "--tag", "o", "--agent-cmd", honest, "--trials", "1").returncode == 0
    o = {ref: git(repo, "rev-parse", ref) for ref in ("refs/autoresearch/o/trials/0", "refs/autoresearch/o/trials/1",
                                                       "refs/heads/autoresearch/o")}
    deed = """\
  for ref in refs/autoresearch/o/trials/5 refs/autoresearch/new/trials/1 refs/autoresearch/o/trials/0 \\
      refs/heads/autoresearch/o refs/heads/autoresearch/foo refs/remotes/origin/x refs/foo/bar; do
    git update-ref $ref HEAD
  done
  git update-ref -d refs/autoresearch/o/trials/1
"""
    agent = script_agent(tmp_path / "a.sh", DEED_AGENT.replace("{deed}", deed))
    r = cli("run", str(repo), "--tag", "t", "--agent-cmd", agent, "--trials", "2")
    assert r.returncode == 0, r.stderr
    assert {ref: git(repo, "rev-parse", ref) for ref in o} == o  # as o's ledger records
    left = git(repo, "for-each-ref", "--format=%(refname)").split()
    assert not {"refs/autoresearch/o/trials/5", "refs/autoresearch/new/trials/1", "refs/heads/autoresearch/foo"} & set(left)
    assert "warning" not in cli("status", str(repo), "--tag", "o").stdout
    done = trials(repo)
    assert [t.status for t in done] == [Status.KEEP] * 3 and not done[1].flags
    notes = " ".join(done[2].flags)
    for said in ("made refs/autoresearch/o/trials/5 (tag o's) at", "made refs/autoresearch/new/trials/1 (a loop's of tag new, "
                 "which has no ledger here) at", "made refs/heads/autoresearch/foo (a loop's of tag foo, which has no ledger here) at",
                 "moved refs/autoresearch/o/trials/0 (tag o's) from", "deleted refs/autoresearch/o/trials/1 (tag o's) from",
                 "moved refs/heads/autoresearch/o (tag o's) from", ": put back to", "as its ledger records", ": removed (`git update-ref",
                 "created refs/foo/bar at"):
        assert said in notes, (said, notes)
    assert "made refs/autoresearch/o/trials/5" in r.stdout + r.stderr


def test_a_trial_worktree_the_agent_locked_is_not_left_registered(tmp_path: Path) -> None:
    """`git worktree lock` in its worktree kept the loop's worktree registered after the loop
    ended (prune skips a locked one): a stale entry in your `git worktree list` for good."""
    repo, r = run_deed(tmp_path, '  git worktree lock "$PWD"', trials_=2)
    assert r.returncode == 0, r.stderr
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1  # the checkout alone


def test_an_agent_that_removes_its_worktree_is_told_apart_from_one_that_changed_nothing(tmp_path: Path) -> None:
    """`rm -rf "$PWD"` (or `git worktree remove`) read as "empty change: the agent changed nothing"
    and no more: the trial now says its worktree went, and the loop goes on."""
    repo, r = run_deed(tmp_path, '  W=$PWD; cd /; rm -rf "$W"', trials_=3)
    assert r.returncode == 0, r.stderr
    done = trials(repo)
    assert [t.status for t in done] == [Status.KEEP, Status.KEEP, Status.REJECTED, Status.KEEP]
    assert any("its worktree" in f and "was removed or moved away, and is made anew from the best code" in f
               for f in done[2].flags), done[2].flags
