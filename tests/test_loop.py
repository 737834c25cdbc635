"""The loop end to end with scripted agents: real git, real subprocesses, real timeouts."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import cli, git, make_task, script_agent, trials, wait_for

from autoresearch.ledger import Ledger
from autoresearch.records import Status


def ledger_rows(repo: Path, tag: str) -> list[tuple]:
    db = sqlite3.connect(repo / ".autoresearch" / tag / "ledger.sqlite")
    try:
        return db.execute("SELECT number, status, commit_sha, metric, description, reason FROM trials ORDER BY number").fetchall()
    finally:
        db.close()


def run(repo: Path, agent: str, *extra: str, tag: str = "t", trials: int = 1) -> subprocess.CompletedProcess[str]:
    return cli("run", str(repo), "--tag", tag, "--agent", "cli", "--agent-cmd", agent,
               "--trials", str(trials), *extra)


def test_improvement_is_kept_and_branch_moves(task_repo: Path, tmp_path: Path) -> None:
    agent = script_agent(tmp_path / "a.sh", """\
        sed -i 's/^X = 3.0/X = 1.5/' exp.py
        echo "X 3.0 -> 1.5"
        """)
    user_head = git(task_repo, "rev-parse", "HEAD")
    r = run(task_repo, agent)
    assert r.returncode == 0, r.stderr
    rows = ledger_rows(task_repo, "t")
    assert [(n, s) for n, s, *_ in rows] == [(0, "keep"), (1, "keep")]
    assert rows[0][3] == pytest.approx(6.0) and rows[1][3] == pytest.approx(2.25)
    assert rows[1][4] == "X 3.0 -> 1.5"
    assert git(task_repo, "rev-parse", "autoresearch/t") == rows[1][2]
    assert git(task_repo, "rev-parse", "refs/autoresearch/t/trials/1") == rows[1][2]
    assert git(task_repo, "rev-parse", "refs/autoresearch/t/trials/0") == user_head
    # the user's branch and checkout are untouched
    assert git(task_repo, "rev-parse", "HEAD") == user_head
    assert git(task_repo, "status", "--porcelain") == ""
    assert "X = 3.0" in (task_repo / "exp.py").read_text()
    assert git(task_repo, "log", "-1", "--format=%s", rows[1][2]) == "X 3.0 -> 1.5"


def test_results_tsv_byte_for_byte(task_repo: Path, tmp_path: Path) -> None:
    agent = script_agent(tmp_path / "a.sh", """\
        n=$AUTORESEARCH_TRIAL
        case $n in
          1) sed -i 's/^X = 3.0/X = 2.0/' exp.py; echo "X to 2" ;;
          2) sed -i 's/^X = .*/X = 9.0/' exp.py; echo "X to 9	with a tab" ;;
          3) echo 'raise SystemExit(3)' >> exp.py; echo "crash it" ;;
        esac
        """)
    assert run(task_repo, agent, trials=3).returncode == 0
    rows = ledger_rows(task_repo, "t")
    c = [r[2][:7] for r in rows]
    expected = ("commit\tloss\tmemory_gb\tstatus\tdescription\n"
                f"{c[0]}\t6.000000\t2.0\tkeep\tbaseline\n"
                f"{c[1]}\t3.000000\t2.0\tkeep\tX to 2\n"
                f"{c[2]}\t66.000000\t2.0\tdiscard\tX to 9 with a tab\n"
                f"{c[3]}\t0.000000\t0.0\tcrash\tcrash it\n")
    assert (task_repo / ".autoresearch/t/results.tsv").read_text() == expected
    assert git(task_repo, "rev-parse", "autoresearch/t") == rows[1][2]


def test_regression_is_discarded(task_repo: Path, tmp_path: Path) -> None:
    agent = script_agent(tmp_path / "a.sh", "sed -i 's/^Y = 2/Y = 5/' exp.py\necho worse\n")
    assert run(task_repo, agent).returncode == 0
    rows = ledger_rows(task_repo, "t")
    assert rows[1][1] == "discard" and rows[1][3] == pytest.approx(9.0)
    assert git(task_repo, "rev-parse", "autoresearch/t") == rows[0][2]
    assert git(task_repo, "rev-parse", "refs/autoresearch/t/trials/1") == rows[1][2]


def test_tie_is_discarded(task_repo: Path, tmp_path: Path) -> None:
    agent = script_agent(tmp_path / "a.sh", "echo '# a comment' >> exp.py\necho comment\n")
    assert run(task_repo, agent).returncode == 0
    assert ledger_rows(task_repo, "t")[1][1] == "discard"


def test_a_change_back_to_the_baseline_code_is_a_duplicate_in_the_run_that_made_it(task_repo: Path, tmp_path: Path) -> None:
    agent = script_agent(tmp_path / "a.sh", """\
        if [ "$AUTORESEARCH_TRIAL" = 1 ]; then sed -i 's/^X = 3.0/X = 1.5/' exp.py; echo better
        else sed -i 's/^X = 1.5/X = 3.0/' exp.py; echo back; fi
        """)
    assert run(task_repo, agent, trials=2).returncode == 0
    rows = ledger_rows(task_repo, "t")
    assert [r[1] for r in rows] == ["keep", "keep", "duplicate"], rows
    assert rows[2][5] == "same code as trial 0" and rows[2][3] == pytest.approx(6.0)


@pytest.mark.parametrize("body,status,needle", [
    ("echo 'raise SystemExit(1)' >> exp.py", "crash", "exit code 1"),
    # (an experiment the kernel's out-of-memory killer ended read "exit code -9")
    ("echo 'import os; os.kill(os.getpid(), 9)' >> exp.py", "crash", "killed by signal 9 (SIGKILL: out of memory, or a kill -9)"),
    ("sed -i 's/print(f\"loss: {loss}\")//' exp.py", "crash", "no 'loss' figure"),
    ("echo 'print(\"loss: nan\")' >> exp.py", "crash", "'loss' is nan"),
    ("echo 'print(\"loss: inf\")' >> exp.py", "crash", "'loss' is inf"),
    ("echo 'import time; time.sleep(60)' >> exp.py", "timeout", "timeout"),
])
def test_failures_are_recorded_and_loop_goes_on(tmp_path: Path, body: str, status: str, needle: str) -> None:
    repo = make_task(tmp_path / "r", toml_extra="")
    agent = script_agent(tmp_path / "a.sh", f"""\
        if [ "$AUTORESEARCH_TRIAL" = 1 ]; then {body}; else sed -i 's/^X = 3.0/X = 1.0/' exp.py; fi
        echo "trial $AUTORESEARCH_TRIAL"
        """)
    (repo / "autoresearch.toml").write_text((repo / "autoresearch.toml").read_text().replace("timeout = 10", "timeout = 2"))
    git(repo, "commit", "-qam", "short timeout")
    r = run(repo, agent, trials=2)
    assert r.returncode == 0, r.stderr
    rows = ledger_rows(repo, "t")
    assert rows[1][1] == status and needle in rows[1][5]
    assert rows[2][1] == "keep"
    assert (repo / ".autoresearch/t/logs/1.log").exists()


def test_timeout_kills_children_that_ignore_sigterm(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    stubborn = f"""\
import os, signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import signal, time\\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\\nwhile True: time.sleep(0.1)"])
open({str(pidfile)!r}, "w").write(str(child.pid))
signal.signal(signal.SIGTERM, signal.SIG_IGN)
time.sleep(100)
"""
    repo = make_task(tmp_path / "r", files={"stubborn.py": stubborn})
    (repo / "autoresearch.toml").write_text((repo / "autoresearch.toml").read_text()
                                            .replace("timeout = 10", "timeout = 1.5")
                                            .replace('editable = ["exp.py"]', 'editable = ["exp.py", "stubborn.py"]'))
    git(repo, "commit", "-qam", "t")
    agent = script_agent(tmp_path / "a.sh", "echo 'import stubborn' >> exp.py\necho stubborn\n")
    started = time.monotonic()
    assert run(repo, agent).returncode == 0
    assert time.monotonic() - started < 30
    assert ledger_rows(repo, "t")[1][1] == "timeout"
    pid = int(pidfile.read_text())
    time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


@pytest.mark.parametrize("body,needle", [
    ("echo 'DATA = 1' >> prepare.py; echo x >> exp.py", "protected file prepare.py"),
    ("echo '# hi' >> program.md", "protected file program.md"),
    ("echo 'x = 1' >> autoresearch.toml", "protected file autoresearch.toml"),
    ("echo new > other.py", "created other.py, outside the editable scope"),
    ("mkdir -p sub && echo new > sub/f.txt", "outside the editable scope"),
    ("true", "empty change"),
    ("rm exp.py", "deleted exp.py"),
    ("rm exp.py && ln -s /etc/passwd exp.py", "symbolic link"),
])
def test_guard_rejects_and_rewinds(task_repo: Path, tmp_path: Path, body: str, needle: str) -> None:
    agent = script_agent(tmp_path / "a.sh", f"{body}\necho sneaky\n")
    assert run(task_repo, agent).returncode == 0
    rows = ledger_rows(task_repo, "t")
    assert rows[1][1] == "rejected" and needle in rows[1][5], rows[1]
    assert git(task_repo, "rev-parse", "autoresearch/t") == rows[0][2]
    assert git(task_repo, "rev-parse", "refs/autoresearch/t/trials/1") == rows[1][2]
    assert not (task_repo / ".autoresearch/t/logs/1.log").exists()  # never run


def test_protected_file_changed_by_the_experiment_is_rejected(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "r")
    agent = script_agent(tmp_path / "a.sh", """\
        cat >> exp.py <<'PY'
