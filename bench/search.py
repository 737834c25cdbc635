"""Benchmark of the search agent's samplers at equal numbers of trials. Prints figures.

    python bench/search.py synthetic [--seeds 10] [--trials 30] [--samplers tpe,cmaes,random]
    python bench/search.py cpu-gpt [--seeds 1] [--trials 8] [--budget 20] [--samplers ...]
    python bench/search.py demo [--trials N] [--budget S]

synthetic: a noisy function of eight constants (floats on log and linear scales, ints, a
boolean, one interaction) whose optimum is known, run through the real loop (real git
repository, a subprocess per trial). For each sampler and seed: the best measured loss and
the true (noise-free) loss of the kept best; mean and standard deviation over the seeds.
`refused`: the sampler's asks per proposal that gave no measurable untried change. A sampler
ending in `/refuse` refuses a float step under MIN_MOVE instead of widening it (the agent before
widening), for comparison: `--samplers tpe,tpe/refuse`.
A sampler may carry the agent's `changes` policy after a colon: `tpe:all` moves every constant
at once, `random:all` is plain random search.

cpu-gpt: the cpu-gpt task with a short budget, the same comparison (slow: a trial takes the
budget plus about ten seconds on two cores).

demo: `autoresearch demo` as a user runs it; its improvement over its baseline.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")

from autoresearch.agents import search as search_mod  # noqa: E402
from autoresearch.agents.search import SearchAgent, widen  # noqa: E402
from autoresearch.ledger import Ledger  # noqa: E402
from autoresearch.loop import Loop, Options  # noqa: E402
from autoresearch.session import open_session  # noqa: E402
from autoresearch.task import load_task  # noqa: E402

SYNTHETIC = '''\
"""A synthetic task: a noisy function of eight constants whose optimum is known."""
import math
import os
import random

LEARNING_RATE = 0.01
WEIGHT_DECAY = 0.1
WARMUP_RATIO = 0.3  # search: 0..0.5
DEPTH = 4
WIDTH = 96
DROPOUT = 0.2  # search: 0..0.5
BETA2 = 0.95  # search: 0.9..0.999
USE_NORM = False

# the best learning rate falls with depth (0.004 at depth 6): one interaction
lr_best = 0.004 * 6 / DEPTH
true_loss = (1.0
             + 0.8 * math.log10(LEARNING_RATE / lr_best) ** 2
             + 0.3 * math.log10(WEIGHT_DECAY / 0.05) ** 2
             + 2.0 * (WARMUP_RATIO - 0.1) ** 2
             + 0.05 * (DEPTH - 6) ** 2
             + 0.5 * math.log2(WIDTH / 150) ** 2
             + 1.5 * DROPOUT ** 2
             + 20.0 * (BETA2 - 0.99) ** 2
             + (0.0 if USE_NORM else 0.2))
seed = f"{os.environ['AUTORESEARCH_SEED']}-{os.environ['AUTORESEARCH_TRIAL']}"
loss = true_loss + random.Random(seed).gauss(0, 0.02)
print(f"loss: {loss:.6f}")
print(f"true_loss: {true_loss:.6f}")
'''

TOML = '''\
name = "synthetic"
editable = ["exp.py"]
command = "python exp.py"
time_budget = 5
timeout = 30

[metric]
name = "loss"
goal = "minimize"
record = ["true_loss"]
'''

GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, env={**os.environ, **GIT_ENV}, check=True,
                   capture_output=True)


def synthetic_repo(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "exp.py").write_text(SYNTHETIC)
    (root / "program.md").write_text("Minimise loss.\n")
    (root / "autoresearch.toml").write_text(TOML)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "synthetic task")
    return root


def run(root: Path, sampler: str, seed: int, trials: int) -> dict[str, float]:
    """The real loop with the search agent; the baseline and best figures of the tag."""
    sampler, refuse = sampler.removesuffix("/refuse"), sampler.endswith("/refuse")
    name, _, changes = sampler.partition(":")
    task = load_task(root)
    agent = SearchAgent(task, sampler=name, seed=seed, changes=changes or None)
    session = open_session(task, "bench")
    if refuse:  # a step under MIN_MOVE is refused, as before widening
        search_mod.widen = lambda *args: None  # type: ignore[assignment]
    try:
        Loop(session, agent, Options(trials=trials, seed=seed)).run()
    finally:
        session.close()
        search_mod.widen = widen
    led = Ledger.read(root, "bench")
    try:
        rows = led.trials()
        best = led.best()
    finally:
        led.close()
    assert best is not None
    return {"baseline": rows[0].metric or 0.0, "best": best.metric or 0.0,
            "refused": agent.refused / max(1, agent.asks - agent.refused),  # per proposal
            "best_true": best.figures.get("true_loss", best.metric or 0.0),
            "kept": sum(t.status.value == "keep" for t in rows[1:]),
            "failed": sum(t.status.value not in ("keep", "discard") for t in rows[1:])}


def mean_sd(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.4f}" if values else "-"
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


def table(results: dict[str, list[dict[str, float]]], keys: list[str]) -> None:
    print(f"{'sampler':<12}  " + "  ".join(f"{k:<17}" for k in keys) + "  runs")
    for sampler, runs in results.items():
        cells = [mean_sd([r[k] for r in runs]) for k in keys]
        print(f"{sampler:<12}  " + "  ".join(f"{c:<17}" for c in cells) + f"  {len(runs)}")


def bench_synthetic(args: argparse.Namespace) -> None:
    samplers = args.samplers.split(",")
    results: dict[str, list[dict[str, float]]] = {s: [] for s in samplers}
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        for seed in range(args.seeds):
            for s in samplers:
                root = synthetic_repo(Path(tmp) / f"{s.replace(':', '-')}-{seed}")
                results[s].append(run(root, s, seed, args.trials))
            print(f"seed {seed} done ({time.monotonic() - start:.0f} s)", file=sys.stderr, flush=True)
    print(f"synthetic task, {args.trials} trials after the baseline, {args.seeds} seeds "
          f"(true optimum 1.0, noise sd 0.02), {time.monotonic() - start:.0f} s:")
    table(results, ["baseline", "best", "best_true", "kept", "refused"])


def bench_cpugpt(args: argparse.Namespace) -> None:
    from autoresearch.demo import create

    samplers = args.samplers.split(",")
    results: dict[str, list[dict[str, float]]] = {s: [] for s in samplers}
    start = time.monotonic()
    base = Path(args.dir or tempfile.mkdtemp(prefix="bench-cpugpt-"))
    for seed in range(args.seeds):
        for s in samplers:
            root = create(base / f"{s.replace(':', '-')}-{seed}", args.budget)
            results[s].append(run(root, s, seed, args.trials))
            r = results[s][-1]
            print(f"{s} seed {seed}: baseline {r['baseline']:.4f} best {r['best']:.4f} "
                  f"({time.monotonic() - start:.0f} s)", file=sys.stderr, flush=True)
    print(f"cpu-gpt, budget {args.budget:g} s, {args.trials} trials after the baseline, "
          f"{args.seeds} seed(s), {time.monotonic() - start:.0f} s (folders in {base}):")
    table(results, ["baseline", "best", "kept", "failed"])


def bench_demo(args: argparse.Namespace) -> None:
    base = Path(args.dir or tempfile.mkdtemp(prefix="bench-demo-"))
    cmd = [sys.executable, "-m", "autoresearch", "demo", str(base / "demo")]
    if args.trials is not None:
        cmd += ["--trials", str(args.trials)]
    if args.budget is not None:
        cmd += ["--budget", f"{args.budget:g}"]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:])
        raise SystemExit(f"the demo failed (exit {proc.returncode})")
    led = Ledger.read(base / "demo", "demo")
    try:
        rows = led.trials()
        best = led.best()
    finally:
        led.close()
    assert best is not None and rows[0].metric
    gain = 100 * (rows[0].metric - (best.metric or 0)) / rows[0].metric
    print(f"demo ({' '.join(cmd[3:])}): {seconds:.0f} s in all, {len(rows) - 1} trials, "
          f"{sum(t.status.value == 'keep' for t in rows[1:])} kept; val_bpb baseline "
          f"{rows[0].metric:.4f} -> best {best.metric:.4f} ({gain:.2f}% better; trial {best.number}: "
          f"{best.description})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("synthetic")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--samplers", default="tpe,cmaes,random")
    p = sub.add_parser("cpu-gpt")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--budget", type=float, default=20.0)
    p.add_argument("--samplers", default="tpe,cmaes,random")
    p.add_argument("--dir", default=None, help="where to keep the task folders (default: a temporary one)")
    p = sub.add_parser("demo")
    p.add_argument("--trials", type=int, default=None)
    p.add_argument("--budget", type=float, default=None)
    p.add_argument("--dir", default=None)
    args = parser.parse_args()
    {"synthetic": bench_synthetic, "cpu-gpt": bench_cpugpt, "demo": bench_demo}[args.what](args)


if __name__ == "__main__":
    main()
