#!/usr/bin/env python
"""Benchmarks of the scale work (issue 6). Each prints figures measured side by side in one run.

    python bench/scale.py overhead     # harness overhead per trial, W = 1, 4, 16, no-op experiments
    python bench/scale.py busy         # busy fraction per slot, an agent taking 1/4 of an experiment:
                                       #   sequential (--agent-concurrency 0) vs pipelined
    python bench/scale.py throughput   # 1 s experiments, W = 1, 2, 4, local and on a local Ray
                                       #   instance, as a ratio to W = 1
    python bench/scale.py all          # the three

The loop runs in-process (the library, as a notebook would call it) on a throwaway task
repository, with an in-process agent that edits one constant (instant, or sleeping to model a
slow agent). Each experiment is a bash command that appends `slot start end trial` to a stamps
file (bash's $EPOCHREALTIME, no subprocess), from which the figures are computed; the slot is
told by CUDA_VISIBLE_DEVICES (fake GPU ids 0..W-1 pin one "GPU" per slot). The baseline is left
out of every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))
os.environ["PYTHONPATH"] = f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"  # Ray workers

from autoresearch.agents.base import BaseAgent, Context, Proposal  # noqa: E402
from autoresearch.loop import Loop, Options  # noqa: E402
from autoresearch.session import open_session  # noqa: E402
from autoresearch.task import load_task  # noqa: E402

GIT = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}


class BenchAgent(BaseAgent):
    """Writes `X = <trial>` after `think` seconds. Concurrent: it only sleeps and writes its
    own worktree (like an agent waiting on an API)."""

    name = "bench"
    concurrent = True

    def __init__(self, think: float = 0.0) -> None:
        self.think = think

    def propose(self, ctx: Context) -> Proposal:
        if self.think:
            time.sleep(self.think)
        (ctx.workdir / "exp.py").write_text(f"X = {ctx.number}\n")
        return Proposal(description=f"X = {ctx.number}")


def make_task(root: Path, seconds: float) -> Path:
    """A task whose experiment sleeps `seconds` (0: none) and stamps its start and end."""
    work = f"sleep {seconds}; " if seconds else ""
    command = (f's=$EPOCHREALTIME; {work}echo "loss: 1"; '
               f'echo "${{CUDA_VISIBLE_DEVICES:-ray}} $s $EPOCHREALTIME $AUTORESEARCH_TRIAL" '
               f'>> "$BENCH_STAMPS/$AUTORESEARCH_TAG"')
    root.mkdir(parents=True)
    (root / "exp.py").write_text("X = 0\n")
    (root / "program.md").write_text("# bench\n")
    (root / "autoresearch.toml").write_text(
        f'name = "bench"\neditable = ["exp.py"]\ncommand = {json.dumps(command)}\n'
        f'time_budget = 60\ntimeout = 120\n\n[metric]\nname = "loss"\ngoal = "minimize"\n')
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "bench"]):
        subprocess.run(["git", *args], cwd=root, env={**os.environ, **GIT}, check=True)
    return root


def run(root: Path, tag: str, workers: int, trials: int, think: float = 0.0,
        ahead: int | None = None, backend: object = None) -> tuple[float, list[tuple[str, float, float, int]]]:
    """One loop; returns its wall time and the experiments' stamps (baseline left out)."""
    session = open_session(load_task(root), tag)
    gpus = tuple(str(i) for i in range(workers)) if backend is None else ()
    try:
        loop = Loop(session, BenchAgent(think), Options(trials=trials, workers=workers, gpus=gpus,
                                                        agent_concurrency=ahead), backend=backend)  # type: ignore[arg-type]
        start = time.perf_counter()
        loop.run()
        wall = time.perf_counter() - start
    finally:
        session.close()
    rows = [line.split() for line in (Path(os.environ["BENCH_STAMPS"]) / tag).read_text().splitlines()]
    stamps = [(r[0], float(r[1]), float(r[2]), int(r[3])) for r in rows if r[3] != "0"]
    assert len(stamps) == trials, (tag, len(stamps))
    return wall, stamps


def by_slot(stamps: list[tuple[str, float, float, int]]) -> dict[str, list[tuple[float, float]]]:
    slots: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for slot, start, end, _ in stamps:
        slots[slot].append((start, end))
    return {k: sorted(v) for k, v in slots.items()}


def gaps(stamps: list[tuple[str, float, float, int]]) -> list[float]:
    """Per slot: from one experiment's end to the next one's start."""
    return [b[0] - a[1] for runs in by_slot(stamps).values() for a, b in zip(runs, runs[1:], strict=False)]