import os
os.chmod("prepare.py", 0o644)
open("prepare.py", "a").write("DATA = 'cheat'\\n")
print("loss: 0.0")
PY
        echo cheat
        """)
    assert run(repo, agent).returncode == 0
    rows = ledger_rows(repo, "t")
    assert rows[1][1] == "rejected" and "prepare.py" in rows[1][5]
    assert git(repo, "rev-parse", "autoresearch/t") == rows[0][2]


def test_git_metadata_tampering_is_rejected_and_restored(task_repo: Path, tmp_path: Path) -> None:
    agent = script_agent(tmp_path / "a.sh", """\
        gitdir=$(git rev-parse --git-common-dir)
        printf '#!/bin/sh\\necho pwned\\n' > "$gitdir/hooks/pre-commit"
        git config core.fsmonitor 'touch /tmp/pwned'
        sed -i 's/^X = 3.0/X = 1.0/' exp.py
        echo tamper
        """)
    assert run(task_repo, agent).returncode == 0
    rows = ledger_rows(task_repo, "t")
    assert rows[1][1] == "rejected" and "git metadata" in rows[1][5]
    assert not (task_repo / ".git/hooks/pre-commit").exists()
    assert "fsmonitor" not in (task_repo / ".git/config").read_text()


def test_agent_running_git_in_worktree_cannot_move_the_branch(task_repo: Path, tmp_path: Path) -> None:
    agent = script_agent(tmp_path / "a.sh", """\
        sed -i 's/^X = 3.0/X = 1.0/' exp.py
        git -c user.name=a -c user.email=a@a commit -qam "agent commits itself" || true
        git branch -f autoresearch/t HEAD 2>/dev/null || true
        echo committed
        """)
    r = run(task_repo, agent, trials=1)
    assert r.returncode == 0, r.stderr
    rows = ledger_rows(task_repo, "t")
    assert rows[1][1] == "keep"
    # the trial's code is judged against the parent whatever HEAD the agent left
    assert git(task_repo, "rev-parse", "autoresearch/t") == rows[1][2]
    assert git(task_repo, "rev-parse", f"{rows[1][2]}^") == rows[0][2]
    # the branch was put back at once (not left on the agent's commit while the trial ran), and noted
    trial = Ledger.read(task_repo, "t").get(1)
    assert any("tag's branch refs/heads/autoresearch/t (put back)" in f for f in trial.flags), trial.flags


def test_an_agent_planting_a_later_trials_ref_is_rejected_and_the_ref_removed(task_repo: Path, tmp_path: Path) -> None:
    """A trial ref made ahead of its trial was taken for the loop's own: when the trial came, its
    real commit was put back to the planted one (unreachable, lost to `git gc`); a branch deleted
    by an agent stayed deleted, or forged, until the next verdict."""
    agent = script_agent(tmp_path / "a.sh", """\
        sed -i "s/^X = .*/X = 1.$AUTORESEARCH_TRIAL/" exp.py
        root=$(git rev-list --max-parents=0 HEAD)
        if [ "$AUTORESEARCH_TRIAL" = 1 ]; then git update-ref refs/autoresearch/t/trials/3 "$root"; fi
        if [ "$AUTORESEARCH_TRIAL" = 2 ]; then git update-ref -d refs/heads/autoresearch/t; fi
        echo "trial $AUTORESEARCH_TRIAL"
        """)
    assert run(task_repo, agent, trials=4).returncode == 0
    rows = ledger_rows(task_repo, "t")
    assert rows[1][1] == "rejected" and "made refs where only the loop writes (refs/autoresearch/t/trials/3)" in rows[1][5]
    for n in range(5):  # every trial's ref is its own commit
        assert git(task_repo, "rev-parse", f"refs/autoresearch/t/trials/{n}") == rows[n][2]
    assert rows[2][1] == "keep"  # the branch deleted: put back, noted, not held against the trial
    assert any("tag's branch" in f for f in Ledger.read(task_repo, "t").get(2).flags)
    best = Ledger.read(task_repo, "t").best()
    assert best is not None and git(task_repo, "rev-parse", "autoresearch/t") == best.commit


def test_agent_deleting_trial_refs_is_rejected_and_the_refs_restored(task_repo: Path, tmp_path: Path) -> None:
    agent = script_agent(tmp_path / "a.sh", """\
        sed -i "s/^X = .*/X = 1.$AUTORESEARCH_TRIAL/" exp.py
        if [ "$AUTORESEARCH_TRIAL" = 2 ]; then git update-ref -d refs/autoresearch/t/trials/1; fi
        echo "trial $AUTORESEARCH_TRIAL"
        """)
    assert run(task_repo, agent, trials=2).returncode == 0
    rows = ledger_rows(task_repo, "t")
    assert rows[2][1] == "rejected" and "refs/autoresearch/t/trials/1" in rows[2][5]
    assert git(task_repo, "rev-parse", "refs/autoresearch/t/trials/1") == rows[1][2]


def test_clean_repo_required(task_repo: Path, tmp_path: Path) -> None:
    (task_repo / "exp.py").write_text("dirty\n")
    r = run(task_repo, "true")
    assert r.returncode == 2 and "uncommitted changes" in r.stderr


def test_kill_during_trial_then_resume(task_repo: Path, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    agent = script_agent(tmp_path / "a.sh", f"""\
        if [ "$AUTORESEARCH_TRIAL" = 1 ]; then
          echo 'import time; open("{marker}", "w").write("1"); time.sleep(60)' >> exp.py
        else
          sed -i 's/^X = 3.0/X = 2.0/' exp.py
        fi
        echo "trial $AUTORESEARCH_TRIAL"
        """)
    (task_repo / "autoresearch.toml").write_text((task_repo / "autoresearch.toml").read_text().replace("timeout = 10", "timeout = 120"))
    git(task_repo, "commit", "-qam", "long timeout")
    proc = subprocess.Popen([sys.executable, "-m", "autoresearch", "run", str(task_repo), "--tag", "t",
                             "--agent", "cli", "--agent-cmd", agent, "--trials", "3"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(marker)
    assert marker.exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.3)
    # the experiment died with the loop (or is killed on resume): check after resume
    r = run(task_repo, agent, trials=1)
    assert r.returncode == 0, r.stderr
    rows = ledger_rows(task_repo, "t")
    assert [(n, s) for n, s, *_ in rows] == [(0, "keep"), (1, "interrupted"), (2, "keep")]
    assert rows[1][2] is not None
    assert git(task_repo, "rev-parse", "refs/autoresearch/t/trials/1") == rows[1][2]
    assert git(task_repo, "rev-parse", "autoresearch/t") == rows[2][2]
    tsv = (task_repo / ".autoresearch/t/results.tsv").read_text().splitlines()
    assert len(tsv) == 4 and tsv[2].split("\t")[3] == "crash"
    out = subprocess.run(["pgrep", "-f", str(marker)], capture_output=True, text=True).stdout
    assert out.strip() == ""


def test_ctrl_c_stops_cleanly(task_repo: Path, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    agent = script_agent(tmp_path / "a.sh", f"""\
        echo 'import time; open("{marker}", "w").write("1"); time.sleep(60)' >> exp.py
        echo slow
        """)
    (task_repo / "autoresearch.toml").write_text((task_repo / "autoresearch.toml").read_text().replace("timeout = 10", "timeout = 120"))
    git(task_repo, "commit", "-qam", "long timeout")
    proc = subprocess.Popen([sys.executable, "-m", "autoresearch", "run", str(task_repo), "--tag", "t",
                             "--agent", "cli", "--agent-cmd", agent, "--trials", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(marker)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    rows = ledger_rows(task_repo, "t")
    assert [(n, s) for n, s, *_ in rows] == [(0, "keep"), (1, "interrupted")]
    assert "Traceback" not in err


def test_status_and_show(task_repo: Path, tmp_path: Path) -> None:
    agent = script_agent(tmp_path / "a.sh", "sed -i 's/^X = 3.0/X = 2.0/' exp.py\necho 'X to 2'\n")
    assert run(task_repo, agent).returncode == 0
    r = cli("status", str(task_repo), "--tag", "t")
    assert r.returncode == 0 and "X to 2" in r.stdout and "best: trial 1" in r.stdout
    r = cli("show", "1", str(task_repo))
    assert r.returncode == 0
    assert "-X = 3.0" in r.stdout and "+X = 2.0" in r.stdout and "loss: 3" in r.stdout
    assert cli("show", "9", str(task_repo)).returncode == 2


def test_agent_contract_env_prompt_and_description_file(task_repo: Path, tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    agent = script_agent(tmp_path / "a.sh", f"""\
        cp "$AUTORESEARCH_PROMPT_FILE" {seen}
        test "$1" = "$AUTORESEARCH_PROMPT_FILE"
        sed -i 's/^X = 3.0/X = 2.5/' exp.py
        echo "from the file" > "$AUTORESEARCH_DESCRIPTION_FILE"
        echo "not this line"
        """)
    assert run(task_repo, agent + " {prompt_file}", trials=1).returncode == 0
    prompt = seen.read_text()
    assert "Minimise loss." in prompt and "#0 keep" in prompt and "exp.py" in prompt
    assert ledger_rows(task_repo, "t")[1][4] == "from the file"


def test_agent_failure_and_agent_timeout(task_repo: Path, tmp_path: Path) -> None:
    agent = script_agent(tmp_path / "a.sh", """\
        if [ "$AUTORESEARCH_TRIAL" = 1 ]; then exit 7; fi
        sleep 30
        """)
    r = run(task_repo, agent, "--agent-timeout", "1", trials=2)
    assert r.returncode == 0, r.stderr
    rows = ledger_rows(task_repo, "t")
    assert rows[1][1] == "agent_error" and "exited with 7" in rows[1][5]
    assert rows[2][1] == "agent_error" and "timed out" in rows[2][5]


def test_trial_command_for_a_self_driving_agent(task_repo: Path) -> None:
    (task_repo / "exp.py").write_text((task_repo / "exp.py").read_text().replace("X = 3.0", "X = 1.0"))
    r = cli("trial", "-m", "X to 1", str(task_repo), "--tag", "self")
    assert r.returncode == 0, r.stderr
    assert "trial 1: keep" in r.stdout
    assert "X = 1.0" in (task_repo / "exp.py").read_text()  # kept: stays
    (task_repo / "exp.py").write_text((task_repo / "exp.py").read_text().replace("Y = 2", "Y = 7"))
    r = cli("trial", "-m", "Y to 7", str(task_repo), "--tag", "self")
    assert r.returncode == 0 and "trial 2: discard" in r.stdout
    text = (task_repo / "exp.py").read_text()
    assert "Y = 2" in text and "X = 1.0" in text  # rewound to the best
    (task_repo / "prepare.py").write_text("DATA = 'x'\n")
    r = cli("trial", "-m", "cheat", str(task_repo), "--tag", "self")
    assert r.returncode == 1 and "rejected" in r.stdout


def test_hours_limit(task_repo: Path, tmp_path: Path) -> None:
    agent = script_agent(tmp_path / "a.sh", "echo \"# $RANDOM$RANDOM\" >> exp.py\necho noise\n")
    r = cli("run", str(task_repo), "--tag", "h", "--agent", "cli", "--agent-cmd", agent, "--hours", "0.0003")
    assert r.returncode == 0, r.stderr
    assert "--hours" in r.stdout
    assert 1 <= len(ledger_rows(task_repo, "h")) < 50


def test_metric_from_json_file_and_pattern(tmp_path: Path) -> None:
    exp = "import json, os\njson.dump({'acc': 0.5, 'mem': 3}, open(os.path.join(os.environ['AUTORESEARCH_RUN_DIR'], 'm.json'), 'w'))\n"
    repo = make_task(tmp_path / "j", experiment=exp, toml_extra='[metric]\nname = "acc"\ngoal = "maximize"\nfile = "m.json"\nrecord = ["mem"]\n')
    assert cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", "true", "--trials", "0").returncode == 0
    assert ledger_rows(repo, "t")[0][3] == 0.5
    exp2 = "print('final accuracy=0.75 (best)')\n"
    repo2 = make_task(tmp_path / "p", experiment=exp2, toml_extra='[metric]\nname = "acc"\ngoal = "maximize"\npattern = "accuracy=([0-9.]+)"\n')
    assert cli("run", str(repo2), "--tag", "t", "--agent", "cli", "--agent-cmd", "true", "--trials", "0").returncode == 0
    assert ledger_rows(repo2, "t")[0][3] == 0.75


def test_experiment_env(tmp_path: Path) -> None:
    exp = ("import os\nfor k in ['AUTORESEARCH_TIME_BUDGET','AUTORESEARCH_SEED','AUTORESEARCH_TRIAL']:\n"
           "    print(k, os.environ[k])\nassert os.path.isdir(os.environ['AUTORESEARCH_RUN_DIR'])\n"
           "assert 'OPENAI_API_KEY' not in os.environ\nprint('loss: 1')\n")
    repo = make_task(tmp_path / "e", experiment=exp)
    r = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", "true", "--trials", "0",
            env={"OPENAI_API_KEY": "sk-secret"})
    assert r.returncode == 0, r.stderr
    log = (repo / ".autoresearch/t/logs/0.log").read_text()
    assert "AUTORESEARCH_TIME_BUDGET 5" in log and "AUTORESEARCH_TRIAL 0" in log


def test_baseline_crash_is_exit_1(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "b", experiment="raise SystemExit('boom')\n")
    r = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", "true", "--trials", "1")
    assert r.returncode == 1 and "baseline" in r.stderr and "Traceback" not in r.stderr
    assert "start a new --tag" in r.stderr


def test_second_loop_on_same_tag_is_refused(task_repo: Path, tmp_path: Path) -> None:
    marker = tmp_path / "m"
    agent = script_agent(tmp_path / "a.sh", f"touch {marker}; sleep 20; echo x >> exp.py; echo x\n")
    proc = subprocess.Popen([sys.executable, "-m", "autoresearch", "run", str(task_repo), "--tag", "t",
                             "--agent", "cli", "--agent-cmd", agent, "--trials", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(marker, 30)
        r = run(task_repo, "true")
        assert r.returncode == 2 and "another autoresearch loop" in r.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    os.environ.pop("X", None)


def test_an_experiment_that_defeats_the_harness_and_forges_the_ledger_is_caught(tmp_path: Path) -> None:
    """Red team, round 4: the experiment rewrites the ledger, then leaves a folder where the
    metric file goes, so that the harness raised before its after-experiment check and the loop
    died with the forgery in place. Now the trial is a crash, the check runs, the ledger is put
    back and the loop goes on."""
    exp = ("import os, sqlite3, sys\nX = 3.0\nrun = os.environ['AUTORESEARCH_RUN_DIR']\n"
           "if 'AUTORESEARCH_EXPERIMENT_SECONDS' in os.environ:  # the evaluator\n"
           "    open(os.path.join(run, 'm.json'), 'w').write('{\"loss\": %s}' % X)\n"
           "elif os.environ['AUTORESEARCH_TRIAL'] == '1':\n"
           "    db = os.path.join(os.environ['AR_LEDGER'], 'ledger.sqlite')\n"
           "    c = sqlite3.connect(db); c.execute('UPDATE trials SET metric = 1e9 WHERE number = 0'); c.commit()\n"
           "    os.makedirs(os.path.join(run, 'm.json'), exist_ok=True)\n")
    root = make_task(tmp_path / "task", experiment=exp,
                     toml_extra='evaluate = "python exp.py"\n[metric]\nname = "loss"\ngoal = "minimize"\nfile = "m.json"\n')
    agent = script_agent(tmp_path / "a.sh", "sed -i 's/^X = .*/X = 2.0/' exp.py\necho X\n")
    r = cli("run", str(root), "--tag", "t", "--agent-cmd", agent, "--trials", "2",
            env={"AR_LEDGER": str(root / ".autoresearch" / "t")})
    assert r.returncode == 0, r.stderr
    rows = (root / ".autoresearch" / "t" / "results.tsv").read_text().splitlines()
    assert rows[1].split("\t")[1:4] == ["3.000000", "0.0", "keep"]  # the baseline as measured
    assert rows[2].split("\t")[3] == "crash" and len(rows) == 4


def test_code_rejected_after_its_run_may_be_proposed_again(tmp_path: Path) -> None:
    """Rejected for what its run did (here: it changed a protected file, on trial 1 only), the
    code was never measured: the same code proposed again is run, not a duplicate of it."""
    exp = ("import os\nX = 3.0\n"
           "if os.environ['AUTORESEARCH_TRIAL'] == '1':\n    open('prepare.py', 'a').write('# changed\\n')\n"
           "print(f'loss: {X}')\n")
    root = make_task(tmp_path / "task", experiment=exp)
    agent = script_agent(tmp_path / "a.sh", "sed -i 's/^X = .*/X = 2.0/' exp.py\necho X to 2\n")
    assert cli("run", str(root), "--tag", "t", "--agent-cmd", agent, "--trials", "2").returncode == 0
    from autoresearch.ledger import Ledger

    led = Ledger.read(root, "t")
    try:
        statuses = [t.status.value for t in led.trials()]
    finally:
        led.close()
    assert statuses == ["keep", "rejected", "keep"], statuses


def test_symbolic_and_broken_refs_an_agent_makes_are_undone_without_touching_your_branch(tmp_path: Path) -> None:
    """A symbolic ref planted where the loop writes was deleted through (git follows it: your
    branch), or not at all (every later trial rejected); the tag's branch made symbolic had
    the loop move your branch with each keep."""
    repo = make_task(tmp_path / "task")
    git(repo, "branch", "other")
    other = git(repo, "rev-parse", "other")
    agent = script_agent(tmp_path / "a.sh", """\
        sed -i "s/^X = .*/X = 2.$((9 - AUTORESEARCH_TRIAL))/" exp.py
        common=$(git rev-parse --git-common-dir)
        case $AUTORESEARCH_TRIAL in
          1) git symbolic-ref refs/autoresearch/t/evil refs/heads/other ;;
          2) echo garbage > "$common/refs/autoresearch/t/broken" ;;
          3) git symbolic-ref refs/heads/autoresearch/t refs/heads/other ;;
        esac
        echo "trial $AUTORESEARCH_TRIAL"
        """)
    assert run(repo, agent, trials=5).returncode == 0
    rows = ledger_rows(repo, "t")
    assert rows[1][1] == "rejected" and "refs/autoresearch/t/evil" in rows[1][5] and "could not" not in rows[1][5]
    assert rows[2][1] == "rejected" and "refs/autoresearch/t/broken" in rows[2][5] and "could not" not in rows[2][5]
    assert [r[1] for r in rows[3:]] == ["keep", "keep", "keep"], rows  # honest after, and not held against 3
    assert git(repo, "rev-parse", "other") == other  # your branch never moved
    assert git(repo, "rev-parse", "autoresearch/t") == rows[5][2]
    assert subprocess.run(["git", "symbolic-ref", "-q", "refs/heads/autoresearch/t"], cwd=repo).returncode != 0
    refs = git(repo, "for-each-ref", "--format=%(refname)", "refs/autoresearch/t/").split()
    assert sorted(refs) == sorted(f"refs/autoresearch/t/trials/{n}" for n in range(6))


def test_an_editable_file_git_ignores_is_named_when_it_is_left_out(tmp_path: Path) -> None:
    """A new editable file that .gitignore matches is not committed, so the experiment does not
    find it: the trial crashed with no word on why. The trial now says what was left out."""
    repo = make_task(tmp_path / "task", experiment="import os\nX = 3.0\nif os.path.exists('gen.py'):\n"
                     "    import gen\nprint(f'loss: {X}')\n", files={".gitignore": "gen*.py\n__pycache__/\n"})
    toml = (repo / "autoresearch.toml").read_text().replace('editable = ["exp.py"]', 'editable = ["*.py"]')
    (repo / "autoresearch.toml").write_text(toml)
    git(repo, "commit", "-qam", "editable globs")
    agent = script_agent(tmp_path / "a.sh", """\
        echo "Y = 1" > gen.py
        mkdir -p __pycache__ && echo x > __pycache__/gen.cpython-311.pyc
        sed -i 's/^X = .*/X = 2.0/' exp.py
        echo "X to 2 with gen.py"
        """)
    assert run(repo, agent, trials=1).returncode == 0
    trial = Ledger.read(repo, "t").get(1)
    assert trial is not None and trial.status.value == "keep"  # it ran without gen.py
    assert any(f.startswith("left out of the commit, and so of the run: gen.py (editable, but ignored") for f in trial.flags), trial.flags
    assert not any("pycache" in f for f in trial.flags)
    assert "left out of the commit" in cli("show", "1", str(repo)).stdout


def test_status_says_when_a_tags_refs_were_moved_by_something_else(tmp_path: Path) -> None:
    """Another tag's agent (not watched by this tag's loop) moved this tag's branch to code that
    was never measured and deleted a trial ref: status said nothing. It says so now, and a
    resume with --trials 0 puts them back from the ledger."""
    repo = make_task(tmp_path / "task")
    agent = script_agent(tmp_path / "a.sh", 'sed -i "s/^X = .*/X = 1.$AUTORESEARCH_TRIAL/" exp.py\necho X\n')
    assert run(repo, agent, trials=2, tag="p").returncode == 0
    best = git(repo, "rev-parse", "autoresearch/p")
    forged = git(repo, "commit-tree", "-p", "autoresearch/p", "-m", "forged", "autoresearch/p^{tree}")
    git(repo, "update-ref", "refs/heads/autoresearch/p", forged)
    git(repo, "update-ref", "-d", "refs/autoresearch/p/trials/1")
    shown = cli("status", str(repo), "--tag", "p").stdout
    assert f"warning: branch autoresearch/p is at {forged[:7]}, not the best trial's commit {best[:7]}" in shown
    assert "warning: the refs of trial 1 are gone or moved" in shown
    assert cli("run", str(repo), "--tag", "p", "--trials", "0").returncode == 0
    assert git(repo, "rev-parse", "autoresearch/p") == best
    assert "warning" not in cli("status", str(repo), "--tag", "p").stdout


def test_status_says_when_a_trials_commit_is_gone_and_cannot_be_put_back(tmp_path: Path) -> None:
    """A discarded trial's ref deleted and its commit pruned: status says the commit is gone, not
    that a resume puts it back (it cannot)."""
    repo = make_task(tmp_path / "task")
    agent = script_agent(tmp_path / "a.sh", 'sed -i "s/^X = .*/X = 1.$AUTORESEARCH_TRIAL/" exp.py\necho X\n')
    assert run(repo, agent, trials=2, tag="p").returncode == 0
    assert [t.status.value for t in trials(repo, "p")] == ["keep", "keep", "discard"]
    gone = trials(repo, "p")[2].commit
    git(repo, "update-ref", "-d", "refs/autoresearch/p/trials/2")
    git(repo, "reflog", "expire", "--expire=now", "--all")
    git(repo, "prune", "--expire=now")
    assert subprocess.run(["git", "cat-file", "-e", gone], cwd=repo).returncode != 0
    shown = cli("status", str(repo), "--tag", "p").stdout
    assert "warning: the commits of trial 2 are gone from git's objects" in shown, shown
    assert "refs of trial 2" not in shown


def test_a_trials_ref_holds_its_commit_while_it_runs(tmp_path: Path) -> None:
    """The trial's ref is made when its commit is, not at the verdict: a `git prune` (or `git gc
    --prune=now`) while the experiment runs finds the commit held, and cannot take it."""
    exp = textwrap.dedent("""\
        import os, subprocess
        X = 3.0
        def git(*a):
            return subprocess.run(["git", *a], capture_output=True, text=True).stdout.strip()
        ref = git("rev-parse", "--verify", "-q", "refs/autoresearch/t/trials/" + os.environ["AUTORESEARCH_TRIAL"])
        print("held:", int(ref == git("rev-parse", "HEAD")))
        git("prune", "--expire=now")
        print(f"loss: {X}")
        """)
    root = make_task(tmp_path / "task", experiment=exp)
    r = cli("run", str(root), "--tag", "t", "--agent", "search", "--trials", "2")
    assert r.returncode == 0, r.stderr
    done = trials(root)
    assert [t.status.value for t in done][0] == "keep" and all(t.metric is not None for t in done), done
    for t in done[1:]:
        assert "held: 1" in (root / f".autoresearch/t/logs/{t.number}.log").read_text()
        assert git(root, "cat-file", "-t", t.commit) == "commit"


def test_a_change_git_cannot_commit_is_still_a_trial_commit_with_its_ref_and_row(tmp_path: Path) -> None:
    """A FIFO, or a path git refuses (lib/.GIT/x.py), beside an edit: the trial is rejected and,
    as every trial, has a commit (of its parent's code, saying why), its ref and its
    results.tsv row; two such trials of one parent are two commits."""
    root = make_task(tmp_path / "task", toml_extra="", experiment="X = 3.0\nprint(f'loss: {X}')\n")
    (root / "autoresearch.toml").write_text((root / "autoresearch.toml").read_text().replace(
        'editable = ["exp.py"]', 'editable = ["exp.py", "lib/**"]'))
    git(root, "commit", "-qam", "lib/ editable")
    agent = script_agent(tmp_path / "a.sh", 'sed -i "s/^X = .*/X = 2.0/" exp.py\n'
                         'if [ "$AUTORESEARCH_TRIAL" = 1 ]; then mkdir -p lib && mkfifo lib/pipe; '
                         'else mkdir -p lib/.GIT && echo "x = 1" > lib/.GIT/x.py; fi\necho "X to 2 and a bad path"\n')
    r = cli("run", str(root), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    rows = trials(root)
    assert [t.status for t in rows] == [Status.KEEP, Status.REJECTED, Status.REJECTED], [t.reason for t in rows]
    base = rows[0].commit
    for t in rows[1:]:
        assert t.commit and t.commit != base
        assert git(root, "rev-parse", f"refs/autoresearch/t/trials/{t.number}") == t.commit
        assert git(root, "rev-parse", f"{t.commit}^") == base
        assert git(root, "rev-parse", f"{t.commit}^{{tree}}") == git(root, "rev-parse", f"{base}^{{tree}}")
        message = git(root, "log", "-1", "--format=%B", t.commit)
        assert message.startswith("X to 2 and a bad path") and f"Autoresearch-Trial: t/{t.number}" in message
        assert ("FIFO" if t.number == 1 else ".GIT") in message  # why its own change is not in it
    tsv = (root / ".autoresearch" / "t" / "results.tsv").read_text().splitlines()[1:]
    assert [line.split("\t")[0] for line in tsv] == [t.commit[:7] for t in rows]


def test_a_second_run_on_a_tag_a_loop_is_running_on_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """Resumed without --agent it said first which agent the tag goes on with, then refused."""
    repo = make_task(tmp_path / "task")
    marker = tmp_path / "agent-started"
    slow = script_agent(tmp_path / "slow.sh", f"touch {marker}\nsleep 30\n")
    assert cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", "true", "--trials", "0").returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "autoresearch", "run", str(repo), "--tag", "t", "--agent-cmd",
                             slow, "--trials", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for(marker)
        for extra in ([], ["--agent", "search"]):
            r = cli("run", str(repo), "--tag", "t", "--trials", "1", *extra)
            assert r.returncode == 2 and r.stdout == "", r.stdout
            assert r.stderr.strip() == "autoresearch: error: another autoresearch loop is running on tag 't'", r.stderr
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_what_the_baseline_writes_into_your_checkout_is_noted_on_the_baseline(tmp_path: Path) -> None:
    """Noted on trial 1 it was, as 'changed while its agent ran': the wrong trial and phase."""
    root = tmp_path / "task"
    exp = (f"import os\nX = 3.0\nif os.environ['AUTORESEARCH_TRIAL'] == '0':\n"
           f"    open({str(root / 'exp.py')!r}, 'a').write('# written by the baseline\\n')\nprint(f'loss: {{X}}')\n")
    make_task(root, experiment=exp)
    r = cli("run", str(root), "--tag", "t", "--agent", "cli", "--agent-cmd", "sed -i 's/^X = .*/X = 2.0/' exp.py",
            "--trials", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    base, first = trials(root)
    assert any("changed exp.py in your checkout" in f for f in base.flags), base.flags
    assert not any("exp.py" in f for f in first.flags), first.flags


def test_a_repository_of_sha256_ids_runs_keeps_resumes_and_takes_a_trial(tmp_path: Path) -> None:
    """`git init --object-format=sha256`: the branch's creation verified it against a null id
    of 40 zeros, which git refuses there, so every run failed before its baseline."""
    root = tmp_path / "task"
    root.mkdir()
    git(root, "init", "-q", "--object-format=sha256")
    repo = make_task(root)
    assert len(git(repo, "rev-parse", "HEAD")) == 64
    agent = script_agent(tmp_path / "a.sh", """\
        sed -i "s/^X = .*/X = 2.$((9 - AUTORESEARCH_TRIAL))/" exp.py
        echo "X down"
        """)
    r = run(repo, agent, trials=2)
    assert r.returncode == 0, r.stderr
    r = run(repo, agent, trials=1)  # resumed
    assert r.returncode == 0, r.stderr
    rows = ledger_rows(repo, "t")
    assert [s for _, s, *_ in rows] == ["keep", "keep", "keep", "keep"]
    assert git(repo, "rev-parse", "autoresearch/t") == rows[-1][2] and len(rows[-1][2]) == 64
    assert [git(repo, "rev-parse", f"refs/autoresearch/t/trials/{n}") for n in range(4)] == [r[2] for r in rows]
    (repo / "exp.py").write_text((repo / "exp.py").read_text().replace("Y = 2", "Y = 1"))
    r = cli("trial", str(repo), "-m", "Y to 1")
    assert r.returncode == 0 and "keep" in r.stdout, (r.stdout, r.stderr)
