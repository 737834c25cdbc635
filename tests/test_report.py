"""Reports: the page in a real headless Chromium, progress.png, report --results, serve over real
HTTP while a loop writes the ledger, MLflow in a local file store, load(), the live view.

Every ledger here comes from a real loop (a scripted CLI agent editing a real git repository),
but the long run's: 400 trials written to a real ledger the way the loop writes them.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import pty
import random
import re
import select
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from browser import Browser, find_chromium
from conftest import cli, make_task, script_agent

ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
NASTY = "X=1.5 <script>alert(1)</script>\t\x1b[31mred\x1b[0m & <b>bold</b>"

EXPERIMENT = """\
import os
X = 3.0
Y = 2
seed = int(os.environ.get("AUTORESEARCH_SEED", "0"))
loss = (X - 1.0) ** 2 + Y + 0.01 * (seed % 3)
open(os.path.join(os.environ["AUTORESEARCH_RUN_DIR"], "loss.txt"), "w").write(str(loss))
print("training...")
print("peak_vram_mb: 2048.0")
"""

CHECK = """\
import os
loss = float(open(os.path.join(os.environ["AUTORESEARCH_RUN_DIR"], "loss.txt")).read())
print(f"loss: {loss}")
print(f"test_loss: {loss * 1.1}")
"""

TASK_EXTRA = """\
evaluate = "python check.py"

[metric]
name = "loss"
goal = "minimize"
record = ["peak_vram_mb"]
holdout = "test_loss"

[acceptance]
baseline_runs = 2
"""

AGENT = r"""
case "$AUTORESEARCH_TRIAL" in
  1) sed -i 's/^X = .*/X = 2.0/' exp.py; echo "lower X to 2.0" ;;
  2) sed -i 's/^X = .*/X = 5.0/' exp.py; echo "raise X to 5" ;;
  3) echo 'raise SystemExit("boom: out of memory")' >> exp.py; echo "crash it" ;;
  *) sed -i 's/^X = .*/X = 1.5/' exp.py; printf '%s' "$NASTY" > "$AUTORESEARCH_DESCRIPTION_FILE" ;;
esac
"""


def new_task(path: Path) -> Path:
    return make_task(path, toml_extra=TASK_EXTRA, experiment=EXPERIMENT,
                     files={"check.py": CHECK})


def run_loop(repo: Path, trials: int, *extra: str, agent: str = AGENT,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    script = script_agent(repo.parent / f"agent-{repo.name}.sh", agent)
    return cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", script,
               "--trials", str(trials), *extra, env={"NASTY": NASTY, **(env or {})})


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A task repository whose tag `t` holds a baseline (two runs: noise), a keep, a discard,
    a crash and a keep with a hostile description."""
    repo = new_task(tmp_path_factory.mktemp("ledger") / "task")
    result = run_loop(repo, 4)
    assert result.returncode == 0, result.stderr + result.stdout
    return repo, result


