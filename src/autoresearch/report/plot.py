"""progress.png: every trial a dot, discarded ones faint, kept ones on the running-best step
line and labelled with their descriptions; crashed trials as crosses along the bottom.

Drawn with matplotlib's object API (no pyplot), so it is safe in a server thread.
"""

from __future__ import annotations

import io
import warnings

from autoresearch.ledger import clean_text
from autoresearch.records import Status
from autoresearch.report.study import Study

KEPT = "#1a9850"
FAINT = "#9a9a9a"
CRASHED = "#d73027"
LABEL_CHARS = 48
# a description in a script the font lacks (CJK, ...) is drawn as boxes, and matplotlib warns once
# per character; the report is right all the same, so those warnings are noise on the terminal
MISSING_GLYPH = r"Glyph \d+ .*missing from (current )?font"


def _literal(text: str) -> str:
    """Text matplotlib draws as written ('$' would start mathtext)."""
    return text.replace("$", r"\$")


def title(study: Study) -> str:
    n = len(study.finished)
    k = len(study.kept)
    return f"{n} experiment{'s' * (n != 1)}, {k} kept improvement{'s' * (k != 1)}"


def _limits(study: Study, values: list[float]) -> tuple[float, float] | None:
    """A y-range that shows the kept trials well; discards far off are pinned to its edge."""
    kept = [v for _, v in study.running_best()]
    if not kept:
        return None
    lo, hi = min(kept), max(kept)
    span = (hi - lo) or abs(hi) * 0.05 or 1.0
    # room for labels on the better side; on the worse side no further than the data go
    if study.minimize:
        return lo - 0.3 * span - study.noise, min(hi + 0.8 * span + study.noise, max(values))
    return max(lo - 0.8 * span - study.noise, min(values)), hi + 0.3 * span + study.noise


def progress_png(study: Study, dpi: int = 110) -> bytes:
    """The progress plot as PNG bytes."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=MISSING_GLYPH, category=UserWarning)
        return _draw(study, dpi)


def _draw(study: Study, dpi: int) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 6), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    faint = [(t.number, t.metric) for t in study.finished
             if t.metric is not None and t.status is not Status.KEEP]
    values = [v for _, v in faint] + [v for _, v in study.running_best()]
    limits = _limits(study, values) if values else None

    def clip(v: float) -> float:
        return min(max(v, limits[0]), limits[1]) if limits else v

    inside = [(n, v) for n, v in faint if clip(v) == v]
    outside = [(n, clip(v)) for n, v in faint if clip(v) != v]
    ax.scatter([n for n, _ in inside], [v for _, v in inside], s=16, color=FAINT,
               alpha=0.45, label="discarded", zorder=2)
    if outside:
        ax.scatter([n for n, _ in outside], [v for _, v in outside], s=22, color=FAINT,
                   alpha=0.45, marker="^" if study.minimize else "v",
                   label="discarded (off the scale)", zorder=2)
    _draw_best(ax, study)
    crashed = [t for t in study.finished if t.metric is None]
    if crashed:
        ax.scatter([t.number for t in crashed], [0.02] * len(crashed), marker="x", s=24,
                   color=CRASHED, alpha=0.7, transform=ax.get_xaxis_transform(),
                   label="crashed / no figure", zorder=2)
    if limits:
        pad = (limits[1] - limits[0]) * 0.06 or 0.5
        ax.set_ylim(limits[0] - pad, limits[1] + pad)
    last = max((t.number for t in study.finished), default=1)
    ax.set_xlim(-0.5 - last * 0.02, last + 0.5 + last * 0.02)
    ax.set_title(title(study), fontsize=14)
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{_literal(study.metric)} ({'lower' if study.minimize else 'higher'} is better)")
    ax.grid(alpha=0.25)
    if study.finished:
        ax.legend(loc="best", fontsize=9,
                  framealpha=0.85)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _draw_best(ax, study: Study) -> None:  # noqa: ANN001
    points = study.running_best()
    if not points:
        return
    last = max(t.number for t in study.finished)
    xs = [n for n, _ in points] + [last]
    ys = [v for _, v in points] + [points[-1][1]]
    ax.step(xs, ys, where="post", color=KEPT, linewidth=2, label="best so far", zorder=3)
    if study.noise > 0:
        ax.fill_between(xs, [y - study.noise for y in ys], [y + study.noise for y in ys],
                        step="post", color=KEPT, alpha=0.12, linewidth=0,
                        label=f"± noise ({study.noise:.3g})", zorder=1)
    ax.scatter([n for n, _ in points], [v for _, v in points], s=46, color=KEPT,
               edgecolor="black", linewidth=0.6, label="kept", zorder=4)
    by_number = {t.number: t for t in study.finished}
    for n, v in points:
        right = n > 0.7 * last

        text = clean_text(by_number[n].description, LABEL_CHARS + 1)
        if len(text) > LABEL_CHARS:
            text = text[:LABEL_CHARS - 1] + "…"
        # away from the discards (worse side) and, near the right edge, on the better side,
        # where no point can be: nothing beats the best so far, later keeps lie further right
        up = study.minimize != right
        ax.annotate(_literal(text), (n, v), xytext=(-6 if right else 5, 7 if up else -7),
                    textcoords="offset points", fontsize=8, color="#145a32",
                    rotation=25 if study.minimize else -25,
                    rotation_mode="anchor", ha="right" if right else "left",
                    va="bottom" if up else "top", zorder=5)
