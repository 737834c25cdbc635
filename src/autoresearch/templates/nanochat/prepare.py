"""
Data, tokenizer, clock and scoring of the nanochat task. Protected: the agent never edits it,
nor the modules it runs: corpus.py (download, documents, tokenizer training), hardware.py (device,
peak FLOP/s and memory) and evalguard.py (what keeps train.py's code, imported here to rebuild the
model, from writing the figures).

    python prepare.py                 download the shards, train the tokenizer, tokenize (idempotent)
    python prepare.py --data DIR      the same from local text files or .parquet (a `text` column);
                                      without --data, the --data of the task file's setup line
    python prepare.py --evaluate      score the checkpoint train.py left in AUTORESEARCH_RUN_DIR

Guarantees: a shard is renamed into the cache only once it is complete and readable, so a killed
download resumes where it stopped; every cached file is parquet, JSON or numpy (no pickle); the
score is computed here, from the checkpoint, by code the agent cannot change.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from corpus import (
    BOS,
    PrepareError,
    documents,
    download_shards,
    local_documents,
    save_array,
    smoke_documents,
    split_documents,
    token_byte_counts,
    tokenize,
    train_tokenizer,
    visible_files,
)
from evalguard import EARLY, Peeked, check_causal, import_train, moved, probe_points
from hardware import autocast, default_device
from safetensors.torch import load_model
from tokenizers import Tokenizer as HFTokenizer

# ----------------------------------------------------------------------------
# Fixed by the task: changing any of these changes what val_bpb means

SMOKE = os.environ.get("AUTORESEARCH_SMOKE") == "1"  # tiny data and model, for CI
MAX_SEQ_LEN = 128 if SMOKE else 2048
VOCAB_SIZE = 512 if SMOKE else 8192
# 40 x 524,288 tokens; a CPU or a small card may lower it (figures then compare only among themselves)
EVAL_TOKENS = int(os.environ.get("AUTORESEARCH_EVAL_TOKENS") or (8192 if SMOKE else 40 * 524_288))
TIME_BUDGET = float(os.environ.get("AUTORESEARCH_TIME_BUDGET") or (10 if SMOKE else 300))
if SMOKE:  # the smoke model is tiny: 10 s trains it, whatever budget the task file gives the real one
    TIME_BUDGET = min(TIME_BUDGET, 10.0)
# the first steps compile kernels (on CUDA: nothing is compiled on CPU or MPS, one warm-up step)
UNTIMED_STEPS = (2 if SMOKE else 10) if torch.cuda.is_available() else 1
# the experiment's wall time, which the harness gives the evaluator: read when this file is loaded,
# before train.py's code (imported to rebuild the model) can change the environment
EXPERIMENT_SECONDS = float(os.environ["AUTORESEARCH_EXPERIMENT_SECONDS"]) if os.environ.get(
    "AUTORESEARCH_EXPERIMENT_SECONDS") else None
RUN_DIR = Path(os.environ.get("AUTORESEARCH_RUN_DIR") or "run")

# ----------------------------------------------------------------------------
# Where the text comes from

# fineweb-edu, shuffled and cut into ~250M-character parquet shards numbered 0..1822
BASE_URL = os.environ.get("AUTORESEARCH_DATA_URL") or (
    "https://huggingface.co/datasets/karpathy/fineweb-edu-100b-shuffle/resolve/main"
)
MAX_SHARD = 1822
VAL_SHARD = MAX_SHARD  # pinned, so every run is scored on the same text
TEST_SHARD = MAX_SHARD - 1  # the sealed holdout: never shown to an agent
NUM_TRAIN_SHARDS = 10  # ~600M tokens, more than 300 s on an H100 consumes
HOLDOUT_TOKENS = 40 * 524_288 + 1  # kept from each of the val and test shards
TOKENIZER_CHARS = 500_000_000  # training text the BPE sees; plenty for 8192 tokens
DOC_CHARS = 10_000  # per document, for the BPE only: long documents would dominate the counts

CACHE = Path(os.environ.get("AUTORESEARCH_CACHE") or Path.home() / ".cache" / "autoresearch")
SHARD_DIR = CACHE / "nanochat" / "shards"  # raw downloads, shared by every preparation


def data_dir_for(data: Path | None) -> Path:
    """Where the tokenizer and token streams of a source live: one folder per source, so tasks
    with different data can share the cache."""
    if SMOKE:
        return CACHE / "nanochat" / "smoke"
    if data is None:
        return CACHE / "nanochat" / "prepared"
    # a folder of the task (a relative path) lies elsewhere in each worktree: named by its files
    named = "".join(f"{p.relative_to(data)}\t{p.stat().st_size}\n" for p in visible_files(data)) if (
        not data.is_absolute()) else str(data.resolve())
    digest = hashlib.sha1(named.encode()).hexdigest()[:12]
    return CACHE / "nanochat" / f"local-{digest}"


def task_data(task_file: Path = Path("autoresearch.toml")) -> Path | None:
    """The --data folder on the setup line of the task file (`autoresearch init --data` writes
    it there), if any: training and the evaluation then read what setup prepared."""
    try:
        text = task_file.read_text()
    except OSError:
        return None
    try:
        import tomllib
        setup = tomllib.loads(text).get("setup") or ""
    except Exception:  # Python 3.10 (no tomllib) or a task file being edited: the plain line
        found = re.search(r"^setup\s*=\s*([\"'])(.*)\1", text, re.M)
        setup = found[2] if found else ""
    try:
        words = shlex.split(str(setup))
    except ValueError:
        return None
    found = None  # as argparse reads it: `--data DIR` or `--data=DIR`, the last one given
    for word, after in zip(words, [*words[1:], None], strict=True):
        found = after if word == "--data" and after is not None else word[7:] if word.startswith("--data=") else found
    return Path(found) if found else None


DATA_DIR = data_dir_for(task_data())

if SMOKE:  # tiny tensors: a second thread costs more than it gives, most of all on a busy CI box
    torch.set_num_threads(1)


# ----------------------------------------------------------------------------
# Preparation: everything lands in DATA_DIR, meta.json last, so its presence means complete


def tokenizer_text(parts: list) -> Iterator[str]:
    left = TOKENIZER_CHARS
    for part in parts:
        for doc in documents(part):
            yield doc[:DOC_CHARS]
            left -= min(len(doc), DOC_CHARS)
            if left <= 0:
                return


def gather(data: Path | None, num_shards: int, workers: int) -> tuple[list, list, list]:
    """(train parts, val part, test part) of the chosen source."""
    if SMOKE:
        train, val, test = split_documents(smoke_documents())
        return [train], val, test
    if data is not None:
        if not data.is_dir():
            raise PrepareError(f"--data {data}: not a folder")
        train, val, test = split_documents(local_documents(data))
        return [train], val, test
    indices = [*range(num_shards), VAL_SHARD, TEST_SHARD]
    print(f"downloading {len(indices)} shards from {BASE_URL} to {SHARD_DIR}", flush=True)
    paths = download_shards(indices, SHARD_DIR, BASE_URL, workers)
    return paths[:-2], paths[-2], paths[-1]


def source_key(data: Path | None, num_shards: int) -> str:
    if SMOKE:
        return "smoke"
    if data is None:
        return f"{BASE_URL} x {num_shards}"
    files = [p.stat() for p in visible_files(data)]
    latest = max((s.st_mtime for s in files), default=0)
    return f"{data.resolve()} ({len(files)} files, {sum(s.st_size for s in files)} bytes, {latest:.0f})"


def prepare(data: Path | None = None, num_shards: int = NUM_TRAIN_SHARDS, workers: int = 8) -> None:
    """Fill the source's data folder with its tokenizer and token streams, unless already done."""
    out = data_dir_for(data)
    if out != DATA_DIR:
        print(
            f"note: autoresearch.toml's setup line names other data; train.py will read {DATA_DIR}"
        )
    key, meta_path = source_key(data, num_shards), out / "meta.json"
    if meta_path.exists() and json.loads(meta_path.read_text()).get("source") == key:
        print(f"data ready in {out}")
        return
    start = time.time()
    train, val, test = gather(data, num_shards, workers)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():  # prepared before with other settings: start clean
        old.unlink()
    tok = train_tokenizer(tokenizer_text(train), VOCAB_SIZE)
    tok.save(str(out / "tokenizer.json"))
    save_array(out / "token_bytes.npy", token_byte_counts(tok, VOCAB_SIZE))
    print(f"tokenizer: {tok.get_vocab_size()} tokens ({time.time() - start:.0f}s)", flush=True)
    counts = {}
    for n, part in enumerate(train):
        save_array(out / f"train_{n:05d}.npy", stream := tokenize(tok, documents(part)))
        counts[f"train_{n:05d}"] = len(stream)
        print(
            f"  train part {n}: {len(stream) / 1e6:.1f}M tokens ({time.time() - start:.0f}s)",
            flush=True,
        )
    for name, part in (("val", val), ("test", test)):
        save_array(out / f"{name}.npy", stream := tokenize(tok, documents(part), HOLDOUT_TOKENS))
        counts[name] = len(stream)
    # a scored row is MAX_SEQ_LEN + 1 tokens; the causality probe reads two rows of val
    if min(counts["val"], counts["test"]) < 2 * MAX_SEQ_LEN:  # (not marked prepared: a retry builds again)
        raise PrepareError(
            f"the held-out splits hold {counts['val']} (val) and {counts['test']} (test) tokens; "
            f"scoring needs at least 2 x MAX_SEQ_LEN ({2 * MAX_SEQ_LEN}) in each: add more text"
        )
    meta = {"source": key, "vocab_size": VOCAB_SIZE, "seq_len": MAX_SEQ_LEN, "tokens": counts}
    (out / "meta.json.tmp").write_text(json.dumps(meta, indent=1))
    os.replace(out / "meta.json.tmp", meta_path)
    train_tokens = sum(v for k, v in counts.items() if k.startswith("train"))
    if min(counts["val"], counts["test"]) <= EVAL_TOKENS:
        print(
            f"note: the held-out splits hold fewer than EVAL_TOKENS ({EVAL_TOKENS}) tokens; "
            "scores use what there is"
        )
    print(
        f"prepared {train_tokens / 1e6:.1f}M training tokens, {counts['val']} val, "
        f"{counts['test']} test in {out} ({time.time() - start:.0f}s)"
    )


