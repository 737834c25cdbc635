"""The options of one `run` of the loop: what its command line asks (`autoresearch.loop.Options`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Options:
    trials: int | None = None  # new trials in this invocation (the baseline not counted)
    hours: float | None = None
    seed: int = 0
    agent_timeout: float | None = None
    gpus: tuple[str, ...] = ()
    sandbox: bool = False
    keep_runs: bool = False
    max_cost: float | None = None
    workers: int | None = None  # trials in flight; None: one per GPU group, or what Ray holds
    gpus_per_trial: int = 1
    agent_concurrency: int | None = None  # proposals prepared ahead; None: 0 for one worker, else 1
