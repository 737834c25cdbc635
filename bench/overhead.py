"""Harness overhead per trial: the time from one experiment's end to the next one's start.

An instant in-process agent (it rewrites one constant) and a no-op experiment (`echo`), on a
real git repository, through the real loop. The bench wraps a few functions with timers to
split the gap into git, ledger, agent and the rest; nothing is faked.

    python bench/overhead.py --trials 50 [--files 20000]

--files N adds N tracked files the agent never edits (a repository with its data in git).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from autoresearch import execute as execute_mod  # noqa: E402
from autoresearch import gitrepo, ledger  # noqa: E402
from autoresearch.agents.base import BaseAgent, Context, Proposal  # noqa: E402
from autoresearch.loop import Loop, Options  # noqa: E402
from autoresearch.session import open_session  # noqa: E402
from autoresearch.task import load_task  # noqa: E402

TOML = """name = "overhead"
editable = ["exp.py"]
command = "echo loss: 1.0"
time_budget = 1
timeout = 10
[metric]
name = "loss"
goal = "minimize"
"""


class InstantAgent(BaseAgent):
    name = "instant"

    def propose(self, ctx: Context) -> Proposal:
        (ctx.workdir / "exp.py").write_text(f"X = {ctx.number}\n")
        return Proposal(description=f"X = {ctx.number}")


class Clock:
    """Wraps functions so that their time is added to a bucket while inside the gap."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []  # experiment (start, end)
        self.buckets: list[dict[str, float]] = []
        self.current: dict[str, float] = defaultdict(float)
        self.depth = 0
        self.git_calls: dict[str, list[float]] = defaultdict(list)  # git subcommand -> seconds

    def wrap(self, owner, name: str, bucket: str) -> None:  # noqa: ANN001
        original = getattr(owner, name)

        def timed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            if self.depth:
                return original(*args, **kwargs)
            self.depth += 1
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                took = time.perf_counter() - t0
                self.current[bucket] += took
                if bucket == "git" and len(self.spans) > 1:  # after the baseline
                    self.git_calls[str(args[1])].append(took)
                self.depth -= 1

        setattr(owner, name, timed)

    def wrap_experiment(self) -> None:
        original = execute_mod.run_command

        def timed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            t0 = time.perf_counter()
            self.buckets.append(dict(self.current))
            self.current = defaultdict(float)
            try:
                return original(*args, **kwargs)
            finally:
                self.spans.append((t0, time.perf_counter()))

        execute_mod.run_command = timed


def make_repo(root: Path, files: int = 0) -> Path:
    root.mkdir(parents=True)
    (root / "exp.py").write_text("X = 0\n")
    for i in range(files):  # tracked files the agent does not edit (data, configs): watched by name
        folder = root / "data" / f"d{i // 100}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i}.txt").write_text(f"row {i}\n")
    (root / "program.md").write_text("noop\n")
    (root / "autoresearch.toml").write_text(TOML)
    env = {**gitrepo.IDENTITY, "PATH": "/usr/bin:/bin"}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "init"]):
        subprocess.run(["git", *args], cwd=root, env=env, check=True)
    return root


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--files", type=int, default=0, help="tracked files besides exp.py (in folders of 100)")
    args = parser.parse_args()
    clock = Clock()
    clock.wrap(gitrepo.Git, "run", "git")
    for name in ("begin", "update", "finish"):
        clock.wrap(ledger.Ledger, name, "ledger")
    clock.wrap(InstantAgent, "propose", "agent")
    clock.wrap_experiment()
    with tempfile.TemporaryDirectory() as tmp:
        repo = make_repo(Path(tmp) / "repo", args.files)
        task = load_task(repo)
        session = open_session(task, "bench")
        loop = Loop(session, InstantAgent(), Options(trials=args.trials))
        loop.run()
        session.close()
    gaps = [b[0] - a[1] for a, b in zip(clock.spans, clock.spans[1:], strict=False)]
    parts = clock.buckets[2:]  # buckets[i] is the gap before experiment i; skip the baseline's
    exp = [e - s for s, e in clock.spans]
    ms = lambda x: f"{1000 * x:7.2f} ms"  # noqa: E731
    print(f"trials: {args.trials} (+ baseline), instant agent, no-op experiment `echo`, "
          f"{args.files} other tracked files")
    print(f"harness overhead per trial (experiment end -> next start): median {ms(statistics.median(gaps))}, "
          f"p90 {ms(sorted(gaps)[int(0.9 * len(gaps))])}")
    if len(gaps) >= 400:  # growth with the trial count: the first hundred against the last
        first, last = statistics.median(gaps[:100]), statistics.median(gaps[-100:])
        print(f"  trials 1-100 median {ms(first)}, trials {len(gaps) - 99}-{len(gaps)} median {ms(last)} "
              f"(ratio {last / first:.2f})")
    other = [g - sum(p.values()) for g, p in zip(gaps, parts, strict=False)]
    columns = {name: [p.get(name, 0.0) for p in parts] for name in ("git", "ledger", "agent")}
    columns["other"] = other
    for name, values in columns.items():
        growth = (f", trials 1-100 {ms(statistics.median(values[:100]))} -> last 100 "
                  f"{ms(statistics.median(values[-100:]))}" if len(values) >= 400 else "")
        print(f"  {name:<8} median {ms(statistics.median(values))}{growth}"
              + ("  (hashing, guard, python)" if name == "other" else ""))
    trials = max(1, len(parts))
    calls = sorted(clock.git_calls.items(), key=lambda kv: -sum(kv[1]))
    print("  git by command (calls per trial x median): " + ", ".join(
        f"{name} {len(times) / trials:.2g} x {1000 * statistics.median(times):.1f} ms" for name, times in calls))
    print(f"experiment process (fork/exec/wait of `echo`): median {ms(statistics.median(exp))}")


if __name__ == "__main__":
    main()