# ----------------------------------------------------------------------------
# What train.py reads: token streams, batches, the tokenizer, the device, the GPU's peak


def load_split(name: str) -> np.ndarray:
    if not (DATA_DIR / "meta.json").exists():
        raise PrepareError(f"no prepared data in {DATA_DIR}: run `python prepare.py` first")
    return np.load(DATA_DIR / f"{name}.npy", mmap_mode="r", allow_pickle=False)


def train_batches(batch_size: int, seq_len: int, device: torch.device, seed: int = 0):
    """Endless (inputs, targets) pairs of random windows of the training streams. Sampled with
    replacement, so there is no epoch to track; BOS marks where a window crosses documents."""
    load_split("val")  # fails clearly when nothing is prepared
    shards = [
        np.load(p, mmap_mode="r", allow_pickle=False) for p in sorted(DATA_DIR.glob("train_*.npy"))
    ]
    shards = [s for s in shards if len(s) > seq_len]
    if not shards:
        raise PrepareError(f"the training text in {DATA_DIR} is shorter than one sequence")
    starts_below = np.array([len(s) - seq_len for s in shards])
    weights = starts_below / starts_below.sum()
    rng = np.random.default_rng(seed)
    pin = device.type == "cuda"
    while True:
        which = rng.choice(len(shards), size=batch_size, p=weights)
        starts = rng.integers(0, starts_below[which])
        rows = np.stack(
            [shards[w][s : s + seq_len + 1] for w, s in zip(which, starts, strict=True)]
        )
        batch = torch.from_numpy(rows.astype(np.int64))
        batch = (batch.pin_memory() if pin else batch).to(device, non_blocking=pin)
        yield batch[:, :-1], batch[:, 1:]


