"""
Data and evaluation for the cpu-gpt task. This file is protected: agents do not change it.

    python prepare.py                  build the byte corpus once (idempotent, safe to rerun)
    python prepare.py --data DIR       build it from a folder of text files instead
    python prepare.py --evaluate       score the checkpoint train.py left in the run folder

The corpus is the source code of the Python standard library that runs this file (or the text
files under DIR, also taken from AUTORESEARCH_DATA_DIR). Files are split BY FILE into train, val
and test by a hash of their relative path, so the split does not depend on the order the disk
lists them in, and no file is seen in two splits (a folder of one or two files, such as
tiny-shakespeare's input.txt, is cut instead: each file's first 80% trains, at a line end, the
next 10% is val, the last 10% test). Each split is one raw uint8 array on disk next
to a JSON manifest holding its sha256; every load checks the hash, so a cache that was changed
after it was built is an error, never a silently different benchmark.

The cache lives outside the repository, because trials run in other git worktrees of it:
${AUTORESEARCH_CACHE:-~/.cache/autoresearch}/cpu-gpt/<source>/, one folder per data source (the
Python version for the stdlib, the absolute path for a folder, its files for a folder of the task
itself, which each worktree holds at another place). Every step finds the source the
same way: --data DIR, else the environment variable AUTORESEARCH_DATA_DIR, else the stdlib. To
run the loop on your own text, export AUTORESEARCH_DATA_DIR=/absolute/path before starting it,
so that setup, train.py and --evaluate all see it.

The evaluation is fixed: val_bpb is the cross-entropy, in bits per byte, of the model on
EVAL_BYTES bytes of the val split, cut into non-overlapping windows of CONTEXT_LEN bytes spread
evenly over the split. test_bpb is the same on the test split, the sealed holdout. The model
comes from train.py's build_model() and the checkpoint it saved; before it is scored, a probe
checks that its predictions do not look at future bytes; evalguard.py (protected too) keeps
train.py's code, which runs in the evaluating process, from changing the figures it prints.
No pickle is used anywhere.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import re
import shlex
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np
from evalguard import EARLY, Peeked, check_causal, import_train, moved, probe_points

# ---------------------------------------------------------------------------------------------
# Constants of the benchmark. Changing any of them changes what val_bpb means.

VOCAB_SIZE = 256  # bytes are the tokens: no tokenizer to train, bpb is exact
CONTEXT_LEN = 256  # bytes per evaluation window; the model must accept sequences this long
EVAL_BYTES = 2**17  # bytes scored for val_bpb (and for test_bpb): 7 to 9 s on 2 cores, probes included
EVAL_BATCH = 16  # windows per forward pass while evaluating
HELDOUT_FRACTION = 0.1  # share of the corpus's bytes given to each of val and test
# Test suites are most of the stdlib's bytes and dominated by fixtures; codec tables and the
# pydoc topic dump are generated text. What is left (~9 MB) is hand-written library code, far
# more than a 60 s CPU run can read once.
SKIP_DIRS = {
    "site-packages",
    "test",
    "tests",
    "idle_test",
    "__pycache__",
    "encodings",
    "pydoc_data",
}
CAUSALITY_TOLERANCE = 1e-3  # max change of a log-probability at positions <= t (evalguard.moved)
REJECT_LINE = (
    "autoresearch_reject: model is not causal (prediction at position t depends on tokens after t)"
)
# read when this file is loaded, before train.py's code can change the environment
TIME_BUDGET = float(os.environ.get("AUTORESEARCH_TIME_BUDGET") or 60)
EXPERIMENT_SECONDS = float(os.environ["AUTORESEARCH_EXPERIMENT_SECONDS"]) if os.environ.get(
    "AUTORESEARCH_EXPERIMENT_SECONDS") else None  # the experiment's wall time, given to the evaluator
SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"
FORMAT_VERSION = 1

# ---------------------------------------------------------------------------------------------
# Where the data comes from and where its cache lives


def data_source(data_dir: str | None = None) -> Path | None:
    """The folder of text files to use, or None for the standard library: --data, else
    AUTORESEARCH_DATA_DIR, else the --data of the task file's setup line."""
    chosen = data_dir or os.environ.get("AUTORESEARCH_DATA_DIR") or task_data() or None
    return Path(chosen).expanduser().resolve() if chosen else None


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


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cache_dir(source: Path | None) -> Path:
    """One folder per data source, so two sources never share (or overwrite) a cache."""
    root = os.environ.get("AUTORESEARCH_CACHE") or Path.home() / ".cache" / "autoresearch"
    if source is None:
        stdlib = sysconfig.get_paths()["stdlib"]
        key = f"stdlib-{platform.python_version()}-{_sha256(stdlib.encode())[:12]}"
    else:
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", source.name)[:40] or "data"
        # a folder of the task itself lies elsewhere in each trial's worktree: named by its files
        inside = source.is_relative_to(Path.cwd().resolve())
        key = f"data-{name}-{_sha256((fingerprint(list_files(source)) if inside else str(source)).encode())[:12]}"
    return Path(root).expanduser() / "cpu-gpt" / key


