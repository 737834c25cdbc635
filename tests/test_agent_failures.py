"""An agent that fails, hangs, is stopped, or does odd things with git and braces: the loop
stops it on Ctrl-C, does not spin on an error that will recur, and never holds code that was
not measured against a later trial."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli, git, make_task, script_agent, trials, wait_for
from fakes.llm_server import FakeLLM, Fault, Say

from autoresearch.streak import IDLE_FROM, OUTAGE_CAP, RECOVERABLE, Streak, backoff

KEY = "sk-test-Q1w2E3r4T5y6U7i8O9p0"


def rows(repo: Path, tag: str = "t") -> list[tuple]:
    db = sqlite3.connect(repo / ".autoresearch" / tag / "ledger.sqlite")
    try:
        return db.execute("SELECT number, status, reason, description FROM trials ORDER BY number").fetchall()
    finally:
        db.close()


def test_ctrl_c_kills_a_running_agent_and_its_code_can_be_proposed_again(tmp_path: Path) -> None:
    """SIGINT while a CLI agent runs: the agent is killed at once (not waited for), the trial is
    interrupted, exit 130. On resume the same change is measured, not called a duplicate of
    the interrupted trial."""
    repo = make_task(tmp_path / "task")
    marker = tmp_path / "agent-started"
    slow = script_agent(tmp_path / "slow.sh", f"""\
        sed -i 's/^X = .*/X = 2.0/' exp.py
        touch {marker}
        sleep 60
        """)
    proc = subprocess.Popen([sys.executable, "-m", "autoresearch", "run", str(repo), "--tag", "t",
                             "--agent", "cli", "--agent-cmd", slow, "--trials", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(marker)
    stopped = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert time.monotonic() - stopped < 10  # not the agent's 60 s
    assert [(n, s) for n, s, *_ in rows(repo)] == [(0, "keep"), (1, "interrupted")]
    quick = script_agent(tmp_path / "quick.sh", "sed -i 's/^X = .*/X = 2.0/' exp.py\necho 'X to 2'\n")
    r = cli("run", str(repo), "--tag", "t", "--agent-cmd", quick, "--trials", "1")  # --agent-cmd: cli implied
    assert r.returncode == 0, r.stderr
    assert rows(repo)[2][1] == "keep", rows(repo)


def test_a_command_that_is_not_there_stops_the_loop_instead_of_spinning(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    r = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", "no-such-agent-xyz {prompt_file}",
            "--hours", "1", timeout=120)
    assert r.returncode == 1
    assert "the agent failed 3 times in a row" in r.stderr and "127" in r.stderr
    assert [s for _, s, *_ in rows(repo)] == ["keep", "agent_error", "agent_error", "agent_error"]
    # said at the start too, before the baseline's minutes (a warning: a run is not refused on a guess)
    said = r.stderr.index("'no-such-agent-xyz' is not found")
    assert said < r.stderr.index("the agent failed 3 times"), r.stderr


def test_braces_other_than_the_placeholders_are_the_shells(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    cmd = ("echo \"${HOME:+home}\" > /dev/null; sed -i 's/^X = .*/X = 2.0/' exp.py; "
           "echo '{\"json\": 1}' | awk '{print \"set X from\", $0}'; test -f {prompt_file}")
    r = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", cmd, "--trials", "1")
    assert r.returncode == 0, r.stderr
    assert rows(repo)[1][1:] == ("keep", "", 'set X from {"json": 1}')


def test_agent_cmd_with_another_agent_is_a_usage_error(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    r = cli("run", str(repo), "--tag", "t", "--agent", "search", "--agent-cmd", "true", "--trials", "1")
    assert r.returncode == 2 and "--agent-cmd is the command of --agent cli" in r.stderr
    assert "Traceback" not in r.stderr


def test_an_agent_that_checks_out_a_branch_does_not_move_it(tmp_path: Path) -> None:
    """`git checkout -b` (or of the loop's own branch) in the worktree attaches it; the harness
    detaches it before its reset, so no branch moves but by the loop's decisions."""
    repo = make_task(tmp_path / "task")
    agent = script_agent(tmp_path / "a.sh", """\
        if [ "$AUTORESEARCH_TRIAL" = 1 ]; then git checkout -q -b agent-branch; fi
        if [ "$AUTORESEARCH_TRIAL" = 2 ]; then git checkout -q autoresearch/t; fi
        sed -i "s/^X = .*/X = 2.$AUTORESEARCH_TRIAL/" exp.py
        echo "X to 2.$AUTORESEARCH_TRIAL"
        """)
    base = git(repo, "rev-parse", "HEAD")
    r = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "3")
    assert r.returncode == 0, r.stderr
    assert git(repo, "rev-parse", "agent-branch") == base
    best = [n for n, s, *_ in rows(repo) if s == "keep"][-1]
    assert git(repo, "rev-parse", "autoresearch/t") == git(repo, "rev-parse", f"refs/autoresearch/t/trials/{best}")
    assert "[autoresearch/t]" not in git(repo, "worktree", "list")


