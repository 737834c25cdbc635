"""Several trials in flight on one machine: real git, real experiments, a scripted agent.

Experiments and the agent append timestamps to a stamps file ($AR_STAMPS), from which the tests
read what ran when and with which GPUs; the ledger and git are checked as a user would.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli, git, make_task, script_agent
from redteam_helpers import bwrap_env

from autoresearch.agents.base import BaseAgent, Context, Proposal
from autoresearch.decide import better
from autoresearch.ledger import Ledger
from autoresearch.loop import Loop, Options
from autoresearch.records import Status
from autoresearch.sandbox import problem as sandbox_problem
from autoresearch.session import open_session
from autoresearch.task import load_task

EXPERIMENT = """\
import os, time
X = 10.0
S = 0.2
t0 = time.time()
def stamp(text):
    with open(os.environ["AR_STAMPS"], "a") as f:
        f.write(text + "\\n")
stamp(f"start {os.environ['AUTORESEARCH_TRIAL']} {os.getpid()}")
time.sleep(S)
stamp(f"exp {os.environ['AUTORESEARCH_TRIAL']} {t0} {time.time()} {os.environ.get('CUDA_VISIBLE_DEVICES', '-')}")
print(f"loss: {X}")
"""

# trial n -> "X S" (an empty line: the agent changes nothing, a rejected trial)
AGENT = """\
n=$AUTORESEARCH_TRIAL
t0=$EPOCHREALTIME
sleep "${{AR_AGENT_SLEEP:-0}}"
xs=$(python -c "import sys; print({table}.get(int(sys.argv[1]), '%d.5 0.2' % (20 + int(sys.argv[1]))))" $n)
if [ -n "$xs" ]; then
  set -- $xs
  sed -i "s/^X = .*/X = $1/; s/^S = .*/S = $2/" exp.py