def list_files(source: Path | None) -> list[tuple[str, Path]]:
    """(relative posix path, path) of every corpus file, sorted by relative path."""
    if source is None:
        base = Path(sysconfig.get_paths()["stdlib"])
        paths = [
            p for p in base.rglob("*.py") if not SKIP_DIRS & set(p.relative_to(base).parts[:-1])
        ]
    else:
        base = source
        paths = []
        for p in source.rglob("*"):
            parts = p.relative_to(base).parts
            if any(part.startswith(".") for part in parts) or not p.is_file():
                continue
            with open(p, "rb") as f:
                if b"\0" in f.read(8192):  # a binary file, not text
                    continue
            paths.append(p)
    return sorted((p.relative_to(base).as_posix(), p) for p in paths)


def fingerprint(files: list[tuple[str, Path]]) -> str:
    """Names and sizes of the source files: a cheap way to notice that the source changed."""
    listing = "".join(f"{rel}\t{path.stat().st_size}\n" for rel, path in files)
    return _sha256(listing.encode())


# ---------------------------------------------------------------------------------------------
# Building the cache (setup)


Piece = tuple[str, Path, int, int]  # (relative path, path, first byte, end byte) of a split's member


def _line_end(path: Path, at: int) -> int:
    """The offset just past the first line end at or after `at` (within 4 KB, else `at`)."""
    with open(path, "rb") as f:
        f.seek(at)
        nl = f.read(4096).find(b"\n")
    return at + nl + 1 if nl >= 0 else at


def _cut(files: list[tuple[str, Path]]) -> dict[str, list[Piece]]:
    """Too few files to split by file: each is cut at line ends into train, val and test."""
    splits: dict[str, list[Piece]] = {name: [] for name in SPLITS}
    for rel, path in files:
        size = path.stat().st_size
        a = _line_end(path, int(size * (1 - 2 * HELDOUT_FRACTION)))
        b = max(a, _line_end(path, int(size * (1 - HELDOUT_FRACTION))))
        for name, lo, hi in (("train", 0, a), ("val", a, b), ("test", b, size)):
            splits[name].append((rel, path, lo, hi))
    return splits


def assign_splits(files: list[tuple[str, Path]]) -> dict[str, list[Piece]]:
    """Deterministic split by file: walk the files in the order of the hash of their relative
    path; the first ones go to test until it holds HELDOUT_FRACTION of the bytes, the next to
    val likewise, the rest (and any file over twice that share) to train. Unlike a hash threshold, this gives non-empty held-out
    splits even for a folder of a handful of files. Fewer than three files are cut instead."""
    if len(files) < 3:
        return _cut(files)
    sizes = {rel: path.stat().st_size for rel, path in files}
    target = max(HELDOUT_FRACTION * sum(sizes.values()), CONTEXT_LEN + 1)
    splits: dict[str, list[tuple[str, Path]]] = {name: [] for name in SPLITS}
    held = dict.fromkeys(SPLITS, 0)
    for rel, path in sorted(files, key=lambda f: _sha256(f[0].encode())):
        # a file over twice a held-out share trains: one big file must not take all the text
        fits = sizes[rel] <= 2 * target
        name = next((s for s in ("test", "val") if held[s] < target and fits), "train")
        splits[name].append((rel, path))
        held[name] += sizes[rel]
    for name in ("test", "val"):  # still empty (big files): a small file from a split that has several
        donors = [d for d in SPLITS if d != name and len(splits[d]) > 1]
        if not splits[name] and donors:
            donor = max(donors, key=lambda d: len(splits[d]))
            smallest = min(splits[donor], key=lambda f: sizes[f[0]])
            splits[donor].remove(smallest)
            splits[name].append(smallest)
    return {name: [(rel, path, 0, sizes[rel]) for rel, path in sorted(splits[name])] for name in SPLITS}


