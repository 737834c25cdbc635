"""Measure the nanochat template on a GPU: tokens/s, MFU, peak memory, steps in the budget, val_bpb.

    python bench/nanochat_gpu.py --data DIR            # a local corpus: .txt or .parquet (`text`)
    python bench/nanochat_gpu.py                       # no corpus at hand: this Python's own text
    python bench/nanochat_gpu.py --deadline 540 --out "$OUT"   # one call on a lent machine
    AUTORESEARCH_SMOKE=1 python bench/nanochat_gpu.py  # the tiny configuration, to check the bench

Copies the template into a scratch task folder, prepares the corpus as its data, trains once for
the budget, scores the checkpoint as the harness would (`prepare.py --evaluate`, a fresh process)
and prints the figures. Needs no network. Without --data the corpus is the source and text files
of this Python installation (standard library and site-packages): good for throughput, MFU and
memory; its val_bpb does not compare with runs on fineweb-edu (the original's H100 baseline:
953 steps, 499.6M tokens, 39.8% MFU, 45 GB peak, val_bpb 0.9979).

Made for one call on a machine lent for minutes: every stage has a time limit drawn from
`--deadline` (the training budget is shortened when what is left cannot hold it plus compilation
and evaluation), each stage's output and the figures so far are written to `--out` as soon as
they exist (results.json, <stage>.log, summary.json), and the table is printed whatever failed.
A training run that dies before its first logged step with FlexAttention compiled is run again
once with the SDPA band mask instead (the figures say which ran).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[1] / "src" / "autoresearch" / "templates" / "nanochat"
FLEX_LINE = "flex = idx.is_cuda and torch.compiler.is_compiling()"
SETUP_ALLOWANCE = 150.0  # seconds beyond the budget a training run needs: start, compile, eval
EVALUATE_ALLOWANCE = 50.0
STEP_LINE = re.compile(r"^step (\d+) \| loss ([\d.]+) \|.*?\| (\d+) ms \| ([\d,]+) tok/s \| mfu ([\d.]+)%", re.M)


def python_corpus(dest: Path, limit_mb: float) -> Path:
    """One parquet file, a row per text file of this Python installation, up to `limit_mb`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts, size = [], 0
    roots = dict.fromkeys(Path(sysconfig.get_paths()[k]) for k in ("stdlib", "purelib", "platlib"))
    for root in roots:
        for path in sorted(root.rglob("*")):
            if size > limit_mb * 1e6:
                break
            if path.suffix not in (".py", ".txt", ".md", ".rst") or not path.is_file():
                continue
            text = path.read_text("utf-8", "replace")
            texts.append(text)
            size += len(text)
    dest.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": texts}), dest / "python.parquet")
    print(f"corpus: {len(texts)} files of this Python installation, {size / 1e6:.0f} MB of text", flush=True)
    return dest


class Bench:
    """The stages, their logs and the figures so far, written to `out` as they come."""

    def __init__(self, out: Path | None, deadline: float) -> None:
        self.out = out
        self.deadline = deadline
        self.results: dict = {"stages": {}}
        if out:
            out.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def save(self, **more: object) -> None:
        self.results.update(more)
        if self.out:
            tmp = self.out / "results.json.tmp"
            tmp.write_text(json.dumps(self.results, indent=1, sort_keys=True))
            os.replace(tmp, self.out / "results.json")

    def stage(self, name: str, args: list[str], cwd: Path, env: dict, limit: float) -> tuple[str, bool]:
        """Run one stage for at most `limit` seconds, echoing and logging its output as it comes;
        (output, whether it exited 0)."""
        print(f"\n=== {name}: python {' '.join(args)} (at most {limit:.0f} s)", flush=True)
        start, lines = time.monotonic(), []
        log = open(self.out / f"{name}.log", "w") if self.out else None  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, text=True, errors="replace",
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        killer = _killer(proc, limit)
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            lines.append(line)
            if log:
                log.write(line)
                log.flush()
        code = proc.wait()
        killer.cancel()
        if log:
            log.close()
        seconds = time.monotonic() - start
        timed_out = seconds >= limit - 0.5 and code != 0
        said = "timed out" if timed_out else f"exit {code}"
        self.results["stages"][name] = {"seconds": round(seconds, 1), "ok": code == 0, "end": said}
        self.save()
        if code != 0:
            print(f"--- {name} failed ({said} after {seconds:.0f} s)", flush=True)
        return "".join(lines), code == 0


def _killer(proc: subprocess.Popen, limit: float) -> threading.Timer:
    def kill() -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass

    timer = threading.Timer(max(1.0, limit), kill)
    timer.daemon = True
    timer.start()
    return timer


def figures(output: str) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in re.finditer(r"^(\w+):\s+(-?[\d.]+)\s*$", output, re.M)}


