"""Text views of a tag for the terminal: `status` and `show`."""

from __future__ import annotations

from pathlib import Path

from autoresearch.errors import UsageError
from autoresearch.events import gain_text
from autoresearch.gitrepo import Git
from autoresearch.ledger import Ledger, list_tags
from autoresearch.process import last_lines, read_tail
from autoresearch.prompt import fmt
from autoresearch.records import Trial


def pick_tag(root: Path, tag: str | None) -> str:
    """The tag asked for, or the most recently used one."""
    if tag:
        return tag
    tags = list_tags(root)
    if not tags:
        raise UsageError(f"no autoresearch runs in {root} (start one with `autoresearch run`)")
    base = root / ".autoresearch"
    return max(tags, key=lambda t: (base / t / "ledger.sqlite").stat().st_mtime)


def with_spread(t: Trial, name: str, value: float | None) -> str:
    spread = t.spread(name)
    return fmt(value) + (f" ± {spread:.2g}" if spread is not None else "")


def status_text(root: Path, tag: str | None, limit: int | None = None) -> str:
    tag = pick_tag(root, tag)
    led = Ledger.read(root, tag)
    try:
        trials = led.trials()
        best = led.best()
        goal = led.get_meta("goal") or "minimize"
    finally:
        led.close()
    metric = led.metric_name
    shown = trials[-limit:] if limit else trials
    rows = [("#", "commit", "status", metric, "seconds", "description")]
    for t in shown:
        rows.append((str(t.number), t.short or "-", t.status.value, with_spread(t, metric, t.metric),
                     f"{t.run_seconds:.1f}", (t.description + (f"  [{t.reason}]" if t.reason and t.status.value != "keep" else ""))[:100]))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [f"tag {tag}: {len(trials)} trials, {sum(t.status.value == 'keep' for t in trials)} kept"]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=False)) + "  " + r[5])
    if best is not None:
        base = trials[0] if trials else None
        lines.append(f"best: trial {best.number} ({best.short}) {metric} = "
                     f"{with_spread(best, metric, best.metric)}{gain_text(best, base, goal == 'minimize')}"
                     f" — {best.description}")
    return "\n".join(lines)


def show_text(root: Path, number: int, tag: str | None) -> str:
    tag = pick_tag(root, tag)
    led = Ledger.read(root, tag)
    try:
        t = led.get(number)
    finally:
        led.close()
    if t is None:
        raise UsageError(f"no trial {number} in tag {tag!r}")
    metric = led.metric_name
    lines = [f"trial {t.number} of tag {tag}: {t.status.value}",
             f"description: {t.description}",
             f"commit: {t.commit or '-'}  parent: {t.parent or '-'}",
             f"{metric}: {with_spread(t, metric, t.metric)}"]
    for k, v in t.figures.items():
        if k != metric:
            lines.append(f"{k}: {with_spread(t, k, v)}")
    if t.reason:
        lines.append(f"reason: {t.reason}")
    lines.append(f"agent: {t.agent}" + (f" ({t.model})" if t.model else "")
                 + (f", tokens {t.tokens_in}+{t.tokens_out}, cost ${t.cost:.4f}" if t.tokens_in else ""))
    lines.append(f"run: {t.run_seconds:.1f} s, seed {t.seed}")
    if t.flags:
        lines.append(f"audit flags: {'; '.join(t.flags)}")
    if t.commit and t.parent:
        lines += ["", "diff against its parent:", Git(root).diff(t.parent, t.commit)]
    log = Path(t.log_path) if t.log_path else None
    if log and log.exists():
        lines += ["", f"log tail ({log}):", last_lines(read_tail(log), 20)]
    return "\n".join(lines)