def _read(piece: Piece) -> bytes:
    _, path, lo, hi = piece
    with open(path, "rb") as f:
        f.seek(lo)
        return f.read(hi - lo)


def build(source: Path | None, out: Path) -> None:
    files = list_files(source)
    where = source or "the standard library"
    if not files:
        raise SystemExit(f"error: {where} has no text files")
    manifest: dict = {
        "format": FORMAT_VERSION,
        "source": str(source) if source else f"stdlib {platform.python_version()}",
        "fingerprint": fingerprint(files),
        "splits": {},
    }
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.building-"))
    try:
        for name, members in assign_splits(files).items():
            data = b"".join(_read(piece) for piece in members)
            if len(data) < CONTEXT_LEN + 1:
                raise SystemExit(
                    f"error: the {name} split of {where} has {len(data)} bytes; "
                    f"at least {CONTEXT_LEN + 1} are needed (add more text)"
                )
            (tmp / f"{name}.bin").write_bytes(data)
            manifest["splits"][name] = {
                "file": f"{name}.bin",
                "bytes": len(data),
                "files": len(members),
                "sha256": _sha256(data),
            }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():  # an outdated cache: its source changed
            shutil.rmtree(out)
        try:
            os.rename(tmp, out)  # atomic: readers see the old cache or the whole new one
        except OSError:
            if not (out / MANIFEST).is_file():  # not a concurrent setup that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        raise SystemExit(f"error: no prepared data in {folder}: run `python prepare.py` first")
    try:
        manifest = json.loads(path.read_text())
        manifest["splits"][SPLITS[0]]  # noqa: B018 (shape check)
    except (ValueError, KeyError, TypeError):
        raise SystemExit(
            f"error: {path} is damaged: delete {folder} and run `python prepare.py`"
        ) from None
    return manifest


def prepare(data_dir: str | None = None) -> Path:
    """Build the cache for the data source unless an up-to-date one exists; verify it."""
    source = data_source(data_dir)
    if source is not None and not source.is_dir():
        raise SystemExit(f"error: the data folder {source} does not exist")
    folder = cache_dir(source)
    folder.parent.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / MANIFEST
    if manifest_path.is_file():
        current = fingerprint(list_files(source))
        if read_manifest(folder).get("fingerprint") != current:
            print(f"data source changed since {folder} was built: rebuilding")
            build(source, folder)
    else:
        t0 = time.time()
        print(f"building the byte corpus from {source or 'the standard library'} in {folder}")
        build(source, folder)
        print(f"built in {time.time() - t0:.1f}s")
    for name in SPLITS:
        load_split(name, data_dir)  # checks every hash
    for name, info in read_manifest(folder)["splits"].items():
        print(f"{name:5s}: {info['bytes']:>10,} bytes from {info['files']:>4} files")
    return folder


# ---------------------------------------------------------------------------------------------
# Loading (train.py and the evaluation)


def load_split(name: str, data_dir: str | None = None) -> np.ndarray:
    """The bytes of one split as a read-only uint8 array, after checking its sha256."""
    folder = cache_dir(data_source(data_dir))
    info = read_manifest(folder)["splits"].get(name)
    if info is None:
        raise SystemExit(f"error: unknown split {name!r}; expected one of {', '.join(SPLITS)}")
    path = folder / info["file"]
    data = path.read_bytes() if path.is_file() else b""
    if _sha256(data) != info["sha256"]:
        raise SystemExit(
            f"error: {path} does not match its sha256 in the manifest: the cache was modified "
            f"or damaged. Delete the folder {folder} and run `python prepare.py` again."
        )
    return np.frombuffer(data, dtype=np.uint8)


