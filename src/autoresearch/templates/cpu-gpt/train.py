"""
A small byte-level GPT, trained for a fixed wall-clock budget on the CPU (a GPU is used when
there is one). This is the file the agent edits: hyperparameters, model, optimizer and training
loop are all here, top to bottom.

    python train.py        trains for AUTORESEARCH_TIME_BUDGET seconds (default 60)

At the end it saves the model to the run folder (model.safetensors + model_config.json +
summary.json), scores it with prepare.evaluate_bpb and prints the summary block; under
autoresearch (AUTORESEARCH_EVALUATE set) the scoring is left to the evaluate step, so the
validation split is read once a trial. The figures of record come from `python prepare.py
--evaluate`, which rebuilds the model with build_model() below, so build_model(config) must keep
returning a module whose forward(idx) gives logits of shape (B, T, 256), and the model must stay
causal.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from prepare import VOCAB_SIZE, evaluate_bpb, load_split
from safetensors.torch import save_model

# ---------------------------------------------------------------------------------------------
# Hyperparameters. `# search: lo..hi [log] [int]` is the range the search agent samples from.

# model: depth is the main dial; width = DEPTH * ASPECT_RATIO, rounded to whole heads
DEPTH = 2  # search: 1..6 int
ASPECT_RATIO = 48  # search: 16..96 int
HEAD_DIM = 32  # search: 16..64 step 16
MLP_RATIO = 3  # search: 2..6
QK_SCALE = 2.0  # search: 0.5..4.0 log  (attention logit scale, in units of 1/sqrt(HEAD_DIM))
ROPE_BASE = 10000  # search: 1000..100000 log

# optimization
BATCH_SIZE = 4  # search: 1..32 int
SEQ_LEN = 256  # search: 128..512 int  (training windows; evaluation always uses 256 bytes)
LEARNING_RATE = 5e-3  # search: 1e-3..3e-2 log
EMBEDDING_LR = 3e-2  # search: 3e-3..1e-1 log
WEIGHT_DECAY = 0.1  # search: 0.0..0.3
ADAM_BETA1 = 0.9  # search: 0.8..0.95
ADAM_BETA2 = 0.95  # search: 0.9..0.999
GRAD_CLIP = 1.0  # search: 0.1..5.0 log

# learning-rate schedule over the time budget: linear warmup, flat, linear cooldown
WARMUP_RATIO = 0.05  # search: 0.0..0.2
WARMDOWN_RATIO = 0.4  # search: 0.1..0.8
FINAL_LR_FRAC = 0.0  # search: 0.0..0.3

# ---------------------------------------------------------------------------------------------
# Model


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    # no learned gain: fewer parameters and one thing less to tune
    return F.rms_norm(x, (x.size(-1),))


def rotary_tables(seq_len: int, head_dim: int, base: float, device) -> tuple[torch.Tensor, ...]:
    inv_freq = base ** (
        -torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim
    )
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # rotate each pair (x1, x2) of channels by an angle that grows with the position, so that
    # q.k depends on the distance between two positions rather than on where they are
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, n_head: int, qk_scale: float):
        super().__init__()
        self.n_head, self.head_dim = n_head, dim // n_head
        self.scale = qk_scale / math.sqrt(self.head_dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = rms_norm(q), rms_norm(k)  # QK-norm: attention logits stay tame at high LR
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        # q and k have unit RMS, so the usual 1/sqrt(head_dim) would cap attention logits at
        # sqrt(head_dim): too flat to pick out one earlier byte; a larger scale trains better
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc = nn.Linear(dim, hidden, bias=False)
        self.proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.relu(self.fc(x)).square())  # ReLU^2: cheap, and beats GELU here


class Block(nn.Module):
    def __init__(self, dim: int, n_head: int, hidden: int, qk_scale: float):
        super().__init__()
        self.attn = CausalSelfAttention(dim, n_head, qk_scale)
        self.mlp = MLP(dim, hidden)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(rms_norm(x), cos, sin)
        return x + self.mlp(rms_norm(x))


class GPT(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        self.config = config
        dim = config["model_dim"]
        self.wte = nn.Embedding(config["vocab_size"], dim)
        self.blocks = nn.ModuleList(
            Block(dim, config["n_head"], config["mlp_hidden"], config["qk_scale"])
            for _ in range(config["depth"])
        )
        self.lm_head = nn.Linear(dim, config["vocab_size"], bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        dim = self.config["model_dim"]
        nn.init.normal_(self.wte.weight, std=1.0)
        for block in self.blocks:
            nn.init.normal_(block.attn.qkv.weight, std=dim**-0.5)
            nn.init.normal_(block.mlp.fc.weight, std=dim**-0.5)
            # zero output projections: every block starts as the identity, the residual stream
            # carries the embedding straight through and depth is added as training goes
            nn.init.zeros_(block.attn.proj.weight)
            nn.init.zeros_(block.mlp.proj.weight)
        nn.init.zeros_(self.lm_head.weight)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        cos, sin = rotary_tables(
            idx.size(1), self.config["head_dim"], self.config["rope_base"], idx.device
        )
        x = rms_norm(self.wte(idx))
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.lm_head(rms_norm(x))


def model_config() -> dict:
    """The architecture as plain JSON, saved next to the weights."""
    head_dim = max(2, HEAD_DIM // 2 * 2)  # rotary embeddings rotate pairs of channels
    n_head = max(1, round(DEPTH * ASPECT_RATIO / head_dim))
    dim = n_head * head_dim
    return {
        "vocab_size": VOCAB_SIZE,
        "depth": DEPTH,
        "model_dim": dim,
        "n_head": n_head,
        "head_dim": head_dim,
        "mlp_hidden": int(MLP_RATIO * dim),
        "rope_base": float(ROPE_BASE),
        "qk_scale": float(QK_SCALE),
    }


def build_model(config: dict) -> nn.Module:
    """The model for a saved config; prepare.py --evaluate calls this to load a checkpoint."""
    return GPT(config)


# ---------------------------------------------------------------------------------------------
# Training


def lr_multiplier(progress: float) -> float:
    """Learning-rate factor at a point of the time budget (0 = start, 1 = end)."""
    if progress < WARMUP_RATIO:
        return min(1.0, (progress + 1e-3) / WARMUP_RATIO)
    if progress < 1.0 - WARMDOWN_RATIO:
        return 1.0
    cooldown = max(1.0 - progress, 0.0) / max(WARMDOWN_RATIO, 1e-6)
    return FINAL_LR_FRAC + (1.0 - FINAL_LR_FRAC) * cooldown


def get_batch(data: np.ndarray, rng: np.random.Generator, device) -> tuple[torch.Tensor, ...]:
    starts = rng.integers(0, len(data) - SEQ_LEN - 1, size=BATCH_SIZE)
    chunk = data[starts[:, None] + np.arange(SEQ_LEN + 1)].astype(np.int64)
    batch = torch.from_numpy(chunk).to(device)
    return batch[:, :-1], batch[:, 1:]


def make_optimizer(model: GPT) -> torch.optim.Optimizer:
    # embeddings are looked up, not multiplied: a row gets a gradient only when its byte shows
    # up, so they learn faster with a larger rate and no decay
    matrices = [p for name, p in model.named_parameters() if p.ndim == 2 and name != "wte.weight"]
    groups = [
        {"params": [model.wte.weight], "base_lr": EMBEDDING_LR, "weight_decay": 0.0},
        {"params": matrices, "base_lr": LEARNING_RATE, "weight_decay": WEIGHT_DECAY},
    ]
    return torch.optim.AdamW(groups, lr=LEARNING_RATE, betas=(ADAM_BETA1, ADAM_BETA2), eps=1e-10)


def peak_memory_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    try:  # on the CPU (and MPS) report the peak resident memory of this process instead
        import resource
    except ImportError:  # Windows
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB


def main() -> None:
    t_start = time.perf_counter()
    budget = float(os.environ.get("AUTORESEARCH_TIME_BUDGET") or 60)
    seed = int(os.environ.get("AUTORESEARCH_SEED") or 0)
    run_dir = Path(os.environ.get("AUTORESEARCH_RUN_DIR") or "run")
    run_dir.mkdir(parents=True, exist_ok=True)

    if torch.cuda.is_available():
        device = "cuda"
    elif torch.backends.mps.is_available():
        device = "mps"
    else:
        device = "cpu"
    # the cores this process may run on (all of them, unless pinned)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(cores or 1)
    # subnormal floats are very slow on x86 CPUs; flushing them to zero loses nothing here
    torch.set_flush_denormal(True)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)

    train_data = load_split("train")
    config = model_config()
    model = build_model(config).to(device)
    optimizer = make_optimizer(model)
    num_params = sum(p.numel() for p in model.parameters())
    print(f"device: {device} ({cores} cores), params: {num_params / 1e6:.2f}M, config: {config}")
    print(f"time budget: {budget:.0f}s, batch: {BATCH_SIZE} x {SEQ_LEN} bytes")

    # the budget counts training steps only: startup, data loading and evaluation are outside
    training_time, step, next_log = 0.0, 0, 0.0
    while training_time < budget:
        t0 = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_multiplier(training_time / budget)
        x, y = get_batch(train_data, rng, device)
        logits = model(x)
        loss = F.cross_entropy(logits.float().view(-1, VOCAB_SIZE), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = loss.item()  # waits for the step to finish, so the clock below is honest
        if not math.isfinite(loss_value):
            print(f"step {step}: loss is {loss_value}, stopping")
            sys.exit(1)
        training_time += time.perf_counter() - t0
        step += 1
        if training_time >= next_log:
            tokens_per_second = step * BATCH_SIZE * SEQ_LEN / training_time
            print(
                f"step {step:5d} | loss {loss_value:.4f} | bpb {loss_value / math.log(2):.3f} | "
                f"{tokens_per_second:,.0f} tok/s | {training_time:5.1f}/{budget:.0f}s"
            )
            next_log += max(budget / 12, 1.0)

    # save first: the harness's evaluation reads these files in a fresh process
    save_model(model, str(run_dir / "model.safetensors"))
    (run_dir / "model_config.json").write_text(json.dumps(config, indent=2) + "\n")
    summary = {
        "training_seconds": training_time,
        "peak_vram_mb": peak_memory_mb(device),
        "num_steps": step,
        "num_params_M": num_params / 1e6,
        "depth": DEPTH,
        "tokens_per_second": step * BATCH_SIZE * SEQ_LEN / training_time,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if os.environ.get("AUTORESEARCH_EVALUATE"):  # autoresearch scores the checkpoint next
        print(f"note: val_bpb is left to `{os.environ['AUTORESEARCH_EVALUATE']}`")
    else:
        try:  # a failure here loses no training: the checkpoint is saved
            summary["val_bpb"] = evaluate_bpb(model, "val")
        except Exception:
            traceback.print_exc()
            print(f"note: the evaluation failed; `python prepare.py --evaluate` scores the checkpoint in {run_dir}")
    summary["total_seconds"] = time.perf_counter() - t_start
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("---")
    for name, fmt in (("val_bpb", ".6f"), ("training_seconds", ".1f"), ("total_seconds", ".1f"),
                      ("peak_vram_mb", ".1f"), ("num_steps", "d"), ("num_params_M", ".2f"),
                      ("depth", "d"), ("tokens_per_second", ".0f")):
        if name in summary:
            print(f"{name + ':':<19}{summary[name]:{fmt}}")

if __name__ == "__main__":
    main()
