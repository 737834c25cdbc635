"""`autoresearch serve`: the report as a live page on 127.0.0.1 that follows a running loop.

The page polls `/state.json` (a few hundred bytes: a version string and the trials in flight)
every two seconds; when the version changes it asks `/update.json?v=<its version>` for what
changed and puts it in place, and fetches the plot again at most every 30 s (report/follow.py). The ledger is opened read-only
for every request, so the server never gets in the loop's way. A tag that does not exist yet is
waited for; with no tag given, the most recent one is followed, and then each new tag a loop
creates. Endpoints, under `/<key>/`: `` (the page), `state.json`, `update.json`, `progress.png`.

The page shows what no agent may see (the sealed holdout figures) and the code of every trial,
on a port any process of this machine can reach, an agent's included: every address holds a
random key, printed by `serve` only, and a request for another Host than 127.0.0.1 or localhost
(a web page's DNS rebinding) is refused.
"""

from __future__ import annotations

import argparse
import hmac
import json
import secrets
import sqlite3
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

from autoresearch.errors import UsageError, no_folder
from autoresearch.ledger import Ledger, LedgerNotReady, list_tags, tag_dir
from autoresearch.records import Trial
from autoresearch.report.follow import Versions
from autoresearch.report.study import Study, add_details, load_study

WAITING = "waiting"
QUEUED = "queued, waiting to start"
LEFT = "left running by a loop that is gone (killed?)"  # the phase of a running trial no loop holds
REREAD = 20.0  # seconds a ledger whose files have not moved is not read again


def _phase(folder: Path, t: Trial) -> str:
    """What a running trial is doing, as the loop's files show it (this page runs in another
    process): no commit yet, its agent; a commit but no log yet, queued (waiting for a slot, or
    on Ray for a node to start it); an evaluator's log newer than the run's, its evaluation."""
    if not t.commit:
        return "agent thinking"

    def newest(pattern: str) -> float:
        return max((p.stat().st_mtime for p in folder.glob(pattern) if p.is_file()), default=0.0)

    ran = max(newest(f"logs/{t.number}.log"), newest(f"logs/{t.number}.*.log"))
    if not ran:
        return QUEUED
    evaluated = max(newest(f"sealed/{t.number}.eval.log"), newest(f"sealed/{t.number}.*.eval.log"))
    if evaluated and evaluated >= ran:
        return "evaluating"
    return "experiment running"


class LiveReport:
    """What the server shows, rebuilt only when the ledger has changed."""

    def __init__(self, root: Path, tag: str | None, follow: bool = False) -> None:
        self.root = root
        self.tag = tag  # None: the first tag a loop creates, once there is one
        self.follow = follow  # go on to each new tag a loop creates
        self.known = set(list_tags(root)) if root.is_dir() else set()
        self._lock = threading.Lock()
        self._diffs: dict[tuple[str, str], str] = {}
        self._built: tuple[str, bytes] | None = None  # version, page
        self._png: tuple[str, bytes] | None = None  # version, plot
        self._versions = Versions()  # what a page showing an earlier version needs to catch up
        self._read: dict[bool, tuple[object, float, Study]] = {}  # details -> (stamp, when, study)

    def _study(self, details: bool) -> Study | None:
        if self.tag is None or self.follow:
            from autoresearch.views import last_used

            tags = set(list_tags(self.root))
            new, self.known = tags - self.known, tags
            if self.tag is None and not tags:
                return None
            if self.tag is None or new:  # (not the most recently written: two loops would flip it)
                self.tag = last_used(self.root, new or tags)
        # a page polls every two seconds: the ledger is read again only once its files moved (or,
        # in case two writes left the same size and time stamp, after REREAD seconds)
        stamp, now = self._stamp(), time.monotonic()
        if (seen := self._read.get(details)) and seen[0] == stamp and now - seen[1] < REREAD:
            return seen[2]
        if details and (seen := self._read.get(False)) and seen[0] == stamp and now - seen[1] < REREAD:
            add_details(seen[2], self.root, self._diffs)  # (the poll's read of this same ledger: the
            self._read[True] = seen                       # page's follows it, 0.1 s at 2,000 trials)
            return seen[2]
        try:
            study = load_study(self.root, self.tag, details=details, diff_cache=self._diffs)
            self._read[details] = (stamp, now, study)
            return study
        except UsageError:  # the loop has not created the tag yet
            return None
        except (sqlite3.Error, LedgerNotReady):  # the loop is creating the ledger right now
            return None

    def _stamp(self) -> object:
        """The tag's ledger files' sizes and times: they move with every write; and whether a
        loop holds the tag (one killed with SIGKILL writes nothing, and leaves its trial running)."""
        out: list[object] = [self.tag]
        try:
            folder = tag_dir(self.root, self.tag or "")
        except (ValueError, UsageError):
            return (self.tag, None)
        for name in ("ledger.sqlite", "ledger.sqlite-wal"):
            try:
                st = (folder / name).stat()
                out.append((st.st_size, st.st_mtime_ns, st.st_ino))
            except OSError:
                out.append(None)
        out.append(Ledger.loop_running(folder))
        return tuple(out)

    def state(self) -> dict[str, object]:
        with self._lock:
            study = self._study(details=False)
        now = time.time()
        if study is None:
            return {"version": WAITING, "now": now, "running": [], "trials": 0}
        best = study.best
        # trials the ledger holds as running while no loop holds the tag: its loop was killed
        # (status says so too); they are no longer in flight
        left = bool(study.running) and not study.looping
        return {"version": study.version(), "now": now, "trials": len(study.finished),
                "kept": len(study.kept), "metric": study.metric, "left": left,
                "best": None if best is None else {"number": best.number, "value": best.metric},
                "running": [{"number": t.number, "started": t.started,
                             "phase": LEFT if left else _phase(Path(study.source), t)} for t in study.running]}

    def build(self) -> tuple[str, bytes, bytes]:
        """The version, the whole page and its plot."""
        from autoresearch.report.page import render, waiting_page

        with self._lock:
            study = self._study(details=True)
            if study is None:
                return WAITING, waiting_page(self.tag).encode(), b""
            version, png = study.version(), self._plot(study)
            if self._built is None or self._built[0] != version:
                self._built = (version, render(study, png, live=True, parts=self._versions.parts(study)).encode())
            return version, self._built[1], png

    def update(self, since: str) -> dict[str, object]:
        """What a page showing version `since` needs to show the ledger as it is now."""
        with self._lock:
            study = self._study(details=True)
            if study is None:
                return {"reload": True, "version": WAITING}
            return self._versions.changes(since, self._versions.parts(study))

    def plot(self) -> bytes:
        with self._lock:
            study = self._study(details=True)
            return b"" if study is None else self._plot(study)

    def _plot(self, study: Study) -> bytes:
        from autoresearch.report.plot import progress_png

        version = study.version()
        if self._png is None or self._png[0] != version:
            self._png = (version, progress_png(study))
        return self._png[1]


