"""progress.png: every trial a dot, discarded ones faint, kept ones on the running-best step
line; crashed trials as crosses along the bottom, interrupted ones (the loop was stopped while
they ran: not a verdict on the change) as ticks beside them, outside the title's count.

Readable at any length of run:
- the y axis is logarithmic when the kept figures are all positive and span more than
  LOG_DECADES decades (a loss from 5.8 to 0.0012); otherwise linear, cropped to the kept trials
  (before any trial beat the baseline: to the better half of the others), with discards far off
  pinned to the edge as triangles;
- at most MAX_LABELS kept trials are labelled: the best, the baseline, then the biggest steps of
  the running best; each label goes to the first free spot near its point (the better side of
  the step line first, where no trial can be) and is left out when none is free, so no two
  labels overlap; descriptions are cut to LABEL_CHARS;
- the legend sits below the axes, where it can cover no trial; the x axis shows whole trial
  numbers; a lone value gets a range around it, and with no figure at all the plot says why.

Drawn with matplotlib's object API (no pyplot), so it is safe in a server thread.
"""

from __future__ import annotations

import io
import math
import textwrap
import warnings
from typing import Any

from autoresearch.ledger import clean_text
from autoresearch.records import Status
from autoresearch.report.study import Study, outcome

KEPT = "#1a9850"
FAINT = "#9a9a9a"
CRASHED = "#d73027"
STOPPED = "#b26a00"
LABEL_CHARS = 40
MAX_LABELS = 16
LOG_DECADES = 1.5
FAR, DECADES = 1e306, 300.0  # the y range at most, linear and in decades: float's end is near
FONT = 8  # points, of the labels
# a description in a script the font lacks (CJK, ...) is drawn as boxes, and matplotlib warns once
# per character; the report is right all the same, so those warnings are noise on the terminal
MISSING_GLYPH = r"Glyph \d+ .*missing from (current )?font"
NOTE = "labelled: {} of {} kept trials (the biggest gains; all in report.html)"


def _literal(text: str) -> str:
    """Text matplotlib draws as written ('$' would start mathtext)."""
    return text.replace("$", r"\$")


def title(study: Study) -> str:
    """'N experiments, K kept improvements[, I interrupted]': N counts the finished trials but
    the interrupted ones (the baseline included), K the keeps after the baseline."""
    n, k, stopped = study.tally()
    text = f"{n} experiment{'s' * (n != 1)}, {k} kept improvement{'s' * (k != 1)}"
    return text + (f", {stopped} interrupted" if stopped else "")


def log_scale(study: Study) -> bool:
    """Whether the y axis is logarithmic: the kept figures are all positive and span more than
    LOG_DECADES decades."""
    kept = [v for _, v in study.running_best()]
    return bool(kept) and min(kept) > 0 and math.log10(max(kept) / min(kept)) > LOG_DECADES


