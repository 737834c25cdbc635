"""The progress plot (report/plot.py): a short run keeps a linear axis and labels every keep; a
long run (400 trials, the loss down 3.7 decades, keeps clustered early) gets a log axis, labels
that do not overlap, and no marks for interrupted trials; the legend covers no trial, even with
outliers pinned to the edge; a lone trial gets whole trial numbers and a range around its
figure.

The short run is a real loop; the others are written to a real ledger the way the loop writes
them.
"""

from __future__ import annotations

import itertools
import random
import time
from pathlib import Path

import pytest
from conftest import cli
from report_helpers import assert_not_blank, new_task, write_trials

pytest_plugins = ["report_helpers"]  # the `ran` fixture


# ---------------------------------------------------------------------------
# a short run


def test_a_short_run_keeps_a_linear_axis_and_labels_every_keep(ran) -> None:
    from autoresearch.report.plot import progress_figure
    from autoresearch.report.study import load_study

    repo, _ = ran
    fig = progress_figure(load_study(repo, "t", details=False))
    ax = fig.axes[0]
    assert ax.get_yscale() == "linear"  # 6.005 to 2.25: not even half a decade
    assert sorted(int(a.xy[0]) for a in ax.texts) == [0, 1, 4]
    assert not fig.texts  # no "labelled: k of n" note when every keep has its label


# ---------------------------------------------------------------------------
# a long run: 400 trials, the loss down 3.7 decades, keeps clustered early


LONG = 400


WORDS = ["raise the learning rate to 0.04 and shorten the warmup to 200 steps", "QK norm",
         "swap GeLU for ReLU squared in every MLP block", "halve the batch, double the steps",
         "add value embeddings to every second layer", "muon for the matrices, AdamW for the rest"]


def write_long_run(root: Path) -> dict[str, list[int]]:
    """LONG trials written to a real ledger as the loop writes them (begin, then finish): the
    loss from 5.8 to 0.0012 over 23 keeps, 18 of them in trials 3-122; discards up to a decade
    worse and a few far off; a crash every 23 trials; four trials interrupted, one of them
    after its experiment had printed a figure. Returns the trial numbers by status."""
    from autoresearch.ledger import Ledger
    from autoresearch.records import Status, Trial

    rnd = random.Random(7)
    keeps = sorted(rnd.sample(range(3, 123), 18) + rnd.sample(range(130, LONG - 1), 5))
    factor = (0.0012 / 5.8) ** (1 / len(keeps))
    stopped = [57, 200, 333, LONG - 1]
    crashed = [i for i in range(23, LONG, 23) if i not in keeps and i not in stopped]
    led = Ledger.open(root, "long", "loss")
    led.set_meta("metric_name", "loss")
    led.set_meta("goal", "minimize")
    best = 5.8
    for i in range(LONG):
        status, metric = Status.DISCARD, best * 10 ** rnd.uniform(0.05, 1.0) * (1000 if i % 97 == 50 else 1)
        if i == 0:
            status, metric = Status.KEEP, best
        elif i in keeps:
            best *= factor
            status, metric = Status.KEEP, best
        elif i in crashed:
            status, metric = Status.CRASH, None
        elif i in stopped:
            status, metric = Status.INTERRUPTED, best * 2 if i == 200 else None
        words = "baseline" if i == 0 else f"{rnd.choice(WORDS)} (try {i}), because the last one " * 2
        t = Trial(i, Status.RUNNING, words, started=time.time())
        led.begin(t)
        led.finish(t.with_(status=status, metric=metric,
                           figures={} if metric is None else {"loss": metric}))
    led.close()
    return {"keep": [0, *keeps], "crash": crashed, "interrupted": stopped}