def busy(stamps: list[tuple[str, float, float, int]]) -> list[float]:
    """Per slot: time running experiments over the span from its first start to its last end."""
    return [sum(e - s for s, e in runs) / (runs[-1][1] - runs[0][0]) for runs in by_slot(stamps).values()]


def window(stamps: list[tuple[str, float, float, int]]) -> float:
    return max(s[2] for s in stamps) - min(s[1] for s in stamps)


# ---------------------------------------------------------------------------


def bench_overhead(base: Path, trials_per_slot: int = 40) -> None:
    print("\n== harness overhead per trial: no-op experiments, an instant agent ==")
    print("   gap = one slot's experiment end -> its next experiment start (median, p90);")
    print("   wall/trial = the loop's wall time / trials (the baseline included in the wall)")
    print(f"{'W':>3} {'trials':>6} {'gap median':>11} {'gap p90':>9} {'wall/trial':>11} {'trials/s':>9}")
    root = make_task(base / "noop", 0)
    for w in (1, 4, 16):
        n = trials_per_slot * w if w < 16 else 8 * w
        wall, stamps = run(root, f"noop-w{w}", w, n)
        g = sorted(gaps(stamps))
        print(f"{w:>3} {n:>6} {statistics.median(g) * 1000:>9.1f}ms {g[int(0.9 * len(g))] * 1000:>7.1f}ms "
              f"{wall / n * 1000:>9.1f}ms {n / wall:>9.1f}")


def bench_busy(base: Path, seconds: float = 1.0) -> None:
    think = seconds / 4
    print(f"\n== busy fraction per slot: {seconds:g} s experiments, an agent taking {think:g} s ==")
    print(f"{'W':>3} {'mode':<28} {'trials':>6} {'busy mean':>9} {'busy min':>9} {'gap median':>11}")
    root = make_task(base / "busy", seconds)
    for w, ahead_pipelined in ((1, 1), (4, 2)):
        n = 12 if w == 1 else 24
        for label, ahead in (("sequential (K=0)", 0), (f"pipelined (K={ahead_pipelined})", ahead_pipelined)):
            _, stamps = run(root, f"busy-w{w}-k{ahead}", w, n, think=think, ahead=ahead)
            b = busy(stamps)
            print(f"{w:>3} {label:<28} {n:>6} {statistics.fmean(b):>9.3f} {min(b):>9.3f} "
                  f"{statistics.median(gaps(stamps)) * 1000:>9.1f}ms")


def bench_throughput(base: Path, seconds: float = 1.0, rounds: int = 8, use_ray: bool = True) -> None:
    print(f"\n== throughput: {seconds:g} s experiments, {rounds} per worker, an instant agent ==")
    print("   throughput = trials / (last experiment end - first experiment start)")
    print(f"{'backend':<8} {'W':>3} {'trials':>6} {'trials/s':>9} {'ratio to W=1':>13} {'ratio / W':>10}")
    root = make_task(base / "thr", seconds)
    backends: list[tuple[str, object]] = [("local", None)]
    if use_ray:
        try:
            import ray
        except ImportError:
            print("(ray is not installed: pip install 'autoresearch[ray]'; the Ray rows are skipped)")
        else:
            from autoresearch.backends.ray import RayBackend

            ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
            backend = RayBackend(load_task(root), resources={"cpu": 1})
            run(root, "thr-ray-warmup", 4, 8, backend=backend)  # start the workers once
            backends.append(("ray", backend))
    for name, backend in backends:
        one = 0.0
        for w in (1, 2, 4):
            n = rounds * w
            _, stamps = run(root, f"thr-{name}-w{w}", w, n, backend=backend)
            rate = n / window(stamps)
            one = one or rate
            print(f"{name:<8} {w:>3} {n:>6} {rate:>9.3f} {rate / one:>13.2f} {rate / one / w:>10.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("which", nargs="?", default="all", choices=["overhead", "busy", "throughput", "all"])
    p.add_argument("--no-ray", action="store_true", help="skip the Ray rows of the throughput bench")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="ar-bench-") as tmp:
        base = Path(tmp)
        os.environ["BENCH_STAMPS"] = str(base / "stamps")
        (base / "stamps").mkdir()
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.1f}")
        if args.which in ("overhead", "all"):
            bench_overhead(base)
        if args.which in ("busy", "all"):
            bench_busy(base)
        if args.which in ("throughput", "all"):
            bench_throughput(base, use_ray=not args.no_ray)


if __name__ == "__main__":
    main()
