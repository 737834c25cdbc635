"""The report (report/page.py, report/cli.py): report.html is self-contained, escapes agent text
and works in a real headless Chromium; progress.png is written and not blank; build_report is a
library call; report --results reads a hand-written results.tsv; the page's summary after an
interrupted or crashed baseline, and its wall time; report's flags that cannot be used.
(The plot: test_plot.py; serve: test_serve.py; the live view: test_live.py; MLflow:
test_mlflow_log.py; autoresearch.load: test_frame.py.)

Every ledger here comes from a real loop (a scripted CLI agent editing a real git repository),
or is written to a real ledger the way the loop writes it.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from browser import Browser, find_chromium
from conftest import cli, make_task
from report_helpers import NASTY, assert_not_blank, new_task, run_loop, write_trials

pytest_plugins = ["report_helpers"]  # the `ran` fixture


@pytest.fixture(scope="module")
def report(ran, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo, _ = ran
    out = tmp_path_factory.mktemp("report")
    result = cli("report", str(repo), "--tag", "t", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert str(out / "report.html") in result.stdout
    return out


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


@pytest.mark.parametrize(("rows", "said"), [
    ("a\t0.70\t0.0\tkeep\tbaseline\nb\t0.65\t0.0\tdiscard\tworse\n", "higher is better"),
    ("a\t0.70\t0.0\tkeep\tbaseline\nb\t0.75\t0.0\tdiscard\tworse\n", "lower is better"),
    ("a\t0.70\t0.0\tkeep\tbaseline\nb\t0.00\t0.0\tcrash\tbroke\n", "lower is better"),
], ids=["a-discard-below-the-baseline", "a-discard-above-it", "no-word"])
def test_report_results_reads_the_goal_from_its_discards_too(tmp_path: Path, rows: str, said: str) -> None:
    """With only the baseline kept, the goal was taken as minimize whatever the discards showed
    (an accuracy of 0.70 kept over 0.65 discarded was drawn as "lower is better"), and silently."""
    tsv = tmp_path / "results.tsv"
    tsv.write_text("commit\taccuracy\tmemory_gb\tstatus\tdescription\n" + rows)
    result = cli("report", "--results", str(tsv), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"accuracy ({said})" in (tmp_path / "report.html").read_text()
    assert ("do not show whether a lower or a higher accuracy is better" in result.stderr) == ("crash" in rows)


def test_report_results_rejects_a_bad_file_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_text("commit\tval_bpb\tmemory_gb\tstatus\tdescription\nabc\t1.0\t2.0\tmaybe\tx\n")
    result = cli("report", "--results", str(bad), "--out", str(tmp_path))
    assert result.returncode == 2
    assert "line 2" in result.stderr and "'maybe'" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1



def test_report_results_reads_rows_as_csv_readers_do(tmp_path: Path) -> None:
    """A description holding a form feed, U+2028 or U+0085 (an agent's words: csv and pandas
    read them as part of the field) was cut there, and the file refused ("line 4 has 1
    columns"); an error's line number did not count the blank lines before it."""
    import csv

    tsv = tmp_path / "results.tsv"
    tsv.write_text("commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"
                   "a1b2c3d\t0.997900\t44.0\tkeep\tbaseline\n"
                   "b2c3d4e\t0.993200\t44.2\tkeep\tincrease LR\u2028to 0.04\r\n"
                   "c3d4e5f\t1.005000\t44.0\tdiscard\tswitch\x0cto\x85GeLU\n")
    with open(tsv, newline="") as f:
        assert len(list(csv.reader(f, delimiter="\t"))) == 4
    r = cli("report", "--results", str(tsv), "--out", str(tmp_path / "r"))
    assert r.returncode == 0 and "3 experiments, 1 kept improvement" in r.stdout, r.stderr
    page = (tmp_path / "r" / "report.html").read_text()
    assert "increase LR to 0.04" in page and "switch to GeLU" in page
    bad = tmp_path / "bad.tsv"
    bad.write_text("commit\tval_bpb\tmemory_gb\tstatus\tdescription\n\n\nabc\t1.0\t2.0\tmaybe\tx\n")
    r = cli("report", "--results", str(bad), "--out", str(tmp_path))
    assert r.returncode == 2 and "line 4: status 'maybe'" in r.stderr, r.stderr


# ---------------------------------------------------------------------------
# the page's summary, report's flags


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


def test_the_demo_counts_the_trials_after_a_baseline_run_again(tmp_path: Path) -> None:
    """A demo stopped in its baseline and run again: the baseline's second run (trial 1) was
    counted among the trials, and as a kept one ("2 kept of 2 trials" after one new trial)."""
    from autoresearch.demo import summary
    from autoresearch.ledger import Ledger
    from autoresearch.records import Status, Trial

    repo = new_task(tmp_path / "task")
    led = Ledger.open(repo, "demo", "loss")
    for n, status, metric, agent in ((0, "interrupted", None, "baseline"), (1, "keep", 3.0, "baseline"),
                                     (2, "keep", 2.5, "search"), (3, "discard", 2.9, "search")):
        t = Trial(n, Status.RUNNING, "baseline" if agent == "baseline" else f"try {n}", agent=agent, started=1e9 + n)
        led.begin(t)
        led.finish(t.with_(status=Status(status), metric=metric, figures={} if metric is None else {"loss": metric}))
    led.close()
    r = summary(repo, "demo", interrupted=False)
    assert (r.baseline, r.best, r.trials, r.kept) == (3.0, 2.5, 2, 1)


def test_a_crashed_baseline_is_named_on_the_page_not_waited_on(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task", experiment="raise SystemExit('boom before training')\n")
    run = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", "true", "--trials", "2")
    assert run.returncode != 0 and "the baseline (trial 0) failed" in run.stderr
    assert "no best loss yet (trial 0 has none)" in run.stdout and "best loss -" not in run.stdout, run.stdout
    result = cli("report", str(repo), "--out", str(tmp_path / "r"))
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "r" / "report.html").read_text()
    assert "The baseline (trial 0) crashed before it gave a figure" in page
    assert "No trial has beaten the baseline" not in page
    assert "boom before training" in page  # its log tail
    assert re.search(r"<b>baseline loss</b><span>none</span><small>trial 0 crashed", page)
    # run again, the baseline is tried again as trial 1: the page names that attempt, the latest
    run = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", "true", "--trials", "2")
    assert run.returncode != 0 and "the baseline (trial 1) failed" in run.stderr, run.stderr
    assert cli("report", str(repo), "--out", str(tmp_path / "r")).returncode == 0
    page = (tmp_path / "r" / "report.html").read_text()
    assert "The baseline (trial 1) crashed before it gave a figure" in page, page


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


def test_wall_time_leaves_out_the_hours_between_two_runs(tmp_path: Path) -> None:
    """Run in the evening, killed in trial 2, resumed the next morning: the card counts the time
    trials ran, not the night; the kill-to-resume span of the interrupted trial is not counted."""
    from autoresearch.ledger import Ledger
    from autoresearch.records import Status, Trial
    from autoresearch.report.page import summary
    from autoresearch.report.study import load_study

    repo = new_task(tmp_path / "task")
    led = Ledger.open(repo, "t", "loss")
    led.set_meta("metric_name", "loss")
    day = 3600 * 24
    t0 = time.time() - day
    rows = [(0, 60, Status.KEEP), (60, 60, Status.DISCARD), (120, 30, Status.INTERRUPTED),
            (day - 600, 60, Status.DISCARD), (day - 540, 60, Status.KEEP)]
    for i, (at, took, status) in enumerate(rows):
        t = Trial(i, Status.RUNNING, f"try {i}", started=t0 + at)
        led.begin(t)
        ended = t0 + (day - 610 if status is Status.INTERRUPTED else at + took)  # (recorded on resume)
        led.finish(t.with_(status=status, metric=3.0, figures={"loss": 3.0}, ended=ended, run_seconds=took))
    led.close()
    card = re.search(r"<b>wall time</b><span>([^<]+)</span><small>([^<]+)</small>",
                     summary(load_study(repo, "t", details=False)))
    assert card, summary(load_study(repo, "t", details=False))
    assert card.group(1) == "4.5 min", card.groups()  # 150 s + 120 s
    assert card.group(2).endswith("; 23.8 h with no loop running left out"), card.groups()


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


def test_the_report_of_a_run_stopped_before_any_trial_says_why(tmp_path: Path) -> None:
    """A setup that failed: the page and the plot said only "No trial has finished yet". (Its
    reason holds `$...$`, which matplotlib reads as mathematics unless told otherwise.)"""
    repo = make_task(tmp_path / "task", toml_extra="setup = \"echo 'cost $5 \\\\frac{a}{ $'; exit 3\"\n")
    assert cli("run", str(repo), "--tag", "z", "--trials", "1").returncode == 1
    r = cli("report", str(repo), "--tag", "z", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    html = (tmp_path / "out" / "report.html").read_text()
    assert "No trial has finished. How the last run ended:" in html and "exit 3" in html, html[:3000]


def test_a_refused_report_leaves_no_out_folder(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    r = cli("report", str(repo), "--tag", "nope", "--out", str(tmp_path / "new" / "out"))
    assert r.returncode == 2 and "no tag 'nope'" in r.stderr, r.stderr
    assert not (tmp_path / "new").exists()


def test_an_agent_errors_reason_is_shown_once(tmp_path: Path) -> None:
    """An agent error's description is its reason: the page's row said it twice."""
    repo = make_task(tmp_path / "task")
    agent = tmp_path / "a.sh"
    agent.write_text("#!/bin/sh\necho 'the model is tired today' >&2\nexit 3\n")
    agent.chmod(0o755)
    assert cli("run", str(repo), "--tag", "t", "--agent-cmd", str(agent), "--trials", "1").returncode == 0
    r = cli("report", str(repo), "--tag", "t", "--out", str(tmp_path / "r"))
    assert r.returncode == 0, r.stderr
    row = next(x for x in (tmp_path / "r" / "report.html").read_text().split("<tr ") if x.startswith('class="row-agent_error"'))
    assert row.count("the model is tired today") == 1, row


def test_a_gain_against_a_figure_of_zero_has_no_percentage(tmp_path: Path) -> None:
    """A score that starts at 0 (a reward, a signed error): the page said a gain of 0.5 over
    the baseline was "+0.00%", which reads as no gain at all; the terminal says no percentage."""
    repo = new_task(tmp_path / "task")
    write_trials(repo, "t", [("keep", 0.0), ("keep", -0.5), ("keep", -1.0)]).close()
    r = cli("report", str(repo), "--tag", "t", "--out", str(tmp_path / "r"))
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "r" / "report.html").read_text()
    assert "0.00%" not in page
    assert re.search(r'<b>gain over the baseline</b><span><span class="good">-1</span>', page), page


def test_a_gain_of_many_decades_is_said_in_a_few_figures(tmp_path: Path) -> None:
    """A metric that blew up (a reward gamed to 1e300, a loss to -1e300): every line of `run`,
    `status` and the page printed the gain in percent as a number of 300 digits."""
    repo = make_task(tmp_path / "task")
    agent = tmp_path / "a.sh"
    agent.write_text("#!/bin/sh\nsed -i 's/^print(f\"loss: {loss}\")/print(\"loss: -1e300\")/' exp.py\necho gamed\n")
    agent.chmod(0o755)
    run = cli("run", str(repo), "--tag", "t", "--agent-cmd", str(agent), "--trials", "1")
    assert run.returncode == 0, run.stderr
    assert "-1e+300, -1.67e+301% vs baseline" in run.stdout, run.stdout
    status = cli("status", str(repo), "--tag", "t").stdout
    r = cli("report", str(repo), "--tag", "t", "--out", str(tmp_path / "r"))
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "r" / "report.html").read_text()
    assert "-1e+300 (-1.67e+301%)" in page
    for text in (run.stdout, status, page):
        assert not re.search(r"\d{20}", text), text


def test_a_report_of_tens_of_thousands_of_trials_is_made_in_seconds(tmp_path: Path) -> None:
    """Each row of the table searched every trial for its parent (a list of the finished trials
    built anew each time): 10,000 trials took 45 s, 30,000 some minutes, and `serve` rebuilt
    the page twice a trial. (A limit 20 times what it takes, not a timing: the old code is
    past it by far.)"""
    rows = ["commit\tloss\tmemory_gb\tstatus\tdescription"]
    best = 10.0
    for i in range(30_000):
        keep = i == 0 or i % 100 == 0
        best = best - 0.001 if keep and i else best
        rows.append(f"{i:07x}\t{best if keep else best + 1 + i % 7:.6f}\t1.0\t{'keep' if keep else 'discard'}\ttry {i}")
    tsv = tmp_path / "results.tsv"
    tsv.write_text("\n".join(rows) + "\n")
    r = cli("report", "--results", str(tsv), "--out", str(tmp_path / "r"), str(tmp_path), timeout=60)
    assert r.returncode == 0, r.stderr
    assert "30000 experiments, 299 kept improvements" in r.stdout
    page = (tmp_path / "r" / "report.html").read_text()
    assert page.count('<tr class="row-') == 30_000
    assert '<span class="good">-0.001 (-0.01%)</span> against trial 29800' in page  # (parents found)


def test_a_folder_where_report_html_goes_is_named_and_nothing_is_left(ran, tmp_path: Path) -> None:
    """A folder named report.html in --out: the error named a temporary file
    ('Is a directory: .../.report.html.tmp'), and that file and progress.png were left there."""
    repo, _ = ran
    out = tmp_path / "r"
    (out / "report.html").mkdir(parents=True)
    r = cli("report", str(repo), "--tag", "t", "--out", str(out))
    assert r.returncode == 2 and f"{out / 'report.html'} is a folder" in r.stderr, r.stderr
    assert ".tmp" not in r.stderr and sorted(p.name for p in out.iterdir()) == ["report.html"]


def test_a_report_written_inside_the_repository_leaves_the_next_run_free_to_start(tmp_path: Path) -> None:
    """`report --out report` from the task's folder left report/ untracked, and the next `run`
    refused the repository as dirty; while a loop runs (it watches .git/info/exclude) the report
    is written and a note says what to do instead."""
    import fcntl

    from conftest import git

    repo = new_task(tmp_path / "task")
    assert run_loop(repo, 1).returncode == 0
    r = cli("report", "--tag", "t", "--out", "my report", cwd=repo)
    assert r.returncode == 0 and (repo / "my report" / "report.html").is_file(), r.stderr
    assert r.stderr == "" and git(repo, "status", "--porcelain") == ""
    (repo / "notes.txt").write_text("a file of mine\n")  # (the user's own untracked files are not hidden)
    assert git(repo, "status", "--porcelain") == "?? notes.txt"
    (repo / "notes.txt").unlink()
    again = cli("run", str(repo), "--tag", "t2", "--trials", "0", env={"NASTY": NASTY})
    assert again.returncode == 0, again.stderr
    fd = os.open(repo / ".autoresearch" / "t" / "lock", os.O_RDONLY)  # a loop holding the tag
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        exclude = (repo / ".git" / "info" / "exclude").read_text()
        r = cli("report", "--tag", "t", "--out", "busy", cwd=repo)
    finally:
        os.close(fd)
    assert r.returncode == 0, r.stderr
    assert (repo / ".git" / "info" / "exclude").read_text() == exclude
    assert "busy is inside the repository" in r.stderr and "add it to .gitignore" in r.stderr