@pytest.fixture(scope="module")
def long_run(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    from autoresearch.report.plot import progress_figure
    from autoresearch.report.study import load_study

    repo = new_task(tmp_path_factory.mktemp("long") / "task")
    numbers = write_long_run(repo)
    study = load_study(repo, "long")
    fig = progress_figure(study)
    fig.canvas.draw()  # the positions as saved
    return repo, numbers, study, fig


def test_a_long_run_that_drops_decades_gets_a_log_axis(long_run) -> None:
    _, numbers, study, fig = long_run
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    lo, hi = ax.get_ylim()
    kept = [v for _, v in study.running_best()]
    assert len(kept) == 24 and kept[0] == 5.8 and kept[-1] == pytest.approx(0.0012)
    assert lo < min(kept) and max(kept) < hi < 100 * max(kept)
    # the keeps in the cluster are apart on the axis: a tenth of a decade is 30+ pixels
    ys = ax.transData.transform([(0, v) for v in kept])[:, 1]
    assert min(a - b for a, b in zip(ys, ys[1:], strict=False)) > 10
    assert "log scale" in ax.get_ylabel()
    # the far discards are pinned to the top edge, drawn apart
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "discarded (off the scale)" in legend


def test_a_long_run_labels_some_keeps_and_no_two_overlap(long_run) -> None:
    from matplotlib.text import Text

    from autoresearch.report.plot import LABEL_CHARS, MAX_LABELS

    _, numbers, study, fig = long_run
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    labels = [a for a in ax.texts if a.get_text()]
    assert 10 <= len(labels) <= MAX_LABELS
    assert all(len(a.get_text()) <= LABEL_CHARS for a in labels)
    assert all(a.get_text().endswith("…") for a in labels if a.get_text() != "baseline")
    # the box of the text itself (an annotation's own extent includes its leader line)
    boxes = [Text.get_window_extent(a, renderer) for a in labels]
    frame = ax.get_window_extent(renderer)
    for box in boxes:
        assert frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), (a, b)
    legend = ax.get_legend().get_window_extent(renderer)
    assert not any(box.overlaps(legend) for box in boxes)
    at = {int(a.xy[0]) for a in labels}
    assert at <= set(numbers["keep"])
    assert {0, numbers["keep"][-1]} <= at  # the baseline and the best
    assert len(at & set(range(3, 123))) >= 4  # the crowded start has labels too, a few
    note = " ".join(t.get_text() for t in fig.texts)
    assert f"labelled: {len(labels)} of 24 kept trials" in note


def test_interrupted_trials_are_not_drawn_or_counted_as_crashes(long_run) -> None:
    _, numbers, study, fig = long_run
    ax = fig.axes[0]
    marks = {c.get_label(): sorted(int(x) for x in c.get_offsets()[:, 0]) for c in ax.collections}
    crashes = marks.pop("crashed / no figure")
    stopped = [xs for label, xs in marks.items() if label.startswith("interrupted")]
    assert crashes == numbers["crash"] and stopped == [numbers["interrupted"]]
    # the interrupted trial that had printed a figure is no discarded dot either
    assert 200 not in marks["discarded"] and 200 in stopped[0]
    experiments = LONG - len(numbers["interrupted"])
    assert ax.get_title() == f"{experiments} experiments, 23 kept improvements, 4 interrupted"


