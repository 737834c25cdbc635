"""The local backend: the experiment runs in the trial's own worktree on this machine.

With `--gpus 0,1,2,3` each slot (trial in flight) gets its own group of `--gpus-per-trial`
ids, exported as CUDA_VISIBLE_DEVICES to that slot's experiments only.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from autoresearch.errors import UsageError
from autoresearch.execute import ExecResult, ExecSpec, execute


def gpu_groups(gpus: Sequence[str], per_trial: int = 1, workers: int | None = None) -> list[tuple[str, ...]]:
    """The GPUs of each slot: `gpus` cut into groups of `per_trial`, one group per worker
    (all the groups when `workers` is None; no GPU pinned when `gpus` is empty)."""
    if per_trial < 1:
        raise UsageError(f"--gpus-per-trial must be at least 1, got {per_trial}")
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    if not gpus:
        if per_trial != 1:
            raise UsageError(f"--gpus-per-trial {per_trial} needs --gpus (the GPU ids to share out, e.g. --gpus 0,1,2,3)")
        return [()] * (workers or 1)
    if len(set(gpus)) != len(gpus):
        raise UsageError(f"--gpus lists a GPU twice: {','.join(gpus)}")
    groups = [tuple(gpus[i:i + per_trial]) for i in range(0, len(gpus) - per_trial + 1, per_trial)]
    if not groups:
        raise UsageError(f"--gpus-per-trial {per_trial} is more than the {len(gpus)} GPU(s) of --gpus")
    if len(gpus) % per_trial:
        left = gpus[len(groups) * per_trial:]  # (ids: "GPU 2", never a bare "2" read as a count)
        raise UsageError(f"--gpus lists {len(gpus)} GPUs, not a multiple of --gpus-per-trial {per_trial}: "
                         f"GPU{'s' if len(left) > 1 else ''} {','.join(left)} would stay idle")
    if workers is None:
        return groups
    if workers > len(groups):
        raise UsageError(f"--workers {workers} with --gpus-per-trial {per_trial} needs "
                         f"{workers * per_trial} GPUs; --gpus lists {len(gpus)}")
    return groups[:workers]


def visible_gpus() -> int:
    """How many NVIDIA GPUs this machine shows (its /dev/nvidia<N> devices)."""
    return len(list(Path("/dev").glob("nvidia[0-9]*")))


def gpu_warnings(gpus: Sequence[str], per_trial: int = 1, workers: int | None = None,
                 visible: int | None = None, inherited: str | None = None) -> list[str]:
    """What a user may not have meant by `--gpus`: GPUs it lists that no slot uses (with fewer
    `--workers` than groups), or none visible on this machine (ids are passed on all the same),
    or outside the CUDA_VISIBLE_DEVICES the loop was given (`inherited`: each trial's replaces
    it, so `--gpus 0` is the machine's GPU 0 whatever it held); or, without it, several trials in
    flight on a machine with GPUs: each sees them all, and PyTorch puts every one of them on the
    first."""
    visible = visible_gpus() if visible is None else visible
    inherited = os.environ.get("CUDA_VISIBLE_DEVICES", "") if inherited is None else inherited
    given = [g.strip() for g in inherited.split(",") if g.strip()]
    if not gpus:
        if (workers or 1) > 1 and visible:
            visible = len(given) or visible  # (the GPUs this environment was given, when it says)
            n = min(workers or 1, visible)
            ids = given[:n] or list(map(str, range(n)))
            fix = f"--gpus {','.join(ids)}" + (f" --workers {n}" if n < (workers or 1) else "")
            return [f"--workers {workers} without --gpus: the {workers} trials in flight share this machine's "
                    f"{visible} GPU{'s' if visible > 1 else ''} (each sees every one, and PyTorch puts each "
                    f"on the first); give {fix} for one each"]
        return []
    notes = []
    used = sum(map(len, gpu_groups(gpus, per_trial, workers)))
    if used < len(gpus):
        idle = gpus[used:]  # (ids: "GPU 2 stays idle", never "2 stay idle", read as a count)
        notes.append(f"--workers {workers} with --gpus {','.join(gpus)} uses {used} of its {len(gpus)} GPUs; "
                     + (f"GPUs {','.join(idle)} stay" if len(idle) > 1 else f"GPU {idle[0]} stays")
                     + " idle (drop --workers to use them all)")
    if not visible:
        notes.append(f"--gpus {','.join(gpus)}, but no NVIDIA GPU is visible on this machine "
                     "(CUDA_VISIBLE_DEVICES is set for each trial all the same)")
    same_kind = all(g.isdigit() for g in given) == all(g.isdigit() for g in gpus)  # (indices, or UUIDs)
    if given and same_kind and (outside := [g for g in gpus if g not in given]):
        notes.append(f"--gpus {','.join(gpus)} names {'GPUs' if len(outside) > 1 else 'GPU'} {','.join(outside)}, "
                     f"outside this environment's CUDA_VISIBLE_DEVICES={inherited}: each trial's "
                     "CUDA_VISIBLE_DEVICES is set to the ids of --gpus, which are the machine's (give "
                     f"--gpus {','.join(given)} to stay on the GPUs you were given)")
    return notes


class LocalBackend:
    name = "local"
    remote = False

    def __init__(self, gpus: Sequence[str] = (), gpus_per_trial: int = 1) -> None:
        self.gpus = tuple(gpus)
        self.gpus_per_trial = gpus_per_trial

    def slots(self, workers: int | None) -> list[tuple[str, ...]]:
        return gpu_groups(self.gpus, self.gpus_per_trial, workers)

    def run(self, spec: ExecSpec, restore: Callable[[], None], cancel: threading.Event,
            started: Callable[[], None] | None = None) -> ExecResult:
        if started is not None:
            started()
        return execute(spec, restore=restore, cancel=cancel)

    def close(self) -> None:
        return None