fi
echo "agent $n $t0 $EPOCHREALTIME" >> "$AR_STAMPS"
echo "X S = $xs"
"""


def setup_run(tmp_path: Path, table: dict[int, str]) -> tuple[Path, str, dict[str, str]]:
    root = make_task(tmp_path / "task", experiment=EXPERIMENT)
    agent = script_agent(tmp_path / "agent.sh", AGENT.format(table=repr(table)))
    stamps = tmp_path / "stamps"
    stamps.touch()
    return root, agent, {"AR_STAMPS": str(stamps)}


def read_stamps(env: dict[str, str]) -> tuple[dict[int, tuple[float, float, str]], dict[int, tuple[float, float]]]:
    """Experiments (trial -> start, end, CUDA_VISIBLE_DEVICES; last run of each) and agent calls."""
    exps: dict[int, tuple[float, float, str]] = {}
    agents: dict[int, tuple[float, float]] = {}
    for line in Path(env["AR_STAMPS"]).read_text().splitlines():
        kind, n, *rest = line.split()
        if kind == "exp":
            exps[int(n)] = (float(rest[0]), float(rest[1]), rest[2])
        elif kind == "agent":
            agents[int(n)] = (float(rest[0]), float(rest[1]))
    return exps, agents


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def keeps_in_finish_order(root: Path, tag: str) -> list[int]:
    db = sqlite3.connect(f"file:{root / '.autoresearch' / tag / 'ledger.sqlite'}?mode=ro", uri=True)
    try:
        return [r[0] for r in db.execute("SELECT number FROM trials WHERE status='keep' ORDER BY seq")]
    finally:
        db.close()


def check_ledger_and_git(root: Path, tag: str, trials: int) -> list:
    """No lost or duplicated numbers, a ref for every trial, branch = best, and every decision
    taken against the best of the moment the trial finished."""
    led = Ledger.read(root, tag)
    try:
        rows = led.trials()
        best = led.best()
        db = led._db  # read-only: the finish order
        order = [r[0] for r in db.execute("SELECT number FROM trials ORDER BY seq")]
    finally:
        led.close()
    assert [t.number for t in rows] == list(range(trials + 1))
    assert all(t.status.finished for t in rows)
    refs = git(root, "for-each-ref", "--format=%(refname) %(objectname)", f"refs/autoresearch/{tag}/")
    refs_map = dict(line.split() for line in refs.splitlines())
    for t in rows:
        assert refs_map[f"refs/autoresearch/{tag}/trials/{t.number}"] == t.commit
    assert best is not None and git(root, "rev-parse", f"autoresearch/{tag}") == best.commit
    by_number = {t.number: t for t in rows}
    current = None
    for n in order:
        t = by_number[n]
        if t.metric is None or t.status not in (Status.KEEP, Status.DISCARD):
            continue
        if current is None:
            assert t.status is Status.KEEP  # the baseline
        elif t.status is Status.KEEP:
            assert better(t.metric, current, minimize=True), t
        else:
            assert not better(t.metric, current, minimize=True), t
        if t.status is Status.KEEP:
            current = t.metric
    tsv = (root / ".autoresearch" / tag / "results.tsv").read_text().splitlines()
    assert len(tsv) == trials + 2
    return rows


# ---------------------------------------------------------------------------


@pytest.mark.parametrize("ahead", [pytest.param("0", marks=pytest.mark.slow), "1"])
def test_a_stale_trial_that_beats_the_later_best_is_kept_whole(tmp_path: Path, ahead: str) -> None:
    # trial 1 is slow and starts from the baseline; 2 and 4 are kept while it runs; 1 finishes
    # last, beats the best of that moment (2.0) and its own tree becomes the best.
    root, agent, env = setup_run(tmp_path, {1: "1.0 3", 2: "3.0 0.1", 3: "4.0 0.1", 4: "2.0 0.1"})
    base = git(root, "rev-parse", "HEAD")
    r = cli("run", str(root), "--tag", "w2", "--agent", "cli", "--agent-cmd", agent, "--trials", "4",
            "--workers", "2", "--agent-concurrency", ahead, env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    rows = check_ledger_and_git(root, "w2", 4)
    status = {t.number: t.status for t in rows}
    assert status == {0: Status.KEEP, 1: Status.KEEP, 2: Status.KEEP, 3: Status.DISCARD, 4: Status.KEEP}
    assert keeps_in_finish_order(root, "w2") == [0, 2, 4, 1]
    one = rows[1]
    assert one.parent == base and git(root, "rev-parse", f"{one.commit}^") == base
    assert git(root, "rev-parse", "autoresearch/w2^{tree}") == git(root, "rev-parse", f"{one.commit}^{{tree}}")
    assert "X = 1.0" in git(root, "show", "autoresearch/w2:exp.py")
    assert rows[4].parent == rows[2].commit  # started from the best of its moment
    exps, _ = read_stamps(env)
    assert overlap(exps[1][:2], exps[2][:2]) and overlap(exps[1][:2], exps[4][:2])


def test_four_workers_keep_every_number_and_ref(tmp_path: Path) -> None:
    # each experiment lasts 1.2 s: longer than the harness's own work per trial on a loaded
    # 2-core machine, so that several run at once (at 0.3 s they did not, under load)
    table = {n: f"{(n * 7) % 11 + 1}.0 1.2" for n in range(1, 15)}
    table[5] = table[10] = ""  # no change: rejected, still a trial
    root, agent, env = setup_run(tmp_path, table)
    r = cli("run", str(root), "--tag", "w4", "--agent", "cli", "--agent-cmd", agent, "--trials", "14",
            "--workers", "4", env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    rows = check_ledger_and_git(root, "w4", 14)
    assert {rows[5].status, rows[10].status} == {Status.REJECTED}
    exps, _ = read_stamps(env)
    spans = [exps[n][:2] for n in exps]
    # the most experiments running at one instant (checked at every start)
    most = max(sum(s0 <= a[0] < e0 for s0, e0 in spans) for a in spans)
    assert 2 <= most <= 4
    assert not (root / ".autoresearch" / "w4" / "worktrees").exists()  # taken away at the end
    assert len(git(root, "worktree", "list").splitlines()) == 1


def test_gpus_are_pinned_per_trial_in_flight(tmp_path: Path) -> None:
    root, agent, env = setup_run(tmp_path, {n: f"{n}.0 0.8" for n in range(1, 7)})
    r = cli("run", str(root), "--tag", "g", "--agent", "cli", "--agent-cmd", agent, "--trials", "5",
            "--gpus", "0,1,2,3", "--gpus-per-trial", "2", env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "2 workers" in r.stdout
    if not list(Path("/dev").glob("nvidia[0-9]*")):  # said, not refused: the ids are still pinned
        assert "no NVIDIA GPU is visible on this machine" in r.stderr
    exps, _ = read_stamps(env)
    assert exps[0][2] == "0,1"
    assert {e[2] for e in exps.values()} == {"0,1", "2,3"}
    for a in exps:
        for b in exps:
            if a < b and overlap(exps[a][:2], exps[b][:2]):
                assert exps[a][2] != exps[b][2]
    assert any(overlap(exps[a][:2], exps[b][:2]) for a in exps for b in exps if a < b)


@pytest.mark.parametrize("flags, needle", [
    (["--workers", "3", "--gpus", "0,1"], "--workers 3"),
    (["--gpus", "0", "--gpus-per-trial", "2"], "--gpus-per-trial 2"),
    (["--workers", "0"], "--workers"),
    (["--trial-resources", "gpu=1"], "--trial-resources"),
    (["--backend", "ray", "--trial-resources", "gpu=lots"], "--trial-resources"),
    (["--backend", "ray", "--trial-resources", "cpu=1,GPU=1,gpu=2"], "--trial-resources names gpu twice"),
    (["--backend", "ray", "--trial-resources", "memory=lots"],
     "got 'memory=lots' (e.g. gpu=1,cpu=8; memory in bytes or with K, M, G, T: memory=32G)"),
    # memory as people write it (32GB, 32GiB) is taken: the address is the next thing refused
    (["--ray-address", "127.0.0.1:1", "--trial-resources", "cpu=1,memory=32GB"], "127.0.0.1:1: nothing answers"),
    (["--ray-address", "127.0.0.1:1", "--trial-resources", "memory=1.5GiB"], "127.0.0.1:1: nothing answers"),
])
def test_bad_scale_flags_are_one_line_and_exit_2(tmp_path: Path, flags: list[str], needle: str) -> None:
    root = make_task(tmp_path / "task")
    r = cli("run", str(root), "--tag", "bad", "--agent", "cli", "--agent-cmd", "true", "--trials", "1", *flags)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (root / ".autoresearch" / "bad").exists()


@pytest.mark.parametrize("ahead", [pytest.param(None, marks=pytest.mark.slow), "1"])
def test_the_agent_prepares_the_next_trial_while_one_runs(tmp_path: Path, ahead: str | None) -> None:
    root, agent, env = setup_run(tmp_path, {n: f"{n}.0 1.0" for n in range(1, 5)})
    env["AR_AGENT_SLEEP"] = "0.5"
    more = ["--agent-concurrency", ahead] if ahead else []
    r = cli("run", str(root), "--tag", "p", "--agent", "cli", "--agent-cmd", agent, "--trials", "3",
            *more, env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    rows = check_ledger_and_git(root, "p", 3)
    exps, agents = read_stamps(env)
    during = [n for n in agents if any(overlap(agents[n], e[:2]) for e in exps.values())]
    # the ledger says it too: trial n+1 opened before trial n ended
    early = [t.number for t in rows[2:] if t.started < rows[t.number - 1].ended]
    if ahead:
        assert during and early
        assert "] queued" in r.stdout  # a proposal waiting for the slot is not shown as running
    else:  # one worker and no proposals ahead: the plain sequential loop
        assert not during and not early


def test_an_agent_beside_a_trial_in_flight_is_told_of_it(tmp_path: Path) -> None:
    """With two workers, trial 2 is proposed while trial 1 runs: its prompt listed finished
    trials only, so the agent proposed trial 1's change again (a duplicate, half of a night's
    trials in an audit). The trial in flight is in the history, as running."""
    root, agent, env = setup_run(tmp_path, {1: "5.0 2.5", 2: "4.0 0.2", 3: "3.0 0.2"})
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    wrapper = script_agent(tmp_path / "wrapper.sh", f'cp "$AUTORESEARCH_PROMPT_FILE" {prompts}/$AUTORESEARCH_TRIAL.md\n'
                                                    f"exec {agent}\n")
    r = cli("run", str(root), "--tag", "f", "--agent", "cli", "--agent-cmd", wrapper, "--trials", "3",
            "--workers", "2", env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    rows = check_ledger_and_git(root, "f", 3)
    assert rows[2].started < rows[1].ended  # (proposed while trial 1 ran)
    second = (prompts / "2.md").read_text()
    assert "#1 running     loss=(not measured yet)  X S = 5.0 2.5" in second, second
    first = (prompts / "1.md").read_text().split("# Every trial so far")[1].split("\n", 1)[1].split("# Now")[0]
    assert "#0 keep" in first and "running" not in first, first  # (nothing in flight beside trial 1)


def test_no_experiment_starts_past_hours_not_even_one_prepared_ahead(tmp_path: Path) -> None:
    """--hours with proposals prepared ahead: every proposal queued by the deadline was run after
    it (2.8 x the limit with --agent-concurrency 6 on 2 workers)."""
    root, agent, env = setup_run(tmp_path, {n: f"{n}.0 1.5" for n in range(1, 40)})
    r = cli("run", str(root), "--tag", "h", "--agent", "cli", "--agent-cmd", agent, "--hours", "0.001",
            "--agent-concurrency", "4", env=env)  # (3.6 s)
    assert r.returncode == 0, r.stderr + r.stdout
    led = Ledger.read(root, "h")
    n = len(led.trials()) - 1
    led.close()
    rows = check_ledger_and_git(root, "h", n)
    skipped = [t for t in rows if t.status is Status.INTERRUPTED]
    assert skipped and all("not run: --hours 0.001 was reached before its experiment" in t.reason
                           for t in skipped), [(t.status, t.reason) for t in rows]
    exps, _ = read_stamps(env)
    first = min(t.started for t in rows)
    assert all(start - first < 3.6 + 1.0 for start, _, _ in exps.values()), exps  # (the baseline's start-up)
    assert not any(t.number in exps for t in skipped)


def test_a_concurrent_agent_proposes_in_parallel(tmp_path: Path) -> None:
    root, agent, env = setup_run(tmp_path, {n: f"{n}.0 0.2" for n in range(1, 5)})
    env["AR_AGENT_SLEEP"] = "1"
    r = cli("run", str(root), "--tag", "c", "--agent", "cli", "--agent-cmd", agent, "--trials", "4",
            "--agent-concurrency", "2", env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    check_ledger_and_git(root, "c", 4)
    _, agents = read_stamps(env)
    assert any(overlap(agents[a], agents[b]) for a in agents for b in agents if a < b)


class SlowAgent(BaseAgent):
    """A Python agent that is not thread-safe (concurrent = False): it records its calls."""

    name = "slow"

    def __init__(self) -> None:
        self.calls: list[tuple[float, float]] = []
        self.seen: list[int] = []
        self.inside = 0
        self.clash = False

    def propose(self, ctx: Context) -> Proposal:
        self.inside += 1
        self.clash |= self.inside > 1
        start = time.time()
        time.sleep(0.2)
        path = ctx.workdir / "exp.py"
        path.write_text(path.read_text().replace("X = 10.0", f"X = {20 + ctx.number}.0"))
        self.inside -= 1
        self.calls.append((start, time.time()))
        return Proposal(description=f"X = {20 + ctx.number}")

    def observe(self, trial) -> None:  # noqa: ANN001
        self.inside += 1
        self.clash |= self.inside > 1
        self.seen.append(trial.number)
        self.inside -= 1


def test_an_agent_that_is_not_concurrent_is_called_one_at_a_time(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    root = make_task(tmp_path / "task", experiment=EXPERIMENT)
    monkeypatch.setenv("AR_STAMPS", str(tmp_path / "stamps"))
    session = open_session(load_task(root), "lib")
    agent = SlowAgent()
    try:
        loop = Loop(session, agent, Options(trials=6, workers=2, agent_concurrency=3))
        best = loop.run()
    finally:
        session.close()
    assert best.number == 0
    assert not agent.clash and len(agent.calls) == 6
    assert sorted(agent.seen) == list(range(7))  # told of every trial, the last ones at the end
    rows = check_ledger_and_git(root, "lib", 6)
    assert all(t.status is Status.DISCARD for t in rows[1:])



class ExitingAgent(SlowAgent):
    """Leaves the process (SystemExit is not an agent error) on its fourth proposal."""

    def propose(self, ctx: Context) -> Proposal:
        if ctx.number == 4:
            raise SystemExit(3)
        return super().propose(ctx)


def test_a_thread_that_dies_stops_the_loop_without_hanging(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    root = make_task(tmp_path / "task", experiment=EXPERIMENT.replace("S = 0.2", "S = 1.0"))
    monkeypatch.setenv("AR_STAMPS", str(tmp_path / "stamps"))
    session = open_session(load_task(root), "die")
    start = time.monotonic()
    try:
        loop = Loop(session, ExitingAgent(), Options(trials=8, workers=2, agent_concurrency=1))
        with pytest.raises(SystemExit):
            loop.run()
    finally:
        session.close()
    assert time.monotonic() - start < 30
    led = Ledger.read(root, "die")
    try:
        rows = {t.number: t for t in led.trials()}
    finally:
        led.close()
    assert rows[4].status is Status.RUNNING  # as a kill would leave it: resume repairs it
    assert all(t.status.finished for n, t in rows.items() if n != 4)


def _popen_run(root: Path, agent: str, env: dict[str, str], *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "autoresearch", "run", str(root), "--tag", "x",
                             "--agent", "cli", "--agent-cmd", agent, *flags],
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _wait_for_starts(env: dict[str, str], count: int, timeout: float = 60) -> list[tuple[str, str]]:
    """(stamps file, trial number) of the first `count` experiments to start after the baseline
    (their pids are no use: with --workers they run sealed, in PID namespaces of their own)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        started = [(env["AR_STAMPS"], line.split()[1]) for line in Path(env["AR_STAMPS"]).read_text().splitlines()
                   if line.startswith("start ") and line.split()[1] != "0"]
        if len(started) >= count:
            return started
        time.sleep(0.05)
    raise AssertionError("experiments did not start")


