"""
Pretrain a small GPT for a fixed time budget and report its bits per byte: the file the agent
edits. Read it top to bottom; change anything, but keep `build_model(config)` (prepare.py
--evaluate rebuilds the model through it) and the checkpoint and summary written at the end.

The model: rotary positions, RMSNorm without weights, QK-norm, ReLU^2 MLPs, value embeddings
added to alternate layers, and attention windows in a repeating pattern of short and long.
Muon (momentum orthogonalised by Newton-Schulz) trains the matrices, AdamW the embeddings and
scalars. prepare.py (protected) owns the data, the clock and the score.
"""

from __future__ import annotations

import gc
import json
import math
import os
import sys
import time
import traceback

import torch
import torch.nn as nn
import torch.nn.functional as F
from hardware import autocast, default_device, peak_flops, peak_memory_mb, synchronize
from prepare import (
    MAX_SEQ_LEN,
    RUN_DIR,
    SMOKE,
    TIME_BUDGET,
    UNTIMED_STEPS,
    VOCAB_SIZE,
    evaluate_bpb,
    train_batches,
)
from safetensors.torch import save_file
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

# ----------------------------------------------------------------------------
# Hyperparameters, sized for one 80 GB+ card (H100, H200): ~50M parameters, ~45 GB peak; the
# top of the size ranges (activations ~ DEPTH^2 x ASPECT_RATIO) about 1.6 times that.
# Smaller machines, as a user would set them:
#   24 GB card (RTX 4090 / 3090, A10, L4): DEPTH = 6, DEVICE_BATCH_SIZE = 32, TOTAL_BATCH_SIZE = 262144
#   8 GB card:                             DEPTH = 4, DEVICE_BATCH_SIZE = 8, TOTAL_BATCH_SIZE = 65536
#   Apple MPS or CPU:                      DEPTH = 2, DEVICE_BATCH_SIZE = 2, TOTAL_BATCH_SIZE = 16384,
#     and AUTORESEARCH_EVAL_TOKENS=1048576 in the environment, or scoring outlasts training
# and narrow the `# search:` ranges below to the ones program.md gives for that machine

# the one size dial: width, heads and parameter count follow from it
DEPTH = 8  # search: 2..10 int
# width = DEPTH * ASPECT_RATIO, rounded up to whole heads
ASPECT_RATIO = 64  # search: 32..64 int
# one letter per layer, repeated: S sees the last SHORT_WINDOW tokens, L the whole sequence.
# Short windows cost less; the last layer is always L so every token can reach the start.
WINDOW_PATTERN = "SSSL"
SHORT_WINDOW = 1024  # search: 128..2048 log int
# logits pass through cap * tanh(logits / cap): no runaway logits early in training
LOGIT_SOFTCAP = 15.0  # search: 5..50 log

# tokens per optimizer step, reached by accumulating gradients over device batches
TOTAL_BATCH_SIZE = 524288  # search: 262144..2097152 log int
# learning rates: Muon for matrices; AdamW for the rest, given for width 768 and scaled by
# 1/sqrt(width / 768) because wider embeddings need smaller steps
MATRIX_LR = 0.04  # search: 0.005..0.2 log
EMBEDDING_LR = 0.6  # search: 0.05..2 log
UNEMBEDDING_LR = 0.004  # search: 0.0005..0.03 log
SCALAR_LR = 0.5  # search: 0.05..2 log
# decoupled, on the Muon matrices only; it decays with the learning rate
WEIGHT_DECAY = 0.2  # search: 0..0.5
MUON_MOMENTUM = 0.95  # search: 0.85..0.99
ADAM_BETA1 = 0.8  # search: 0.7..0.95
ADAM_BETA2 = 0.95  # search: 0.9..0.999
# schedule as fractions of the time budget: ramp up, hold, then decay to FINAL_LR_FRAC
WARMUP_RATIO = 0.0  # search: 0..0.2
WARMDOWN_RATIO = 0.5  # search: 0.1..0.9
FINAL_LR_FRAC = 0.0  # search: 0..0.2

# ----------------------------------------------------------------------------
# Fixed by the machine, not searched: memory decides these, learning does not

DEVICE_BATCH_SIZE = 128  # search: off  (sequences per forward pass; halve it when memory runs out)
HEAD_DIM = 128  # search: off
VE_GATE_CHANNELS = 32  # search: off  (leading channels of x that set each head's share of the value embedding)
LOG_EVERY = 25  # search: off
SEED = int(os.environ.get("AUTORESEARCH_SEED") or 42)

