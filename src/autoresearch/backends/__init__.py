"""Where a measurement runs. A backend takes an `ExecSpec` (the experiment of one trial in its
worktree) and returns an `ExecResult`, having written the trial's log where the spec says.

- `local` (backends/local.py): in the trial's worktree on this machine, GPUs pinned per slot.
- `ray` (backends/ray.py): as a Ray task on a cluster, the code shipped to it; Ray is imported
  only when this backend is asked for.

The loop decides what to try, when to stop and what to keep; a backend only runs things.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from autoresearch.errors import UsageError
from autoresearch.execute import ExecResult, ExecSpec
from autoresearch.task import Task


class Backend(Protocol):
    name: str
    remote: bool  # the experiment runs elsewhere: the driver does not run the task's setup

    def slots(self, workers: int | None) -> list[tuple[str, ...]]:
        """One entry per trial in flight: the GPU ids pinned for it (empty: none pinned)."""
        ...

    def run(self, spec: ExecSpec, restore: Callable[[], None], cancel: threading.Event,
            started: Callable[[], None] | None = None) -> ExecResult:
        """Measure once. `restore()` makes spec.workdir exactly the trial's commit; `started()`
        is called when the experiment starts (on a cluster, once a node has taken it: until
        then the trial is queued)."""
        ...

    def close(self) -> None: ...


def open_backend(task: Task, kind: str = "local", *, gpus: Sequence[str] = (), gpus_per_trial: int = 1,
                 workers: int | None = None, ray_address: str | None = None,
                 resources: dict[str, float] | None = None, owner: str = "") -> Backend:
    """The backend `kind` ("local" or "ray"), its flags checked before anything starts (a bad
    combination is a UsageError naming the flag)."""
    if kind == "ray":
        if gpus:
            raise UsageError("--gpus is for --backend local; on Ray ask with --trial-resources gpu=N")
        from autoresearch.backends.ray import RayBackend

        return RayBackend(task, ray_address, resources, gpus_per_trial, owner)
    if kind != "local":
        raise UsageError(f"--backend {kind!r} is not a backend (local or ray)")
    if resources:
        raise UsageError("--trial-resources is for --backend ray; locally use --gpus and --gpus-per-trial")
    from autoresearch.backends.local import LocalBackend, gpu_groups

    gpu_groups(gpus, gpus_per_trial, workers)
    return LocalBackend(gpus, gpus_per_trial)
