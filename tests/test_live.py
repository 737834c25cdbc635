"""The live view (report/live.py): plain lines when the output is not a terminal; on a real
pseudo-terminal, a drawn view of the trials in flight, the best and the last trials; events
that are thread-safe, show agent text literally and keep the holdout off the screen.
"""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import script_agent
from report_helpers import AGENT, NASTY, new_task

pytest_plugins = ["report_helpers"]  # the `ran` fixture


ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")


def test_live_view_prints_plain_lines_when_not_a_terminal(ran) -> None:
    _, result = ran
    out = result.stdout
    assert "\x1b[" not in out
    assert "[trial 1] (1/4) started" in out and "[trial 1] keep loss=3" in out
    assert "best loss 2.25 (trial 4)" in out


def test_plain_lines_carry_no_terminal_escape_from_a_file_name_an_agent_chose(tmp_path: Path) -> None:
    """A reason names the file an agent created outside the editable scope; in a `nohup` log
    read with `tail -f`, escapes in that name would set the window title and clear the screen."""
    repo = new_task(tmp_path / "task")
    agent = script_agent(tmp_path / "agent.sh", """\
        sed -i 's/^X = .*/X = 2.0/' exp.py
        echo x > $'\\e]0;PWNED\\a\\e[2Jplanted.txt'
        echo lower X
        """)
    r = subprocess.run([sys.executable, "-m", "autoresearch", "run", str(repo), "--tag", "t", "--agent", "cli",
                        "--agent-cmd", agent, "--trials", "1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "[trial 1] rejected" in r.stdout and "planted.txt, outside the editable scope" in r.stdout
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout, r.stdout


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


def test_a_run_with_hours_shows_the_time_gone_against_them_in_plain_lines_and_on_a_terminal(tmp_path: Path) -> None:
    """`run --hours 8` said `(12) started` for hours on end: neither the plain lines nor the live
    view said how much of the hours had gone, so a loop left for the night gave no idea of when
    it would stop."""
    from report_helpers import run_loop

    repo = new_task(tmp_path / "task")
    r = run_loop(repo, 2, "--hours", "1")
    assert r.returncode == 0, r.stderr
    assert re.search(r"\[trial 1\] \(1/2, 0:0\d of 1:00:00\) started", r.stdout), r.stdout
    r = subprocess.run([sys.executable, "-m", "autoresearch", "run", str(repo), "--tag", "u",
                        "--agent", "cli", "--agent-cmd", script_agent(tmp_path / "a.sh", AGENT),
                                    "--hours", "0.5", "--trials", "1"], capture_output=True, text=True,
                                   timeout=120, env={**os.environ, "NASTY": NASTY})
    assert r.returncode == 0, r.stderr
    assert re.search(r"\[trial 1\] \(1/1, 0:0\d of 30:00\) started", r.stdout), r.stdout
    code, out = run_in_terminal([sys.executable, "-m", "autoresearch", "run", str(repo), "--tag", "v",
                                 "--agent", "cli", "--agent-cmd", script_agent(tmp_path / "b.sh", AGENT),
                                 "--hours", "2", "--trials", "1"], {"NASTY": NASTY})
    assert code == 0, out
    assert re.search(r"trial 1 of 1 · 0:0\d elapsed of 2:00:00", ANSI.sub("", out)), out


def test_a_resumed_tag_shows_its_best_before_the_first_new_trial_ends(tmp_path: Path) -> None:
    """On resume the view showed no best (nor baseline) until a new trial finished: minutes, on
    a real budget."""
    repo = new_task(tmp_path / "task")
    first = script_agent(tmp_path / "agent.sh", AGENT)
    code, _ = run_in_terminal([sys.executable, "-m", "autoresearch", "run", str(repo), "--tag", "t",
                               "--agent", "cli", "--agent-cmd", first, "--trials", "1"], {"NASTY": NASTY})
    assert code == 0
    slow = script_agent(tmp_path / "slow.sh", "sleep 2\necho '# later' >> exp.py\necho 'a second try'\n")
    code, out = run_in_terminal([sys.executable, "-m", "autoresearch", "run", str(repo), "--tag", "t",
                                 "--agent", "cli", "--agent-cmd", slow, "--trials", "1"], {"NASTY": NASTY})
    assert code == 0, out
    text = ANSI.sub("", out)
    thinking = text[text.index("agent thinking"):text.index("experiment running")]  # the frames then
    assert "best loss 3 (trial 1) (-3.005" in thinking, text


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


def test_plain_lines_tick_through_the_setup_and_the_agent_and_name_each_repeated_run(tmp_path: Path) -> None:
    """In a pipe or a nohup log, only an experiment's phases ticked: a setup or an agent at work
    for half an hour left the log silent. And three runs of one trial printed three identical
    `running` lines."""
    from conftest import make_task

    from autoresearch.agents.cli import CommandAgent
    from autoresearch.events import PlainEvents
    from autoresearch.loop import Loop
    from autoresearch.options import Options
    from autoresearch.session import open_session
    from autoresearch.task import load_task

    root = make_task(tmp_path / "task", toml_extra='setup = "sleep 1.2"\n\n[acceptance]\nbaseline_runs = 3\n')
    agent = script_agent(tmp_path / "a.sh", "sleep 1.2\nsed -i 's/^X = .*/X = 2.0/' exp.py\necho X to 2\n")
    out = io.StringIO()
    events = PlainEvents("loss", True, out=out, tick=0.25)
    session = open_session(load_task(root), "t")
    try:
        Loop(session, CommandAgent(agent), Options(trials=1), events=events).run()
    finally:
        session.close()
        events.close()
    lines = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]
    assert any(re.fullmatch(r"setup: \d+ s", line) for line in lines), lines
    assert any(re.fullmatch(r"\[trial 1\] agent \d+ s.*", line) for line in lines), lines
    runs = [line for line in lines if line.startswith("[trial 0] running") and line.endswith("(budget 5 s)")]
    assert runs == [f"[trial 0] running (run {i + 1} of 3, seed {i}) (budget 5 s)" for i in range(3)], runs
    assert "[trial 1] running (budget 5 s)" in lines  # one run: no count


def test_the_live_view_says_there_is_no_best_yet_as_the_plain_lines_do() -> None:
    """A baseline that crashed or was stopped left the view saying `best loss - (trial 0)`, a best
    with no figure, where the plain lines say there is none yet."""
    from rich.console import Console

    from autoresearch.records import Status, Trial
    from autoresearch.report.live import LiveEvents

    buf = io.StringIO()
    events = LiveEvents("demo", "loss", True, console=Console(file=buf, force_terminal=True, width=120))
    base = Trial(0, Status.INTERRUPTED, "baseline", metric=None)
    events.trial_started(0, 0, 2)
    events.trial_finished(base, base, None, 0.0)
    events.close()
    text = ANSI.sub("", buf.getvalue())
    assert "no best loss yet (trial 0 has none)" in text and "best loss -" not in text, text


def test_the_live_views_top_line_fits_an_80_column_terminal() -> None:
    """`... trial 12 of 100 · 1:02:03 elapsed of 8:00:00` wrapped its end onto a second line at 80
    columns; the top line now takes a terse form, and a long task name gives way, not the figures."""
    from rich.console import Console

    from autoresearch.report.live import LiveEvents

    for name, width, top in [
            ("cpu-gpt", 80, "autoresearch · cpu-gpt · val_bpb (min) · trial 100/100 · 0:00 / 8:00:00"),
            ("cpu-gpt", 120, "autoresearch · cpu-gpt · val_bpb (lower is better) · trial 100 of 100 · 0:00 elapsed "
                             "of 8:00:00"),
            ("the-long-name-of-a-research-project", 80, "autoresearch · the-long-name-o… · val_bpb (min) · "
                                                        "trial 100/100 · 0:00 / 8:00:00")]:
        buf = io.StringIO()
        events = LiveEvents(name, "val_bpb", True, console=Console(file=buf, force_terminal=True, width=width),
                            hours=8)
        events.trial_started(100, 100, 100)
        events.phase(100, "running", 60.0)
        events.close()
        lines = ANSI.sub("", buf.getvalue()).splitlines()
        assert lines[-2].rstrip() == top, lines
        assert lines[-1].startswith("▶ trial 100"), lines  # (the next line is the trial in flight)


def test_the_live_views_best_line_fits_an_80_column_terminal() -> None:
    """`best val_bpb 1.23457 (trial 1234) (-0.123457, -9.09% vs baseline) · baseline 1.35802 ·
    123 kept of 2000 finished · cost $12.34` wrapped onto a second line at 80 columns; it now
    takes a terse form that keeps the figures (and is cut, never wrapped, past that)."""
    from rich.console import Console

    from autoresearch.records import Status, Trial
    from autoresearch.report.live import LiveEvents

    def best_line(width: int, metric: str = "val_bpb") -> list[str]:
        buf = io.StringIO()
        events = LiveEvents("cpu-gpt", metric, True, console=Console(file=buf, force_terminal=True, width=width))
        base = Trial(0, Status.KEEP, "baseline", metric=1.3580247)
        best = Trial(1234, Status.KEEP, "a deeper model", metric=1.2345678)
        events.going_on(best, base, 12.34)
        events._done, events._kept = 2000, 123
        events.trial_started(2001, 2001, None)
        events.close()
        lines = ANSI.sub("", buf.getvalue()).splitlines()
        return [line.rstrip() for line in lines if not line.startswith(("autoresearch", "▶"))][:1] + lines[-1:]

    wide = best_line(160)[0]
    assert wide == ("best val_bpb 1.23457 (trial 1234) (-0.123457, -9.09% vs baseline) · baseline 1.35802 · "
                    "123 kept of 2000 finished · cost $12.34"), wide
    narrow = best_line(80)
    assert narrow[0] == "best val_bpb 1.23457 (#1234, -9.09%) · baseline 1.35802 · 123/2000 kept · $12.34"
    assert len(narrow[0]) <= 80
    cut = best_line(80, metric="validation_bits_per_byte_on_the_held_out_split")
    assert len(cut[0]) <= 80 and cut[0].startswith("best validation_bits_per_byte") and cut[0].endswith("…"), cut


def test_the_live_views_trials_in_flight_fit_an_80_column_terminal() -> None:
    """At 80 columns `experiment running (run 2 of 3, seed 1)` and `0 s / 600 s budget` wrapped,
    two or three lines a trial in flight: each now holds one line, its clock whole, the clocks in
    line; the bar shrinks or gives way first, then the end of a long phase is cut."""
    from rich.console import Console

    from autoresearch.report.live import LiveEvents

    for width, detail, bar in [(80, "", True), (80, " (run 2 of 3, seed 1)", False), (140, " (run 2 of 3, seed 1)", True)]:
        buf = io.StringIO()
        events = LiveEvents("cpu-gpt", "val_bpb", True, console=Console(file=buf, force_terminal=True, width=width))
        for number, phase in [(1201, "running" + detail), (1202, "agent"), (1203, "queued"), (1204, "evaluating")]:
            events.trial_started(number, number, 2000)
            events.phase(number, phase, 600.0)
        events.close()
        lines = [line.rstrip() for line in ANSI.sub("", buf.getvalue()).splitlines()[-4:]]
        assert [line[:12] for line in lines] == [f"▶ trial {n}" for n in (1201, 1202, 1203, 1204)], lines
        assert all(len(line) <= width for line in lines), lines
        assert [line.endswith(" s / 600 s budget") for line in lines] == [True, False, False, True], lines
        assert len({line.index("  0 s") for line in lines}) == 1, lines  # (the clocks in line)
        assert ("━" in lines[0]) is bar and "queued, waiting to start" in lines[2], lines
        assert "experiment running" in lines[0] and ("seed 1)" in lines[0]) is (width > 80 and bool(detail)), lines


def test_the_last_trials_descriptions_are_readable_at_80_columns() -> None:
    """With cpu-gpt's three recorded figures the description column of the last trials was cut to
    four characters at 80 columns ("a de…"): what was tried is what a user reads there. A figure
    column now gives way first; a wide terminal shows all three."""
    from rich.console import Console

    from autoresearch.records import Status, Trial
    from autoresearch.report.live import LiveEvents

    figures = {"val_bpb": 1.2345, "peak_vram_mb": 12048.5, "training_seconds": 60.1, "num_steps": 123456}
    for width, heads in [(80, ["peak_vram_mb"]), (140, ["peak_vram_mb", "training_seconds", "num_steps"])]:
        buf = io.StringIO()
        events = LiveEvents("cpu-gpt", "val_bpb", True, console=Console(file=buf, force_terminal=True, width=width))
        base = Trial(0, Status.KEEP, "baseline", metric=1.3580247, figures=figures, run_seconds=62.3)
        tried = Trial(1, Status.DISCARD, "a deeper model with a longer warmup and more heads", metric=1.2345,
                      figures=figures, run_seconds=612.3)
        events.trial_started(0, 0, 2)
        events.trial_finished(base, base, None, 0.0)
        events.trial_started(1, 1, 2)
        events.trial_finished(tried, base, base, 0.0)
        events.close()
        lines = [line.rstrip() for line in ANSI.sub("", buf.getvalue()).splitlines()]
        head = next(line for line in reversed(lines) if line.lstrip().startswith("#  status"))
        assert head.split()[3:-2] == heads and all(len(line) <= width for line in lines[-3:]), lines[-3:]
        assert "a deeper model with a longer" in lines[-1], lines[-3:]
