"""
The machine of the nanochat task: the device, the precision, the GPU's peak FLOP/s (for MFU)
and the peak memory. Protected, as prepare.py, which imports it: the figures train.py prints
are measured here.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys

import torch


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast(device: torch.device):
    """bf16 matmuls on CUDA; elsewhere float32, which CPUs and MPS run at least as well."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# Dense bf16 tensor-core FLOP/s with fp32 accumulation, from the vendors' data sheets (the
# sparsity figures are twice these). First match on the device name wins.
GPU_PEAK_FLOPS = [
    (r"\bH200\b.*\bNVL\b", 835e12),
    (r"\bG?H200\b", 989e12),
    (r"\bH100\b.*\bNVL\b", 835e12),
    (r"\bH100\b.*\bPCIe\b", 756e12),
    (r"\bH100\b", 989e12),
    (r"\bB200\b", 2250e12),
    (r"\bA100\b", 312e12),
    (r"\bA10\b", 125e12),
    (r"\bA40\b", 150e12),
    (r"\bL40S\b", 362e12),
    (r"\bL40\b", 181e12),
    (r"\bL4\b", 121e12),
    (r"RTX 5090", 209e12),
    (r"RTX 4090", 165e12),
    (r"RTX 3090 Ti", 80e12),
    (r"RTX 3090", 71e12),
    (r"RTX 6000 Ada", 364e12),
    (r"RTX A6000", 155e12),
]


def peak_flops(device: torch.device) -> tuple[float | None, str]:
    """(peak FLOP/s or None when unknown, the device's name); AUTORESEARCH_PEAK_TFLOPS overrides."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    if os.environ.get("AUTORESEARCH_PEAK_TFLOPS"):
        return float(os.environ["AUTORESEARCH_PEAK_TFLOPS"]) * 1e12, name
    for pattern, flops in GPU_PEAK_FLOPS if device.type == "cuda" else []:
        if re.search(pattern, name):
            return flops, name
    return None, name


def peak_memory_mb(device: torch.device) -> float:
    """CUDA's peak allocated memory; elsewhere (CPU, MPS) the process's peak resident memory."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes there, KiB here