def _alive(experiment: tuple[str, str]) -> bool:
    """Whether a process of that experiment still runs: one with its stamps file and trial
    number in its environment, not a zombie."""
    stamps, trial = experiment
    wanted = (f"AR_STAMPS={stamps}".encode(), f"AUTORESEARCH_TRIAL={trial}".encode())
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            if all(w in environ for w in wanted) and (proc / "stat").read_text().split(") ")[1][0] != "Z":
                return True
        except (OSError, IndexError):
            continue
    return False


def test_ctrl_c_stops_every_trial_in_flight_and_resume_goes_on(tmp_path: Path) -> None:
    table = {n: f"{20 + n}.0 60" for n in range(1, 4)}  # at most 3 open: 2 running, 1 ready
    table.update({n: f"{20 + n}.0 0.1" for n in range(4, 9)})
    root, agent, env = setup_run(tmp_path, table)
    proc = _popen_run(root, agent, env, "--trials", "6", "--workers", "2")
    pids = _wait_for_starts(env, 2)
    time.sleep(0.3)  # the agent has a proposal ready by now
    assert all(_alive(p) for p in pids)  # (what is looked for below is there to be found)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert not any(_alive(p) for p in pids)
    led = Ledger.read(root, "x")
    try:
        rows = led.trials()
    finally:
        led.close()
    assert all(t.status.finished for t in rows)
    assert 3 <= len(rows) <= 4 and all(t.status is Status.INTERRUPTED for t in rows[1:])
    r = cli("run", str(root), "--tag", "x", "--agent", "cli", "--agent-cmd", agent, "--trials", "1",
            "--workers", "2", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = check_ledger_and_git(root, "x", len(rows))
    assert rows[-1].status is Status.DISCARD


def test_ctrl_c_after_the_last_trial_opened_is_recorded_as_the_signal(tmp_path: Path) -> None:
    """Both trials of --trials 2 in flight when Ctrl-C comes: the run ended by the signal; its
    record said "--trials 2 done" (set when the loop found no more trials to open)."""
    root, agent, env = setup_run(tmp_path, {1: "21.0 60", 2: "22.0 60"})
    proc = _popen_run(root, agent, env, "--trials", "2", "--workers", "2")
    _wait_for_starts(env, 2)
    time.sleep(0.5)  # (both workers have looked for a third trial by now)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    last = next(line for line in cli("status", str(root), "--tag", "x").stdout.splitlines() if line.startswith("last run"))
    assert "stopped by a signal" in last and "done" not in last, last


def test_a_killed_loop_with_trials_in_flight_resumes(tmp_path: Path) -> None:
    table = {n: f"{20 + n}.0 60" for n in range(1, 4)}
    table.update({n: f"{20 + n}.0 0.1" for n in range(4, 9)})
    root, agent, env = setup_run(tmp_path, table)
    proc = _popen_run(root, agent, env, "--trials", "6", "--workers", "2")
    pids = _wait_for_starts(env, 2)
    assert all(_alive(p) for p in pids)
    proc.kill()
    proc.communicate(timeout=30)
    r = cli("run", str(root), "--tag", "x", "--agent", "cli", "--agent-cmd", agent, "--trials", "2",
            "--workers", "2", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not any(_alive(p) for p in pids)
    led = Ledger.read(root, "x")
    try:
        rows = led.trials()
    finally:
        led.close()
    assert [t.number for t in rows] == list(range(len(rows)))
    assert all(t.status.finished for t in rows)
    assert [t.status for t in rows[-2:]] == [Status.DISCARD, Status.DISCARD]
    killed = [t for t in rows if t.status is Status.INTERRUPTED]
    assert len(killed) >= 2 and all(t.commit for t in killed[:2])
    refs = git(root, "for-each-ref", "--format=%(refname)", "refs/autoresearch/x/")
    assert all(f"refs/autoresearch/x/trials/{t.number}" in refs for t in rows if t.commit)


def test_backend_ray_without_ray_is_one_line_with_the_install_hint(tmp_path: Path) -> None:
    root = make_task(tmp_path / "task")
    shadow = tmp_path / "no-ray" / "ray"  # a `ray` that cannot be imported, first on the path
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    env = {"PYTHONPATH": f"{tmp_path / 'no-ray'}{os.pathsep}{os.environ['PYTHONPATH']}"}
    r = cli("run", str(root), "--tag", "r", "--agent", "cli", "--agent-cmd", "true", "--backend", "ray", env=env)
    assert r.returncode == 2
    assert r.stderr.strip() == ("autoresearch: error: --backend ray needs Ray, which is not installed: "
                                "pip install -e '.[ray]' (in the autoresearch checkout)")
    assert not (root / ".autoresearch" / "r").exists()


def test_a_trial_overtaken_while_it_ran_says_so(tmp_path: Path) -> None:
    # trial 1 (slow) and trial 2 start from the baseline; 2 is kept while 1 runs; 1 beats its
    # parent but not the best of its end, and its reason names the trial that overtook it
    root, agent, env = setup_run(tmp_path, {1: "5.0 3", 2: "3.0 0.1"})
    r = cli("run", str(root), "--tag", "o", "--agent-cmd", agent, "--trials", "2", "--workers", "2", env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    rows = check_ledger_and_git(root, "o", 2)
    assert [t.status for t in rows] == [Status.KEEP, Status.DISCARD, Status.KEEP]
    assert rows[1].parent == rows[0].commit
    assert rows[1].reason.endswith("(trial 2 was kept while it ran)"), rows[1].reason


SIBLING_EXPERIMENT = """\
import time
X = 10.0
time.sleep(0.8)
import helper
print(f"loss: {X + helper.B}")
"""

SIBLING_AGENT = """\
sed -i "s/^X = .*/X = 1$AUTORESEARCH_TRIAL.0/" exp.py
if [ $((AUTORESEARCH_TRIAL % 2)) = 0 ]; then  # an even trial's agent writes into the other worktrees
  end=$((SECONDS + 3))
  while [ $SECONDS -lt $end ]; do
    for wt in "$(dirname "$PWD")"/*/; do
      [ "$wt" = "$PWD/" ] || [ ! -f "$wt/helper.py" ] || echo "B = -1000.0" > "$wt/helper.py"
    done
    sleep 0.05
  done
fi
echo "X = 1$AUTORESEARCH_TRIAL"
"""


@pytest.mark.parametrize("bwrap", [pytest.param("working", marks=pytest.mark.slow),
                                   pytest.param("broken", marks=pytest.mark.slow)])
def test_code_written_by_a_trial_beside_it_while_it_runs_is_not_measured(tmp_path: Path, bwrap: str) -> None:
    """With --workers 2, one trial's agent wrote helper.py into the other trial's worktree while
    its experiment ran: the other trial was kept with a forged score (its commit, run again,
    scores worse than the baseline). Where bubblewrap works, agents and experiments side by
    side are sealed from each other's worktrees, and nothing is forged; where it does not, a
    change to a trial's editable files while it runs rejects the trial."""
    env = bwrap_env(tmp_path, bwrap)
    root = make_task(tmp_path / "task", experiment=SIBLING_EXPERIMENT, files={"helper.py": "B = 0.0\n"},
                     toml_extra='\n[metric]\nname = "loss"\ngoal = "minimize"\n')
    toml = (root / "autoresearch.toml").read_text().replace('editable = ["exp.py"]', 'editable = ["exp.py", "helper.py"]')
    (root / "autoresearch.toml").write_text(toml)
    git(root, "commit", "-qam", "helper editable")
    agent = script_agent(tmp_path / "agent.sh", SIBLING_AGENT)
    r = cli("run", str(root), "--tag", "w", "--agent-cmd", agent, "--trials", "6", "--workers", "2", env=env)
    assert r.returncode == 0, r.stderr
    trials = Ledger.read(root, "w").trials()
    assert all(t.metric is None or t.metric > 0 for t in trials), \
        [(t.number, t.status, t.metric) for t in trials]  # no forged figure recorded, none kept
    drifted = [t for t in trials if "changed while it ran (helper.py" in t.reason]
    assert all(t.status is Status.REJECTED for t in drifted)
    if bwrap == "working":
        assert not drifted and [t.metric for t in trials] == [10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0]
        assert "not sealed" not in r.stdout + r.stderr
    else:
        assert drifted and "trials side by side are not sealed from each other" in r.stdout + r.stderr


def test_a_sealed_agent_cannot_write_the_standard_library(tmp_path: Path) -> None:
    """An edit to json/__init__.py runs in every experiment, a sibling's included: a red team
    forged its own score and a sibling's with one. Sealed (--workers), the standard library is
    read-only to agents and experiments; site-packages stays writable (a `pip install`)."""
    if sandbox_problem():
        pytest.skip(f"bubblewrap cannot run here: {sandbox_problem()}")
    import sysconfig

    std, site = sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"]
    probe = f"autoresearch-probe-{os.getpid()}"
    root = make_task(tmp_path / "task")
    agent = script_agent(tmp_path / "agent.sh", f"""\
        sed -i "s/^X = .*/X = 2.$AUTORESEARCH_TRIAL/" exp.py
        if touch "{std}/{probe}" 2>/dev/null; then s=wrote; rm -f "{std}/{probe}"; else s=refused; fi
        if touch "{site}/{probe}" 2>/dev/null; then p=wrote; rm -f "{site}/{probe}"; else p=refused; fi
        echo "stdlib $s, site $p" > "$AUTORESEARCH_DESCRIPTION_FILE"
        """)
    try:
        r = cli("run", str(root), "--tag", "w", "--agent-cmd", agent, "--trials", "2", "--workers", "2")
        assert r.returncode == 0, r.stderr
        said = {t.description for t in Ledger.read(root, "w").trials()[1:]}
        assert said == {"stdlib refused, site wrote"}, said
    finally:
        Path(std, probe).unlink(missing_ok=True)
        Path(site, probe).unlink(missing_ok=True)


def test_gpus_left_idle_by_fewer_workers_are_named() -> None:
    """`--workers 2 --gpus 0,1,2` runs on 0 and 1: said at start, not left for the user to find."""
    from autoresearch.backends.local import gpu_warnings

    (idle, *_) = gpu_warnings(("0", "1", "2"), 1, 2)
    assert "uses 2 of its 3 GPUs; GPU 2 stays idle" in idle  # (the id: "2 stay idle" read as two)
    assert "GPUs 2,3 stay idle" in gpu_warnings(("0", "1", "2", "3"), 2, 1)[0]
    assert not [n for n in gpu_warnings(("0", "1", "2", "3"), 2, None) if "idle" in n]
    assert not [n for n in gpu_warnings(("0", "1"), 1, 2) if "idle" in n]


def test_gpus_outside_the_cuda_visible_devices_the_loop_was_given_are_said(tmp_path: Path) -> None:
    """On a shared machine the user is given GPUs 2,3 (CUDA_VISIBLE_DEVICES=2,3) and says --gpus
    0,1: each trial's CUDA_VISIBLE_DEVICES replaces the inherited one, so the trials would run
    on the machine's GPUs 0 and 1, someone else's. Said at start, with the ids to give."""
    from autoresearch.backends.local import gpu_warnings

    root, agent, env = setup_run(tmp_path, {1: "1.0 0"})
    r = cli("run", str(root), "--tag", "g", "--agent", "cli", "--agent-cmd", agent, "--trials", "1",
            "--gpus", "0,1", env={**env, "CUDA_VISIBLE_DEVICES": "2,3"})
    assert r.returncode == 0, r.stderr
    assert ("--gpus 0,1 names GPUs 0,1, outside this environment's CUDA_VISIBLE_DEVICES=2,3: each trial's "
            "CUDA_VISIBLE_DEVICES is set to the ids of --gpus, which are the machine's (give --gpus 2,3 to "
            "stay on the GPUs you were given)") in r.stderr, r.stderr
    exps, _ = read_stamps(env)
    assert {e[2] for e in exps.values()} <= {"0", "1"}  # (as documented: the ids as given)
    assert not [n for n in gpu_warnings(("3",), 1, 1, visible=8, inherited="2,3") if "outside" in n]
    assert not [n for n in gpu_warnings(("0",), 1, 1, visible=8, inherited="") if "outside" in n]
    assert not [n for n in gpu_warnings(("0",), 1, 1, visible=8, inherited="GPU-9a1c") if "outside" in n]
    # without --gpus, the advice to share them out names the GPUs this environment was given
    (shared,) = gpu_warnings((), 1, 4, visible=8, inherited="4,5,6,7")
    assert "share this machine's 4 GPUs" in shared and "give --gpus 4,5,6,7 for one each" in shared, shared


def test_several_workers_without_gpus_on_a_gpu_machine_are_told_to_share_them_out() -> None:
    """`--workers 4` alone on a machine with 4 GPUs would put all four trials on GPU 0."""
    from autoresearch.backends.local import gpu_warnings

    (shared,) = gpu_warnings((), 1, 4, visible=8)
    assert "--workers 4 without --gpus" in shared and "8 GPUs" in shared and "--gpus 0,1,2,3 " in shared
    assert "give --gpus 0 --workers 1 for one each" in gpu_warnings((), 1, 2, visible=1)[0]
    assert gpu_warnings((), 1, 4, visible=0) == []  # a CPU machine: nothing to share out
    assert gpu_warnings((), 1, 1, visible=8) == gpu_warnings((), 1, None, visible=8) == []
    assert not [n for n in gpu_warnings(("0", "1"), 1, 2, visible=8) if "without --gpus" in n]


def test_a_resumed_tag_goes_on_with_its_workers_and_gpus(tmp_path: Path) -> None:
    """`run --tag T` after a kill goes on as wide as T was started (not one worker with no GPU
    pinning, 4x slower and silent), says so in one line; a flag given again replaces its group."""
    root, agent, env = setup_run(tmp_path, {n: f"{n}.0 0.1" for n in range(1, 9)})
    base = ("run", str(root), "--tag", "w", "--agent", "cli", "--agent-cmd", agent, "--trials", "2")
    r = cli(*base, "--workers", "2", "--gpus", "0,1", "--agent-concurrency", "2", env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "goes on with" not in r.stderr
    r = cli(*base, env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    assert ("autoresearch: tag w goes on with --workers 2 --gpus 0,1 --agent-concurrency 2, as its last run "
            "did (give them again to change them)") in r.stderr
    assert "(resumed), agent cli, 2 workers," in r.stdout
    exps, _ = read_stamps(env)
    assert {exps[n][2] for n in (3, 4)} <= {"0", "1"}
    r = cli(*base, "--workers", "1", env=env)  # the group given: the tag's GPUs go with its workers
    assert r.returncode == 0, r.stderr + r.stdout
    assert "tag w goes on with --agent-concurrency 2, as its last run did" in r.stderr
    assert "2 workers" not in r.stdout
    exps, _ = read_stamps(env)
    assert {exps[n][2] for n in (5, 6)} == {"-"}
    r = cli(*base, env=env)  # and the next resume goes on with what the last run was given
    assert "tag w goes on with --workers 1 --agent-concurrency 2," in r.stderr
    exps, _ = read_stamps(env)
    assert {exps[n][2] for n in (7, 8)} == {"-"}


def test_a_tag_that_ran_on_local_gpus_moved_to_ray_leaves_its_gpus_behind(tmp_path: Path) -> None:
    """`--backend ray` given to a tag that ran with --gpus: its GPUs (local ids) are not taken,
    which refused the run with `--gpus is for --backend local`, a flag the user had not given."""
    root = make_task(tmp_path / "task")
    r = cli("run", str(root), "--tag", "r", "--agent", "cli", "--agent-cmd", "true", "--trials", "0", "--gpus", "0")
    assert r.returncode == 0, r.stderr
    shadow = tmp_path / "no-ray" / "ray"  # a `ray` that cannot be imported: the next thing refused
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    env = {"PYTHONPATH": f"{tmp_path / 'no-ray'}{os.pathsep}{os.environ['PYTHONPATH']}"}
    r = cli("run", str(root), "--tag", "r", "--backend", "ray", "--trials", "0", env=env)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == ("autoresearch: error: --backend ray needs Ray, which is not "
                                                 "installed: pip install -e '.[ray]' (in the autoresearch checkout)")
    assert "--gpus" not in r.stderr