@pytest.fixture(scope="module")
def report(ran, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo, _ = ran
    out = tmp_path_factory.mktemp("report")
    result = cli("report", str(repo), "--tag", "t", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert str(out / "report.html") in result.stdout
    return out


def png_pixels(path: Path):  # noqa: ANN201
    from matplotlib.image import imread

    return imread(path)


def assert_not_blank(path: Path, min_w: int, min_h: int) -> None:
    pixels = png_pixels(path)
    h, w = pixels.shape[:2]
    assert w >= min_w and h >= min_h, (w, h)
    rgb = pixels[..., :3].reshape(-1, 3)
    colours = {tuple(p) for p in (rgb[:: max(1, len(rgb) // 20000)] * 255).astype(int).tolist()}
    assert len(colours) > 20, "the image is (nearly) one colour"
    assert rgb.std() > 0.02


# ---------------------------------------------------------------------------
# progress.png and report.html


def test_progress_png_has_its_size_and_is_not_blank(report: Path) -> None:
    path = report / "progress.png"
    assert path.stat().st_size > 20_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert_not_blank(path, 1000, 500)


def test_report_html_is_self_contained_and_escapes_agent_text(report: Path) -> None:
    page = (report / "report.html").read_text()
    assert "5 experiments, 2 kept improvements" in page
    assert 'src="data:image/png;base64,' in page
    # nothing that could load from anywhere: no src/href/url() but data: and in-page anchors
    assert not re.findall(r"""(?:src|href)\s*=\s*(?!["']?(?:data:|#))""", page)
    assert "url(" not in page and "@import" not in page
    # hostile description: escaped, escape codes and tabs gone
    assert "<script>alert" not in page and "<b>bold</b>" not in page
    assert "X=1.5 &lt;script&gt;alert(1)&lt;/script&gt; red &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    assert "\x1b" not in page and "\t" not in page.split("<script>")[0]
    # kept trials with their diffs and gains, the crash with its log tail
    assert "+X = 2.0" in page and "-X = 3.0" in page
    assert "against trial 1" in page and "against the baseline" in page
    assert "boom: out of memory" in page
    # the noise band, figures as mean ± spread, the holdout beside the metric of kept trials
    assert "noise (run-to-run σ)" in page
    assert "6.005 ± 0.0071" in page
    assert "test_loss (holdout)" in page and "holdout test_loss 3.3" in page


def test_build_report_is_a_library_call(ran, tmp_path: Path) -> None:
    from autoresearch.report import build_report

    repo, _ = ran
    page = build_report(repo, "t", tmp_path / "r")
    assert page == tmp_path / "r" / "report.html" and page.exists()
    assert (tmp_path / "r" / "progress.png").exists()
    default = build_report(repo, None)  # the most recent tag, into the ledger's folder
    assert default == repo / ".autoresearch" / "t" / "report" / "report.html"


def test_report_page_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    binary = find_chromium()
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with Browser(binary) as browser:
        browser.open((report / "report.html").as_uri())
        assert browser.eval("document.getElementById('progress').naturalWidth") >= 1000
        assert browser.eval("document.getElementById('progress').complete") is True
        rows = "Array.from(document.querySelectorAll('#trials tbody tr')).map(r => r.cells[0].textContent)"
        assert browser.eval(rows) == ["0", "1", "2", "3", "4"]
        # sortable: click the metric column; the crash (no figure) goes last either way
        browser.eval("document.querySelectorAll('#trials th')[2].click()")
        assert browser.eval(rows) == ["4", "1", "0", "2", "3"]
        browser.eval("document.querySelectorAll('#trials th')[2].click()")
        assert browser.eval(rows) == ["2", "0", "1", "4", "3"]
        assert browser.eval("document.querySelectorAll('script').length") == 1  # ours only
        shot = tmp_path / "report-screenshot.png"
        browser.screenshot(shot)
        assert_not_blank(shot, 1000, 1200)
        browser.settle()
        assert browser.network_requests() == []
        # the check is real: a page that does reach out is caught
        leak = tmp_path / "leak.html"
        leak.write_text('<img src="http://203.0.113.9/pixel.png">'
                        '<script>fetch("https://example.invalid/x").catch(() => 0)</script>')
        browser.open(leak.as_uri())
        assert set(browser.network_requests()) >= {"http://203.0.113.9/pixel.png",
                                                    "https://example.invalid/x"}


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
# report --results


RESULTS = """\
commit\tval_bpb\tmemory_gb\tstatus\tdescription
a1b2c3d\t0.997900\t44.0\tkeep\tbaseline
b2c3d4e\t0.993200\t44.2\tkeep\tincrease LR to 0.04
c3d4e5f\t1.005000\t44.0\tdiscard\tswitch to GeLU activation
d4e5f6g\t0.000000\t0.0\tcrash\tdouble model width (OOM)
e5f6g7h\t0.991000\t44.1\tkeep\tlonger warmup <i>(x2)</i>\tand a tab
f6g7h8i\t0.998000\t44.0\tdiscard\tremove value embeddings
"""


def test_report_from_a_hand_written_results_tsv(tmp_path: Path) -> None:
    tsv = tmp_path / "results.tsv"
    tsv.write_text(RESULTS)
    result = cli("report", "--results", str(tsv), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "report.html").read_text()
    assert "6 experiments, 2 kept improvements" in page
    assert "val_bpb (lower is better)" in page
    assert "switch to GeLU activation" in page and "&lt;i&gt;(x2)&lt;/i&gt;" in page
    assert "-0.0022 (-0.22%)" in page  # trial 4 against trial 1
    assert_not_blank(tmp_path / "progress.png", 1000, 500)


def test_report_results_with_goal_and_diffs_from_the_repository(ran, tmp_path: Path) -> None:
    repo, _ = ran
    tsv = repo / ".autoresearch" / "t" / "results.tsv"
    result = cli("report", str(repo), "--results", str(tsv), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "report.html").read_text()
    assert "+X = 2.0" in page  # the commits are in the repository: diffs of kept trials
    flipped = tmp_path / "max.tsv"
    flipped.write_text(RESULTS)
    result = cli("report", "--results", str(flipped), "--goal", "maximize", "--out", str(tmp_path / "m"))
    assert result.returncode == 0 and "higher is better" in (tmp_path / "m" / "report.html").read_text()


def test_report_results_rejects_a_bad_file_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_text("commit\tval_bpb\tmemory_gb\tstatus\tdescription\nabc\t1.0\t2.0\tmaybe\tx\n")
    result = cli("report", "--results", str(bad), "--out", str(tmp_path))
    assert result.returncode == 2
    assert "line 2" in result.stderr and "'maybe'" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------
# serve


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read()


def test_serve_follows_a_running_loop(tmp_path: Path) -> None:
    repo = new_task(tmp_path / "task")
    errors = tmp_path / "serve.err"
    with open(errors, "w") as err:
        server = subprocess.Popen([sys.executable, "-m", "autoresearch", "serve", str(repo),
                                   "--tag", "t", "--port", "0"], stdout=subprocess.PIPE,
                                  stderr=err, text=True)
    try:
        line = server.stdout.readline()  # type: ignore[union-attr]
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url, line + errors.read_text()
        base = url.group(0)
        state = json.loads(get(base + "state.json")[1])
        assert state["version"] == "waiting"
        assert b"waiting for tag t" in get(base)[1]
        slow = "sleep 1.5\n" + AGENT
        loop = subprocess.Popen([sys.executable, "-m", "autoresearch", "run", str(repo), "--tag", "t",
                                 "--agent", "cli", "--agent-cmd",
                                 script_agent(tmp_path / "slow.sh", slow), "--trials", "2"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "NASTY": NASTY})
        seen_counts, seen_running, versions = set(), [], set()
        deadline = time.monotonic() + 120
        while loop.poll() is None and time.monotonic() < deadline:
            state = json.loads(get(base + "state.json")[1])
            seen_counts.add(state["trials"])
            seen_running += [r["phase"] for r in state["running"]]
            versions.add(state["version"])
            if state["trials"] == 1:
                status, page = get(base)
                assert status == 200 and b"data:image/png;base64," in page
            time.sleep(0.2)
        assert loop.wait(timeout=60) == 0, loop.stderr.read()  # type: ignore[union-attr]
        state = json.loads(get(base + "state.json")[1])
        assert state["trials"] == 3 and state["running"] == [] and state["kept"] == 1
        assert "agent thinking" in seen_running
        assert len(seen_counts) >= 2 and len(versions) >= 3  # it followed the ledger as it grew
        status, page = get(base)
        html = page.decode()
        assert status == 200 and "3 experiments, 1 kept improvement" in html
        assert html.count('<tr class="row-') == 3 and "state.json" in html
        assert f'data-version="{state["version"]}"' in html
        status, png = get(base + "progress.png")
        assert status == 200 and png[:4] == b"\x89PNG"
        assert errors.read_text() == ""
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_serve_live_page_in_chromium_polls_only_its_own_server(ran, tmp_path: Path) -> None:
    binary = find_chromium()
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    repo, _ = ran
    server = subprocess.Popen([sys.executable, "-m", "autoresearch", "serve", str(repo), "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        base = re.search(r"http://\S+/", server.stdout.readline()).group(0)  # type: ignore[union-attr]
        with Browser(binary, loopback=True) as browser:
            browser.open(base)
            time.sleep(2.5)  # at least one poll
            browser.settle()
            assert "no trial in flight" in browser.eval("document.getElementById('live').textContent")
            assert browser.eval("document.querySelectorAll('#trials tbody tr').length") == 5
            assert browser.requests and all(u.startswith(base) or u.startswith("data:")
                                            for u in browser.requests), browser.requests
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_serve_refuses_a_port_in_use(ran) -> None:
    import socket

    repo, _ = ran
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        result = cli("serve", str(repo), "--port", str(s.getsockname()[1]), timeout=30)
    assert result.returncode == 2 and "--port" in result.stderr


def test_serve_refuses_a_folder_that_is_not_a_task(tmp_path: Path) -> None:
    result = cli("serve", str(tmp_path / "nowhere"), "--tag", "t", "--port", "0", timeout=30)
    assert result.returncode == 2 and "no autoresearch.toml" in result.stderr


# ---------------------------------------------------------------------------
# MLflow


def mlflow_runs(store: Path, experiment: str) -> dict[str, object]:
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=str(store))
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    return {r.data.tags["autoresearch.trial"]: (client, r) for r in client.search_runs([exp.experiment_id])}


def test_mlflow_run_and_report_log_every_trial_to_a_local_file_store(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    repo = new_task(tmp_path / "task")
    store = tmp_path / "mlruns"
    result = run_loop(repo, 3, "--mlflow", str(store))
    assert result.returncode == 0, result.stderr + result.stdout
    runs = mlflow_runs(store, "autoresearch/t/t")
    assert sorted(runs) == ["0", "1", "2", "3"]
    client, one = runs["1"]  # type: ignore[misc]
    assert one.data.metrics["loss"] == pytest.approx(3.0)
    assert one.data.metrics["test_loss"] == pytest.approx(3.3)
    assert one.data.params["status"] == "keep" and one.info.status == "FINISHED"
    assert one.data.tags["mlflow.note.content"] == "lower X to 2.0"
    diff = Path(client.download_artifacts(one.info.run_id, "diff.patch", str(tmp_path)))
    assert "+X = 2.0" in diff.read_text()
    _, base = runs["0"]  # type: ignore[misc]
    assert base.data.metrics["loss_spread"] == pytest.approx(0.00707, rel=0.01)
    _, crash = runs["3"]  # type: ignore[misc]
    assert crash.info.status == "FAILED" and crash.data.params["status"] == "crash"
    # after the fact (what `report --mlflow` does): nothing new in the same store, all in a new one
    from autoresearch.report.mlflow_log import export_study
    from autoresearch.report.study import load_study

    assert export_study(load_study(repo, "t"), str(store)) == 0
    fresh = tmp_path / "fresh"
    assert export_study(load_study(repo, "t"), f"file://{fresh}") == 4
    assert sorted(mlflow_runs(fresh, "autoresearch/t/t")) == ["0", "1", "2", "3"]


@pytest.mark.slow
def test_report_mlflow_logs_a_finished_tag_after_the_fact(ran, tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    repo, _ = ran
    store = tmp_path / "mlruns"
    first = cli("report", str(repo), "--mlflow", str(store), "--out", str(tmp_path / "r"))
    assert first.returncode == 0 and "5 new run(s)" in first.stdout, first.stderr
    again = cli("report", str(repo), "--mlflow", str(store), "--out", str(tmp_path / "r"))
    assert again.returncode == 0 and "0 new run(s)" in again.stdout, again.stderr
    runs = mlflow_runs(store, "autoresearch/t/t")
    client, kept = runs["4"]  # type: ignore[misc]
    assert kept.data.tags["mlflow.note.content"].startswith("X=1.5 <script>alert(1)</script> red")
    assert kept.data.params["status"] == "keep" and kept.data.metrics["loss"] == pytest.approx(2.25)
    diff = Path(client.download_artifacts(kept.info.run_id, "diff.patch", str(tmp_path)))
    assert "+X = 1.5" in diff.read_text()


@pytest.mark.slow
def test_run_with_an_unusable_mlflow_uri_stops_before_the_tag_is_made(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    repo = new_task(tmp_path / "task")
    result = run_loop(repo, 1, "--mlflow", "bogus://nowhere")
    assert result.returncode == 2 and "--mlflow bogus://nowhere" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (repo / ".autoresearch").exists()


# ---------------------------------------------------------------------------
# autoresearch.load


def test_load_returns_the_trials_as_a_dataframe(ran) -> None:
    import autoresearch

    repo, _ = ran
    df = autoresearch.load(str(repo), "t")
    assert list(df.index) == [0, 1, 2, 3, 4]
    assert list(df["status"]) == ["keep", "keep", "discard", "crash", "keep"]
    assert df.loc[1, "loss"] == pytest.approx(3.0) and df.loc[1, "test_loss"] == pytest.approx(3.3)
    assert df.loc[0, "loss"] == pytest.approx(6.005) and df.loc[0, "loss_spread"] == pytest.approx(0.00707, rel=0.01)
    assert df["loss"].isna().tolist() == [False, False, False, True, False]
    assert list(df["best_so_far"]) == pytest.approx([6.005, 3.0, 3.0, 3.0, 2.25])
    assert df.attrs["metric"] == "loss" and df.attrs["goal"] == "minimize" and df.attrs["noise"] > 0
    assert str(df["started"].dtype).startswith("datetime64")
    tsv = autoresearch.load(str(repo / ".autoresearch" / "t" / "results.tsv"))
    assert list(tsv["status"]) == ["keep", "keep", "discard", "crash", "keep"]


# ---------------------------------------------------------------------------
# the live view


def test_live_view_prints_plain_lines_when_not_a_terminal(ran) -> None:
    _, result = ran
    out = result.stdout
    assert "\x1b[" not in out
    assert "[trial 1] (1/4) started" in out and "[trial 1] keep loss=3" in out
    assert "best loss 2.25 (trial 4)" in out


def test_make_events_picks_plain_lines_off_a_terminal(ran) -> None:
    from autoresearch.events import PlainEvents
    from autoresearch.report.live import make_events
    from autoresearch.task import load_task

    repo, _ = ran
    events = make_events(load_task(repo))  # pytest's stdout is not a terminal
    try:
        assert isinstance(events, PlainEvents)
    finally:
        events.close()


def run_in_terminal(args: list[str], env: dict[str, str], timeout: float = 120) -> tuple[int, str]:
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave,
                            env={**os.environ, **env, "TERM": "xterm-256color", "COLUMNS": "140"})
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 1 << 16)
            except OSError:  # the terminal closed: the program ended
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=30), out.decode(errors="replace")


def test_live_view_on_a_terminal_shows_flights_best_and_last_trials(tmp_path: Path) -> None:
    repo = new_task(tmp_path / "task")
    script = script_agent(tmp_path / "agent.sh", "sleep 0.6\n" + AGENT)
    code, out = run_in_terminal([sys.executable, "-m", "autoresearch", "run", str(repo), "--tag", "t",
                                 "--agent", "cli", "--agent-cmd", script, "--trials", "2"],
                                {"NASTY": NASTY})
    assert code == 0, out
    assert "\x1b[" in out  # drawn, not printed
    text = ANSI.sub("", out)
    assert "agent thinking" in text and "▶ trial" in text
    assert "best loss 3 (trial 1) (-3.005" in text
    assert "kept of" in text and "raise X to 5" in text


def test_live_events_are_thread_safe(tmp_path: Path) -> None:
    from rich.console import Console

    from autoresearch.records import Status, Trial
    from autoresearch.report.live import LiveEvents

    buf = io.StringIO()
    events = LiveEvents("demo", "loss", True, holdout="test_loss",
                        console=Console(file=buf, force_terminal=True, width=120), refresh=50)
    base = Trial(0, Status.KEEP, "baseline", metric=6.0, figures={"loss": 6.0, "test_loss": 7.0})
    events.trial_started(0, 0, 40)
    events.trial_finished(base, base, None, 0.0)
    errors: list[BaseException] = []

    def worker(first: int) -> None:
        try:
            for n in range(first, first + 10):
                events.trial_started(n, n, 40)
                events.phase(n, "agent")
                events.phase(n, "running", 5.0)
                events.message(f"[bold]note[/bold] {n}")
                t = Trial(n, Status.DISCARD, f"<try> [red]{n}[/red]\t\x1b[2J", metric=6.5,
                          figures={"loss": 6.5, "test_loss": 9.9}, cost=0.01)
                events.trial_finished(t, base, base, 0.01 * n)
        except BaseException as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(1 + 10 * i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events.close()
    assert not errors
    text = ANSI.sub("", buf.getvalue())
    assert "41 finished" in text and "[red]" in text  # agent text shown literally, not as markup
    assert "9.9" not in text  # the sealed holdout figure is not on the terminal
    assert "\x1b[2J" not in buf.getvalue()


# ---------------------------------------------------------------------------
# the plot's legend and axes, the page's summary, report's flags, serve without a tag


def write_trials(root: Path, tag: str, rows: list[tuple[str, float | None]], minimize: bool = True,
                 last_running: bool = False):  # noqa: ANN201 - the Ledger, left open
    """A ledger written the way the loop writes it, one trial per (status, metric) row, a
    minute apart; with `last_running` the last row stays running. Returns the open Ledger."""
    from autoresearch.ledger import Ledger
    from autoresearch.records import Status, Trial

    led = Ledger.open(root, tag, "loss")
    led.set_meta("metric_name", "loss")
    led.set_meta("goal", "minimize" if minimize else "maximize")
    start = time.time() - 60 * len(rows)
    for i, (status, metric) in enumerate(rows):
        t = Trial(i, Status.RUNNING, "baseline" if i == 0 else f"try {i}", started=start + 60 * i)
        led.begin(t)
        if not (last_running and i == len(rows) - 1):
            led.finish(t.with_(status=Status(status), metric=metric, ended=start + 60 * i + 50,
                               figures={} if metric is None else {"loss": metric}))
    return led


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


def test_report_after_an_interrupted_baseline_says_what_the_title_says(tmp_path: Path) -> None:
    repo = new_task(tmp_path / "task")
    write_trials(repo, "t", [("interrupted", None)]).close()
    result = cli("report", str(repo), "--tag", "t", "--out", str(tmp_path / "r"))
    assert result.returncode == 0, result.stderr
    assert "0 experiments, 0 kept improvements, 1 interrupted" in result.stdout.splitlines()[0]
    page = (tmp_path / "r" / "report.html").read_text()
    assert "0 experiments, 0 kept improvements, 1 interrupted" in page
    assert "The baseline (trial 0) was interrupted before it gave a figure" in page
    assert "No trial has beaten the baseline" not in page


def test_a_crashed_baseline_is_named_on_the_page_not_waited_on(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task", experiment="raise SystemExit('boom before training')\n")
    run = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", "true", "--trials", "2")
    assert run.returncode != 0 and "the baseline (trial 0) failed" in run.stderr
    result = cli("report", str(repo), "--out", str(tmp_path / "r"))
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "r" / "report.html").read_text()
    assert "The baseline (trial 0) crashed before it gave a figure" in page
    assert "No trial has beaten the baseline" not in page
    assert "boom before training" in page  # its log tail
    assert re.search(r"<b>baseline loss</b><span>none</span><small>trial 0 crashed", page)


def test_wall_time_runs_from_the_first_start_to_the_last_end_or_says_running(tmp_path: Path, report: Path) -> None:
    from autoresearch.report.page import summary
    from autoresearch.report.study import load_study

    page = (report / "report.html").read_text()
    span = re.search(r"<b>wall time</b><span>[^<]+</span><small>([^<]+)</small>", page)
    assert span and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d → (\d{4}-\d\d-\d\d )?\d\d:\d\d",
                                 span.group(1)), span and span.group(1)
    repo = new_task(tmp_path / "task")
    led = write_trials(repo, "t", [("keep", 3.0), ("discard", 3.5), ("running", None)], last_running=True)
    try:
        led.acquire()  # the loop's lock: a loop runs on the tag
        study = load_study(repo, "t", details=False)
        assert study.looping
        card = re.search(r"<b>wall time</b><span>([^<]+)</span><small>([^<]+)</small>", summary(study))
        assert card and card.group(2).endswith("→ running") and card.group(1).startswith("3.")
    finally:
        led.close()
    assert not load_study(repo, "t", details=False).looping  # the lock is gone with the loop


def test_report_flags_that_cannot_be_used_are_one_line_errors_naming_them(ran, tmp_path: Path) -> None:
    repo, _ = ran
    (tmp_path / "afile").write_text("x")
    tsv = repo / ".autoresearch" / "t" / "results.tsv"
    cases = [(["report", str(repo), "--tag", "t", "--out", str(tmp_path / "afile")], "--out"),
             (["report", str(tmp_path / "nowhere"), "--tag", "x"], "no such folder"),
             (["report", str(repo), "--tag", "t", "--results", str(tsv)], "--tag t and --results"),
             (["report", str(repo), "--tag", "t", "--goal", "maximize"], "--goal is for --results")]
    for args, words in cases:
        result = cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert (tmp_path / "afile").read_text() == "x" and not (tmp_path / "nowhere").exists()


def test_serve_without_a_tag_waits_for_the_first_loop(tmp_path: Path) -> None:
    repo = new_task(tmp_path / "task")
    server = subprocess.Popen([sys.executable, "-m", "autoresearch", "serve", str(repo), "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()  # type: ignore[union-attr]
        assert "no tag yet, waiting for the first loop" in line, line + server.stderr.read()  # type: ignore[union-attr]
        base = re.search(r"http://127\.0\.0\.1:\d+/", line).group(0)  # type: ignore[union-attr]
        assert json.loads(get(base + "state.json")[1])["version"] == "waiting"
        assert b"waiting for the first loop" in get(base)[1]
        result = run_loop(repo, 1)
        assert result.returncode == 0, result.stderr
        state = json.loads(get(base + "state.json")[1])
        assert state["trials"] == 2 and state["version"] != "waiting"
        assert "2 experiments, 1 kept improvement" in get(base)[1].decode()
        assert server.poll() is None
    finally:
        server.terminate()
        server.wait(timeout=10)
