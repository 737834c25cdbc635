"""Measure the nanochat template on a GPU: tokens/s, MFU, peak memory, steps in the budget, val_bpb.

    python bench/nanochat_gpu.py --data DIR            # a local corpus: .txt or .parquet (`text`)
    python bench/nanochat_gpu.py                       # no corpus at hand: this Python's own text
    AUTORESEARCH_SMOKE=1 python bench/nanochat_gpu.py  # the tiny configuration, to check the bench

Copies the template into a scratch task folder, prepares the corpus as its data, trains once for
the budget, scores the checkpoint as the harness would (`prepare.py --evaluate`, a fresh process)
and prints the figures. Needs no network. Without --data the corpus is the source and text files
of this Python installation (standard library and site-packages): good for throughput, MFU and
memory; its val_bpb does not compare with runs on fineweb-edu (the original's H100 baseline:
953 steps, 499.6M tokens, 39.8% MFU, 45 GB peak, val_bpb 0.9979).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[1] / "src" / "autoresearch" / "templates" / "nanochat"


def python_corpus(dest: Path, limit_mb: float) -> Path:
    """One parquet file, a row per text file of this Python installation, up to `limit_mb`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts, size = [], 0
    roots = dict.fromkeys(Path(sysconfig.get_paths()[k]) for k in ("stdlib", "purelib", "platlib"))
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.suffix not in (".py", ".txt", ".md", ".rst") or not path.is_file():
                continue
            text = path.read_text("utf-8", "replace")
            texts.append(text)
            size += len(text)
            if size > limit_mb * 1e6:
                break
    dest.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": texts}), dest / "python.parquet")
    print(f"corpus: {len(texts)} files of this Python installation, {size / 1e6:.0f} MB of text")
    return dest


def step(name: str, args: list[str], cwd: Path, env: dict) -> tuple[str, float]:
    """Run one stage, echoing its output as it comes; (output, seconds)."""
    print(f"\n=== {name}: python {' '.join(args)}", flush=True)
    start, lines = time.time(), []
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    for line in proc.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    if proc.wait() != 0:
        sys.exit(f"{name} failed (exit {proc.returncode})")
    return "".join(lines), time.time() - start


def figures(output: str) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in re.finditer(r"^(\w+):\s+(-?[\d.]+)\s*$", output, re.M)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="folder of .txt / .parquet files")
    parser.add_argument("--budget", type=float, default=300, help="training seconds")
    parser.add_argument("--corpus-mb", type=float, default=300, help="size of the Python corpus")
    parser.add_argument("--workdir", type=Path, help="keep the task, cache and run folder here")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="nanochat-bench-"))
    task = work / "task"
    shutil.rmtree(task, ignore_errors=True)
    shutil.copytree(TEMPLATE, task, ignore=shutil.ignore_patterns("__pycache__"))
    env = {
        **os.environ,
        "AUTORESEARCH_CACHE": str(work / "cache"),
        "AUTORESEARCH_RUN_DIR": str(work / "run"),
        "AUTORESEARCH_SEED": "0",
        "AUTORESEARCH_TIME_BUDGET": str(args.budget),
    }
    smoke = env.get("AUTORESEARCH_SMOKE") == "1"
    if smoke:
        prepare_args = ["prepare.py"]
    else:
        data = args.data or python_corpus(work / "corpus", args.corpus_mb)
        prepare_args = ["prepare.py", "--data", str(data.resolve())]
        # what `autoresearch init --data` does: the task file names the data
        toml = task / "autoresearch.toml"
        toml.write_text(
            toml.read_text().replace(
                'setup = "python prepare.py"', f'setup = "python {" ".join(prepare_args)}"'
            )
        )

    _, prepare_s = step("prepare", prepare_args, task, env)
    trained, train_s = step("train", ["train.py"], task, env)
    scored, evaluate_s = step("evaluate", ["prepare.py", "--evaluate"], task, env)

    summary = json.loads((work / "run" / "summary.json").read_text())
    got = {**figures(trained), **figures(scored)}
    device = re.search(r"^device (.*?):", trained, re.M)
    untimed = 2 if smoke else 10  # prepare.UNTIMED_STEPS: steps run off the clock
    steps = summary["num_steps"]
    timed_tokens = summary["total_tokens_M"] * 1e6 * (steps - untimed) / steps
    print(f"\n--- nanochat benchmark on {device[1] if device else 'an unknown device'}")
    rows = [
        ("tokens_per_second", f"{timed_tokens / summary['training_seconds']:,.0f}"),
        ("mfu_percent", f"{summary['mfu_percent']:.2f}"),
        ("peak_vram_mb", f"{summary['peak_vram_mb']:.1f}"),
        ("num_steps", f"{steps}"),
        ("training_seconds", f"{summary['training_seconds']:.1f}"),
        ("total_tokens_M", f"{summary['total_tokens_M']:.1f}"),
        ("num_params_M", f"{summary['num_params_M']:.1f}"),
        ("val_bpb", f"{got['val_bpb']:.6f}"),
        ("test_bpb", f"{got['test_bpb']:.6f}"),
        ("prepare_seconds", f"{prepare_s:.0f}"),
        ("train_wall_seconds", f"{train_s:.0f}"),
        ("evaluate_seconds", f"{evaluate_s:.0f}"),
    ]
    for name, value in rows:
        print(f"{name + ':':<20}{value}")
    print(f"(task, cache and run folder in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