def eval_windows(data: np.ndarray) -> np.ndarray:
    """Start offsets of the fixed evaluation windows: non-overlapping, spread over the split."""
    count = min(EVAL_BYTES // CONTEXT_LEN, (len(data) - 1) // CONTEXT_LEN)
    stride = (len(data) - 1) // count  # >= CONTEXT_LEN, so windows never overlap
    return np.arange(count, dtype=np.int64) * stride


def evaluate_bpb(model, split: str = "val", data_dir: str | None = None, probes: int = 0) -> float:
    """Bits per byte of model on the fixed windows of a split: total cross-entropy in nats over
    (ln 2 x number of predicted bytes). Each window of CONTEXT_LEN + 1 bytes predicts its last
    CONTEXT_LEN bytes from the ones before them. The loss is computed here from the logits, so
    train.py cannot change how it is counted. With `probes`, that many scored batches, drawn at
    random, are checked for peeking (evalguard.check_causal raises Peeked)."""
    import torch  # here, not at the top: setup needs no torch and starts faster without it
    import torch.nn.functional as F

    data = load_split(split, data_dir)
    starts = eval_windows(data)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total_nats = 0.0
    offsets = np.arange(CONTEXT_LEN + 1)
    probed = {i * EVAL_BATCH for i in probe_points(-(-len(starts) // EVAL_BATCH), probes)} if probes else set()
    with torch.no_grad():
        for i in range(0, len(starts), EVAL_BATCH):
            chunk = data[starts[i : i + EVAL_BATCH, None] + offsets].astype(np.int64)
            batch = torch.from_numpy(chunk).to(device)
            logits = model(batch[:, :-1].clone())  # a copy: a view's ._base holds the answers
            if type(logits) is not torch.Tensor:  # a subclass could redefine the loss below
                raise SystemExit(f"error: model returned a {type(logits).__name__}, not a plain torch.Tensor")
            if tuple(logits.shape) != (len(chunk), CONTEXT_LEN, VOCAB_SIZE):
                raise SystemExit(
                    f"error: model returned logits of shape {tuple(logits.shape)}, "
                    f"expected (batch, {CONTEXT_LEN}, {VOCAB_SIZE})"
                )
            flat = logits.float().reshape(-1, VOCAB_SIZE)
            total_nats += F.cross_entropy(flat, batch[:, 1:].reshape(-1), reduction="sum").item()
            if i in probed:  # other windows of the split, as many: real text, the same shape
                elsewhere = starts[(np.arange(i, i + len(chunk)) + len(starts) // 2) % len(starts)]
                other = torch.from_numpy(data[elsewhere[:, None] + offsets[:-1]].astype(np.int64)).to(device)
                check_causal(lambda x: model(x).float(), batch[:, :-1].clone(), logits.float(), other,
                             CAUSALITY_TOLERANCE)
    model.train(was_training)
    return total_nats / (math.log(2) * len(starts) * CONTEXT_LEN)


# ---------------------------------------------------------------------------------------------
# The evaluation of record (--evaluate)


def is_causal(model, data: np.ndarray, cuts: int = 4) -> bool:
    """Change every byte after position t and check that the predictions at positions <= t stay put.
    The variants run as one batch, so a model that mixes sequences within a batch (which would
    let one evaluation window read the next) fails too."""
    import torch

    gen = torch.Generator().manual_seed(1234)
    device = next(model.parameters()).device
    start = int(torch.randint(0, len(data) - CONTEXT_LEN, (1,), generator=gen))
    seq = torch.from_numpy(data[start : start + CONTEXT_LEN].astype(np.int64))
    middle = torch.randint(1, CONTEXT_LEN - 2, (cuts - 2,), generator=gen).tolist()
    positions = sorted({0, CONTEXT_LEN - 2, *middle})
    variants = []
    for t in positions:
        changed = seq.clone()
        changed[t + 1 :] = torch.randint(0, VOCAB_SIZE, (CONTEXT_LEN - t - 1,), generator=gen)
        variants.append(changed)
    with torch.no_grad():
        base = model(seq[None].to(device)).float()[0]
        probed = model(torch.stack(variants).to(device)).float()
    return all(
        moved(probed[i : i + 1, : t + 1], base[None, : t + 1]) <= CAUSALITY_TOLERANCE
        for i, t in enumerate(positions)
    )


def over_budget(summary: dict) -> str | None:
    """Why the run broke the fixed time budget, or None: training longer than the budget (as
    train.py reports it), or an experiment whose wall time (measured by the harness) is more
    than the budget plus room for start-up and the final evaluation."""
    budget = TIME_BUDGET
    claimed = summary.get("training_seconds")
    steps = summary.get("num_steps")
    # training stops at the first step that ends past the budget: one step over is allowed, and
    # on a busy machine that last step can take twice the mean (an honest 10 s demo trial that
    # trained 12.3 s in steps of 2-3 s was rejected at one mean step)
    step = claimed / steps if isinstance(claimed, (int, float)) and isinstance(steps, int) and steps > 0 else 0.0
    if isinstance(claimed, (int, float)) and claimed > budget * 1.05 + 1 + 2 * step:
        return f"trained {claimed:.1f} s, over the {budget:g} s time budget"
    wall, allowed = EXPERIMENT_SECONDS, budget * 1.5 + 60  # (start-up and train.py's own evaluation
    # take 10-40 s on 2 busy cores: a short budget must not make an honest run a reject)
    if wall is not None and wall > allowed:
        return (f"the experiment ran {wall:.0f} s, more than the {budget:g} s time budget allows "
                f"({allowed:.0f} s with start-up and evaluation)")
    return None


def evaluate(data_dir: str | None = None) -> int:
    """The figures of record, from the checkpoint in AUTORESEARCH_RUN_DIR (default ./run)."""
    import torch

    t0 = time.perf_counter()
    run_dir = Path(os.environ.get("AUTORESEARCH_RUN_DIR") or "run")
    weights, config_path = run_dir / "model.safetensors", run_dir / "model_config.json"
    for path in (weights, config_path):
        if not path.is_file():
            print(
                f"error: no checkpoint: {path} is missing (train.py saves it at the end of a run)"
            )
            return 1
    torch.manual_seed(0)
    torch.set_flush_denormal(True)  # subnormal floats are very slow on x86 CPUs
    train, verdict = import_train(Path.cwd() / "train.py", sys.modules[__name__])
    try:
        lines = score(train, run_dir, data_dir)
    except SystemExit as e:  # with success, train.py's own: figures it printed may stand
        if e.code not in (0, None):
            raise  # an error (a changed cache, ...): the evaluation fails
        lines = [EARLY]
    lines.append(f"eval_seconds:     {time.perf_counter() - t0:.1f}")
    verdict(lines)


def score(train, run_dir: Path, data_dir: str | None) -> list[str]:
    """The summary block of the checkpoint in `run_dir`, or a reject line. train.py's code runs
    here (its model), so this ends in the caller's verdict, never by itself."""
    import torch
    from safetensors.torch import load_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = train.build_model(json.loads((run_dir / "model_config.json").read_text()))
    load_model(model, str(run_dir / "model.safetensors"), strict=True, device="cpu")
    model.to(device).eval()
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    over = over_budget(summary)
    if over:
        return [f"autoresearch_reject: {over}"]
    if not is_causal(model, load_split("val", data_dir)):
        return [REJECT_LINE]
    try:  # a few scored batches of each split probed again, indistinguishable from the rest
        val_bpb = evaluate_bpb(model, "val", data_dir, probes=4)
        test_bpb = evaluate_bpb(model, "test", data_dir, probes=4)
    except Peeked as e:
        return [f"{REJECT_LINE}: {e}"]
    # the parameter count comes from the model itself; the rest is what train.py reported
    summary["num_params_M"] = sum(p.numel() for p in model.parameters()) / 1e6
    lines = ["---", f"val_bpb:          {val_bpb:.6f}", f"test_bpb:         {test_bpb:.6f}"]
    for key, digits in [
        ("training_seconds", 1),
        ("peak_vram_mb", 1),
        ("num_steps", 0),
        ("num_params_M", 2),
        ("depth", 0),
    ]:
        value = summary.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            lines.append(f"{key + ':':<18}{value:.{digits}f}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument(
        "--data", metavar="DIR", help="a folder of text files instead of the stdlib"
    )
    parser.add_argument("--evaluate", action="store_true", help="score the run folder's checkpoint")
    args = parser.parse_args()
    if args.evaluate:
        return evaluate(args.data)
    prepare(args.data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
