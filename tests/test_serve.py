"""`autoresearch serve` (report/serve.py) over real HTTP: it follows a running loop as it writes
the ledger, its live page in a real headless Chromium polls only its own server, it refuses a
port in use and a folder that is not a task, and without a tag it waits for the first loop.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from browser import Browser, find_chromium
from conftest import cli, script_agent
from report_helpers import AGENT, NASTY, new_task, run_loop

pytest_plugins = ["report_helpers"]  # the `ran` fixture


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
        url = re.search(r"http://127\.0\.0\.1:\d+/[\w-]{16}/", line)
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
    assert result.returncode == 2 and "no such folder" in result.stderr
    (tmp_path / "empty").mkdir()
    result = cli("serve", str(tmp_path / "empty"), "--tag", "t", "--port", "0", timeout=30)
    assert result.returncode == 2 and "no autoresearch.toml" in result.stderr


def test_serve_of_a_tag_not_there_says_it_waits_and_names_the_tags(tmp_path: Path) -> None:
    """`serve --tag nov62` for nov26 said only "serving tag nov62", and its page waited all
    night for a loop that would never start that tag: the line says so and names the tags."""
    repo = new_task(tmp_path / "task")
    assert run_loop(repo, 0).returncode == 0  # tag t
    server = subprocess.Popen([sys.executable, "-m", "autoresearch", "serve", str(repo), "--tag", "tt", "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()  # type: ignore[union-attr]
        assert "serving tag tt" in line and "(no such tag yet: waiting for a loop to start it; the tags here: t;" in line, line
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_serve_without_a_tag_waits_for_the_first_loop(tmp_path: Path) -> None:
    repo = new_task(tmp_path / "task")
    server = subprocess.Popen([sys.executable, "-m", "autoresearch", "serve", str(repo), "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()  # type: ignore[union-attr]
        assert "(no tag yet: waiting for the first loop" in line, line + server.stderr.read()  # type: ignore[union-attr]
        base = re.search(r"http://127\.0\.0\.1:\d+/[\w-]{16}/", line).group(0)  # type: ignore[union-attr]
        assert json.loads(get(base + "state.json")[1])["version"] == "waiting"
        assert b"waiting for the first loop" in get(base)[1]
        result = run_loop(repo, 1)
        assert result.returncode == 0, result.stderr
        state = json.loads(get(base + "state.json")[1])
        assert state["trials"] == 2 and state["version"] != "waiting"
        assert "2 experiments, 1 kept improvement" in get(base)[1].decode()
        # a tag a later loop creates is followed (it stayed on the first)
        result = run_loop(repo, 1, "--tag", "u")
        assert result.returncode == 0, result.stderr
        assert "tag u" in get(base)[1].decode() and json.loads(get(base + "state.json")[1])["trials"] == 2
        assert server.poll() is None
    finally:
        server.terminate()
        server.wait(timeout=10)


def request(url: str, method: str = "GET", host: str | None = None) -> tuple[int, bytes]:
    import urllib.error

    req = urllib.request.Request(url, method=method, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_serve_answers_only_its_key_and_its_own_host(ran) -> None:
    """The page holds the sealed holdout figures: an agent on this machine fetched them from
    127.0.0.1 (a sealed one too: it keeps the network), and a web page could through DNS
    rebinding (any Host was served). HEAD is answered, as uptime checks ask."""
    repo, _ = ran
    server = subprocess.Popen([sys.executable, "-m", "autoresearch", "serve", str(repo), "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        base = re.search(r"http://127\.0\.0\.1:(\d+)/[\w-]{16}/", server.stdout.readline())  # type: ignore[arg-type, union-attr]
        assert base
        url, port = base.group(0), base.group(1)
        assert request(url)[0] == 200 and request(url + "state.json")[0] == 200
        assert request(f"http://localhost:{port}/{url.rsplit('/', 2)[1]}/")[0] == 200
        root = f"http://127.0.0.1:{port}/"
        assert request(url + "../state.json")[0] == 404
        assert request(url[:-1])[0] == 200  # (redirected to the address with its slash)
        for bare in (root, root + "state.json", root + "progress.png", url[:-2] + "/"):
            code, body = request(bare)
            assert code == 403 and b"test_loss" not in body and b"the address" in body, (bare, body)
        code, body = request(url, host=f"attacker.example:{port}")
        assert code == 403 and b"test_loss" not in body
        assert request(url, method="HEAD") == (200, b"")
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_serve_says_when_a_trial_is_being_evaluated(tmp_path: Path) -> None:
    """The page said "experiment running" through a trial's evaluation, while the terminal said
    "evaluating": it now reads the phase from the loop's logs (it runs in another process)."""
    from trust_helpers import EVALUATOR, LOWER_X, eval_task

    repo = eval_task(tmp_path, evaluator="import time\ntime.sleep(2.5)\n" + EVALUATOR)
    server = subprocess.Popen([sys.executable, "-m", "autoresearch", "serve", str(repo), "--tag", "t", "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()  # type: ignore[union-attr]
        url = re.search(r"http://127\.0\.0\.1:\d+/[\w-]{16}/", line)
        assert url, line
        loop = subprocess.Popen([sys.executable, "-m", "autoresearch", "run", str(repo), "--tag", "t", "--agent-cmd",
                                 script_agent(tmp_path / "a.sh", LOWER_X), "--trials", "1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seen: set[str] = set()
        deadline = time.monotonic() + 120
        while loop.poll() is None and time.monotonic() < deadline:
            seen |= {r["phase"] for r in json.loads(get(url.group(0) + "state.json")[1])["running"]}
            time.sleep(0.2)
        assert loop.wait(timeout=60) == 0, loop.stderr.read()  # type: ignore[union-attr]
        assert "evaluating" in seen, seen
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_poll_reads_the_ledger_again_only_once_it_was_written(ran, monkeypatch: pytest.MonkeyPatch) -> None:
    """A page polls state.json every two seconds, all night: each poll decoded every row of the
    ledger (0.1 s at 2,000 trials, most of a core with a few tabs open). Now the ledger is read
    again only once its files moved; a write is seen at the next poll."""
    import contextlib
    import shutil
    import sqlite3

    from autoresearch.ledger import tag_dir
    from autoresearch.report import serve

    repo = ran[0].parent / "polled"
    shutil.copytree(ran[0], repo)
    reads = []
    load = serve.load_study
    monkeypatch.setattr(serve, "load_study", lambda *a, **k: reads.append(1) or load(*a, **k))
    live = serve.LiveReport(repo, "t")
    first = live.state()
    assert [live.state() for _ in range(5)][-1]["version"] == first["version"] and len(reads) == 1
    assert live.build()[0] == first["version"] and len(reads) == 1  # (the page: from the same read)
    with contextlib.closing(sqlite3.connect(tag_dir(repo, "t") / "ledger.sqlite")) as db:
        with db:  # (as a loop writes: WAL, the loop's connection left open)
            db.execute("UPDATE trials SET status = 'discard' WHERE number = 1")
        assert live.state()["version"] != first["version"] and len(reads) == 2
        # the page, seeing the new version, asks what changed: the ledger the poll just read serves
        change = live.update(first["version"])
        assert [p[0] for p in change["lists"]["rows"]["put"]] == ["r-1", "r-4"] and len(reads) == 2  # (4: its gain)


@pytest.mark.extended  # (time: the default suite keeps its siblings)
def test_serve_says_when_the_loop_was_killed_with_its_trial_in_flight(tmp_path: Path) -> None:
    """A loop killed with SIGKILL (the OOM killer, overnight) leaves its trial `running` in the
    ledger and writes nothing more: the page said "in flight: trial 1: agent thinking for 9000 s"
    for ever (status said the loop was gone). It now says no loop is running, and reloads."""
    binary = find_chromium()
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    repo = new_task(tmp_path / "task")
    server = subprocess.Popen([sys.executable, "-m", "autoresearch", "serve", str(repo), "--tag", "t", "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    loop = None
    try:
        base = re.search(r"http://127\.0\.0\.1:\d+/[\w-]{16}/", server.stdout.readline()).group(0)  # type: ignore[union-attr]
        agent = script_agent(tmp_path / "slow.sh", 'if [ "$AUTORESEARCH_TRIAL" = 1 ]; then sleep 60; fi\n' + AGENT)
        loop = subprocess.Popen([sys.executable, "-m", "autoresearch", "run", str(repo), "--tag", "t", "--agent", "cli",
                                 "--agent-cmd", agent, "--trials", "1"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env={**os.environ, "NASTY": NASTY})
        deadline = time.monotonic() + 60
        state = json.loads(get(base + "state.json")[1])
        while [r["number"] for r in state["running"]] != [1] and time.monotonic() < deadline:
            time.sleep(0.2)
            state = json.loads(get(base + "state.json")[1])
        assert [r["phase"] for r in state["running"]] == ["agent thinking"] and not state.get("left"), state
        with Browser(binary, loopback=True) as browser:
            browser.open(base)
            time.sleep(2.5)  # a poll
            browser.settle()
            live = "document.getElementById('live').textContent"
            assert "in flight: trial 1: agent thinking" in browser.eval(live)
            loop.kill()
            loop.wait(timeout=10)
            state = json.loads(get(base + "state.json")[1])
            assert state["running"][0]["phase"] == "left running by a loop that is gone (killed?)", state
            assert state["left"]
            time.sleep(5)  # the page reloads (its version changed) and polls again
            browser.settle()
            said = browser.eval(live)
            assert "no loop is running: trial 1 left running" in said and "agent thinking" not in said, said
            assert browser.eval("document.body.dataset.version") == state["version"]
    finally:
        if loop is not None and loop.poll() is None:
            loop.kill()
        server.terminate()
        server.wait(timeout=10)


def test_a_crashed_trials_log_is_read_once_by_the_live_page(ran, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page is built again each time a trial starts or finishes: it read 256 KB of every
    crashed trial's log each time (1,500 crashes: 380 MB a rebuild). A finished trial's log
    tail, like a kept trial's diff, is now read once; the page shows it all the same."""
    import contextlib
    import shutil
    import sqlite3

    from autoresearch.ledger import tag_dir
    from autoresearch.report import serve, study

    repo = ran[0].parent / "tails"
    shutil.copytree(ran[0], repo)
    reads: list[str] = []
    read = study.read_tail
    monkeypatch.setattr(study, "read_tail", lambda path, *a: reads.append(str(path)) or read(path, *a))
    live = serve.LiveReport(repo, "t")
    first = live.build()
    assert b"boom: out of memory" in first[1] and len(reads) == 1  # (one crashed trial)
    with contextlib.closing(sqlite3.connect(tag_dir(repo, "t") / "ledger.sqlite")) as db, db:
        db.execute("UPDATE trials SET status = 'discard' WHERE number = 1")  # (as a loop writes: rebuilt)
    again = live.build()
    assert again[0] != first[0] and b"boom: out of memory" in again[1]
    assert len(reads) == 1, reads


def test_the_live_page_brings_in_a_new_trial_without_loading_itself_again(ran, tmp_path: Path) -> None:
    """The page reloaded itself whole at each trial's start and end: at 2,000 trials 1.4 MB and
    2-4 s, so with fast trials it was almost always reloading. It now asks update.json for what
    changed and puts it in place (the page's own state survives, a sorted table stays sorted),
    and fetches the plot again at most every 30 s; with JavaScript off it is a plain full page."""
    import shutil

    from autoresearch.ledger import Ledger
    from autoresearch.records import Status, Trial

    binary = find_chromium()
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    repo = tmp_path / "task"
    shutil.copytree(ran[0], repo)
    server = subprocess.Popen([sys.executable, "-m", "autoresearch", "serve", str(repo), "--tag", "t", "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    led = Ledger.open(repo, "t", "loss")
    try:
        base = re.search(r"http://127\.0\.0\.1:\d+/[\w-]{16}/", server.stdout.readline()).group(0)  # type: ignore[union-attr]
        with Browser(binary, loopback=True) as browser:
            browser.open(base)
            browser.eval("window.firstLoad = 'still here'")
            browser.eval("document.querySelector('#trials th').click(); document.querySelector('#trials th').click()")
            rows = "Array.from(document.querySelectorAll('#trials tbody tr')).map(r => r.cells[0].textContent + ' ' + r.cells[1].textContent)"
            assert browser.eval(rows)[0] == "4 keep", browser.eval(rows)  # (sorted by number, highest first)
            trial = Trial(5, Status.RUNNING, "try a wider model <b>", agent="cli", started=time.time())
            led.begin(trial)

            def shown(expression: str, value: object) -> object:  # (within a poll or two)
                deadline = time.monotonic() + 8
                while (now := browser.eval(expression)) != value and time.monotonic() < deadline:
                    time.sleep(0.2)
                return now

            assert shown(f"({rows}).slice(0, 2)", ["5 running", "4 keep"]) == ["5 running", "4 keep"]
            led.finish(trial.with_(status=Status.DISCARD, metric=9.5, figures={"loss": 9.5}, ended=time.time()))
            assert shown(f"({rows}).slice(0, 2)", ["5 discard", "4 keep"]) == ["5 discard", "4 keep"]
            browser.settle()
            assert browser.eval("document.querySelector('#r-5 td.d').textContent") == "try a wider model <b>"
            assert browser.eval("document.getElementById('summary').textContent").startswith("trials6")
            assert browser.eval("window.firstLoad") == "still here"  # not loaded again
            state = json.loads(get(base + "state.json")[1])
            assert browser.eval("document.body.dataset.version") == state["version"]
            assert browser.requests.count(base) == 1 and base + "update.json?v=" in " ".join(browser.requests)
            assert not [u for u in browser.requests if "progress.png" in u]  # (not before 30 s)
            assert "6 experiments" in browser.eval("document.title")
            # with several workers trial 7 may be kept before trial 6: the page shows them in order
            kept = "Array.from(document.querySelectorAll('#kept section')).map(s => s.id)"
            for number in (6, 7):
                led.begin(Trial(number, Status.RUNNING, f"try {number}", agent="cli", started=time.time()))
            for number, loss in ((7, 1.2), (6, 1.1)):
                led.finish(Trial(number, Status.KEEP, f"try {number}", agent="cli", metric=loss,
                                 figures={"loss": loss}, started=time.time(), ended=time.time()))
                want = ["trial-1", "trial-4", "trial-7"] if number == 7 else ["trial-1", "trial-4", "trial-6", "trial-7"]
                assert shown(kept, want) == want
            assert browser.eval("window.firstLoad") == "still here"

            browser.call("Emulation.setScriptExecutionDisabled", {"value": True}, session=True)
            browser.open(base)  # with JavaScript off: the whole page, as it is now
            assert browser.eval("document.querySelectorAll('#trials tbody tr').length") == 8
            assert browser.eval("document.getElementById('live').textContent").startswith("JavaScript is off: this page")
    finally:
        led.close()
        server.terminate()
        server.wait(timeout=10)
