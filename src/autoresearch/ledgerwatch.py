"""The record as the loop wrote it, and what anyone else changed in it.

The loop is the only writer of a tag it holds, but the code of a trial and a CLI agent run as
the same user, beside the ledger. From `Ledger.watch` on, `Watched` remembers every row, meta
value and results.tsv the loop wrote; `check_and_restore` finds any other change (rows, meta,
results.tsv, the database file itself removed or replaced, its bytes or its WAL's written
around SQLite), names it, and puts back what the loop wrote. The caller holds the ledger's lock.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from typing import TYPE_CHECKING

from autoresearch.errors import AutoresearchError
from autoresearch.filetree import BIG, read_regular

if TYPE_CHECKING:
    from autoresearch.ledger import Ledger


class Watched:
    def __init__(self, ledger: Ledger) -> None:
        self.led = ledger
        db = ledger._db
        self.rows: dict[int, tuple[object, ...]] = {r["number"]: tuple(r) for r in db.execute("SELECT * FROM trials")}
        self.cols = [d[0] for d in db.execute("SELECT * FROM trials LIMIT 0").description]
        self.meta: dict[str, str] = {k: v for k, v in db.execute("SELECT key, value FROM meta")}
        self.file_id = self._identity()
        self.version = ledger._data_version()  # it moves only on other connections' writes
        self.files = self._files()  # ... and not on a write to the files that goes around SQLite
        self.tsv: bytes | None = self._read_tsv()

    def _read_tsv(self) -> bytes | None:
        """results.tsv's content; None where it is not a regular file (a FIFO put in its place
        would have the read wait forever, a link to /dev/zero never end) or cannot be read."""
        try:
            return read_regular(self.led.dir / "results.tsv", BIG)[0]
        except OSError:
            return None

    def _identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.led.dir / "ledger.sqlite")
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _files(self) -> tuple[tuple[int, int, int, int] | None, ...]:
        """The database's file and its WAL by inode, size, mtime and ctime (no process can set a
        ctime): a page patched in either, which SQLite's data_version never shows (the loop's
        connection goes on reading its cache) and a checkpoint then makes the record."""
        out: list[tuple[int, int, int, int] | None] = []
        for name in ("ledger.sqlite", "ledger.sqlite-wal"):
            try:
                st = os.stat(self.led.dir / name)
            except OSError:
                out.append(None)
                continue
            out.append((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        return tuple(out)

    def took(self) -> None:
        """The loop wrote: its database's files as they stand now are its own."""
        self.files = self._files()

    def _on_disk(self) -> tuple[dict[int, tuple[object, ...]], dict[str, str]]:
        """The rows and meta as a new connection reads them from the files (none where it cannot
        read them: every row is then put back)."""
        try:
            db = sqlite3.connect(f"file:{self.led.dir / 'ledger.sqlite'}?mode=ro", uri=True, timeout=30)
        except sqlite3.Error:
            return {}, {}
        try:
            rows = {r[0]: tuple(r) for r in db.execute("SELECT * FROM trials")}
            return rows, {k: v for k, v in db.execute("SELECT key, value FROM meta")}
        except sqlite3.Error:
            return {}, {}
        finally:
            db.close()

    def check_and_restore(self) -> list[str]:
        """What was changed in the record since the watch began by anyone but the loop (one
        phrase each; empty when nothing was), put back as the loop wrote it: the database file
        when it was removed or replaced (the loop's open connection still holds every row), the
        trials' rows and the meta, and results.tsv."""
        led = self.led
        found: list[str] = []
        with contextlib.suppress(OSError):
            if aside := led.make_folders():
                found.append(f"put a file or a link in the place of the ledger's {', '.join(aside)} folder (set aside)")
        if self._identity() != self.file_id:
            found.append("removed or replaced ledger.sqlite")
            self._reinstate()
        around = not found and self._files() != self.files  # written around SQLite: what the files hold
        if around:
            rows, meta = self._on_disk()
        elif found or led._data_version() != self.version:  # another connection wrote
            rows = {r["number"]: tuple(r) for r in led._db.execute("SELECT * FROM trials")}
            meta = {k: v for k, v in led._db.execute("SELECT key, value FROM meta")}
        else:
            rows, meta = self.rows, self.meta
        changed = sorted(n for n in set(rows) | set(self.rows) if rows.get(n) != self.rows.get(n))
        keys = sorted(k for k in set(meta) | set(self.meta) if meta.get(k) != self.meta.get(k))
        if changed:
            shown = ", ".join(map(str, changed[:8])) + (" ..." if len(changed) > 8 else "")
            found.append(f"changed the ledger's record of trial{'s' if len(changed) > 1 else ''} {shown}")
        if keys:
            found.append(f"changed the ledger's settings ({', '.join(keys[:5])})")
        if around and (changed or keys):
            self._reinstate(from_memory=True)
        elif changed or keys:
            self._put_back(changed, keys)
        self.version = led._data_version()
        self.took()
        tsv = self._read_tsv()
        if self.tsv is not None and (changed or tsv != self.tsv):
            if tsv != self.tsv:
                found.append("changed results.tsv")
            led.make_folders()
            led.export_tsv()
        return found

    def _put_back(self, numbers: list[int], keys: list[str]) -> None:
        db = self.led._db
        cols = [d[0] for d in db.execute("SELECT * FROM trials LIMIT 0").description]
        try:
            db.execute("BEGIN IMMEDIATE")
            for n in numbers:
                db.execute("DELETE FROM trials WHERE number=?", (n,))
                if n in self.rows:
                    db.execute(f"INSERT INTO trials ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                               self.rows[n])
            for k in keys:
                db.execute("DELETE FROM meta WHERE key=?", (k,))
                if k in self.meta:
                    db.execute("INSERT INTO meta(key, value) VALUES (?, ?)", (k, self.meta[k]))
            db.execute("COMMIT")
            self.led._forget()
        except sqlite3.Error as e:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise AutoresearchError(f"cannot restore the ledger {self.led.dir / 'ledger.sqlite'}: {e}") from None

    def _reinstate(self, from_memory: bool = False) -> None:
        """ledger.sqlite removed or replaced under the loop: its open connection still reads
        the loop's database; copy that to a new file, keep what was put in its place beside it
        (ledger.sqlite.replaced), and go on with the copy. `from_memory`: its files were written
        around SQLite, and the connection would read what was written there too (a page not in
        its cache, a WAL cut short): the new file is written from the rows the loop remembers."""
        from autoresearch.ledger import SCHEMA, connect

        led = self.led
        path = led.dir / "ledger.sqlite"
        led.dir.mkdir(parents=True, exist_ok=True)
        fresh = path.with_name("ledger.sqlite.restoring")
        fresh.unlink(missing_ok=True)
        try:
            copy = sqlite3.connect(fresh)
            if from_memory:
                copy.executescript(SCHEMA)
                with copy:
                    copy.executemany(f"INSERT INTO trials ({', '.join(self.cols)}) VALUES "
                                     f"({', '.join('?' * len(self.cols))})", self.rows.values())
                    copy.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", self.meta.items())
            else:
                with copy:
                    led._db.backup(copy)
            copy.close()
            led._db.close()  # (its -wal and -shm, still under their names, go with it)
            for suffix in ("", "-wal", "-shm"):  # what stands there now is not the loop's
                stray = path.with_name(path.name + suffix)
                if stray.exists():
                    os.replace(stray, path.with_name(f"ledger.sqlite.replaced{suffix}"))
            os.replace(fresh, path)
        except (OSError, sqlite3.Error) as e:
            raise AutoresearchError(f"cannot restore the ledger {path}: {e}") from None
        led._db = connect(path)
        led._db.row_factory = sqlite3.Row
        self.file_id = self._identity()
        led._forget()