def test_report_of_a_long_run_from_the_cli(long_run, tmp_path: Path) -> None:
    repo, numbers, _, _ = long_run
    result = cli("report", str(repo), "--tag", "long", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no matplotlib warnings on the terminal
    assert "396 experiments, 23 kept improvements, 4 interrupted" in (tmp_path / "report.html").read_text()
    assert_not_blank(tmp_path / "progress.png", 1000, 500)


# ---------------------------------------------------------------------------
# the plot's legend and axes


def marker_boxes(fig, ax):  # noqa: ANN001, ANN201
    """The display box of every marker drawn for a trial (scatter points)."""
    import math

    from matplotlib.collections import PathCollection
    from matplotlib.transforms import Bbox

    boxes = []
    for c in ax.collections:
        if not isinstance(c, PathCollection):
            continue
        r = math.sqrt(max(c.get_sizes())) / 2 * fig.dpi / 72
        for x, y in c.get_offset_transform().transform(c.get_offsets()):
            boxes.append((c.get_label(), Bbox.from_extents(x - r, y - r, x + r, y + r)))
    return boxes


@pytest.mark.parametrize("minimize", [True, False])
def test_the_legend_covers_no_trial_even_when_outliers_are_pinned_to_the_edge(tmp_path: Path, minimize: bool) -> None:
    """Trials far worse than the best sit on the plot's edge as triangles, on the side (and in
    the corner) where the legend used to be: the legend is below the axes, clear of them all."""
    from autoresearch.report.plot import progress_figure
    from autoresearch.report.study import load_study

    repo = new_task(tmp_path / "task")
    sign = 1 if minimize else -1
    far = [("discard", 5.8 + sign * 400 * (i + 1)) for i in range(6)]  # off the scale: pinned
    rows = [("keep", 5.8), ("keep", 5.8 - sign * 4.5), ("crash", None), ("discard", 5.8 + sign),
            *far, ("interrupted", None), ("discard", 1.3 - sign * 3)]
    write_trials(repo, "t", rows, minimize=minimize).close()
    fig = progress_figure(load_study(repo, "t", details=False))
    fig.canvas.draw()
    ax, renderer = fig.axes[0], fig.canvas.get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    boxes = marker_boxes(fig, ax)
    assert "discarded (off the scale)" in {label for label, _ in boxes}
    assert len(boxes) == len(rows)  # every trial has its marker
    for label, box in boxes:
        assert not box.overlaps(legend), (label, box, legend)
    assert legend.y1 < ax.get_window_extent(renderer).y0  # below the axes, not in a corner
    assert legend.x1 <= fig.bbox.width and legend.y0 >= 0  # and inside the image


def visible_ticks(ax, axis: str) -> list[float]:  # noqa: ANN001
    lo, hi = ax.get_xlim() if axis == "x" else ax.get_ylim()
    ticks = ax.get_xticks() if axis == "x" else ax.get_yticks()
    return [t for t in ticks if lo <= t <= hi]


def test_a_lone_trial_gets_whole_trial_numbers_and_a_range_around_its_figure(tmp_path: Path) -> None:
    from autoresearch.report.plot import progress_figure
    from autoresearch.report.study import load_study

    repo = new_task(tmp_path / "task")
    write_trials(repo, "one", [("keep", 5.8105)]).close()
    write_trials(repo, "crashed", [("crash", None)]).close()
    ax = progress_figure(load_study(repo, "one", details=False)).axes[0]
    assert visible_ticks(ax, "x") == [0]
    lo, hi = ax.get_ylim()
    assert lo < 5.8105 < hi and (hi - 5.8105) == pytest.approx(5.8105 - lo)  # centred
    assert 0.2 < hi - lo < 2  # about ±5%: neither ±0.04 nor ±6
    fig = progress_figure(load_study(repo, "crashed", details=False))
    ax = fig.axes[0]
    assert visible_ticks(ax, "x") == [0] and list(ax.get_yticks()) == []
    assert "no figure: the baseline (trial 0) crashed" in [t.get_text() for t in ax.texts]
    long = progress_figure(write_long_and_load(tmp_path)).axes[0]
    assert all(float(t).is_integer() for t in visible_ticks(long, "x"))


def write_long_and_load(tmp_path: Path):  # noqa: ANN201
    from autoresearch.report.study import load_study

    repo = new_task(tmp_path / "long")
    write_trials(repo, "t", [("keep", 3.0), ("discard", 3.5), ("keep", 2.0), ("discard", 2.4)]).close()
    return load_study(repo, "t", details=False)


def test_no_discard_in_range_is_drawn_beyond_the_pins_of_those_off_the_scale(tmp_path: Path) -> None:
    """The pins sat 3% inside the edge, and discards in the range's outer 3% were drawn beyond
    them: a trial above a pin reads as worse than the one far off."""
    from autoresearch.report.plot import progress_figure
    from autoresearch.report.study import load_study

    repo = new_task(tmp_path / "task")
    rows = [("keep", 5.8), ("keep", 1.3), *[("discard", 5.8 + 0.1 * k) for k in range(1, 120)],
            ("discard", 4000.0), ("discard", 9000.0)]
    write_trials(repo, "t", rows, minimize=True).close()
    fig = progress_figure(load_study(repo, "t", details=False))
    ax = fig.axes[0]
    drawn = {c.get_label(): c.get_offsets()[:, 1] for c in ax.collections if c.get_label() in
             ("discarded", "discarded (off the scale)")}
    assert len(drawn) == 2, drawn.keys()
    assert max(drawn["discarded"]) < min(drawn["discarded (off the scale)"]) <= ax.get_ylim()[1]


@pytest.mark.parametrize("rows, minimize", [
    ([("keep", 5.8), ("keep", 1e-300)], True),      # a loss gamed to nothing: 10**a was 0
    ([("keep", 5.8), ("keep", 1e300)], False),      # a reward gamed to 1e300: 10**b overflowed
    ([("keep", 5.8), ("keep", -1.7e308)], True),    # near float's end: the limits were -inf
    ([("keep", 1.7e308), ("keep", -1.7e308)], True),
])
def test_a_metric_gamed_to_the_end_of_float_still_gets_a_report(tmp_path: Path, rows, minimize: bool) -> None:
    """The trials a user most needs to look at (the audit flags them) made `report` fail with a
    traceback (OverflowError, ZeroDivisionError, 'Axis limits cannot be NaN or Inf'), and the
    page of `serve` answer 503 for the rest of the night."""
    import math
    import warnings

    from autoresearch.report.plot import progress_figure
    from autoresearch.report.study import load_study

    repo = new_task(tmp_path / "task")
    write_trials(repo, "t", rows, minimize=minimize).close()
    r = cli("report", str(repo), "--tag", "t", "--out", str(tmp_path / "r"))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "2 experiments, 1 kept improvement" in r.stdout
    assert_not_blank(tmp_path / "r" / "progress.png", 1000, 500)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = progress_figure(load_study(repo, "t", details=False)).axes[0].get_ylim()
    assert math.isfinite(lo) and math.isfinite(hi) and lo < hi


@pytest.mark.parametrize("minimize", [True, False])
def test_before_any_keep_the_better_half_of_the_discards_is_on_the_scale(tmp_path: Path, minimize: bool) -> None:
    """A run where nothing beat the baseline (the demo's first minutes, a hard night) drew every
    discard as an 'off the scale' pin: the range was the baseline ±5%, so trials 5% worse than it
    were pinned and the plot showed no trial but the baseline."""
    from autoresearch.report.plot import progress_figure
    from autoresearch.report.study import load_study

    repo = new_task(tmp_path / "task")
    sign = 1 if minimize else -1
    worse = [2.94 + sign * d for d in (0.15, 0.28, 0.4, 9.0, 30.0)]
    write_trials(repo, "t", [("keep", 2.94), *[("discard", v) for v in worse]], minimize=minimize).close()
    ax = progress_figure(load_study(repo, "t", details=False)).axes[0]
    drawn = {c.get_label(): sorted(abs(y - 2.94) for y in c.get_offsets()[:, 1]) for c in ax.collections}
    assert drawn["discarded"] == pytest.approx([0.15, 0.28, 0.4]), drawn  # the better half, and the median
    assert len(drawn["discarded (off the scale)"]) == 2  # the far ones still pinned: no flattened plot
    lo, hi = sorted(ax.get_ylim())
    assert hi - lo < 1.5