class Handler(BaseHTTPRequestHandler):
    server: Server

    def do_GET(self) -> None:  # noqa: N802 - the http.server spelling
        try:
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0].lower()
            if host not in ("", "127.0.0.1", "localhost"):
                return self._send(403, "text/plain; charset=utf-8", b"only 127.0.0.1 or localhost is served")
            path = self.path.split("?", 1)[0]
            _, key, *rest = path.split("/", 2) + [""] * (path.count("/") < 2)
            if not hmac.compare_digest(key.encode(), self.server.key.encode()):
                return self._send(403, "text/plain; charset=utf-8",
                                  b"open the address `autoresearch serve` printed: it holds a key, so that "
                                  b"only you read this page (an agent on this machine may not)")
            if path.count("/") < 2:  # /<key>: the page's relative addresses need the slash
                return self._send(301, "text/plain", b"", {"Location": f"/{key}/"})
            self._get("/" + rest[0], self.server.live)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the page went away mid-answer
        except Exception as e:  # a bug must not take the page down: report it, answer, go on
            traceback.print_exc()
            self._send(503, "text/plain; charset=utf-8",
                       f"the report could not be built just now ({type(e).__name__}: {e})".encode())

    def do_HEAD(self) -> None:  # noqa: N802 - an uptime check's request: GET's headers, no body
        self.do_GET()

    def _get(self, path: str, live: LiveReport) -> None:
        if path in ("/", "/index.html", "/report.html"):
            self._send(200, "text/html; charset=utf-8", live.build()[1])
        elif path == "/state.json":
            self._send(200, "application/json", json.dumps(live.state()).encode())
        elif path == "/update.json":
            since = parse_qs(self.path.partition("?")[2]).get("v", [""])[0]
            self._send(200, "application/json", json.dumps(live.update(since)).encode())
        elif path == "/progress.png":
            png = live.plot()
            self._send(200 if png else 404, "image/png" if png else "text/plain",
                       png or b"no trials yet")
        else:
            self._send(404, "text/plain", b"not found")

    def _send(self, code: int, kind: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet: one page polls a lot
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, live: LiveReport, port: int) -> None:
        self.live = live
        self.key = secrets.token_urlsafe(12)
        super().__init__(("127.0.0.1", port), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/{self.key}/"


def make_server(root: str | Path, tag: str | None, port: int = 8765) -> Server:
    """A server (not yet serving) for `tag` in `root`; `tag` None: the most recent tag, or
    the first one a loop creates when there is none yet."""
    from autoresearch.ledger import check_tag
    from autoresearch.task import elsewhere, task_above
    from autoresearch.views import pick_tag

    root = Path(root).resolve()
    if not root.is_dir():
        raise UsageError(no_folder(root))
    if not (root / "autoresearch.toml").is_file():
        above = task_above(root)
        raise UsageError(f"no autoresearch.toml in {root} {elsewhere(above)}" if above is not None
                         else f"{root} has no autoresearch.toml: give the task repository the loop runs in")
    given = bool(tag)
    tag = check_tag(tag) if tag else (pick_tag(root, None) if list_tags(root) else None)
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port} is not a port number (0..65535; 0 picks a free one)")
    try:
        return Server(LiveReport(root, tag, follow=not given), port)
    except OSError as e:
        raise UsageError(f"--port {port}: cannot listen on 127.0.0.1:{port} ({e.strerror}); "
                         "choose another port, or --port 0 for any free one") from None


def cmd_serve(args: argparse.Namespace) -> int:
    server = make_server(args.dir, args.tag, args.port)
    live = server.live
    if live.tag is None:
        print(f"serving {live.root} at {server.url} (no tag yet: waiting for the first loop to "
              "start; Ctrl-C to stop)", flush=True)
    elif live.tag not in list_tags(live.root):  # (`--tag nov62` for nov26 would wait all night unsaid)
        others = ", ".join(sorted(list_tags(live.root))) or "none"
        print(f"serving tag {live.tag} of {live.root} at {server.url} (no such tag yet: waiting for a loop "
              f"to start it; the tags here: {others}; Ctrl-C to stop)", flush=True)
    else:
        print(f"serving tag {live.tag} of {live.root} at {server.url} (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
