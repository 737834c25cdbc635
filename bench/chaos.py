"""Chaos: SIGKILL the loop at random instants, resume, repeat; then check the invariants.

    python bench/chaos.py --kills 60 --seed 1

Each cycle starts the real CLI (`python -m autoresearch run --agent cli ...`) on a small task
repository and SIGKILLs it at an instant aimed at one phase of a trial:

- startup     a random instant in the first 0.8 s (imports, open_session, repair, worktree add)
- worktree    while `git worktree add` creates the trial worktree (its admin folder just appeared)
- agent       while the scripted agent sleeps
- commit      just after the agent's last action (snapshot, ledger update, guard, launch)
- experiment  while the experiment sleeps (it may have spawned a child that ignores SIGTERM)
- record      just after the experiment's last print (judge, ledger finish, results.tsv, refs)
- random      a uniform instant over the run, with tiny random delays in agent and experiment

Half the kills (at random) go to the loop's whole process group, as a job scheduler or a
terminal does, so the git command the loop is running dies too. The next cycle resumes the
same tag. After the last kill a final run must succeed, then:

- results.tsv has a header, five fields per row, no torn and no duplicated row;
- every row ever seen in results.tsv (polled during the runs, read after each kill) and every
  trial the loop printed as finished is still there, with the same status (else: lost);
- results.tsv is exactly what the ledger says; trial numbers run 0..N-1; no trial is running;
- every trial with a commit has refs/autoresearch/<tag>/trials/<n> pointing at it, and its
  parent is the best commit of its moment;
- autoresearch/<tag> is the best kept trial; keeps improve strictly;
- no lock file, no locked or prunable worktree is left in .git;
- the user's checkout (HEAD, branch, status, every file's content) is untouched;
- no process carrying this run's marker is alive (experiments, their children, agents).

Exit status 0 when every check passes. `run_chaos()` is what tests/test_chaos.py calls.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chaos_checks import (  # noqa: E402
    SRC,
    TAG,
    check_invariants,
    checkout_state,
    git,
    marked_processes,
    read_tsv,
    wait_no_processes,
)

PHASES = ("startup", "worktree", "agent", "commit", "experiment", "record", "random")
FINISHED_LINE = re.compile(r"^(?:\d\d:\d\d:\d\d )?\[trial (\d+)\] (keep|discard|crash|timeout|rejected|agent_error|"
                           r"interrupted|duplicate) ", re.MULTILINE)

EXPERIMENT = """\
import os, pathlib, random, subprocess, sys, time
X = 3.0
d = pathlib.Path(os.environ["CHAOS_DIR"])
n = os.environ["AUTORESEARCH_TRIAL"]
(d / f"exp-start-{n}").touch()
if random.random() < 0.3:  # a child that ignores SIGTERM and outlives the loop if not killed
    subprocess.Popen([sys.executable, "-c", "import signal, time\\n"
                      "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\ntime.sleep(60)"])
time.sleep(float(os.environ.get("CHAOS_EXP_SLEEP", "0")) * random.random())
print(f"loss: {(X - 1.0) ** 2 + 1.0}")
print("peak_vram_mb: 1536")
sys.stdout.flush()
(d / f"exp-done-{n}").touch()
"""

AGENT = """\
#!/bin/bash
set -e
d="$CHAOS_DIR"; n="$AUTORESEARCH_TRIAL"
touch "$d/agent-start-$n"
sleep "$(python3 -c "import random; print(random.random() * float('${CHAOS_AGENT_SLEEP:-0}'))")"
id="$(cat /proc/sys/kernel/random/uuid)"
case $((RANDOM % 10)) in
  0) echo 'raise SystemExit(3)' >> exp.py ;;
  1) echo stray > stray.txt ;;
  *) sed -i "s|^X = .*|X = $((RANDOM % 400)) / 100|" exp.py ;;
esac
touch "$d/agent-done-$n"
echo "trial $n id=$id"
"""

TOML = """\
name = "chaos"
editable = ["exp.py"]
protected = ["prepare.py"]
command = "python exp.py {marker}"
time_budget = 5
timeout = 20

