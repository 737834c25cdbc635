"""Benchmark the cpu-gpt template the way the harness runs it: setup, one training run with the
time budget, then the evaluation of record in a fresh process. Prints throughput, val_bpb and
how much of the trial's wall clock went to training.

    python bench/cpu_gpt.py [--budget 60] [--data DIR] [--seed 0]

The template is copied to a temporary folder, so the package's files stay clean; the data cache
is the usual one (${AUTORESEARCH_CACHE:-~/.cache/autoresearch}). Timings depend on what else the
machine is doing: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[1] / "src" / "autoresearch" / "templates" / "cpu-gpt"


def timed(cmd: list[str], cwd: Path, env: dict) -> tuple[str, float]:
    t0 = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result.stdout, elapsed


def figures(output: str) -> dict[str, float]:
    block = output[("\n" + output).rfind("\n---\n") :]
    return {k: float(v) for k, v in re.findall(r"^(\w+):\s+([-\d.eE+]+)\s*$", block, re.M)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=60, help="training seconds (default 60)")
    parser.add_argument("--data", help="a folder of text files instead of the standard library")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    with tempfile.TemporaryDirectory(prefix="cpu-gpt-bench-") as tmp:
        task = Path(tmp) / "task"
        shutil.copytree(TEMPLATE, task, ignore=shutil.ignore_patterns("__pycache__", "run"))
        env = {k: v for k, v in os.environ.items() if k != "AUTORESEARCH_DATA_DIR"}
        env.update(
            AUTORESEARCH_TIME_BUDGET=str(args.budget),
            AUTORESEARCH_SEED=str(args.seed),
            AUTORESEARCH_RUN_DIR=str(Path(tmp) / "run"),
            AUTORESEARCH_EVALUATE="python prepare.py --evaluate",  # as the harness: scored once
        )
        if args.data:
            env["AUTORESEARCH_DATA_DIR"] = str(Path(args.data).resolve())

        _, setup_s = timed([sys.executable, "prepare.py"], task, env)
        train_out, train_s = timed([sys.executable, "train.py"], task, env)
        eval_out, eval_s = timed([sys.executable, "prepare.py", "--evaluate"], task, env)
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    trained, evaluated = figures(train_out), figures(eval_out)
    training_s = trained["training_seconds"]
    rows = [
        ("budget", f"{args.budget:.0f} s on {cores} cores"),
        ("setup (cached)", f"{setup_s:.1f} s"),
        ("tokens_per_second", f"{trained.get('tokens_per_second', float('nan')):,.0f}"),
        ("num_steps", f"{trained['num_steps']:.0f}"),
        ("num_params_M", f"{trained['num_params_M']:.2f}"),
        ("peak_vram_mb", f"{trained['peak_vram_mb']:.0f} (peak RSS on the CPU)"),
        ("val_bpb (evaluate)", f"{evaluated['val_bpb']:.6f}"),
        ("test_bpb", f"{evaluated['test_bpb']:.6f}"),
        ("training_seconds", f"{training_s:.1f}"),
        ("total_seconds", f"{trained['total_seconds']:.1f} (train.py's own clock)"),
        ("train.py wall", f"{train_s:.1f} s (with interpreter start)"),
        ("evaluate wall", f"{eval_s:.1f} s"),
        (
            "training share",
            f"{training_s / trained['total_seconds']:.1%} of total_seconds, "
            f"{training_s / (train_s + eval_s):.1%} of train + evaluate wall",
        ),
        ("load average", f"{load_before:.1f} before, {load_after:.1f} after"),
    ]
    for name, value in rows:
        print(f"{name + ':':<22}{value}")
    if max(load_before, load_after) > (cores or 1) + 0.5:
        print("warning: the machine was busy; timings and val_bpb are lower than they can be")


if __name__ == "__main__":
    main()
