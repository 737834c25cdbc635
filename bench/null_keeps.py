"""How often the acceptance policy keeps a change that does nothing.

Each loop: a task whose metric is 1 + seeded noise + unseeded noise (sd 0.01 each), a baseline
and `--trials` null changes (a comment added) by an in-process agent, through the real loop.
Prints the share of null changes kept under the given policy, e.g. the defaults the trust
issue asks for (baseline_runs = 3, min_delta = "auto", confirm = 2) against the naive one
(baseline_runs = 1, min_delta = 0, confirm = 0).

    python bench/null_keeps.py --loops 10 --trials 20
    python bench/null_keeps.py --loops 10 --trials 20 --naive
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from autoresearch.agents.base import BaseAgent, Context, Proposal  # noqa: E402
from autoresearch.loop import Loop, Options  # noqa: E402
from autoresearch.records import Status  # noqa: E402
from autoresearch.session import open_session  # noqa: E402
from autoresearch.task import load_task  # noqa: E402

EXPERIMENT = """\
import os, random
SEED = int(os.environ["AUTORESEARCH_SEED"])
noise = random.Random(SEED).gauss(0, 0.01) + random.Random(os.urandom(16)).gauss(0, 0.01)
print(f"loss: {1.0 + noise}")
"""
TOML = """name = "null"
editable = ["exp.py"]
command = "python exp.py"
time_budget = 5
timeout = 30
[metric]
name = "loss"
goal = "minimize"
[acceptance]
"""


class NullAgent(BaseAgent):
    name = "null"

    def propose(self, ctx: Context) -> Proposal:
        with open(ctx.workdir / "exp.py", "a") as f:
            f.write(f"# null change {ctx.number}\n")
        return Proposal(description="add a comment")


def one_loop(folder: Path, trials: int, policy: str) -> tuple[int, int]:
    folder.mkdir()
    (folder / "exp.py").write_text(EXPERIMENT)
    (folder / "program.md").write_text("null\n")
    (folder / "autoresearch.toml").write_text(TOML + policy)
    env = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@b", "PATH": "/usr/bin:/bin"}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "task"]):
        subprocess.run(["git", *args], cwd=folder, env=env, check=True)
    session = open_session(load_task(folder), "bench")
    try:
        Loop(session, NullAgent(), Options(trials=trials)).run()
        done = session.ledger.trials()[1:]
    finally:
        session.close()
    return sum(t.status is Status.KEEP for t in done), len(done)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--loops", type=int, default=10)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--naive", action="store_true", help="baseline_runs = 1, min_delta = 0, confirm = 0")
    args = p.parse_args()
    policy = ("min_delta = 0.0\nbaseline_runs = 1\nconfirm = 0\n" if args.naive
              else 'min_delta = "auto"\nbaseline_runs = 3\nconfirm = 2\n')
    kept = total = 0
    per_loop = []
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.loops):
            k, n = one_loop(Path(tmp) / f"loop{i}", args.trials, policy)
            kept += k
            total += n
            per_loop.append(k)
    print(f"policy: {' '.join(policy.split())}")
    print(f"null changes kept: {kept} of {total} ({100 * kept / max(total, 1):.1f}%); "
          f"per loop of {args.trials}: {per_loop}; loops with more than one kept: "
          f"{sum(k > 1 for k in per_loop)} of {args.loops}; {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