class Tokenizer:
    """The trained tokenizer, for code that reads or writes text (samples, inspection)."""

    def __init__(self, data_dir: Path = DATA_DIR):
        self.hf = HFTokenizer.from_file(str(data_dir / "tokenizer.json"))
        self.hf.encode_special_tokens = True  # the text "<|bos|>" is text, as in the token streams
        self.bos_id = self.hf.token_to_id(BOS)
        self.vocab_size = VOCAB_SIZE

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode(ids, skip_special_tokens=False)


# ----------------------------------------------------------------------------
# Scoring: bits per byte on held-out text, and a check that the model cannot peek


@torch.no_grad()
def evaluate_bpb(model: torch.nn.Module, split: str = "val", batch_size: int = 8, probes: int = 0) -> float:
    """Bits per byte on the first EVAL_TOKENS of a held-out split: the summed loss in nats of every
    predicted token over ln 2 times their summed raw bytes. Tokens of 0 bytes (BOS) count in
    neither sum. Bytes, unlike tokens, do not depend on the vocabulary, so tokenizers compare.
    With `probes`, that many scored batches, drawn at random, are checked for peeking
    (evalguard.check_causal raises Peeked)."""
    device = next(model.parameters()).device
    tokens, T = load_split(split), MAX_SEQ_LEN
    token_bytes = torch.from_numpy(np.load(DATA_DIR / "token_bytes.npy", allow_pickle=False)).to(
        device
    )
    rows = (min(EVAL_TOKENS, len(tokens) - 1)) // T
    # at most 32 rows a pass: 128 x 2048 x 8192 fp32 logits are 2^31 elements (8 GiB each, at the
    # edge of 32-bit indexing) and the softcap and the loss make three more; the sums do not change
    batch_size = max(1, min(batch_size, 32))
    if rows < 1:
        raise PrepareError(f"the {split} split holds fewer than {T + 1} tokens")
    model.eval()
    nats, nbytes = 0.0, 0  # summed in float64 on the host: MPS has no float64
    probed = {i * batch_size for i in probe_points(-(-rows // batch_size), probes)} if probes else set()

    def logits_of(x: torch.Tensor) -> torch.Tensor:
        with autocast(device):
            return model(x)

    for row in range(0, rows, batch_size):
        n = min(batch_size, rows - row)
        chunk = torch.from_numpy(tokens[row * T : (row + n) * T + 1].astype(np.int64)).to(device)
        x, y = chunk[:-1].view(n, T).clone(), chunk[1:].view(n, T)  # a copy: a view's ._base holds the answers
        logits = logits_of(x)
        if type(logits) is not torch.Tensor:  # a subclass could redefine the loss computed below
            raise PrepareError(f"forward(idx) must return a plain torch.Tensor; got {type(logits).__name__}")
        if logits.shape[:2] != (n, T) or logits.shape[2] < VOCAB_SIZE:
            raise PrepareError(
                f"forward(idx) must return logits (B, T, {VOCAB_SIZE}); got {tuple(logits.shape)}"
            )
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")
        counted = token_bytes[y.flatten()]
        nats += loss.masked_fill(counted == 0, 0.0).sum().item()  # (inf x 0 would be nan)
        nbytes += counted.sum().item()
        if row in probed:  # as many rows from the other half of the split: real text, the same shape
            other = (row + rows // 2) % max(1, rows - n + 1)
            elsewhere = torch.from_numpy(tokens[other * T : (other + n) * T].astype(np.int64)).to(device)
            check_causal(lambda z: logits_of(z).float(), x, logits.float(), elsewhere.view(n, T))
    return nats / (math.log(2) * nbytes)


@torch.no_grad()
def causality_problem(model: torch.nn.Module, tol: float = 1e-3) -> str | None:
    """What lets the prediction at a position see later tokens or other rows of the batch (the
    answers it is scored on), or None. Identical kernels on identical shapes give identical
    values, so an honest model differs by exactly 0; `tol` (evalguard.moved's measure) only
    absorbs nondeterministic kernels."""
    device, T = next(model.parameters()).device, MAX_SEQ_LEN
    base = torch.from_numpy(load_split("val")[: 2 * T].astype(np.int64)).view(2, T)
    gen = torch.Generator().manual_seed(0)

    def logits(x: torch.Tensor) -> torch.Tensor:
        with autocast(device):
            return model(x.to(device)).float()

    ref = logits(base)
    for t in (0, T // 3, T // 2, T - 2):
        x = base.clone()
        x[:, t + 1 :] = torch.randint(VOCAB_SIZE, (2, T - t - 1), generator=gen)
        diff = moved(logits(x)[:, : t + 1], ref[:, : t + 1])
        if not diff <= tol:
            return f"predictions at positions <= {t} moved by {diff:.3g} when only later tokens changed"
    x = base.clone()
    x[1] = torch.randint(VOCAB_SIZE, (T,), generator=gen)
    diff = moved(logits(x)[:1], ref[:1])
    if not diff <= tol:
        return f"predictions of one sequence moved by {diff:.3g} when another sequence of the batch changed"
    return None


# informational figures train.py leaves in summary.json, echoed under the scores
ECHOED = {
    "training_seconds": ".1f",
    "peak_vram_mb": ".1f",
    "mfu_percent": ".2f",
    "total_tokens_M": ".1f",
    "num_steps": "d",
    "num_params_M": ".1f",
    "depth": "d",
}


def evaluate_checkpoint(run_dir: Path = RUN_DIR) -> int:
    """Rebuild the model train.py saved, refuse it if it can peek, print val_bpb and test_bpb.
    train.py's code runs in this process from here on: evalguard.py's verdict has the last word."""
    config_path, weights = run_dir / "model_config.json", run_dir / "model.safetensors"
    if not (config_path.exists() and weights.exists()):
        raise PrepareError(
            f"no checkpoint in {run_dir}: train.py saves model.safetensors and model_config.json there"
        )
    train, verdict = import_train(Path.cwd() / "train.py", sys.modules[__name__])
    try:
        lines = score(train, run_dir, json.loads(config_path.read_text()))
    except SystemExit as e:  # with success, train.py's own: figures it printed may stand
        if e.code not in (0, None):
            raise
        lines = [EARLY]
    verdict(lines)


def score(train, run_dir: Path, config: dict) -> list[str]:
    """The summary block of the checkpoint in `run_dir`, or a reject line."""
    model = train.build_model(config)
    load_model(model, str(run_dir / "model.safetensors"))  # strict: every tensor must match
    model.to(default_device())
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    claimed, steps = summary.get("training_seconds"), summary.get("num_steps")
    # training stops at the first step that ends past the budget: one step over (twice the mean,
    # for a busy machine) is honest, and on a CPU or a Mac a step takes seconds
    step = claimed / max(1, steps - UNTIMED_STEPS) if isinstance(claimed, (int, float)) and isinstance(
        steps, int) and steps > 0 else 0.0
    if isinstance(claimed, (int, float)) and claimed > TIME_BUDGET * 1.05 + 1 + 2 * step:
        return [f"autoresearch_reject: trained {claimed:.1f} s, over the {TIME_BUDGET:g} s time budget"]
    allowed = TIME_BUDGET * 1.25 + 150  # + start-up, the untimed compiling steps, the final evaluation
    if EXPERIMENT_SECONDS is not None and EXPERIMENT_SECONDS > allowed:
        return [f"autoresearch_reject: the experiment ran {EXPERIMENT_SECONDS:.0f} s, more than the "
                f"{TIME_BUDGET:g} s time budget allows ({allowed:.0f} s with start-up and evaluation)"]
    problem = causality_problem(model)
    if problem:
        return [f"autoresearch_reject: model is not causal: {problem}"]
    batch_size = int(config.get("device_batch_size", 8))
    try:  # a few scored batches of each split probed again, indistinguishable from the rest
        scores = {split: evaluate_bpb(model, split, batch_size, probes=4) for split in ("val", "test")}
    except Peeked as e:
        return [f"autoresearch_reject: model is not causal: {e}"]
    lines = ["---", *(f"{split + '_bpb:':<18}{bpb:.6f}" for split, bpb in scores.items())]
    for name, fmt in ECHOED.items():
        if isinstance(value := summary.get(name), (int, float)):
            lines.append(f"{name + ':':<18}{int(value) if fmt == 'd' else value:{fmt}}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description="Data and scoring of the nanochat task.")
    parser.add_argument("--evaluate", action="store_true", help="score the checkpoint in AUTORESEARCH_RUN_DIR")
    parser.add_argument(
        "--data", type=Path, help="local text files (.txt, .md, ...) or .parquet; default: the setup line's --data"
    )
    parser.add_argument("--num-shards", type=int, default=NUM_TRAIN_SHARDS, help="training shards to download")
    parser.add_argument("--workers", type=int, default=8, help="parallel downloads")
    args = parser.parse_args()
    if not 1 <= args.num_shards <= TEST_SHARD:  # (the held-out shards are the last two: never trained on)
        parser.error(f"--num-shards must be 1 to {TEST_SHARD}, not {args.num_shards}")
    if args.workers < 1:
        parser.error(f"--workers must be 1 or more, not {args.workers}")
    data = args.data
    if SMOKE and data is not None:
        print(f"prepare.py: smoke mode makes its own data; --data {data} is ignored", file=sys.stderr)
    elif data is None and not args.evaluate and (data := task_data()) is not None:
        print(f"data: --data {data}, from the setup line of autoresearch.toml")
    try:
        if args.evaluate:
            return evaluate_checkpoint(RUN_DIR)
        prepare(data, args.num_shards, args.workers)
        return 0
    except PrepareError as e:
        print(f"prepare.py: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