def test_an_agent_that_commits_on_a_branch_of_yours_in_its_worktree_has_it_put_back(tmp_path: Path) -> None:
    """An agent that checks out one of your branches in its worktree and commits there moved that
    branch (noted, never undone): your `main` then held the agent's commits, your checkout read as
    changed, and the next `run` was refused for uncommitted changes."""
    repo = make_task(tmp_path / "task")
    git(repo, "branch", "other")
    agent = script_agent(tmp_path / "a.sh", """\
        G="git -c user.name=a -c user.email=a@a"
        if [ "$AUTORESEARCH_TRIAL" = 1 ]; then git checkout -q other; else git checkout -q --ignore-other-worktrees main; fi
        sed -i "s/^X = .*/X = 2.$AUTORESEARCH_TRIAL/" exp.py
        $G commit -qam "agent's own commit $AUTORESEARCH_TRIAL"
        echo "X to 2.$AUTORESEARCH_TRIAL"
        [ "$AUTORESEARCH_TRIAL" != 3 ] || exit 1
        """)
    base = git(repo, "rev-parse", "HEAD")
    r = cli("run", str(repo), "--tag", "t", "--agent-cmd", agent, "--trials", "2")
    assert r.returncode == 0, r.stderr
    assert git(repo, "rev-parse", "main") == base and git(repo, "rev-parse", "other") == base
    assert git(repo, "status", "--porcelain") == ""
    got = trials(repo)
    assert [t.status for t in got[1:]] == ["keep", "discard"], got
    for n, name in ((1, "other"), (2, "main")):
        assert any(f"the agent committed on your branch {name} in its worktree: put back to {base[:7]}" in f
                   for f in got[n].flags), got[n].flags
    again = cli("run", str(repo), "--tag", "t", "--agent-cmd", agent, "--trials", "1")  # (an agent that fails after)
    assert again.returncode == 0, again.stderr
    assert trials(repo)[3].status == "agent_error" and git(repo, "rev-parse", "main") == base