if SMOKE:  # AUTORESEARCH_SMOKE=1: a model that trains in seconds on two CPU cores
    DEPTH, ASPECT_RATIO, HEAD_DIM, SHORT_WINDOW = 2, 32, 32, 32
    TOTAL_BATCH_SIZE, DEVICE_BATCH_SIZE, LOG_EVERY = 1024, 8, 50

# ----------------------------------------------------------------------------
# Model


def norm(x: torch.Tensor) -> torch.Tensor:
    # RMSNorm without a gain: the weights that read the result can scale it themselves
    return F.rms_norm(x, (x.size(-1),))


def rotary_tables(seq_len: int, head_dim: int, base: float = 10000.0):
    """cos and sin, (seq_len, head_dim / 2): channel pair i turns by position * base^(-2i/d)."""
    inv_freq = base ** -(torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (B, T, H, D). Turning q and k by their positions makes q.k depend on the distance only
    a, b = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((a * cos + b * sin, b * cos - a * sin), dim=-1)


def attend(q, k, v, mask):
    """Causal attention on (B, H, T, D). `mask` None: the whole past, by the flash kernel. A
    BlockMask: a sliding window by FlexAttention, which skips blocks outside the window (fast
    only compiled). A boolean band: the same window through SDPA, for eager runs and CPU/MPS."""
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if isinstance(mask, BlockMask):
        return flex_attention(q, k, v, block_mask=mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class Attention(nn.Module):
    def __init__(self, dim: int, n_head: int, head_dim: int, value_embedding: bool):
        super().__init__()
        self.n_head, self.head_dim = n_head, head_dim
        self.q = nn.Linear(dim, n_head * head_dim, bias=False)
        self.k = nn.Linear(dim, n_head * head_dim, bias=False)
        self.v = nn.Linear(dim, n_head * head_dim, bias=False)
        self.proj = nn.Linear(n_head * head_dim, dim, bias=False)
        self.gate_channels = min(VE_GATE_CHANNELS, dim)
        self.ve_gate = nn.Linear(self.gate_channels, n_head, bias=False) if value_embedding else None

    def forward(self, x, ve, cos, sin, mask):
        B, T, _ = x.shape
        shape = (B, T, self.n_head, self.head_dim)
        q, k, v = self.q(x).view(shape), self.k(x).view(shape), self.v(x).view(shape)
        dtype = v.dtype  # bf16 under autocast; the fp32 embedding below must not promote it
        if ve is not None:
            gate = 2 * torch.sigmoid(self.ve_gate(x[..., : self.gate_channels]))  # 1 at init
            v = v + gate.unsqueeze(-1) * ve.view(shape)
        # QK-norm after rotary: unit-scale queries and keys keep attention logits bounded
        q, k = norm(rotate(q, cos, sin)), norm(rotate(k, cos, sin))
        q, k, v = (t.to(dtype).transpose(1, 2) for t in (q, k, v))
        y = attend(q, k, v, mask)
        return self.proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.fc = nn.Linear(dim, 4 * dim, bias=False)
        self.proj = nn.Linear(4 * dim, dim, bias=False)

    def forward(self, x):
        # ReLU^2: as cheap as ReLU and, at this scale, better than GELU
        return self.proj(F.relu(self.fc(x)).square())


class Block(nn.Module):
    def __init__(self, dim: int, n_head: int, head_dim: int, value_embedding: bool):
        super().__init__()
        self.attn = Attention(dim, n_head, head_dim, value_embedding)
        self.mlp = MLP(dim)

    def forward(self, x, ve, cos, sin, mask):
        x = x + self.attn(norm(x), ve, cos, sin, mask)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        depth, dim, vocab = config["depth"], config["model_dim"], config["vocab_size"]
        self.n_head, self.head_dim = config["n_head"], config["head_dim"]
        self.sequence_len, self.softcap = config["sequence_len"], config["logit_softcap"]
        pattern, short = config["window_pattern"].upper(), config["short_window"]
        self.windows = [
            short if pattern[i % len(pattern)] == "S" else self.sequence_len for i in range(depth)
        ]
        self.windows[-1] = self.sequence_len
        self.wte = nn.Embedding(vocab, dim)
        # value embeddings: a second token table per chosen layer, mixed into its values; on
        # every other layer counting back from the last, which always has one
        ve_layers, width = range((depth - 1) % 2, depth, 2), self.n_head * self.head_dim
        self.value_embeds = nn.ModuleDict({str(i): nn.Embedding(vocab, width) for i in ve_layers})
        self.blocks = nn.ModuleList(
            Block(dim, self.n_head, self.head_dim, str(i) in self.value_embeds)
            for i in range(depth)
        )
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        # each layer's input: a learned mix of the running stream and the first layer's input
        self.resid_lambdas = nn.Parameter(torch.ones(depth))
        self.x0_lambdas = nn.Parameter(torch.full((depth,), 0.1))
        cos, sin = rotary_tables(self.sequence_len, self.head_dim)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self._masks: dict = {}

    @torch.no_grad()
    def init_weights(self) -> None:
        for emb in (self.wte, *self.value_embeds.values()):
            emb.weight.normal_(0.0, 1.0)
        for block in self.blocks:
            for lin in (block.attn.q, block.attn.k, block.attn.v, block.mlp.fc):
                bound = 3**0.5 * lin.in_features**-0.5  # uniform with std 1/sqrt(fan_in)
                lin.weight.uniform_(-bound, bound)
            # zero output projections: every block starts as the identity
            block.attn.proj.weight.zero_()
            block.mlp.proj.weight.zero_()
            if block.attn.ve_gate is not None:
                block.attn.ve_gate.weight.zero_()
        self.lm_head.weight.normal_(0.0, 0.001)  # near-uniform first predictions

    def attention_masks(self, T: int, device: torch.device, flex: bool) -> list:
        key = (T, str(device), flex)
        if key not in self._masks:
            self._masks[key] = [self._window_mask(w, T, device, flex) for w in self.windows]
        return self._masks[key]

    @staticmethod
    def _window_mask(window: int, T: int, device: torch.device, flex: bool):
        if window >= T:
            return None
        if flex:

            def in_window(b, h, q, k):
                return (q >= k) & (q - k < window)

            return create_block_mask(in_window, None, None, T, T, device=device)
        pos = torch.arange(T, device=device)
        offset = pos[:, None] - pos[None, :]
        return (offset >= 0) & (offset < window)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """Logits (B, T, vocab) for token ids (B, T); the mean loss instead when given targets."""
        B, T = idx.shape
        flex = idx.is_cuda and torch.compiler.is_compiling()
        masks = self.attention_masks(T, idx.device, flex)
        cos, sin = self.cos[None, :T, None, :], self.sin[None, :T, None, :]
        x = x0 = norm(self.wte(idx))
        for i, block in enumerate(self.blocks):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.value_embeds[str(i)](idx) if str(i) in self.value_embeds else None
            x = block(x, ve, cos, sin, masks[i])
        logits = self.lm_head(norm(x)).float()
        logits = self.softcap * torch.tanh(logits / self.softcap)
        if targets is None:
            return logits
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def flops_per_token(self) -> float:
        """Training FLOPs per token: 6 per weight of every matmul (2 forward, 4 backward) plus
        12 per query channel per key in the window, counted in full as the PaLM paper and
        nanoGPT-style reports count it, so MFU figures compare. Embedding lookups are free."""
        matmul = sum(p.numel() for p in self.blocks.parameters()) + self.lm_head.weight.numel()
        width = self.n_head * self.head_dim
        return 6 * matmul + sum(12 * width * min(w, self.sequence_len) for w in self.windows)


def model_config() -> dict:
    """Everything build_model needs, saved beside the weights as model_config.json."""
    n_head = max(1, math.ceil(DEPTH * ASPECT_RATIO / HEAD_DIM))
    return {
        "vocab_size": VOCAB_SIZE,
        "sequence_len": MAX_SEQ_LEN,
        "depth": DEPTH,
        "model_dim": n_head * HEAD_DIM,
        "n_head": n_head,
        "head_dim": HEAD_DIM,
        "window_pattern": WINDOW_PATTERN,
        "short_window": SHORT_WINDOW,
        "logit_softcap": LOGIT_SOFTCAP,
        "device_batch_size": DEVICE_BATCH_SIZE,  # the evaluation's batch: what fits in memory
    }


def build_model(config: dict) -> GPT:
    """A freshly initialised model for `config`, on the CPU."""
    model = GPT(config)
    model.init_weights()
    return model


# ----------------------------------------------------------------------------
# Optimizers


def orthogonalize(G: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Push a batch of matrices (n, rows, cols) toward U V^T of their SVDs by a quintic
    Newton-Schulz iteration. Its coefficients trade exactness for speed: singular values land
    near 1 (roughly 0.7 to 1.2), not on it, which Muon does not mind. bf16 is enough on GPU."""
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.bfloat16() if G.is_cuda else G.float()
    tall = X.size(-2) > X.size(-1)
    if tall:  # iterate on the smaller Gram matrix
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # spectral norm <= Frobenius norm <= 1
    for _ in range(steps):
        A = X @ X.mT
        X = a * X + (b * A + c * A @ A) @ X
    return (X.mT if tall else X).to(G.dtype)


class Muon(torch.optim.Optimizer):
    """Nesterov momentum whose update is orthogonalised: every direction of the matrix moves by
    the same amount, so rare directions learn as fast as common ones. Matrices of one shape are
    orthogonalised together, in one batched iteration."""

    def __init__(self, params, lr: float, momentum: float, weight_decay: float):
        params = list(params)
        shapes = sorted({tuple(p.shape) for p in params})
        groups = [{"params": [p for p in params if tuple(p.shape) == s]} for s in shapes]
        super().__init__(groups, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            params, lr, beta = group["params"], group["lr"], group["momentum"]
            grads = torch.stack([p.grad for p in params])
            state = self.state[params[0]]
            if "momentum" not in state:
                state["momentum"] = torch.zeros_like(grads)
            buf = state["momentum"]
            buf.lerp_(grads, 1 - beta)
            update = orthogonalize(grads.lerp_(buf, beta))  # Nesterov: look one step ahead
            rows, cols = params[0].shape
            # orthogonal tall matrices have smaller entries (rms 1/sqrt(rows)): bring them up to
            # the 1/sqrt(cols) of wide ones, so every matrix moves by the same rms per input
            scale = lr * max(1.0, rows / cols) ** 0.5
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
            torch._foreach_add_(params, list(update.unbind(0)), alpha=-scale)


def make_optimizers(model: GPT, device: torch.device) -> list[torch.optim.Optimizer]:
    """Muon for the matrices inside the blocks. AdamW for the embeddings and the output layer,
    whose rows are separate tokens rather than directions of one map, and for the scalars."""
    width_scale = (model.wte.embedding_dim / 768) ** -0.5
    embeddings = [model.wte.weight, *model.value_embeds.parameters()]
    adam = torch.optim.AdamW(
        [
            {"params": embeddings, "lr": EMBEDDING_LR * width_scale},
            {"params": [model.lm_head.weight], "lr": UNEMBEDDING_LR * width_scale},
            {"params": [model.x0_lambdas], "lr": SCALAR_LR},
            # the residual gains scale the whole stream: a hundredth of the step is plenty
            {"params": [model.resid_lambdas], "lr": SCALAR_LR * 0.01},
        ],
        betas=(ADAM_BETA1, ADAM_BETA2),
        eps=1e-10,
        weight_decay=0.0,
        fused=device.type == "cuda",
    )
    muon = Muon(model.blocks.parameters(), MATRIX_LR, MUON_MOMENTUM, WEIGHT_DECAY)
    optimizers = [adam, muon]
    covered = sum(len(g["params"]) for opt in optimizers for g in opt.param_groups)
    assert covered == len(list(model.parameters())), "every parameter needs an optimizer"
    for group in (g for opt in optimizers for g in opt.param_groups):
        group["initial_lr"] = group["lr"]
    return optimizers


def lr_multiplier(progress: float) -> float:
    """Learning rate as a fraction of the initial one, at `progress` through the time budget."""
    if progress < WARMUP_RATIO:
        return max(progress / WARMUP_RATIO, 0.01)
    if progress > 1 - WARMDOWN_RATIO:
        left = (1 - progress) / WARMDOWN_RATIO
        return FINAL_LR_FRAC + (1 - FINAL_LR_FRAC) * left
    return 1.0


def set_schedule(optimizers: list[torch.optim.Optimizer], progress: float, step: int) -> None:
    for group in (g for opt in optimizers for g in opt.param_groups):
        group["lr"] = group["initial_lr"] * lr_multiplier(progress)
    # lighter momentum over the first 300 steps, while the weights still move the most
    for opt in optimizers:
        for group in opt.param_groups if isinstance(opt, Muon) else []:
            group["momentum"] = MUON_MOMENTUM - 0.1 * max(0.0, 1 - step / 300)


# ----------------------------------------------------------------------------
# Training


def write_json(path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def save_checkpoint(model: GPT, config: dict, summary: dict) -> None:
    """Weights, config and figures, written before the evaluation: a crash there loses nothing."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    tmp = RUN_DIR / "model.safetensors.tmp"
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, RUN_DIR / "model.safetensors")
    write_json(RUN_DIR / "model_config.json", config)
    write_json(RUN_DIR / "summary.json", summary)


def main() -> None:
    t_start = time.perf_counter()
    torch.manual_seed(SEED)
    device = default_device()
    torch.backends.cuda.matmul.allow_tf32 = True
    config = model_config()
    model = build_model(config).to(device)
    optimizers = make_optimizers(model, device)
    train_model = model
    if device.type == "cuda":  # on CPU and MPS compilation costs more than it saves
        # masks are built once per shape, eagerly, outside the compiled graph
        model.attention_masks = torch.compiler.disable(model.attention_masks)
        train_model = torch.compile(model, dynamic=False)
    tokens_per_pass = DEVICE_BATCH_SIZE * MAX_SEQ_LEN
    accumulation = max(1, round(TOTAL_BATCH_SIZE / tokens_per_pass))
    tokens_per_step = accumulation * tokens_per_pass
    batches = train_batches(DEVICE_BATCH_SIZE, MAX_SEQ_LEN, device, seed=SEED)
    peak, device_name = peak_flops(device)
    num_params = sum(p.numel() for p in model.parameters())
    print(
        f"device {device_name}: {num_params / 1e6:.1f}M parameters, {DEPTH} layers of width "
        f"{config['model_dim']}, {tokens_per_step:,} tokens per step ({accumulation} x "
        f"{DEVICE_BATCH_SIZE} x {MAX_SEQ_LEN}), {TIME_BUDGET:.0f}s budget", flush=True
    )

    step, timed_steps, training_time = 0, 0, 0.0
    x, y = next(batches)
    while True:
        t0 = time.perf_counter()
        progress = min(training_time / TIME_BUDGET, 1.0)
        set_schedule(optimizers, progress, step)
        for _ in range(accumulation):
            with autocast(device):
                loss = train_model(x, y)
            (loss / accumulation).backward()
            x, y = next(batches)  # the next batch is gathered while the device works
        for opt in optimizers:
            opt.step()
        model.zero_grad(set_to_none=True)
        loss_value = loss.item()
        synchronize(device)  # the clock below must see finished work
        dt = time.perf_counter() - t0
        step += 1
        if step == 1:  # what compiling made is kept for good: no collector pause in timed steps
            gc.collect()
            gc.freeze()
            gc.disable()
        if step > UNTIMED_STEPS:
            training_time += dt
            timed_steps += 1
        if not math.isfinite(loss_value) or loss_value > 100:
            print(f"FAIL: loss {loss_value} at step {step}: training diverged")
            sys.exit(1)
        if step % LOG_EVERY == 0 or step == 1:
            mfu = 100 * model.flops_per_token() * tokens_per_step / dt / peak if peak else 0.0
            print(
                f"step {step:05d} | loss {loss_value:.4f} | lr x{lr_multiplier(progress):.2f} | "
                f"{dt * 1000:.0f} ms | {tokens_per_step / dt:,.0f} tok/s | mfu {mfu:.1f}% | "
                f"{100 * progress:.0f}% of budget",
                flush=True,
            )
        if step > UNTIMED_STEPS and training_time >= TIME_BUDGET:
            break

    flops = model.flops_per_token() * tokens_per_step * timed_steps
    summary = {
        "training_seconds": training_time,
        "peak_vram_mb": peak_memory_mb(device),  # on CPU and MPS: the peak resident memory
        "mfu_percent": 100 * flops / training_time / peak if peak else 0.0,
        "total_tokens_M": step * tokens_per_step / 1e6,
        "num_steps": step,
        "num_params_M": num_params / 1e6,
        "depth": DEPTH,
    }
    save_checkpoint(model, config, summary)
    if os.environ.get("AUTORESEARCH_EVALUATE"):  # autoresearch scores the checkpoint next: val is read once
        print(f"note: val_bpb is left to `{os.environ['AUTORESEARCH_EVALUATE']}`")
    else:
        try:  # a failure here loses no training: the checkpoint is saved
            summary["val_bpb"] = evaluate_bpb(model, "val", DEVICE_BATCH_SIZE)
        except Exception:
            traceback.print_exc()
            print(f"note: the evaluation failed; `python prepare.py --evaluate` scores the checkpoint in {RUN_DIR}")
    summary["total_seconds"] = time.perf_counter() - t_start
    write_json(RUN_DIR / "summary.json", summary)

    print("---")  # the summary block: `name: value`, one a line, as autoresearch reads them
    for name, fmt in (("val_bpb", ".6f"), ("training_seconds", ".1f"), ("total_seconds", ".1f"),
                      ("peak_vram_mb", ".1f"), ("mfu_percent", ".2f"), ("total_tokens_M", ".1f"),
                      ("num_steps", "d"), ("num_params_M", ".1f"), ("depth", "d")):
        if name in summary:
            print(f"{name + ':':<18}{summary[name]:{fmt}}")


if __name__ == "__main__":
    main()