def _limits(study: Study, values: list[float], log: bool) -> tuple[float, float] | None:
    """A y-range that shows the kept trials well; discards far off are pinned to its edge."""
    kept = [v for _, v in study.running_best()]
    if not kept:
        return None
    f = math.log10 if log else float
    seen = [f(v) for v in values if v > 0 or not log]
    lo, hi = f(min(kept)), f(max(kept))
    noise = 0.0 if log else study.noise
    if lo == hi == min(seen) == max(seen):  # one value (the baseline alone): centred, ±5%
        half = abs(hi) * 0.05 or 0.5
        return _drawable(hi - half - noise, hi + half + noise, log)
    span = (hi - lo) or abs(hi) * 0.05 or 1.0
    worse = 0.3 if log else 0.8  # a decade of discards above the baseline says nothing more
    if lo == hi:  # nothing beat the baseline yet: the better half of the others sets the scale
        off = sorted(abs(v - hi) for v in seen if (v > hi) == study.minimize and v != hi)
        span = max(span, off[(len(off) - 1) // 2] / worse if off else 0.0)
    # room for labels on the better side; on the worse side no further than the data go
    if study.minimize:
        a, b = lo - 0.3 * span - noise, min(hi + worse * span + noise, max(seen))
    else:
        a, b = max(lo - worse * span - noise, min(seen)), hi + 0.3 * span + noise
    pad = (b - a) * 0.06 or 0.5
    return _drawable(a - pad, b + pad, log)


def _drawable(a: float, b: float, log: bool) -> tuple[float, float]:
    """The range a..b (in decades on a log axis) held to where the arithmetic of the plot stays
    finite: a metric gamed to 1e300 or -1.7e308 made its limits overflow (inf, or 0 on a log
    axis) and the report failed; what lies beyond is pinned to the edge like any far discard."""
    top = DECADES if log else FAR
    a, b = min(max(a, -top), top), min(max(b, -top), top)
    if not a < b:  # (every figure beyond one edge: a range just inside it)
        if a >= top:
            a, b = (top - 1, top) if log else (top * 0.9, top)
        else:
            a, b = (-top, 1 - top) if log else (-top, -top * 0.9)
    return (10 ** a, 10 ** b) if log else (a, b)


def progress_png(study: Study, dpi: int = 110) -> bytes:
    """The progress plot as PNG bytes."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=MISSING_GLYPH, category=UserWarning)
        # a figure near float's end (a gamed metric) overflows matplotlib's autoscaling before
        # our limits replace it: the plot is right, the warning is noise
        warnings.filterwarnings("ignore", message="overflow encountered", category=RuntimeWarning)
        fig = progress_figure(study, dpi)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    return buf.getvalue()


def progress_figure(study: Study, dpi: int = 110) -> Any:
    """The progress plot as a matplotlib Figure (an Agg canvas attached), laid out and labelled."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    fig = Figure(figsize=(12, 6), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    log = log_scale(study)
    if log:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    limits = _draw_points(ax, study, log)
    _draw_best(ax, study)
    _draw_unmeasured(ax, study)
    if limits:
        ax.set_ylim(*limits)
    elif not any(t.metric is not None for t in study.finished):
        _nothing_measured(ax, study)
    last = max((t.number for t in study.finished), default=0)
    ax.set_xlim(-0.5 - last * 0.02, last + 0.5 + last * 0.02)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # trial numbers
    ax.set_title(title(study), fontsize=14)
    ax.set_xlabel("trial")
    better = "lower" if study.minimize else "higher"
    ax.set_ylabel(f"{_literal(study.metric)} ({better} is better{', log scale' * log})")
    ax.grid(alpha=0.25)
    keeps = len(study.running_best())
    note = fig.text(0.995, 0.005, NOTE.format(MAX_LABELS, 10 ** 4), ha="right", va="bottom",
                    fontsize=8, color="#666666")
    _layout(fig, ax, note if keeps else None)
    placed = _label_keeps(fig, ax, study, log)
    if placed < keeps:
        note.set_text(NOTE.format(placed, keeps))
    else:
        note.remove()
    return fig


def _nothing_measured(ax: Any, study: Study) -> None:
    """No trial has a figure: no y scale to show, and a line that says why."""
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    failed = study.failed_baseline
    text = (f"no figure: the baseline (trial {failed.number}) {outcome(failed)}"
            if failed is not None else "no trial has finished" + (
                f":\n{_literal(textwrap.fill(clean_text(study.ended, 600), 70, max_lines=3, placeholder=' ...'))}"
                if study.ended and not study.running else " yet"))
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=12,
            color="#666666")


def _layout(fig: Any, ax: Any, note: Any) -> None:
    """The legend goes below the axes, in a strip at the bottom of the figure where no trial
    can be drawn (left; the labels' `note`, when there may be one, right of it); the axes are
    laid out above the strip. The legend gets as many columns as fit beside the note."""
    renderer = fig.canvas.get_renderer()
    margin = 0.005
    strip = note.get_window_extent(renderer).y1 if note is not None else 0.0
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        room = fig.bbox.width * (1 - 3 * margin) - (note.get_window_extent(renderer).width
                                                   if note is not None else 0.0)
        for ncol in range(len(handles), 0, -1):
            legend = ax.legend(handles, labels, loc="lower left", ncol=ncol, fontsize=9,
                               bbox_to_anchor=(margin, margin), bbox_transform=fig.transFigure,
                               borderaxespad=0, frameon=False, columnspacing=1.6)
            box = legend.get_window_extent(renderer)
            if box.width <= room:
                break
        legend.set_in_layout(False)  # placed by hand, not moved with the axes
        strip = max(strip, box.y1)
    fig.tight_layout(rect=(0, strip / fig.bbox.height + margin, 1, 1))


def _draw_points(ax: Any, study: Study, log: bool) -> tuple[float, float] | None:
    """The discarded trials (faint); returns the y-range, outside which they sit on its edge."""
    faint = [(t.number, t.metric) for t in study.finished if t.metric is not None
             and t.status not in (Status.KEEP, Status.INTERRUPTED)]
    values = [v for _, v in faint] + [v for _, v in study.running_best()]
    limits = _limits(study, values, log) if values else None
    lo, hi = limits or (-math.inf, math.inf)
    # what lies in the outer 5% of the range is pinned too: the pins sit 3% inside the edge,
    # and a point drawn above the pin of a point far off would read as the worse of the two
    near = (lambda a, b: a * (b / a) ** 0.05) if log else (lambda a, b: a + (b - a) * 0.05)
    if limits:
        lo, hi = near(lo, hi), near(hi, lo)
    inside = [(n, v) for n, v in faint if lo <= v <= hi]
    if inside:
        ax.scatter([n for n, _ in inside], [v for _, v in inside], s=16, color=FAINT,
                   alpha=0.45, label="discarded", zorder=2)
    above = [n for n, v in faint if v > hi]
    below = [n for n, v in faint if v < lo]
    # pinned a little inside the edge (the range is padded by 6% of itself beyond the data)
    edge = (lambda a, b: a * (b / a) ** 0.03) if log else (lambda a, b: a + (b - a) * 0.03)
    label = "discarded (off the scale)"
    bottom, top = limits or (lo, hi)
    for ns, y, marker in ((above, edge(top, bottom), "^"), (below, edge(bottom, top), "v")):
        if ns:
            ax.scatter(ns, [y] * len(ns), s=22, color=FAINT, alpha=0.45, marker=marker,
                       label=label, zorder=2)
            label = "_"  # one legend entry for both edges
    return limits


def _draw_unmeasured(ax: Any, study: Study) -> None:
    """Crashed trials as crosses along the bottom; interrupted ones as ticks, apart."""
    stopped = [t.number for t in study.finished if t.status is Status.INTERRUPTED]
    crashed = [t.number for t in study.finished
               if t.metric is None and t.status is not Status.INTERRUPTED]
    along = ax.get_xaxis_transform()
    if crashed:
        ax.scatter(crashed, [0.02] * len(crashed), marker="x", s=24, color=CRASHED, alpha=0.7,
                   transform=along, label="crashed / no figure", zorder=2)
    if stopped:
        ax.scatter(stopped, [0.02] * len(stopped), marker="|", s=60, color=STOPPED, alpha=0.8,
                   transform=along, label="interrupted (the loop stopped; not a crash)", zorder=2)


def _draw_best(ax: Any, study: Study) -> None:
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


# ---------------------------------------------------------------------------
# labels


def _short(text: str) -> str:
    text = clean_text(text, 4 * LABEL_CHARS)
    if len(text) <= LABEL_CHARS:
        return text
    cut = text[:LABEL_CHARS - 1]
    word = cut.rsplit(" ", 1)[0]
    return (word if len(word) > LABEL_CHARS // 2 else cut).rstrip(" ,;:-") + "…"


def _by_priority(study: Study, log: bool) -> list[tuple[int, float]]:
    """The kept trials, the ones most worth a label first: the best (the last keep), the
    baseline, then by the size of their step of the running best (in decades on a log axis)."""
    points = study.running_best()
    f = math.log10 if log else float

    def weight(i: int) -> float:
        if i in (0, len(points) - 1):
            return math.inf
        return abs(f(points[i][1]) - f(points[i - 1][1]))

    order = sorted(range(len(points)), key=lambda i: (-weight(i), -i))
    return [points[i] for i in order]


def _spots(minimize: bool) -> list[tuple[float, float, str, str]]:
    """Offsets (points) and alignments to try, nearest first: the better side (below the step
    line when minimizing), left of the point before right, then stacked further off; the worse
    side last, where the discards are."""
    sign = -1 if minimize else 1
    better, worse = ("top", "bottom") if minimize else ("bottom", "top")
    spots: list[tuple[float, float, str, str]] = []
    for k in range(7):
        dy = sign * (5 + 11 * k)
        spots += [(-5.0, dy, "right", better), (5.0, dy, "left", better)]
    for k in range(3):
        dy = -sign * (5 + 11 * k)
        spots += [(-5.0, dy, "right", worse), (5.0, dy, "left", worse)]
    return spots


def _label_keeps(fig: Any, ax: Any, study: Study, log: bool) -> int:
    """Label kept trials where a label overlaps no other label, the legend or a kept point;
    returns how many were labelled. Call once the axes are laid out (positions are final)."""
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    taken: list[Any] = []
    legend = ax.get_legend()
    if legend is not None:
        taken.append(legend.get_window_extent(renderer))
    r = 3.5 * fig.dpi / 72  # a kept marker's radius in pixels
    points = study.running_best()
    for x, y in ax.transData.transform(points) if points else []:
        taken.append(Bbox.from_extents(x - r, y - r, x + r, y + r))
    by_number = {t.number: t for t in study.finished}
    probe = ax.text(0, 0, "", fontsize=FONT)
    chosen = _by_priority(study, log)[: 3 * MAX_LABELS]
    tried: set[int] = set()
    labelled: list[int] = []
    # first spread out (a cluster of keeps gets a few labels, not all), then fill up
    for gap in (max((t.number for t in study.finished), default=0) / (2 * MAX_LABELS), 0):
        for n, v in chosen:
            if len(labelled) == MAX_LABELS or n in tried or any(abs(n - m) < gap for m in labelled):
                continue
            tried.add(n)
            text = _literal(_short(by_number[n].description))
            spot = _free_spot(fig, ax, probe, text, (n, v), study.minimize, taken)
            if spot is not None:
                _place(ax, text, (n, v), *spot)
                labelled.append(n)
    probe.remove()
    return len(labelled)


def _free_spot(fig: Any, ax: Any, probe: Any, text: str, xy: tuple[float, float], minimize: bool,
               taken: list[Any]) -> tuple[tuple[float, float], str, str] | None:
    """The first spot where `text` stays inside the axes and overlaps nothing in `taken`
    (its box is added to `taken`), or None."""
    from matplotlib.transforms import ScaledTranslation

    frame = ax.get_window_extent()
    probe.set_text(text)
    probe.set_position(xy)
    for dx, dy, ha, va in _spots(minimize):
        probe.set_transform(ax.transData + ScaledTranslation(dx / 72, dy / 72, fig.dpi_scale_trans))
        probe.set_horizontalalignment(ha)
        probe.set_verticalalignment(va)
        box = probe.get_window_extent().padded(2)
        if frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1) \
                and not any(box.overlaps(o) for o in taken):
            taken.append(box)
            return (dx, dy), ha, va
    return None


def _place(ax: Any, text: str, xy: tuple[float, float], offset: tuple[float, float],
           ha: str, va: str) -> None:
    # a label stacked away from its point gets a thin line to it
    far = abs(offset[1]) > 6
    ax.annotate(text, xy, xytext=offset, textcoords="offset points", fontsize=FONT,
                color="#145a32", ha=ha, va=va, zorder=5, annotation_clip=False,
                bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7},
                arrowprops={"arrowstyle": "-", "color": "#145a32", "lw": 0.5, "alpha": 0.6,
                            "shrinkA": 0, "shrinkB": 3} if far else None)
