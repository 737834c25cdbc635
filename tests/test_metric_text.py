"""Reading figures from output as a terminal shows it: colour and other escape codes are not part
of the text, and a line that only nearly matches the metric rule is named in the crash reason."""

from __future__ import annotations

import io
import logging
import math
import re
from pathlib import Path

import pytest
from conftest import cli, make_task, script_agent, trials
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from autoresearch.ledger import Ledger
from autoresearch.metrics import END, NUMBER, extract, figure_from_text, metric_problem
from autoresearch.records import Status, Trial
from autoresearch.task import MetricSpec

SPEC = MetricSpec(name="val_loss", record=("num_steps",))

# what real programs write around text: SGR colours (8, 256 and 24-bit, bold, reset), erase-line,
# cursor show/hide, `tput sgr0` (ESC ( B then ESC [ m), a window title (OSC ... BEL), a hyperlink
# (OSC 8 ... ST)
ESCAPES = ["\x1b[0m", "\x1b[m", "\x1b[1m", "\x1b[32m", "\x1b[1;36m", "\x1b[38;5;208m", "\x1b[38;2;255;0;0m",
           "\x1b[K", "\x1b[2K", "\x1b[?25l", "\x1b(B\x1b[m", "\x1b]0;training\x07",
           "\x1b]8;;https://example.org\x1b\\", "\x1b]8;;\x1b\\"]


def rich_text(markup: str) -> str:
    """What rich prints to a terminal (FORCE_COLOR): markup as colours, numbers highlighted."""
    buf = io.StringIO()
    Console(file=buf, force_terminal=True, color_system="truecolor", width=200).print(markup)
    return buf.getvalue()


# ---------------------------------------------------------------------------
# coloured output


def test_a_coloured_metric_line_is_read_with_its_record_figures_and_memory() -> None:
    output = ("\x1b[32mval_loss:\x1b[0m 0.58\n"  # the audit's line
              + rich_text("[bold]num_steps:[/bold] 1200")
              + rich_text("[dim]peak_vram_mb:[/dim] 2048.5"))
    assert "\x1b[" in output
    assert extract(SPEC, output) == {"val_loss": 0.58, "num_steps": 1200.0, "peak_vram_mb": 2048.5}


def test_a_line_coloured_by_a_logging_formatter_is_read_when_the_message_starts_it() -> None:
    """colorlog's `%(log_color)s%(message)s`: the escapes are the only thing before the name."""
    colorlog = pytest.importorskip("colorlog")
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(colorlog.ColoredFormatter("%(log_color)s%(message)s%(reset)s", force_color=True))
    log = logging.getLogger("test_metric_text")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        log.info("val_loss: %.4f", 0.5812)
        log.warning("num_steps: %d", 90)
    finally:
        log.removeHandler(handler)
    assert "\x1b[" in buf.getvalue()
    assert extract(SPEC, buf.getvalue()) == {"val_loss": 0.5812, "num_steps": 90.0}


def test_a_custom_pattern_matches_the_text_without_escapes() -> None:
    spec = MetricSpec(name="acc", pattern=r"^top-1 accuracy (\S+)%")
    assert extract(spec, rich_text("[green]top-1 accuracy[/green] 95.25%")) == {"acc": 95.25}


def test_a_broken_escape_does_not_swallow_the_next_line() -> None:
    """An OSC title cut short (the program was killed while printing it) ends at the line end."""
    assert figure_from_text("\x1b]0;epoch 3\nval_loss: 0.9\n\x1b[31", "val_loss") == 0.9


@given(value=st.floats(allow_nan=False, allow_infinity=False),
       cuts=st.lists(st.tuples(st.integers(0, 40), st.sampled_from(ESCAPES)), max_size=8),
       end=st.sampled_from(["", " (best so far)", "\r"]))
