"""The durable record of a tag: `.autoresearch/<tag>/`.

Guarantees:
- `ledger.sqlite` (SQLite, WAL, synchronous=FULL) holds every trial; each state change is one
  transaction, so a kill at any instant leaves either the old or the new state, never a torn one.
  Several threads of one loop share it through a lock; other processes may read it at any time.
- `results.tsv` is regenerated from the ledger after every finished trial, written to a
  temporary file, fsync'd and renamed over the old one: a reader never sees a torn row, and the
  file always agrees with the ledger.
- `lock` is held (flock) by the one loop working on the tag; the OS releases it on any death.
  `results.lock` serialises the rewrites of results.tsv among threads and processes.
- The loop is the only writer of a tag it holds. Once it calls `watch`, `check_and_restore`
  finds what anyone else (an agent, the code it wrote) changed in the record and puts back
  what the loop wrote (ledgerwatch.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from autoresearch.errors import AutoresearchError, LoopBusy, UsageError
from autoresearch.filetree import set_aside
from autoresearch.records import Status, Trial, clean_text, tsv_row

if TYPE_CHECKING:
    from autoresearch.gitrepo import Git
    from autoresearch.ledgerwatch import Watched

LEDGER_DIR = ".autoresearch"
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    number INTEGER PRIMARY KEY,
    status TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    parent TEXT, commit_sha TEXT, metric REAL,
    figures TEXT NOT NULL DEFAULT '{}', repeats TEXT NOT NULL DEFAULT '[]',
    reason TEXT NOT NULL DEFAULT '', agent TEXT NOT NULL DEFAULT '', model TEXT NOT NULL DEFAULT '',
    tokens_in INTEGER NOT NULL DEFAULT 0, tokens_out INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0, seed INTEGER NOT NULL DEFAULT 0,
    started REAL NOT NULL DEFAULT 0, ended REAL NOT NULL DEFAULT 0,
    run_seconds REAL NOT NULL DEFAULT 0, log_path TEXT NOT NULL DEFAULT '',
    flags TEXT NOT NULL DEFAULT '[]', extra TEXT NOT NULL DEFAULT '{}',
    seq INTEGER
);
"""
COLUMNS = ["number", "status", "description", "parent", "commit_sha", "metric", "figures",
           "repeats", "reason", "agent", "model", "tokens_in", "tokens_out", "cost", "seed",
           "started", "ended", "run_seconds", "log_path", "flags", "extra", "seq"]


def connect(path: Path) -> sqlite3.Connection:
    """A connection that writes: WAL, and every commit synced to disk. A folder (or another
    thing that is not a file) put where SQLite keeps its -wal or -shm is set aside first: SQLite
    would take the database for read-only, and every later run of the tag would fail."""
    for suffix in ("-wal", "-shm"):
        set_aside(path.with_name(path.name + suffix))
    db = sqlite3.connect(path, check_same_thread=False, timeout=30, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


class LedgerNotReady(AutoresearchError):
    """The tag's ledger is being created by a loop right now."""


def check_tag(tag: str) -> str:
    if not TAG_RE.match(tag) or ".." in tag or tag.endswith(".lock") or tag.endswith("."):
        raise UsageError(f"--tag {tag!r} is not a valid tag: letters, digits, '.', '_' and '-', at most 64, "
                         "starting with a letter or digit, without '..' and not ending in '.' or '.lock' "
                         "(it names a git branch)")
    return tag


def tag_dir(root: Path, tag: str) -> Path:
    return Path(root) / LEDGER_DIR / check_tag(tag)


def list_tags(root: Path) -> list[str]:
    base = Path(root) / LEDGER_DIR
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / "ledger.sqlite").exists())


def loops_running(root: Path) -> bool:
    """Whether a loop runs on any tag of the repository at `root` now (it watches the git
    metadata, .git/info/exclude included: a change there is put back, its trial rejected)."""
    return any(Ledger.loop_running(tag_dir(root, t)) for t in list_tags(root))


def ignore_in_git(git: Git, rels: list[str]) -> list[str]:
    """Have git ignore each path of `rels` (from the root, '/'-separated) through
    .git/info/exclude, as the ledger is: a report, an MLflow store or a loop's own log made in
    the repository would leave it dirty, and the next `run` refuse it. Not while a loop runs in
    the repository (it watches that file), nor for a path with a line break (no pattern names
    it). Returns those git does not ignore through it: a note is owed for them."""
    busy: bool | None = None
    left = []
    for rel in rels:
        if git.exclude_path(rel, write=False):
            continue
        if busy is None:
            busy = loops_running(git.root)
        if busy or "\n" in rel or "\r" in rel:
            left.append(rel)
        else:
            git.exclude_path(rel)
    return left


