"""The external CLI agent's contract, checked from outside with scripted agents (DESIGN.md,
"Agents"): what a hostile or sloppy coding agent leaves behind is seen, said and, where it is safe,
taken away; what the harness records of it tells a user what it did."""

from __future__ import annotations

from pathlib import Path

from conftest import cli, make_task, script_agent, trials

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