@settings(max_examples=200, deadline=None)
def test_escapes_anywhere_in_the_metric_line_leave_its_value(value: float, cuts: list[tuple[int, str]],
                                                             end: str) -> None:
    plain = f"val_loss: {value!r}{end}"
    line, done = "", 0
    for at, escape in sorted((min(at, len(plain)), escape) for at, escape in cuts):
        line, done = line + plain[done:at] + escape, at
    line += plain[done:]
    output = f"\x1b[33mstep 10\x1b[0m\n{line}\n\x1b]0;done\x07\n"
    assert figure_from_text(output, "val_loss") == value


def old_rule(output: str, name: str) -> float | None:
    """The rule as it was before escapes were removed: for output without ESC nothing changed."""
    output = output.replace("\r\n", "\n").replace("\r", "\n")
    found = re.findall(rf"^{re.escape(name)}:[ \t]*({NUMBER}){END}", output, re.MULTILINE)
    return float(found[-1].strip().lower()) if found else None


@given(name=st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,8}", fullmatch=True),
       pieces=st.lists(st.one_of(st.text(st.characters(blacklist_characters="\x1b"), max_size=12),
                                 st.sampled_from(["NAME", "\n", "\r", " ", ":", ": ", "=", "0.5", "-1e3", "nan", "\t"])),
                       max_size=30))
@settings(max_examples=300, deadline=None)
def test_output_without_escapes_is_read_as_before(name: str, pieces: list[str]) -> None:
    output = "".join(name if p == "NAME" else p for p in pieces)
    got, want = figure_from_text(output, name), old_rule(output, name)
    assert got == want or (got is not None and want is not None and math.isnan(got) and math.isnan(want))


# ---------------------------------------------------------------------------
# near misses: not a match (the contract), but named in the crash reason


def problem(output: str, spec: MetricSpec = SPEC) -> str | None:
    return metric_problem(spec, extract(spec, output), output)


