"""What a tag pins of its task file (how trials are measured), and the refusal to resume it once
that changed: new trials would be compared with old ones as equals."""

from __future__ import annotations

import json

from autoresearch.errors import AutoresearchError, UsageError
from autoresearch.ledger import Ledger, tag_dir
from autoresearch.task import PINNED_ENV, SMOKE, TASK_FILE, Task


def check_before(task: Task, tag: str, checkout: bool = False) -> None:
    """`check_measurement` from the tag's ledger as it is, read only: before `run` or `trial`
    says how the tag goes on (its agent, its sandbox, its workers), so that a refusal is not
    read after a line saying it goes on. A tag with no trial yet takes the task file as it is.
    `checkout` (run's): also the refusals of the checkout (the tag's branch checked out, the task
    file of a resumed tag not committed)."""
    if not (tag_dir(task.root, tag) / "ledger.sqlite").exists():
        return
    if checkout:
        from autoresearch.gitrepo import Git
        from autoresearch.session import check_checkout

        check_checkout(Git.open(task.root), tag, exists=True, allow_dirty=False)
    try:
        led = Ledger.read(task.root, tag)
    except AutoresearchError:  # (one still being made, or unreadable: open_session says so)
        return
    try:
        if led.next_number():  # (a trial: what it was measured by is pinned)
            check_measurement(led, task, tag)
    finally:
        led.close()


def check_measurement(ledger: Ledger, task: Task, tag: str) -> None:
    """Refuse to resume a tag whose task file now measures trials differently (another goal,
    metric, command, budget...): its new trials would be compared with old ones as equals."""
    try:
        pinned = json.loads(ledger.get_meta("measurement") or "{}")
    except ValueError:
        pinned = {}
    if not pinned:  # a ledger from before the pin: what it did record
        pinned = {k: v for k, v in (("metric.name", ledger.get_meta("metric_name")),
                                    ("metric.goal", ledger.get_meta("goal"))) if v}
    now = task.measurement()
    if SMOKE in pinned and pinned[SMOKE] != now[SMOKE]:
        was, now_ = (f"{SMOKE}={v}" if v else f"without {SMOKE}" for v in (pinned[SMOKE], now[SMOKE]))
        raise UsageError(f"tag {tag} was started {was} (the templates' smoke mode: tiny data and model) and "
                         f"this run is {now_}: their figures cannot be compared; start a new --tag")
    for k in PINNED_ENV:
        if k in pinned and pinned[k] != now[k]:
            was, now_ = (f"{k}={v}" if v else f"{k} unset" for v in (pinned[k], now[k]))
            raise UsageError(f"tag {tag} was started with {was} and this run has {now_}: the templates read it to "
                             f"choose what is scored, so the figures cannot be compared; set it as it was, or "
                             "start a new --tag")
    changed = [f"{k}: {pinned[k]!r} -> {now.get(k)!r}" for k in sorted(pinned)
               if k in now and pinned[k] != now[k] and k not in PINNED_ENV]
    if changed:
        shown = "; ".join(changed[:3]) + (" ..." if len(changed) > 3 else "")
        raise UsageError(f"{TASK_FILE} changed since tag {tag} started ({shown}): a tag's trials are compared "
                         "with each other, so they must be measured alike; start a new --tag, or put the "
                         "task file back")
