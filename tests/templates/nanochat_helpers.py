"""What the nanochat template's tests share: the template's folder, its prepare.py loaded as a
module, a task's environment, a run of its scripts, and the check that a cache holds no pickle."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from safetensors import safe_open

TEMPLATE = Path(__file__).resolve().parents[2] / "src" / "autoresearch" / "templates" / "nanochat"
SUMMARY_KEYS = [
    "val_bpb",
    "training_seconds",
    "total_seconds",
    "peak_vram_mb",
    "mfu_percent",
    "total_tokens_M",
    "num_steps",
    "num_params_M",
    "depth",
]


def load_prepare(name: str = "prepare"):
    """The template's prepare.py (or corpus.py) as a module; the modules it imports from beside
    it are found as they are when it runs (the cpu-gpt template's prepare.py is not in the way:
    this one is loaded under another name, and evalguard.py is the same file in both)."""
    if str(TEMPLATE) not in sys.path:
        sys.path.insert(0, str(TEMPLATE))
    sys.modules.pop("corpus", None)
    spec = importlib.util.spec_from_file_location(f"nanochat_{name}", TEMPLATE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def figures(output: str) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in re.finditer(r"^(\w+):\s+(-?[\d.]+)\s*$", output, re.M)}


def task_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTORESEARCH_")}
    env.update(
        AUTORESEARCH_CACHE=str(tmp / "cache"), AUTORESEARCH_RUN_DIR=str(tmp / "run"), **extra
    )
    return env


def run(args: list[str], cwd: Path, env: dict, timeout: float = 120, ok: bool = True) -> str:
    """Its output; with ok=False whatever the exit status, stderr after stdout."""
    proc = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if not ok:
        return proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def assert_nothing_pickled(root: Path) -> None:
    """Every file is in a format that cannot run code when loaded, and loads as such."""
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert not path.read_bytes()[:1] == b"\x80", f"{path} looks like a pickle"
        if path.suffix == ".npy":
            assert np.load(path, allow_pickle=False).dtype != object
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".parquet":
            pq.read_metadata(path)
        elif path.suffix == ".safetensors":
            with safe_open(str(path), "pt") as f:
                assert list(f.keys())
        else:
            pytest.fail(f"unexpected file in the cache or run folder: {path}")