def table(bench: Bench, untimed: int, smoke: bool) -> None:
    """The figures found so far; n/a for the ones a failed stage did not give."""
    r = bench.results
    s = r.get("summary", {})
    got = r.get("figures", {})
    steps = s.get("num_steps")
    tok_s = None
    if steps and s.get("training_seconds") and steps > untimed:
        tok_s = s["total_tokens_M"] * 1e6 * (steps - untimed) / steps / s["training_seconds"]
        bench.save(tokens_per_second=round(tok_s))

    def show(value: object, fmt: str) -> str:
        return "n/a" if value is None else format(value, fmt)

    rows = [
        ("tokens_per_second", show(tok_s, ",.0f")),
        ("mfu_percent", show(s.get("mfu_percent"), ".2f")),
        ("peak_vram_mb", show(s.get("peak_vram_mb"), ".1f")),
        ("num_steps", show(steps, "d")),
        ("training_seconds", show(s.get("training_seconds"), ".1f")),
        ("total_tokens_M", show(s.get("total_tokens_M"), ".1f")),
        ("num_params_M", show(s.get("num_params_M"), ".1f")),
        ("val_bpb", show(s.get("val_bpb", got.get("val_bpb")), ".6f")),
        ("test_bpb", show(got.get("test_bpb"), ".6f")),
        *((f"{name}_seconds", show(v["seconds"], ".0f") + ("" if v["ok"] else f" ({v['end']})"))
          for name, v in r["stages"].items()),
    ]
    print(f"\n--- nanochat benchmark on {r.get('device', 'an unknown device')}"
          f" (budget {r.get('budget', 0):g} s, attention {r.get('attention', 'n/a')}{', smoke' if smoke else ''})")
    for name, value in rows:
        print(f"{name + ':':<20}{value}")
    if r.get("last_step"):
        last = r["last_step"]
        print(f"(last logged step {last['step']}: {last['ms']} ms, {last['tok_per_s']:,} tok/s, "
              f"mfu {last['mfu_percent']}%, loss {last['loss']})")
    if r.get("rejected"):
        print(f"evaluator: {r['rejected']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="folder of .txt / .parquet files")
    parser.add_argument("--budget", type=float, default=300, help="training seconds")
    parser.add_argument("--corpus-mb", type=float, default=120, help="size of the Python corpus")
    parser.add_argument("--workdir", type=Path, help="keep the task, cache and run folder here")
    parser.add_argument("--deadline", type=float, default=None,
                        help="seconds the whole bench may take (stages are cut to fit; default: none)")
    parser.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None,
                        help="write results.json, the stages' logs and summary.json here (default: $OUT)")
    args = parser.parse_args()

    bench = Bench(args.out, time.monotonic() + (args.deadline or 10**9))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="nanochat-bench-"))
    task = work / "task"
    shutil.rmtree(task, ignore_errors=True)
    shutil.rmtree(work / "run", ignore_errors=True)
    shutil.copytree(TEMPLATE, task, ignore=shutil.ignore_patterns("__pycache__"))
    smoke = os.environ.get("AUTORESEARCH_SMOKE") == "1"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "AUTORESEARCH_CACHE": str(work / "cache"),
           "AUTORESEARCH_RUN_DIR": str(work / "run"), "AUTORESEARCH_SEED": "0",
           "AUTORESEARCH_EVALUATE": "python prepare.py --evaluate"}  # scored once, by that stage, as in a loop
    untimed = int(subprocess.run(  # the steps run off the clock, as prepare.py counts them on this machine
        [sys.executable, "-c", "import prepare; print(prepare.UNTIMED_STEPS)"], cwd=task, env=env,
        capture_output=True, text=True, check=True).stdout)
    try:
        if smoke:
            prepare_args = ["prepare.py"]
        else:
            data = args.data or python_corpus(work / "corpus", args.corpus_mb)
            prepare_args = ["prepare.py", "--data", str(data.resolve())]
            toml = task / "autoresearch.toml"  # what `autoresearch init --data` does: the task file names the data
            toml.write_text(toml.read_text().replace('setup = "python prepare.py"',
                                                     f'setup = "python {" ".join(prepare_args)}"'))
        _, ok = bench.stage("prepare", prepare_args, task, env, bench.left())
        if not ok:
            return 1
        for attempt in ("flex", "sdpa"):
            budget = min(args.budget, bench.left() - SETUP_ALLOWANCE - EVALUATE_ALLOWANCE)
            if budget < 10:
                print(f"--- no time left for a training run ({bench.left():.0f} s)", flush=True)
                return 1
            if budget < args.budget:
                print(f"--- budget cut to {budget:.0f} s to fit --deadline", flush=True)
            env["AUTORESEARCH_TIME_BUDGET"] = f"{budget:.0f}"
            bench.save(budget=round(budget), attention=attempt)
            trained, ok = bench.stage(f"train-{attempt}", ["train.py"], task, env, bench.left() - EVALUATE_ALLOWANCE / 2)
            device = re.search(r"^device (.*?):", trained, re.M)
            if device and device[1] in ("cpu", "mps"):  # the band mask is all they run
                bench.save(attention="sdpa")
            bench.save(device=device[1] if device else "an unknown device",
                       figures={**bench.results.get("figures", {}), **figures(trained)})
            summary = work / "run" / "summary.json"
            if summary.exists():
                bench.save(summary=json.loads(summary.read_text()))
                if bench.out:
                    shutil.copy(summary, bench.out / "summary.json")
            logged = STEP_LINE.findall(trained)
            if logged:  # the figures of the last logged step, kept even if the run is cut short
                n, loss, ms, tok, mfu = logged[-1]
                bench.save(last_step={"step": int(n), "loss": float(loss), "ms": int(ms),
                                      "tok_per_s": int(tok.replace(",", "")), "mfu_percent": float(mfu)})
            started = bool(logged)
            script = task / "train.py"
            if ok or started or attempt == "sdpa" or FLEX_LINE not in script.read_text():
                break
            print("--- training died before its first step: once more with the SDPA band mask", flush=True)
            script.write_text(script.read_text().replace(FLEX_LINE, "flex = False"))
        if not ok:
            return 1
        scored, ok = bench.stage("evaluate", ["prepare.py", "--evaluate"], task, env, bench.left())
        bench.save(figures={**bench.results.get("figures", {}), **figures(scored)})
        rejected = re.search(r"^autoresearch_reject:.*$", scored, re.M)
        if rejected:
            bench.save(rejected=rejected[0])
        return 0 if ok and not rejected else 1
    finally:
        table(bench, untimed, smoke)
        print(f"(task, cache and run folder in {work}" + (f"; results in {bench.out})" if bench.out else ")"))


if __name__ == "__main__":
    sys.exit(main())
