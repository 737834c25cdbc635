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
# sparsity figures are twice these), and, for the cards that split into MIG slices, the whole
# card's SMs. First match on the device name wins.
GPU_PEAK_FLOPS = [
    (r"\bH200\b.*\bNVL\b", 835e12, 132),
    (r"\bG?H200\b", 989e12, 132),
    (r"\bH100\b.*\bNVL\b", 835e12, 132),
    (r"\bH100\b.*\bPCIe\b", 756e12, 114),
    (r"\bH100\b", 989e12, 132),
    (r"\bB200\b", 2250e12, 148),
    (r"\bA100\b", 312e12, 108),
    (r"\bA30\b", 165e12, 56),
    (r"\bA10\b", 125e12, None),
    (r"\bA40\b", 150e12, None),
    (r"\bL40S\b", 362e12, None),
    (r"\bL40\b", 181e12, None),
    (r"\bL4\b", 121e12, None),
    (r"RTX 5090", 209e12, None),
    (r"RTX 4090", 165e12, None),
    (r"RTX 3090 Ti", 80e12, None),
    (r"RTX 3090", 71e12, None),
    (r"RTX 6000 Ada", 364e12, None),
    (r"RTX A6000", 155e12, None),
]


def gpu_peak(name: str, sms: int | None = None) -> float | None:
    """The peak FLOP/s of the GPU called `name` (None: not in the table). A MIG slice ("NVIDIA
    A100-SXM4-40GB MIG 1g.5gb") has the share of its card's peak that its `sms` are of the
    card's SMs; without that count it is unknown, not the whole card's."""
    for pattern, flops, card_sms in GPU_PEAK_FLOPS:
        if re.search(pattern, name):
            if not re.search(r"\bMIG\b", name):
                return flops
            return flops * min(sms, card_sms) / card_sms if sms and card_sms else None
    return None


def peak_flops(device: torch.device) -> tuple[float | None, str]:
    """(peak FLOP/s or None when unknown, the device's name); AUTORESEARCH_PEAK_TFLOPS overrides."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    if os.environ.get("AUTORESEARCH_PEAK_TFLOPS"):
        return float(os.environ["AUTORESEARCH_PEAK_TFLOPS"]) * 1e12, name
    peak = None
    if device.type == "cuda":
        peak = gpu_peak(name, torch.cuda.get_device_properties(device).multi_processor_count)
    if peak is None:
        print(f"note: peak FLOP/s of {name} unknown, mfu_percent reported as 0 "
              "(set AUTORESEARCH_PEAK_TFLOPS to give it)", flush=True)
    return peak, name


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work: a clock read after it sees finished steps."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


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