def test_a_key_in_the_models_description_is_redacted(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    script = [Say("", [("edit_file", {"path": "exp.py", "search": "X = 3.0", "replace": "X = 2.0"})]),
              Say("", [("finish", {"description": f"X to 2 (key {KEY})"})])]
    with FakeLLM("openai", script) as fake:
        r = cli("run", str(repo), "--tag", "t", "--agent", "llm", "--model", "openai/m", "--base-url", fake.url,
                "--trials", "1", env={"OPENAI_API_KEY": KEY})
    assert r.returncode == 0, r.stderr
    assert rows(repo)[1][1] == "keep"
    assert KEY not in rows(repo)[1][3] and KEY not in r.stdout + r.stderr
    assert KEY not in (repo / ".autoresearch/t/results.tsv").read_text()
    assert KEY not in git(repo, "log", "-1", "--format=%B", "refs/autoresearch/t/trials/1")


def test_a_bad_key_stops_the_llm_loop(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    with FakeLLM("openai", [], default=Fault("401")) as fake:
        r = cli("run", str(repo), "--tag", "t", "--agent", "llm", "--model", "openai/m", "--base-url", fake.url,
                env={"OPENAI_API_KEY": KEY}, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "HTTP 401" in r.stderr and KEY not in r.stderr
    assert [s for _, s, *_ in rows(repo)] == ["keep", "agent_error", "agent_error", "agent_error"]


@pytest.mark.parametrize("url", ["notaurl", "ftp://x/v1", "http://"])
def test_a_base_url_that_is_not_http_is_a_usage_error(tmp_path: Path, url: str) -> None:
    repo = make_task(tmp_path / "task")
    r = cli("run", str(repo), "--tag", "t", "--agent", "llm", "--model", "openai/m", "--base-url", url,
            "--trials", "1", env={"OPENAI_API_KEY": KEY})
    assert r.returncode == 2 and "--base-url" in r.stderr and "Traceback" not in r.stderr


def test_an_anthropic_base_url_may_end_in_v1(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    script = [Say("", [("edit_file", {"path": "exp.py", "search": "X = 3.0", "replace": "X = 2.0"})]),
              Say("", [("finish", {"description": "X to 2"})])]
    with FakeLLM("anthropic", script) as fake:
        r = cli("run", str(repo), "--tag", "t", "--agent", "llm", "--model", "anthropic/claude-x",
                "--base-url", fake.url + "/v1",
                "--trials", "1", env={"ANTHROPIC_API_KEY": KEY})
        paths = [q["path"] for q in fake.requests]
    assert r.returncode == 0, r.stderr
    assert rows(repo)[1][1] == "keep" and all(p.startswith("/v1/messages") for p in paths), paths


def test_trial_lays_the_change_over_the_best_and_keeps_the_users_other_work(tmp_path: Path) -> None:
    """`autoresearch trial` after a run moved the best: the user's edit (from their HEAD) is laid
    over the best code, not the whole file of their older copy; a rejected trial does not erase
    the user's uncommitted work outside the editable scope."""
    repo = make_task(tmp_path / "task", files={"notes.txt": "notes v1\n"})
    agent = script_agent(tmp_path / "a.sh", "sed -i 's/^X = .*/X = 2.0/' exp.py\necho 'X to 2'\n")
    assert cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "1").returncode == 0
    exp = repo / "exp.py"
    exp.write_text(exp.read_text().replace("Y = 2", "Y = 1"))  # the user's tree still has X = 3.0
    r = cli("trial", "-m", "Y to 1", str(repo), "--tag", "t")
    assert r.returncode == 0, r.stderr
    assert rows(repo)[2][1] == "keep"
    best = git(repo, "show", "autoresearch/t:exp.py")
    assert "X = 2.0" in best and "Y = 1" in best
    with open(repo / "notes.txt", "a") as f:
        f.write("my unsaved work\n")
    exp.write_text(exp.read_text().replace("Y = 1", "Y = 0"))
    r = cli("trial", "-m", "Y to 0 and notes", str(repo), "--tag", "t")
    assert rows(repo)[3][1] == "rejected" and "notes.txt" in rows(repo)[3][2]
    assert (repo / "notes.txt").read_text() == "notes v1\nmy unsaved work\n"


def test_small_usability_fixes(tmp_path: Path) -> None:
    """`show N` of an agent error shows what the agent printed; `[agent] sampler` is read (and
    checked); `src/**/*.py` matches src/new.py; `./` globs keep their dots; `run` refuses to
    move the branch the user has checked out; a path that cannot be used is one line, exit 2."""
    repo = make_task(tmp_path / "task", files={".cfg.py": "V = 1\n"},
                     toml_extra='[agent]\nsampler = "random"\n')
    toml = (repo / "autoresearch.toml").read_text().replace('editable = ["exp.py"]',
                                                           'editable = ["exp.py", "src/**/*.py", "./.cfg.py"]')
    (repo / "autoresearch.toml").write_text(toml)
    git(repo, "commit", "-qam", "globs")
    agent = script_agent(tmp_path / "a.sh", """\
        if [ "$AUTORESEARCH_TRIAL" = 1 ]; then echo "the agent says why" >&2; exit 3; fi
        mkdir -p src && echo 'Z = 1' > src/new.py && sed -i 's/^X = .*/X = 2.0/' exp.py && echo 'V = 2' > .cfg.py
        echo "a new module"
        """)
    r = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "2")
    assert r.returncode == 0, r.stderr
    assert [s for _, s, *_ in rows(repo)] == ["keep", "agent_error", "keep"], rows(repo)
    shown = cli("show", "1", str(repo), "--tag", "t").stdout
    assert "agent log tail" in shown and "the agent says why" in shown
    r = cli("space", str(repo))
    assert r.returncode == 0
    (repo / "autoresearch.toml").write_text(toml.replace('sampler = "random"', 'sampler = "foo"'))
    git(repo, "commit", "-qam", "bad sampler")
    r = cli("run", str(repo), "--tag", "u", "--trials", "1")
    assert r.returncode == 2 and "'agent.sampler' must be one of" in r.stderr
    git(repo, "checkout", "-q", "autoresearch/t")
    r = cli("run", str(repo), "--tag", "t", "--agent-cmd", agent, "--trials", "1")
    assert r.returncode == 2 and "you have autoresearch/t checked out" in r.stderr
    (tmp_path / "afile").write_text("x")
    r = cli("report", str(repo), "--tag", "t", "--out", str(tmp_path / "afile"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_a_trial_killed_while_its_agent_ran_is_a_commit_and_status_says_no_loop_runs(tmp_path: Path) -> None:
    """kill -9 while the agent runs: `status` says the trial's loop is gone; on resume the trial
    is interrupted and, like every trial, a commit under refs/autoresearch/t/trials/<n> with a
    results.tsv row."""
    import os

    repo = make_task(tmp_path / "task")
    marker = tmp_path / "agent-started"
    slow = script_agent(tmp_path / "slow.sh", f"touch {marker}\nsleep 60\n")
    proc = subprocess.Popen([sys.executable, "-m", "autoresearch", "run", str(repo), "--tag", "t",
                             "--agent", "cli", "--agent-cmd", slow, "--trials", "3"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for(marker)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    shown = cli("status", str(repo), "--tag", "t").stdout
    assert "running" in shown and "no loop is running" in shown
    assert "running  [no loop is running" in cli("show", "1", str(repo), "--tag", "t").stdout.splitlines()[0]
    assert ("last run: stopped without a word (killed, or the machine went down) while trial 1 ran; "
            "`autoresearch run --tag t` resumes") in shown
    quick = script_agent(tmp_path / "quick.sh", "sed -i 's/^X = .*/X = 2.0/' exp.py\necho 'X to 2'\n")
    r = cli("run", str(repo), "--tag", "t", "--agent-cmd", quick, "--trials", "1")
    assert r.returncode == 0, r.stderr
    assert [s for _, s, *_ in rows(repo)] == ["keep", "interrupted", "keep"]
    assert git(repo, "rev-parse", "refs/autoresearch/t/trials/1^{tree}") == git(repo, "rev-parse", "refs/autoresearch/t/trials/0^{tree}")
    tsv = (repo / ".autoresearch/t/results.tsv").read_text().splitlines()
    assert len(tsv) == 4 and tsv[2].split("\t")[3] == "crash"
    assert tsv[2].split("\t")[4] == "(stopped before the agent described its change)"
    assert git(repo, "log", "-1", "--format=%s", "refs/autoresearch/t/trials/1") == tsv[2].split("\t")[4]  # as recorded


def test_a_duplicate_carries_the_figures_of_the_code_it_repeats(tmp_path: Path) -> None:
    """A duplicate is not run again; results.tsv gives it the metric of the trial it repeats (a
    discard), not 0.000000, which a tool would read as a score."""
    repo = make_task(tmp_path / "task")
    agent = script_agent(tmp_path / "a.sh", "sed -i 's/^Y = .*/Y = 5/' exp.py\necho 'Y to 5'\n")
    r = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "2")
    assert r.returncode == 0, r.stderr
    assert [s for _, s, *_ in rows(repo)] == ["keep", "discard", "duplicate"]
    tsv = [line.split("\t") for line in (repo / ".autoresearch/t/results.tsv").read_text().splitlines()]
    assert tsv[3][1] == tsv[2][1] != "0.000000" and tsv[3][3] == "discard"


@pytest.mark.parametrize("written", ['echo "K = \\"$OPENAI_API_KEY\\"" >> exp.py',
                                     'echo "K = \\"${OPENAI_API_KEY:0:14}\\" \\"${OPENAI_API_KEY:14}\\"" >> exp.py'],
                         ids=["whole", "in-two-quoted-parts"])
def test_a_cli_agent_that_writes_its_key_into_the_code_is_rejected_before_git_stores_it(tmp_path: Path, written: str) -> None:
    """A CLI agent copied $OPENAI_API_KEY into the code: the trial was kept, so the key stood in
    the tag's branch and the experiment's log. Now the change is refused before `git add`: no git
    object, log, ledger row or results.tsv holds the key, and the loop goes on."""
    repo = make_task(tmp_path / "task")
    agent = script_agent(tmp_path / "a.sh", f"""\
        sed -i "s/^X = .*/X = 2.$AUTORESEARCH_TRIAL/" exp.py
        if [ "$AUTORESEARCH_TRIAL" = 1 ]; then {written}; echo 'print(K)' >> exp.py; fi
        echo "X down"
        """)
    r = cli("run", str(repo), "--tag", "t", "--agent-cmd", agent, "--trials", "2", env={"OPENAI_API_KEY": KEY})
    assert r.returncode == 0, r.stderr
    got = rows(repo)
    assert [s for _, s, *_ in got] == ["keep", "rejected", "keep"], got
    assert "exp.py holds an API key from the environment" in got[1][2]
    objects = subprocess.run(["git", "cat-file", "--batch-all-objects", "--batch"], cwd=repo, capture_output=True).stdout
    assert KEY.encode() not in objects and b"Q1w2E3r4T5y6U7i8O9p0" not in objects
    for path in (repo / ".autoresearch").rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


SLOW_EXPERIMENT = "import os, time\nX = 3.0\ntime.sleep(float(os.environ.get('EXP_SLEEP', '0')))\nprint(f'loss: {X}')\n"


def test_a_duplicate_of_a_trial_in_flight_waits_for_its_figures(tmp_path: Path) -> None:
    """Prepared ahead while the trial it repeats still ran, a duplicate was recorded at once,
    with no figures: results.tsv called it a crash with 0.000000. It now waits for the first
    one's verdict and carries its figures."""
    repo = make_task(tmp_path / "task", experiment=SLOW_EXPERIMENT)
    agent = script_agent(tmp_path / "a.sh", "sed -i 's/^X = .*/X = 2.0/' exp.py\necho 'X to 2'\n")
    r = cli("run", str(repo), "--tag", "t", "--agent-cmd", agent, "--agent-concurrency", "1", "--trials", "2",
            env={"EXP_SLEEP": "3"})
    assert r.returncode == 0, r.stderr
    assert [(n, s) for n, s, *_ in rows(repo)] == [(0, "keep"), (1, "keep"), (2, "duplicate")]
    tsv = [line.split("\t") for line in (repo / ".autoresearch/t/results.tsv").read_text().splitlines()]
    assert tsv[3][1:4] == tsv[2][1:3] + ["discard"] and tsv[2][1] == "2.000000", tsv
    assert "same code as trial 1, in flight: waiting for its figures" in r.stdout


@pytest.mark.parametrize("legacy", [False, pytest.param(True, marks=pytest.mark.extended)],
                         ids=["as-recorded", "a-duplicate-recorded-by-an-older-version"])
def test_the_repeat_of_a_trial_stopped_in_flight_is_run_after_a_resume(tmp_path: Path, legacy: bool) -> None:
    """Stopped while the trial it repeats ran, a repeat is interrupted too, and the code is run
    on resume. A ledger of an older version holds such a repeat as a duplicate with no figures;
    it no longer makes every later proposal of that code a duplicate that is never run."""
    repo = make_task(tmp_path / "task", experiment=SLOW_EXPERIMENT)
    marker = tmp_path / "second"
    agent = script_agent(tmp_path / "a.sh", f"""\
        sed -i 's/^X = .*/X = 2.0/' exp.py
        if [ "$AUTORESEARCH_TRIAL" = 2 ]; then touch {marker}; fi
        echo 'X to 2'
        """)
    proc = subprocess.Popen([sys.executable, "-m", "autoresearch", "run", str(repo), "--tag", "t", "--agent-cmd", agent,
                             "--agent-concurrency", "1", "--trials", "3"], env={**os.environ, "EXP_SLEEP": "8"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(marker)
    time.sleep(1.5)  # (its change committed and found to be trial 1's code)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert [s for _, s, *_ in rows(repo)] == ["keep", "interrupted", "interrupted"]
    if legacy:
        db = sqlite3.connect(repo / ".autoresearch/t/ledger.sqlite")
        with db:
            db.execute("UPDATE trials SET status='duplicate', reason='same code as trial 1' WHERE number=2")
        db.close()
    r = cli("run", str(repo), "--tag", "t", "--agent-cmd", agent, "--trials", "1", env={"EXP_SLEEP": "0"})
    assert r.returncode == 0, r.stderr
    assert rows(repo)[3][1] == "keep", rows(repo)


def test_an_infinite_metric_is_no_score_shown_to_the_next_agent(tmp_path: Path) -> None:
    """A run printing `loss: -inf` is a crash; the next agent's history said `loss=-inf` (for a
    task that minimises, the best score ever) while a NaN crash said `loss=-`."""
    repo = make_task(tmp_path / "task", experiment="X = 3.0\nprint(f'loss: {X * float(\"inf\") if X < 0 else X}')\n")
    agent = script_agent(tmp_path / "a.sh", """\
        if [ "$AUTORESEARCH_TRIAL" = 1 ]; then sed -i 's/^X = .*/X = -1.0/' exp.py; else sed -i 's/^X = .*/X = 2.0/' exp.py; fi
        cp "$AUTORESEARCH_PROMPT_FILE" "$AUTORESEARCH_PROMPT_FILE.seen"
        echo "X $AUTORESEARCH_TRIAL"
        """)
    r = cli("run", str(repo), "--tag", "t", "--agent-cmd", agent, "--trials", "2")
    assert r.returncode == 0, r.stderr
    assert [s for _, s, *_ in rows(repo)] == ["keep", "crash", "keep"]
    seen = (repo / ".autoresearch/t/agent/2/prompt.md.seen").read_text()
    line = next(x for x in seen.splitlines() if x.startswith("#1 "))
    assert "loss=-  " in line and "inf" not in line.split("[")[0], line
    shown = cli("show", "1", str(repo)).stdout
    assert shown.splitlines()[3] == "loss: -", shown  # the figure of record; the reason and log say -inf


@pytest.mark.parametrize("value", ["nan", "inf", "1e400"])
def test_report_results_with_a_metric_that_is_not_finite_is_one_line(tmp_path: Path, value: str) -> None:
    tsv = tmp_path / "results.tsv"
    tsv.write_text(f"commit\tacc\tmemory_gb\tstatus\tdescription\na1b2c3d\t{value}\t1.0\tkeep\tbaseline\n")
    r = cli("report", "--results", str(tsv), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "not a finite number" in r.stderr and "Traceback" not in r.stderr


def test_an_agent_that_keeps_failing_is_paused_not_stopped(tmp_path: Path) -> None:
    """Failures that may pass (exit 1: a network outage, a flaky tool) go on, with a pause that
    grows from the fourth in a row; the loop is not stopped for them."""
    repo = make_task(tmp_path / "task")
    r = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", "echo flaky >&2; exit 1",
            "--trials", "6", timeout=120)
    assert r.returncode == 0, r.stderr
    assert [s for _, s, *_ in rows(repo)] == ["keep"] + ["agent_error"] * 6
    out = r.stdout + r.stderr
    assert "failed 4 times in a row: waiting 0.5 s" in out and "failed 5 times in a row: waiting 1 s" in out
    assert "failed 3 times in a row: waiting" not in out
    assert "failed 6 times in a row: waiting" not in out  # the last trial: no next proposal to wait for


def test_a_protected_glob_that_matches_nothing_is_named(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    toml = (repo / "autoresearch.toml").read_text().replace('protected = ["prepare.py"]', 'protected = ["prepare.py", "prepar.py"]')
    (repo / "autoresearch.toml").write_text(toml)
    git(repo, "commit", "-qam", "typo")
    r = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", "true", "--trials", "0")
    assert r.returncode == 0, r.stderr
    assert "'protected' glob 'prepar.py' matches no file" in r.stdout + r.stderr


def test_a_flag_the_agent_does_not_use_is_named_and_model_alone_means_llm(tmp_path: Path) -> None:
    root = make_task(tmp_path / "task")
    r = cli("run", str(root), "--tag", "t", "--agent", "search", "--model", "openai/x", "--llm-share", "0.5",
            "--trials", "0")
    assert r.returncode == 0, r.stderr
    assert "--model is not used by --agent search" in r.stderr and "--llm-share is not used" in r.stderr
    r = cli("run", str(root), "--tag", "u", "--model", "openai/x", "--base-url", "http://127.0.0.1:9/v1",
            "--trials", "0", env={"OPENAI_API_KEY": "sk-test"})
    assert "agent llm" in r.stdout, r.stdout + r.stderr


def test_a_placeholder_in_quotes_of_its_own_works_in_a_folder_with_a_space(tmp_path: Path) -> None:
    """`cat "{prompt_file}"`, as many write it, stays one word when the path has a space (or a quote)."""
    repo = make_task(tmp_path / "my task's folder")
    cmd = ("grep -q Minimise \"{prompt_file}\" && sed -i 's/^X = .*/X = 2.0/' exp.py && "
           "echo \"X to 2, trial \"{trial} > '{description_file}'")
    r = cli("run", str(repo), "--tag", "t", "--agent-cmd", cmd, "--trials", "1")
    assert r.returncode == 0, r.stderr
    assert rows(repo)[1][1:] == ("keep", "", "X to 2, trial 1")


def test_fill_quotes_a_placeholder_once_whatever_quotes_surround_it() -> None:
    from autoresearch.agents.cli import fill

    path = "/tmp/a b/it's \"p\" $HOME `x` \\n.md"
    values = {"prompt_file": path, "description_file": "/d", "workdir": "/w", "trial": "3"}
    for template, printed in [
        ('printf %s "{prompt_file}"', path),
        ("printf %s '{prompt_file}'", path),
        ("printf %s {prompt_file}", path),
        ("printf %s 'x'{prompt_file}'y'", f"x{path}y"),
        ('printf %s "$(printf %s {prompt_file})"', path),
        ('printf %s "$(cat <<< "{prompt_file}")"', path),  # quotes inside a substitution
        ('printf %s "$( (printf %s "{prompt_file}") )" "{trial}"', path + "3"),
        ('printf %s "in: {prompt_file}, $((1 + 1))"', f"in: {path}, 2"),
        ("printf %s 'in: {prompt_file}!'", f"in: {path}!"),
        ('printf %s "`printf %s {prompt_file}`"', path),  # backticks: their text is read twice
        ("printf %s \"`printf %s '{prompt_file}'`\"", path),
    ]:
        out = subprocess.run(["bash", "-c", fill(template, values)], capture_output=True, text=True).stdout
        assert out == printed, template
    assert fill("echo \\\"{trial}\\\" '{\"json\": 1}'", values) == "echo \\\"3\\\" '{\"json\": 1}'"


def test_an_agent_that_fails_after_writing_its_description_keeps_it(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    agent = script_agent(tmp_path / "a.sh", """\
        sed -i 's/^X = .*/X = 2.0/' exp.py
        echo "X to 2, a guess" > "$AUTORESEARCH_DESCRIPTION_FILE"
        echo oops
        exit 2
        """)
    r = cli("run", str(repo), "--tag", "t", "--agent-cmd", agent, "--trials", "1")
    assert r.returncode == 0, r.stderr
    reason = "X to 2, a guess (the agent command exited with 2: oops)"
    assert rows(repo)[1][1:] == ("agent_error", reason, f"agent error: {reason}")
    assert git(repo, "log", "-1", "--format=%s", "refs/autoresearch/t/trials/1") == f"agent error: {reason}"


def test_an_agent_that_times_out_or_fails_keeps_what_it_said(tmp_path: Path) -> None:
    """A description written before the agent timed out was thrown away; a failed agent's
    output was quoted from its first lines, not its last (the contract's rule for output)."""
    repo = make_task(tmp_path / "task")
    agent = script_agent(tmp_path / "a.sh", """\
        sed -i "s/^X = .*/X = 2.$AUTORESEARCH_TRIAL/" exp.py
        if [ "$AUTORESEARCH_TRIAL" = 1 ]; then echo "slow: X up" > "$AUTORESEARCH_DESCRIPTION_FILE"; sleep 30; fi
        printf 'starting\\nthinking\\nthe last word\\n\\n'
        exit 3
        """)
    r = cli("run", str(repo), "--tag", "t", "--agent-cmd", agent, "--agent-timeout", "2", "--trials", "2")
    assert r.returncode == 0, r.stderr
    got = rows(repo)
    assert got[1][1:3] == ("agent_error", "slow: X up (the agent command timed out after 2 s: (no output))")
    assert got[2][1:3] == ("agent_error", "the agent command exited with 3: the last word")


def test_an_agent_killed_by_a_signal_says_so(tmp_path: Path) -> None:
    """An agent the kernel's out-of-memory killer ended read "the agent command exited with -9"."""
    repo = make_task(tmp_path / "task")
    agent = script_agent(tmp_path / "a.sh", """\
        sed -i "s/^X = .*/X = 2.$AUTORESEARCH_TRIAL/" exp.py
        echo "thinking"
        if [ "$AUTORESEARCH_TRIAL" = 1 ]; then kill -9 $$; else bash -c 'kill -9 $$'; exit $?; fi
        """)
    r = cli("run", str(repo), "--tag", "t", "--agent-cmd", agent, "--trials", "2")
    assert r.returncode == 0, r.stderr
    got = rows(repo)
    assert got[1][1:3] == ("agent_error", "the agent command was killed by signal 9 (SIGKILL: out of memory, or a kill -9): thinking")
    assert got[2][2].startswith("the agent command exited with 137 (128 + signal 9, SIGKILL: out of memory, or a kill -9): ")


def test_keys_an_agent_prints_are_kept_out_of_its_log(tmp_path: Path) -> None:
    """`env` in a plain --agent cli command wrote every key of the environment into agent/N.log
    (a preset's log was scrubbed, a plain command's was not)."""
    repo = make_task(tmp_path / "task")
    agent = script_agent(tmp_path / "a.sh", """\
        sed -i 's/^X = .*/X = 2.0/' exp.py
        env | grep -E 'KEY|TOKEN' || true
        echo "tried $HF_TOKEN"
        """)
    secrets = {"OPENAI_API_KEY": KEY, "HF_TOKEN": "hf_AuditSecret789abcdefgh"}
    r = cli("run", str(repo), "--tag", "t", "--agent-cmd", agent, "--trials", "1", env=secrets)
    assert r.returncode == 0, r.stderr
    log = (repo / ".autoresearch" / "t" / "agent" / "1.log").read_text()
    assert "OPENAI_API_KEY=[redacted]" in log and "HF_TOKEN=[redacted]" in log
    for value in secrets.values():
        assert value not in log and value not in str(rows(repo))
    assert rows(repo)[1][3] == "tried [redacted]"


def test_a_key_an_agent_writes_in_its_description_file_is_left_in_no_file(tmp_path: Path) -> None:
    """The description was redacted in the ledger and the commit, but the agent's own
    agent/N/description kept the raw key in the ledger folder."""
    repo = make_task(tmp_path / "task")
    agent = script_agent(tmp_path / "a.sh", """\
        sed -i 's/^X = .*/X = 2.0/' exp.py
        echo "X up, with $HF_TOKEN" > "$AUTORESEARCH_DESCRIPTION_FILE"
        """)
    secret = "hf_AuditSecret789abcdefgh"
    r = cli("run", str(repo), "--tag", "t", "--agent-cmd", agent, "--trials", "1", env={"HF_TOKEN": secret})
    assert r.returncode == 0, r.stderr
    assert rows(repo)[1][3] == "X up, with [redacted]"
    kept = [p for p in (repo / ".autoresearch").rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert kept == [], kept
    assert (repo / ".autoresearch/t/agent/1/description").read_text().strip() == "X up, with [redacted]"


def test_the_description_is_the_last_line_on_stdout_not_a_warning_on_stderr(tmp_path: Path) -> None:
    """stdout and stderr went to one file, and a warning a tool wrote on stderr after its last
    line became the trial's description. The log still holds both, in the order they came."""
    repo = make_task(tmp_path / "task")
    agent = script_agent(tmp_path / "a.sh", """\
        if [ "$AUTORESEARCH_TRIAL" = 1 ]; then
          sed -i 's/^X = .*/X = 2.0/' exp.py
          echo "first"; echo "oops on stderr" >&2; echo "raised X to 2.0"; sleep 0.2
          echo "DeprecationWarning: something old" >&2
        else
          sed -i 's/^X = .*/X = 1.5/' exp.py
          echo "lowered X to 1.5 (said on stderr only)" >&2
        fi
        """)
    r = cli("run", str(repo), "--tag", "t", "--agent-cmd", agent, "--trials", "2")
    assert r.returncode == 0, r.stderr
    assert [row[3] for row in rows(repo)[1:]] == ["raised X to 2.0", "lowered X to 1.5 (said on stderr only)"]
    log = (repo / ".autoresearch" / "t" / "agent" / "1.log").read_text()
    lines = [line for line in log.splitlines() if line in ("first", "oops on stderr", "raised X to 2.0",
                                                          "DeprecationWarning: something old")]
    assert lines[-1] == "DeprecationWarning: something old" and len(lines) == 4, log
    assert set(lines[:3]) == {"first", "oops on stderr", "raised X to 2.0"}


def test_a_last_line_of_terminal_codes_alone_is_not_the_description(tmp_path: Path) -> None:
    """A CLI tool with a spinner shows the cursor again as it exits (ESC [?25h on a line of its
    own): that invisible line was the last non-empty one, and the trial read "(no description)"."""
    repo = make_task(tmp_path / "task")
    agent = script_agent(tmp_path / "a.sh", r"""
        sed -i 's/^X = .*/X = 2.0/' exp.py
        printf 'raised X to 2.0\n\033[0m\n\033[?25h\n'
        """)
    r = cli("run", str(repo), "--tag", "t", "--agent-cmd", agent, "--trials", "1")
    assert r.returncode == 0, r.stderr
    assert [row[3] for row in rows(repo)[1:]] == ["raised X to 2.0"]


def test_a_description_file_of_terminal_codes_or_nuls_alone_falls_back_to_the_output(tmp_path: Path) -> None:
    """A description file that holds nothing visible (a tool's colour reset, a NUL) counts as not
    written, as a blank one does: the trial read "(no description)" though the agent said what it did."""
    repo = make_task(tmp_path / "task")
    agent = script_agent(tmp_path / "a.sh", r"""
        sed -i "s/^X = .*/X = 2.$AUTORESEARCH_TRIAL/" exp.py
        if [ "$AUTORESEARCH_TRIAL" = 1 ]; then printf '\033[0m\033[?25h\n' > "$AUTORESEARCH_DESCRIPTION_FILE"
        else printf '\0\0' > "$AUTORESEARCH_DESCRIPTION_FILE"; fi
        echo "X to 2.$AUTORESEARCH_TRIAL"
        """)
    r = cli("run", str(repo), "--tag", "t", "--agent-cmd", agent, "--trials", "2")
    assert r.returncode == 0, r.stderr
    assert [row[3] for row in rows(repo)[1:]] == ["X to 2.1", "X to 2.2"]
    assert git(repo, "log", "-1", "--format=%s", "refs/autoresearch/t/trials/2") == "X to 2.2"


def test_the_history_keeps_the_end_of_a_crashs_reason_where_the_error_is(tmp_path: Path) -> None:
    """A crash's reason is its log's tail, traceback first; the agents' history cut it to its
    first 160 characters, so the next agent read "Traceback (most recent call last): File ..."
    and never the error. The history keeps its start and its end, as `status` does."""
    repo = make_task(tmp_path / "task")
    seen = tmp_path / "prompt2.md"
    agent = script_agent(tmp_path / "a.sh", f"""
        if [ "$AUTORESEARCH_TRIAL" = 1 ]; then
          printf 'def deep():\n    raise ValueError("the learning rate is negative")\n' >> exp.py
          for i in 1 2 3 4; do printf 'def f%s():\n    deep()\n' $i >> exp.py; done
          printf 'f1()\n' >> exp.py
        else
          cp "$AUTORESEARCH_PROMPT_FILE" {seen}; sed -i 's/^X = .*/X = 2.0/' exp.py
        fi
        echo "trial $AUTORESEARCH_TRIAL"
        """)
    r = cli("run", str(repo), "--tag", "t", "--agent-cmd", agent, "--trials", "2")
    assert r.returncode == 0, r.stderr
    line = next(x for x in seen.read_text().splitlines() if x.startswith("#1 crash"))
    assert "ValueError: the learning rate is negative" in line and " ... " in line, line


def test_a_trial_with_an_empty_message_is_a_usage_error(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    (repo / "exp.py").write_text((repo / "exp.py").read_text().replace("X = ", "X = 0 + ", 1))
    r = cli("trial", str(repo), "-m", "  ")
    assert r.returncode == 2 and "-m/--message is empty" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_an_agent_command_of_spaces_in_the_task_file_is_a_usage_error(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task", toml_extra='[agent]\nkind = "cli"\ncmd = "  "\n')
    r = cli("run", str(repo), "--tag", "t", "--trials", "1")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == "autoresearch: error: the agent command is empty (--agent-cmd, or [agent] cmd in autoresearch.toml)"


@pytest.mark.extended  # (writes and cuts a log of megabytes)
def test_a_chatty_agent_log_is_cut_to_its_start_and_end(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    agent = script_agent(tmp_path / "a.sh", """\
        sed -i 's/^X = .*/X = 2.0/' exp.py
        head -c 40000000 /dev/zero | tr '\\0' x | fold -w 1000
        printf '\\nX to 2\\n'
        """)
    r = cli("run", str(repo), "--tag", "t", "--agent-cmd", agent, "--trials", "1")
    assert r.returncode == 0, r.stderr
    log = repo / ".autoresearch" / "t" / "agent" / "1.log"
    assert log.stat().st_size <= 33 * 2**20
    text = log.read_text()
    assert "bytes of output left out here" in text and text.rstrip().endswith("X to 2")
    assert rows(repo)[1][1:] == ("keep", "", "X to 2")


def test_paths_git_refuses_trial_after_trial_do_not_stop_the_loop(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    agent = script_agent(tmp_path / "a.sh", """\
        mkdir -p lib/.GIT && echo 'x = 1' > lib/.GIT/x.py
        echo "# $AUTORESEARCH_TRIAL" >> exp.py
        echo "a try"
        """)
    r = cli("run", str(repo), "--tag", "t", "--agent-cmd", agent, "--trials", "4")
    assert r.returncode == 0, r.stderr
    assert [x[1] for x in rows(repo)][1:] == ["rejected"] * 4


def test_an_agent_whose_proposals_are_never_measured_is_slowed_down(tmp_path: Path) -> None:
    """An agent that changes nothing (a command that prints its help and exits 0) had each
    trial rejected in an instant: some 10,000 trials, commits and refs in ten minutes. From the
    tenth proposal in a row that is not measured (rejected, or code already tried) the loop waits
    before the next, 0.5 s doubling; a measured one starts the count again."""
    repo = make_task(tmp_path / "task")
    r = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", "echo 'usage: tool [options]'",
            "--trials", "12", timeout=120)
    assert r.returncode == 0, r.stderr
    assert [s for _, s, *_ in rows(repo)] == ["keep"] + ["rejected"] * 12
    out = r.stdout + r.stderr
    assert "last 10 proposals were not measured (rejected, or code already tried): waiting 0.5 s" in out, out
    assert "last 11 proposals were not measured (rejected, or code already tried): waiting 1 s" in out, out
    assert "last 9 proposals were not measured" not in out
    assert "last 12 proposals were not measured" not in out  # the last trial: no next proposal to wait for


def test_a_duplicates_log_is_the_one_of_the_run_its_figures_come_from(tmp_path: Path) -> None:
    """A duplicate is not run: its record named logs/<n>.log, which does not exist; it names the
    log of the trial it repeats, which `show` tails."""
    repo = make_task(tmp_path / "task")
    agent = script_agent(tmp_path / "a.sh", "sed -i 's/^Y = .*/Y = 5/' exp.py\necho 'Y to 5'\n")
    assert cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "2").returncode == 0
    from autoresearch.ledger import Ledger

    led = Ledger.read(repo, "t")
    try:
        first, again = led.get(1), led.get(2)
    finally:
        led.close()
    assert first is not None and again is not None and again.status.value == "duplicate"
    assert again.log_path == first.log_path and Path(again.log_path).is_file()
    shown = cli("show", "2", str(repo))
    assert shown.returncode == 0 and "logs/1.log" in shown.stdout and "loss:" in shown.stdout, shown.stdout


def test_an_outage_overnight_waits_up_to_minutes_between_failed_proposals() -> None:
    """Failures that may pass (a provider down, a network gone) wait 0.5 s doubling from the
    fourth in a row up to five minutes, so an outage of hours uses a dozen trials an hour, not
    all of --trials (at 60 s, a 2-hour outage used 120); failures by the thousand (days of
    rejected proposals) wait at the cap, not an OverflowError of 2.0 ** 1024."""
    streak = Streak()
    waits = []
    for _ in range(20):
        streak.failed(RECOVERABLE)
        waits.append(streak.wait())
    assert waits[:3] == [0.0, 0.0, 0.0] and waits[3:6] == [0.5, 1.0, 2.0]
    assert max(waits) == OUTAGE_CAP == 300.0 and waits == sorted(waits)
    outage, spent, used = 3 * 3600, 0.0, Streak()
    while spent < outage:  # a 3-hour outage: failed trials (an instant each) and the waits between
        used.failed(RECOVERABLE)
        spent += used.wait()
    assert used.errors < 50  # (at a 60 s cap: 189)
    for _ in range(2000):
        streak.failed(RECOVERABLE)
    assert streak.wait() == OUTAGE_CAP
    assert backoff(5000, IDLE_FROM) == 60.0  # (the pace of proposals not measured keeps its minute)