def python_logging(message: str) -> str:
    """What `logging.basicConfig(level=INFO); logging.info(message)` prints."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
    log = logging.getLogger("root.test_metric_text")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        log.info(message)
    finally:
        log.removeHandler(handler)
    return buf.getvalue().replace("root.test_metric_text", "root")


@pytest.mark.parametrize("output, quoted", [
    ("epoch 3\n  val_loss: 0.58\n", "  val_loss: 0.58"),
    (python_logging("val_loss: 0.58"), "INFO:root:val_loss: 0.58"),
    ("val_loss = 0.58\n", "val_loss = 0.58"),
    ("val_loss=0.58 acc=0.9\n", "val_loss=0.58 acc=0.9"),
    ("{'val_loss': 0.58, 'epoch': 3}\n", "{'val_loss': 0.58, 'epoch': 3}"),
    ("Val_Loss: 0.58\n", "Val_Loss: 0.58"),
    ("val_loss 0.58\n", "val_loss 0.58"),  # print("val_loss", x)
    (rich_text("[dim]12:00:01[/dim] [blue]INFO[/blue]     val_loss: 0.58"), "12:00:01 INFO     val_loss: 0.58"),
    ("  val_loss: 0.7\nINFO:root:val_loss: 0.58\n", "INFO:root:val_loss: 0.58"),  # the last one
])
def test_a_near_miss_is_named_in_the_reason(output: str, quoted: str) -> None:
    assert problem(output) == (f"no 'val_loss' figure in the output: a line holds '{quoted}', but the metric "
                               f"line must start with 'val_loss:' (or set metric.pattern)")


def test_a_long_near_miss_line_is_cut_around_what_precedes_the_name() -> None:
    prefix = "2024-05-01 12:00:00.123 | INFO     | __main__:train:142 - epoch 3 of 10 finished, "
    reason = problem(prefix + "val_loss: 0.58 train_loss: 0.61 lr: 3e-4 tokens/s: 120000\n")
    assert reason is not None and len(reason) < 200 and "\n" not in reason
    assert "finished, val_loss: 0.58...'" in reason and "tokens/s" not in reason


@pytest.mark.parametrize("output", [
    "", "training done\n", "best_val_loss: 0.5\n", "val_loss_ema: 0.5\n", "val_loss2: 0.5\n",
    "val_loss: n/a\n", "val_loss: 0.5abc\n", "val-loss: 0.5\n",
])
def test_lines_for_other_figures_are_not_near_misses(output: str) -> None:
    assert problem(output) == "no 'val_loss' figure in the output"


def test_a_found_or_nan_metric_is_unchanged_by_near_misses() -> None:
    assert problem("INFO:root:val_loss: 0.7\nval_loss: 0.58\n") is None
    assert problem("INFO:root:val_loss: 0.7\nval_loss: nan\n") == "'val_loss' is nan"
    assert metric_problem(SPEC, {}) == "no 'val_loss' figure in the output"  # no output given


def test_a_near_miss_that_shows_the_sealed_holdout_is_not_quoted() -> None:
    spec = MetricSpec(name="val_loss", holdout="test_loss")
    assert problem("INFO test_loss: 0.41 val_loss: 0.58\n", spec) == "no 'val_loss' figure in the output"


def test_a_custom_pattern_gets_no_near_miss_hint() -> None:
    spec = MetricSpec(name="val_loss", pattern=r"^loss@val (\S+)")
    assert problem("INFO:root:val_loss: 0.58\n", spec) == "no 'val_loss' figure in the output: metric.pattern matched nothing"


def test_a_number_with_a_comma_is_no_figure_and_the_reason_says_why() -> None:
    """`val_loss: 1,5` (a decimal comma, or 1,000) was read as 1: now it is no figure, and the
    reason names the comma; a comma after the number (`1, next`) still ends it."""
    assert figure_from_text("val_loss: 1,5\n", "val_loss") is None
    assert figure_from_text("val_loss: 1, steps 3\n", "val_loss") == 1.0
    assert problem("val_loss: 1,5\n") == ("no 'val_loss' figure in the output: 'val_loss: 1,5' has a comma "
                                          "in its number (print 1.5, 1000)")


def test_a_pattern_that_captures_no_number_and_a_file_without_the_key_are_named() -> None:
    spec = MetricSpec(name="accuracy", pattern=r"acc=(\S+)")
    assert problem("acc=0.5, loss=3\n", spec) == ("no 'accuracy' figure in the output: metric.pattern "
                                                  "captured '0.5,', which is not a number")
    spec = MetricSpec(name="loss", file="metrics.json")
    assert metric_problem(spec, {}, "loss: 0.01\n") == "no 'loss' figure: metric file metrics.json has no number under that key"


def test_a_metric_name_may_hold_a_slash() -> None:
    assert figure_from_text("eval/loss: 0.25\ntrain/loss: 0.5\n", "eval/loss") == 0.25


# ---------------------------------------------------------------------------
# end to end, through the real CLI


def baseline(root: Path) -> Trial:
    led = Ledger.read(root, "t")
    try:
        return led.trials()[0]
    finally:
        led.close()


COLOURED = """\
print("\\x1b[1mtraining...\\x1b[0m")
print("\\x1b]0;exp\\x07\\x1b[32mloss:\\x1b[0m \\x1b[1;36m4.0\\x1b[0m")
print("\\x1b[2mpeak_vram_mb:\\x1b(B\\x1b[m 2048.0")
"""

LOGGED = """\
import logging
import math
logging.basicConfig(level=logging.INFO)
logging.info("loss: %s", 4.0)
"""


def test_a_coloured_metric_is_kept_end_to_end(tmp_path: Path) -> None:
    root = make_task(tmp_path / "task", experiment=COLOURED)
    r = cli("run", str(root), "--tag", "t", "--agent", "cli", "--agent-cmd", "true", "--trials", "0")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    base = baseline(root)
    assert base.status is Status.KEEP and base.metric == 4.0
    assert base.figures.get("peak_vram_mb") == 2048.0


def test_a_logged_metric_crashes_with_the_line_named_end_to_end(tmp_path: Path) -> None:
    root = make_task(tmp_path / "task", experiment=LOGGED)
    r = cli("run", str(root), "--tag", "t", "--agent", "cli", "--agent-cmd", "true", "--trials", "0")
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert ("no 'loss' figure in the output: a line holds 'INFO:root:loss: 4.0', but the metric line must "
            "start with 'loss:' (or set metric.pattern)") in r.stderr, r.stderr
    base = baseline(root)
    assert base.status is Status.CRASH and "a line holds 'INFO:root:loss: 4.0'" in base.reason



def test_a_coloured_reject_line_from_an_evaluator_is_read() -> None:
    from autoresearch.metrics import reject_reason

    assert reject_reason("\x1b[31mautoresearch_reject: trained too long\x1b[0m\n") == "trained too long"


def test_memory_gb_comes_from_the_printed_line_beside_a_metric_file(tmp_path: Path) -> None:
    exp = ("import json, os\nprint('peak_vram_mb: 3072.0')\n"
           "json.dump({'loss': 0.5}, open(os.path.join(os.environ['AUTORESEARCH_RUN_DIR'], 'metrics.json'), 'w'))\n")
    root = make_task(tmp_path / "task", experiment=exp,
                     toml_extra='[metric]\nname = "loss"\ngoal = "minimize"\nfile = "metrics.json"\n')
    assert cli("run", str(root), "--tag", "t", "--trials", "0").returncode == 0
    row = (root / ".autoresearch" / "t" / "results.tsv").read_text().splitlines()[1].split("\t")
    assert row[1:4] == ["0.500000", "3.0", "keep"]


def test_a_metric_file_written_in_a_subfolder_is_named_in_the_reason(tmp_path: Path) -> None:
    """`command = "cd exp && python train.py"` writes exp/metrics.json; `file = "metrics.json"`
    is read from the root: the reason names where it was written and the line to set."""
    from autoresearch.metrics import MetricError

    (tmp_path / "exp" / "clf").mkdir(parents=True)
    (tmp_path / "exp" / "clf" / "metrics.json").write_text('{"acc": 0.9}')
    spec = MetricSpec(name="acc", goal="maximize", file="metrics.json")
    with pytest.raises(MetricError, match=r"a metrics.json at exp/clf/metrics.json: if the experiment writes it there, set file = 'exp/clf/metrics.json'"):
        extract(spec, "", run_dir=tmp_path / "run", workdir=tmp_path)
    moved = MetricSpec(name="acc", goal="maximize", file="exp/clf/metrics.json")
    assert extract(moved, "", run_dir=tmp_path / "run", workdir=tmp_path)["acc"] == pytest.approx(0.9)
    (tmp_path / "exp" / "clf" / "metrics.json").unlink()
    with pytest.raises(MetricError) as e:
        extract(spec, "", run_dir=tmp_path / "run", workdir=tmp_path)
    assert "set file" not in str(e.value)


def test_a_record_figure_the_baseline_never_printed_is_warned_of(tmp_path: Path) -> None:
    """`record` figures are read by the default rule (a `pattern` is the metric's): one the
    baseline did not give is said once, not dropped in silence."""
    toml = ('\n[metric]\nname = "loss"\ngoal = "minimize"\npattern = \'"loss": ([0-9.]+)\'\n'
            'record = ["peak_vram_mb", "steps"]\n')
    exp = 'import json\nprint(json.dumps({"loss": 6.0, "steps": 10}))\nprint("peak_vram_mb: 2048")\n'
    root = make_task(tmp_path / "task", toml_extra=toml, experiment=exp)
    r = cli("run", str(root), "--tag", "t", "--agent", "search", "--trials", "0")
    assert r.returncode == 0, r.stderr
    said = [line for line in (r.stdout + r.stderr).splitlines() if "metric.record" in line]
    assert len(said) == 1 and "gave no steps (metric.record)" in said[0], r.stdout + r.stderr
    assert "the metric's `pattern` reads the metric only" in said[0]


def test_a_committed_metric_file_the_run_did_not_write_is_no_result(tmp_path: Path) -> None:
    """Without an evaluator, a metrics.json the repository commits (a result of yesterday's run)
    was read as the result of an experiment that wrote none: a broken run kept as a huge gain.
    Only a file the run wrote counts; one it rewrites with the same figure counts too."""
    exp = ("import json\nV = 0\nW = 1\nif W:\n    json.dump({'score': 1.0 + W}, open('metrics.json', 'w'))\n")
    root = make_task(tmp_path / "task", experiment=exp, files={"metrics.json": '{"score": 100.0}'},
                     toml_extra='[metric]\nname = "score"\ngoal = "maximize"\nfile = "metrics.json"\n')
    agent = script_agent(tmp_path / "agent.sh", "sed -i -e 's/^W = .*/W = '$(((AUTORESEARCH_TRIAL + 1) % 2))'/' "
                         "-e 's/^V = .*/V = '$AUTORESEARCH_TRIAL'/' exp.py\n"
                         "echo W\n")
    r = cli("run", str(root), "--tag", "t", "--trials", "2", "--agent-cmd", agent)
    assert r.returncode == 0, r.stderr
    ts = Ledger.read(root, "t").trials()
    assert ts[0].status is Status.KEEP and ts[0].metric == 2.0
    assert ts[1].status is Status.CRASH and ts[1].metric is None  # W = 0: nothing written
    assert "metric file metrics.json was not written" in ts[1].reason
    assert "was there before the experiment ran" in ts[1].reason
    assert ts[2].status is Status.DISCARD and ts[2].metric == 2.0  # W = 1 again: written, the same figure
    row = (root / ".autoresearch" / "t" / "results.tsv").read_text().splitlines()[2].split("\t")
    assert row[1:4] == ["0.000000", "0.0", "crash"]


def test_a_metric_file_that_is_a_fifo_a_device_or_a_huge_number_is_a_crash_not_a_stuck_loop(tmp_path: Path) -> None:
    """metrics.json made a FIFO (an open waits for a writer forever), a link to /dev/zero (a read
    never ends) or a 5000-digit integer (Python refuses to convert it): each trial is a crash
    with its reason, and the loop goes on to the next."""
    exp = ("import json, os\nHOW = 'ok'\nout = os.path.join(os.environ['AUTORESEARCH_RUN_DIR'], 'metrics.json')\n"
           "if HOW == 'fifo': os.mkfifo(out)\n"
           "elif HOW == 'zero': os.symlink('/dev/zero', out)\n"
           "elif HOW == 'huge': open(out, 'w').write('{\"loss\": ' + '9' * 5000 + '}')\n"
           "else: json.dump({'loss': 3.0}, open(out, 'w'))\n")
    root = make_task(tmp_path / "task", experiment=exp,
                     toml_extra='[metric]\nname = "loss"\ngoal = "minimize"\nfile = "metrics.json"\n')
    agent = script_agent(tmp_path / "a.sh", 'how=(x fifo zero huge)\nh=${how[$AUTORESEARCH_TRIAL]}\n'
                         'sed -i "s/^HOW = .*/HOW = \'$h\'/" exp.py\necho "metric file $h"\n')
    r = cli("run", str(root), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "3", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = trials(root)
    assert [t.status.value for t in rows] == ["keep", "crash", "crash", "crash"], [t.reason for t in rows]
    assert "not a regular file" in rows[1].reason and "not a regular file" in rows[2].reason
    assert "not valid JSON" in rows[3].reason
