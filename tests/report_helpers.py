"""Helpers shared by the report tests (test_report.py, test_plot.py, test_serve.py,
test_live.py, test_mlflow_log.py, test_frame.py): a task with an evaluator and a holdout, a
scripted agent that writes a hostile description, `run_loop`, the `ran` fixture (a real loop,
run once per test module that declares `pytest_plugins = ["report_helpers"]`), a ledger written
the way the loop writes it, and a check that a PNG is not blank.

PYTEST_DONT_REWRITE: the test modules import this module before pytest loads it as their
plugin, too late for pytest to rewrite its asserts (they fail as plain asserts, as in the other
helper modules); the marker says so, and keeps pytest from warning about it.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from conftest import cli, make_task, script_agent

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