def _row_to_trial(row: sqlite3.Row) -> Trial:
    return Trial(
        number=row["number"], status=Status(row["status"]), description=row["description"],
        parent=row["parent"], commit=row["commit_sha"], metric=row["metric"],
        figures=json.loads(row["figures"]), repeats=json.loads(row["repeats"]),
        reason=row["reason"], agent=row["agent"], model=row["model"],
        tokens_in=row["tokens_in"], tokens_out=row["tokens_out"], cost=row["cost"],
        seed=row["seed"], started=row["started"], ended=row["ended"],
        run_seconds=row["run_seconds"], log_path=row["log_path"],
        flags=json.loads(row["flags"]), extra=json.loads(row["extra"]),
    )


class Ledger:
    """The record of one tag. Open with `Ledger.open(root, tag, metric_name)`."""

    def __init__(self, directory: Path, metric_name: str, readonly: bool = False) -> None:
        self.dir = Path(directory)
        self.metric_name = metric_name
        self._lock = threading.RLock()
        self._lock_fd: int | None = None
        self._decoded: dict[int, tuple[tuple[object, ...], Trial]] = {}  # number -> (its row, the trial)
        # every trial, kept up to date with this connection's writes and read again whole only
        # when another connection wrote (PRAGMA data_version); None: not read yet
        self._all: dict[int, Trial] | None = None
        self._all_version = 0
        self._rows: dict[int, tuple[Trial, str]] = {}  # number -> (the trial, its results.tsv row)
        self._watched: Watched | None = None  # from `watch` on: the record as this Ledger wrote it
        if readonly:
            uri = f"file:{self.dir / 'ledger.sqlite'}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=30)
        else:
            self.make_folders()
            self._db = connect(self.dir / "ledger.sqlite")
            self._db.executescript(SCHEMA)
        self._db.row_factory = sqlite3.Row

    def make_folders(self) -> list[str]:
        """Make the ledger's folders, setting aside first any of them (sealed/ too) that is a file
        or a link (an agent's: every later trial failed on it); returns the names set aside."""
        aside = []
        for sub in ("logs", "agent", "runs", "sealed"):
            folder = self.dir / sub
            if set_aside(folder, stat.S_ISDIR):
                aside.append(sub)
            if sub != "sealed":  # (made by the first evaluator)
                folder.mkdir(parents=True, exist_ok=True)
        return aside

    @classmethod
    def open(cls, root: Path, tag: str, metric_name: str) -> Ledger:
        directory = tag_dir(root, tag)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            return cls(directory, metric_name)
        except (OSError, sqlite3.DatabaseError) as e:  # (a ledger.sqlite that is not one, too)
            raise AutoresearchError(f"cannot open the ledger in {directory}: {e}") from None

    @classmethod
    def read(cls, root: Path, tag: str) -> Ledger:
        directory = tag_dir(root, tag)
        if not (directory / "ledger.sqlite").exists():
            known = ", ".join(list_tags(root)) or "none"
            raise UsageError(f"no tag {tag!r} in {root} (tags: {known})")
        led = cls(directory, "", readonly=True)
        try:
            ready = led._db.execute(
                "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('meta', 'trials')").fetchone()[0] == 2
        except sqlite3.DatabaseError as e:
            led.close()
            raise AutoresearchError(f"cannot read the ledger of tag {tag!r}: {e}") from None
        if not ready:
            led.close()
            raise LedgerNotReady(f"tag {tag!r} is still being created; try again in a moment")
        led.metric_name = led.get_meta("metric_name") or "metric"
        return led

    # -- the tag's single-writer lock ---------------------------------------------------

    @staticmethod
    def loop_running(folder: Path) -> bool:
        """Whether a loop holds the tag in `folder` now (its lock is taken)."""
        try:
            fd = os.open(folder / "lock", os.O_RDONLY)
        except OSError:
            return False
        try:  # shared: two readers asking at once do not take each other for a loop
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            os.close(fd)  # (closing drops a lock taken here)
        return False

    def acquire(self) -> None:
        set_aside(self.dir / "lock")
        try:
            fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise AutoresearchError(f"cannot take the lock {self.dir / 'lock'}: {e.strerror}") from None
        for wait in (0.05, 0.1, 0.2, 0):  # (a `status` looking at the lock holds it for microseconds)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    os.close(fd)
                    raise LoopBusy(self.dir.name) from None
                time.sleep(wait)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    # -- meta ---------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            try:
                self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))
                if self._watched is not None:
                    self._watched.meta[key] = value
                    self._watched.took()
            except sqlite3.OperationalError as e:
                raise AutoresearchError(f"cannot write the ledger {self.dir / 'ledger.sqlite'}: {e}") from None

    # -- trials -------------------------------------------------------------------------

    def begin(self, trial: Trial) -> None:
        """Record a trial as running (before anything of it happens)."""
        self._write(trial, insert=True)

    def begin_next(self, make: Callable[[int], Trial]) -> Trial:
        """Record `make(n)` as running under the next free number n, atomically: concurrent
        callers never get the same number and none is skipped."""
        with self._lock:
            trial = make(self.next_number())
            self._write(trial, insert=True)
        return trial

    def update(self, trial: Trial) -> None:
        """Record new facts about a running trial (its commit, say). A trial already finished
        is left as it is: a late update must not turn its verdict back into `running`."""
        self._write(trial, only_running=True)

    def finish(self, trial: Trial) -> None:
        """Record a trial's final state and rewrite results.tsv."""
        assert trial.status.finished
        self._write(trial, final=True)
        self.export_tsv()

    def _write(self, trial: Trial, insert: bool = False, final: bool = False, only_running: bool = False) -> None:
        values = {
            "number": trial.number, "status": trial.status.value,
            "description": trial.description, "parent": trial.parent, "commit_sha": trial.commit,
            "metric": trial.metric, "figures": json.dumps(trial.figures),
            "repeats": json.dumps(trial.repeats), "agent": trial.agent,
            # one printable line: a reason may quote an experiment's output (escapes, binary)
            "reason": clean_text(trial.reason, 2000),
            "model": trial.model, "tokens_in": trial.tokens_in, "tokens_out": trial.tokens_out,
            "cost": trial.cost, "seed": trial.seed, "started": trial.started,
            "ended": trial.ended, "run_seconds": trial.run_seconds, "log_path": trial.log_path,
            "flags": json.dumps(trial.flags), "extra": json.dumps(trial.extra),
        }
        cols = list(values)
        with self._lock:
            try:
                if insert:
                    sql = f"INSERT INTO trials ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
                    written = self._db.execute(sql, [values[c] for c in cols]).rowcount
                else:
                    sets = ", ".join(f"{c}=?" for c in cols[1:])
                    if final:
                        sets += ", seq=(SELECT COALESCE(MAX(seq), 0) + 1 FROM trials)"
                    where = "number=? AND status='running'" if only_running else "number=?"
                    written = self._db.execute(f"UPDATE trials SET {sets} WHERE {where}",
                                               [values[c] for c in cols[1:]] + [trial.number]).rowcount
                if written and (self._watched is not None or self._all is not None):  # the row as it
                    row = self._db.execute("SELECT * FROM trials WHERE number=?", (trial.number,)).fetchone()
                    if self._watched is not None:  # now stands (seq included)
                        self._watched.rows[trial.number] = tuple(row)
                    if self._all is not None:
                        self._all[trial.number] = self._trial(row)
                if self._watched is not None:
                    self._watched.took()
            except sqlite3.IntegrityError:
                self._forget()  # (whether the write itself or the read after it failed)
                raise AutoresearchError(f"trial {trial.number} is already in the ledger") from None
            except sqlite3.OperationalError as e:
                self._forget()
                raise AutoresearchError(f"cannot write the ledger {self.dir / 'ledger.sqlite'}: {e}") from None

    def trials(self) -> list[Trial]:
        """Every trial, by number. Read whole from the database the first time and after
        another connection wrote to it; otherwise from what this Ledger read and wrote (the
        loop reads the whole history several times a trial: a read of every row each time grew
        with the ledger)."""
        with self._lock:
            version = self._data_version()
            if self._all is None or version != self._all_version:
                rows = self._db.execute("SELECT * FROM trials ORDER BY number").fetchall()
                self._all = {r["number"]: self._trial(r) for r in rows}
                self._all_version = version
            trials = list(self._all.values())
        if any(a.number > b.number for a, b in zip(trials, trials[1:], strict=False)):  # begun out of order
            trials.sort(key=lambda t: t.number)
        return trials

    def _forget(self) -> None:
        """Read every trial from the database next time (after a restore wrote rows back)."""
        self._all = None

    def _trial(self, row: sqlite3.Row) -> Trial:
        """The trial of a row, decoded once per version of the row (the loop reads the whole
        history several times a trial; decoding its JSON columns each time grew with it)."""
        key = tuple(row)
        hit = self._decoded.get(row["number"])
        if hit is not None and hit[0] == key:
            return hit[1]
        trial = _row_to_trial(row)
        self._decoded[row["number"]] = (key, trial)
        return trial

    def get(self, number: int) -> Trial | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM trials WHERE number=?", (number,)).fetchone()
        return self._trial(row) if row else None

    def total_cost(self) -> float:
        """The cost of every trial so far, in USD."""
        with self._lock:
            row = self._db.execute("SELECT COALESCE(SUM(cost), 0) FROM trials").fetchone()
        return float(row[0])

    def next_number(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT COALESCE(MAX(number), -1) + 1 FROM trials").fetchone()
        return int(row[0])

    def best(self) -> Trial | None:
        """The kept trial decided last: every keep beats the best of its moment."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM trials WHERE status='keep' ORDER BY seq DESC LIMIT 1").fetchone()
        return self._trial(row) if row else None

    def running(self) -> list[Trial]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM trials WHERE status='running'").fetchall()
        return [self._trial(r) for r in rows]

    def iter_finished(self) -> Iterator[Trial]:
        for t in self.trials():
            if t.status.finished:
                yield t

    # -- the record as this loop wrote it -------------------------------------------------

    def watch(self) -> None:
        """Take the record as it stands for the loop's own; from now on every write here is
        remembered, and `check_and_restore` undoes any other (ledgerwatch.Watched)."""
        from autoresearch.ledgerwatch import Watched
        with self._lock:
            self._watched = Watched(self)

    def check_and_restore(self) -> list[str]:
        """What anyone but this Ledger changed in the record since `watch`, put back (one
        phrase each; empty when nothing was)."""
        if self._watched is None:
            return []
        with self._lock:
            return self._watched.check_and_restore()

    def _data_version(self) -> int:
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    # -- results.tsv --------------------------------------------------------------------

    def tsv_text(self) -> str:
        lines = [f"commit\t{self.metric_name}\tmemory_gb\tstatus\tdescription"]
        for t in self.iter_finished():
            if not t.commit:
                continue
            cached = self._rows.get(t.number)
            if cached is None or cached[0] is not t:  # (a row's trial is one object until it changes)
                cached = self._rows[t.number] = (t, tsv_row(t))
            lines.append(cached[1])
        return "\n".join(lines) + "\n"

    @contextlib.contextmanager
    def _turn(self) -> Iterator[None]:
        set_aside(self.dir / "results.lock")
        try:
            turn = open(self.dir / "results.lock", "a+b")
        except OSError as e:
            raise AutoresearchError(f"cannot write in {self.dir}: {e.strerror}") from None
        with turn:
            fcntl.flock(turn, fcntl.LOCK_EX)
            yield

    def export_tsv(self) -> None:
        """Rewrite results.tsv from the ledger (atomically). Writers take turns (a thread lock
        and a lock file), and each reads the ledger in its turn, so the last one to write leaves
        the latest state, whichever threads or processes finish trials at once."""
        path = self.dir / "results.tsv"
        with self._lock, self._turn():
            for stale in self.dir.glob("results.tsv*.tmp"):  # left by a killed writer
                stale.unlink(missing_ok=True)
            tmp = path.with_name(f"results.tsv.{os.getpid()}.tmp")
            data = self.tsv_text().encode()
            try:
                if path.is_dir() and not path.is_symlink():  # (put there: no file could replace it, ever)
                    set_aside(path)
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
                if self._watched is not None:
                    self._watched.tsv = data
            except OSError as e:  # disk full, read-only: the old results.tsv stays whole
                tmp.unlink(missing_ok=True)
                raise AutoresearchError(f"cannot write {path}: {e.strerror}") from None
            dir_fd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