[metric]
name = "loss"
goal = "minimize"
record = ["peak_vram_mb"]
"""


@dataclass
class Report:
    kills: int = 0
    group_kills: int = 0
    survived: int = 0
    by_phase: Counter[str] = field(default_factory=Counter)
    trials: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    torn: int = 0
    orphans_after_kill: int = 0
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.violations or self.torn) and self.survived == self.kills

    def text(self) -> str:
        phases = ", ".join(f"{p} {self.by_phase[p]}" for p in PHASES if self.by_phase[p])
        stats = ", ".join(f"{s} {c}" for s, c in sorted(self.statuses.items()))
        lines = [
            f"chaos: {self.kills} SIGKILLs ({phases}; {self.group_kills} to the whole process group) "
            f"in {self.seconds:.0f} s",
            f"trials recorded: {self.trials} ({stats})",
            f"kills survived: {self.survived} of {self.kills}",
            f"trials lost: {len(self.lost)}",
            f"duplicated: {len(self.duplicated)}",
            f"torn results.tsv read after a kill: {self.torn}",
            f"processes still running 1 s after a kill: {self.orphans_after_kill}",
            f"invariant violations: {len(self.violations)}",
        ]
        lines += [f"  LOST {x}" for x in self.lost] + [f"  DUPLICATED {x}" for x in self.duplicated]
        lines += [f"  VIOLATION {x}" for x in self.violations]
        return "\n".join(lines)


# ---------------------------------------------------------------------------
# the task repository and the user's checkout


def make_task(root: Path, marker: str) -> Path:
    root.mkdir(parents=True)
    (root / "exp.py").write_text(EXPERIMENT)
    (root / "prepare.py").write_text("DATA = 'fixed'\n")
    (root / "program.md").write_text("# chaos\nMinimise loss.\n")
    (root / "autoresearch.toml").write_text(TOML.format(marker=marker))
    (root / "notes.txt").write_text("the user's own file\n")
    (root / ".gitignore").write_text("cache/\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "task")
    (root / "cache").mkdir()
    (root / "cache" / "data.bin").write_bytes(os.urandom(256))  # ignored files must survive too
    return root


# ---------------------------------------------------------------------------
# one cycle: start, wait for the aimed phase, SIGKILL


class Chaos:
    def __init__(self, workdir: Path, seed: int, agent_sleep: float = 0.4, exp_sleep: float = 0.4) -> None:
        self.rng = random.Random(seed)
        self.marker = uuid.uuid4().hex
        self.work = workdir
        self.repo = make_task(workdir / "repo", self.marker)
        self.agent = workdir / "agent.sh"
        self.agent.write_text(AGENT)
        self.agent.chmod(0o755)
        self.agent_sleep, self.exp_sleep = agent_sleep, exp_sleep
        self.tsv = self.repo / ".autoresearch" / TAG / "results.tsv"
        self.before = checkout_state(self.repo)
        self.seen_rows: set[str] = set()
        self.printed: dict[int, str] = {}
        self.report = Report()
        self.runs = 0

    def _env(self, agent_sleep: float, exp_sleep: float) -> tuple[dict[str, str], Path]:
        chaos_dir = self.work / f"run{self.runs}"
        chaos_dir.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env.update(CHAOS_MARKER=self.marker, CHAOS_DIR=str(chaos_dir),
                   CHAOS_AGENT_SLEEP=f"{agent_sleep}", CHAOS_EXP_SLEEP=f"{exp_sleep}",
                   PYTHONPATH=f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
        return env, chaos_dir

    def _start(self, trials: int, agent_sleep: float, exp_sleep: float) -> tuple[subprocess.Popen[bytes], Path, Path]:
        self.runs += 1
        env, chaos_dir = self._env(agent_sleep, exp_sleep)
        out = self.work / f"run{self.runs}.out"
        with open(out, "wb") as f:
            proc = subprocess.Popen([sys.executable, "-m", "autoresearch", "run", str(self.repo),
                                     "--tag", TAG, "--agent", "cli", "--agent-cmd", str(self.agent),
                                     "--trials", str(trials)],
                                    env=env, stdout=f, stderr=subprocess.STDOUT, cwd=self.work,
                                    start_new_session=True)
        return proc, chaos_dir, out

    def _poll_tsv(self) -> None:
        why, rows = read_tsv(self.tsv)
        if why is None:
            self.seen_rows.update(rows)

    def _collect_printed(self, out: Path) -> None:
        for number, status in FINISHED_LINE.findall(out.read_text(errors="replace")):
            self.printed[int(number)] = status

    def kill_once(self, phase: str) -> None:
        rng = self.rng
        slow = phase in ("agent", "experiment")
        tiny = 0.03 if phase == "random" else 0.0
        proc, chaos_dir, out = self._start(10_000, self.agent_sleep if phase == "agent" else tiny,
                                           self.exp_sleep if phase == "experiment" else tiny)
        trigger = {"agent": "agent-start-", "commit": "agent-done-", "experiment": "exp-start-",
                   "record": "exp-done-"}.get(phase)
        window = {"agent": self.agent_sleep, "experiment": self.exp_sleep, "commit": 0.06,
                  "record": 0.08}.get(phase, 0.0)
        t0 = time.monotonic()
        kill_at = t0 + (rng.uniform(0.0, 0.8) if phase == "startup" else
                        rng.uniform(0.3, 3.0) if phase == "random" else float("inf"))
        admin = self.repo / ".git" / "worktrees" / "w0"  # git worktree add's admin folder
        while phase == "worktree" and admin.exists():  # a previous run's: wait for repair to clear it
            if proc.poll() is not None or time.monotonic() - t0 > 30:
                break
            time.sleep(0.001)
        group = rng.random() < 0.5
        # skip a random number of trials first so kills land on varied trial kinds
        skip = rng.randrange(3) if trigger else 0
        while True:
            now = time.monotonic()
            if proc.poll() is not None:
                break
            if now >= kill_at:
                if group:  # the loop and the git command it is running, as a scheduler kills a job
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    proc.send_signal(signal.SIGKILL)
                break
            if phase == "worktree" and kill_at == float("inf") and admin.exists():
                kill_at = now + rng.uniform(0.0, 0.015)
            if trigger and kill_at == float("inf"):
                hits = sorted(p.name for p in chaos_dir.iterdir() if p.name.startswith(trigger))
                if len(hits) > skip:
                    kill_at = now + rng.uniform(0.0, window if not slow else window * 0.9)
            if now - t0 > 60:  # never reached the phase: kill anyway
                kill_at = now
            self._poll_tsv()
            time.sleep(0.001 if trigger and kill_at != float("inf") else 0.005)
        proc.wait()
        self._collect_printed(out)
        if proc.returncode != -signal.SIGKILL:
            tail = out.read_text(errors="replace").strip().splitlines()[-3:]
            self.report.violations.append(f"run {self.runs} ({phase}) ended by itself with exit "
                                          f"{proc.returncode} before the kill: {' | '.join(tail)}")
            return
        self.report.kills += 1
        self.report.group_kills += group
        self.report.by_phase[phase] += 1
        why, rows = read_tsv(self.tsv)
        if why is not None:
            self.report.torn += 1
            self.report.violations.append(f"results.tsv after kill {self.report.kills} ({phase}): {why}")
        self.seen_rows.update(rows)
        # the loop's watchdog outlives it and kills what its experiments and agents started
        self.report.orphans_after_kill += len(wait_no_processes(self.marker, 1.0))

    def final_run(self) -> subprocess.CompletedProcess[str]:
        proc, _, out = self._start(3, 0.0, 0.0)
        proc.wait(timeout=300)
        self._collect_printed(out)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(errors="replace"), "")


# ---------------------------------------------------------------------------
# the invariants


def run_chaos(kills: int, seed: int = 0, workdir: Path | None = None, phases: tuple[str, ...] = PHASES,
              progress: bool = False) -> Report:
    """Kill the loop `kills` times (phases in turn, instants at random), resume, check."""
    started = time.monotonic()
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="chaos-")
        workdir = Path(tmp.name)
    c = Chaos(Path(workdir), seed)
    try:
        for i in range(kills):
            phase = phases[i % len(phases)]
            c.kill_once(phase)
            if progress:
                print(f"  kill {i + 1}/{kills} ({phase}): {len(c.seen_rows)} results.tsv rows seen, "
                      f"{len(c.report.violations)} violations", file=sys.stderr, flush=True)
        final = c.final_run()
        if final.returncode != 0:
            c.report.violations.append(f"the run after the last kill failed (exit {final.returncode}): "
                                       f"{' | '.join(final.stdout.strip().splitlines()[-3:])}")
        # a kill is survived when the run after it resumed and went on (or was killed by us again)
        failed_runs = sum(1 for x in c.report.violations if "ended by itself" in x)
        c.report.survived = c.report.kills - failed_runs - (final.returncode != 0)
        check_invariants(c)
    finally:
        for pid in marked_processes(c.marker):  # never leave anything behind, even on failure
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if tmp is not None:
            tmp.cleanup()
    c.report.seconds = time.monotonic() - started
    return c.report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated, from {', '.join(PHASES)}")
    ap.add_argument("--keep", default=None, help="work in this (new) folder and keep it")
    args = ap.parse_args()
    workdir = Path(args.keep) if args.keep else None
    if workdir:
        workdir.mkdir(parents=True)
    report = run_chaos(args.kills, args.seed, workdir, tuple(args.phases.split(",")), progress=True)
    print(report.text())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
