"""How a tag's loop is spread out (workers, GPUs, backend), kept across runs: `run --tag T`
resumed after a kill goes on as wide as it was started, not with one worker and no GPU pinning.

The flags fall in groups that hang together; a group given on the command line replaces the
whole of the tag's (so `--workers 1` alone drops the tag's `--gpus` too, and `--backend local`
its Ray address), and a group not given is taken from the tag's last run, said in one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

META_KEY = "scale_flags"
GROUPS = (("workers", "gpus", "gpus_per_trial"), ("backend", "ray_address", "trial_resources"),
          ("agent_concurrency",))
FLAGS = tuple(f for group in GROUPS for f in group)


def _saved(root: Path, tag: str) -> dict[str, Any]:
    """The scale flags the tag's last run was given ({} for a new tag or one that kept none)."""
    from autoresearch.errors import AutoresearchError
    from autoresearch.ledger import Ledger, tag_dir

    if not (tag_dir(root, tag) / "ledger.sqlite").exists():
        return {}
    try:
        led = Ledger.read(root, tag)
        try:
            text = led.get_meta(META_KEY)
        finally:
            led.close()
        saved = json.loads(text) if text else {}
    except (AutoresearchError, ValueError):
        return {}
    return {k: v for k, v in saved.items() if k in FLAGS} if isinstance(saved, dict) else {}


def on_ray(args: Any, saved: dict[str, Any]) -> bool:
    """Whether this run goes to Ray, where the tag's local --gpus do not apply (`--backend ray`
    given to a tag that ran on this machine's GPUs)."""
    given = args.backend is not None or args.ray_address is not None
    backend, address = (args.backend, args.ray_address) if given else (saved.get("backend"), saved.get("ray_address"))
    return bool(address) or backend == "ray"


def for_tag(root: Path, tag: str, args: Any) -> str:
    """Fill `run`'s scale flags not given (None) from `tag`'s last run, a group at a time, and
    say which were taken; return them all as the tag's ledger keeps them (meta META_KEY). Before
    the flags are checked, and before the tag's ledger is opened."""
    from autoresearch.ledger import Ledger, tag_dir

    saved = _saved(root, tag)
    taken = []
    for group in GROUPS:
        if any(getattr(args, f) is not None for f in group):
            continue
        for flag in group:
            if saved.get(flag) is not None and not (flag == "gpus" and on_ray(args, saved)):
                setattr(args, flag, saved[flag])
                taken.append(f"--{flag.replace('_', '-')} {saved[flag]}")
    if taken and not Ledger.loop_running(tag_dir(root, tag)):  # (busy: that refusal is the only line)
        print(f"autoresearch: tag {tag} goes on with {' '.join(taken)}, as its last run did "
              "(give them again to change them)", file=sys.stderr, flush=True)
    return json.dumps({f: getattr(args, f) for f in FLAGS if getattr(args, f) is not None}, sort_keys=True)
