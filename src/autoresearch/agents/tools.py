"""The LLM agent's tools: list, read, grep, edit, write, the trial history, a trial's log tail.

Guarantees: every path is resolved (symlinks included) and must stay inside the trial's
worktree; `.git` and `.autoresearch` are never read or listed; only `task.editable` paths (never
protected ones) are written, and never through a symlink; an edit whose text holds an API key
(one the agent was given, or any key variable's value) is refused, so no key reaches a commit.
The history and logs an agent reads have the sealed holdout figure removed. A tool never raises
on bad input: arguments are checked against the tool's schema (types, required ones), and what
is wrong comes back as an error text the model can act on; an unexpected failure inside a tool
is logged and comes back the same way. Outputs are cut to a size that keeps the conversation
small. `grep` runs its pattern in a child process with a time limit: a pattern that backtracks
without end ((x+x+)+y) would hold the loop, and Python's `re` cannot be interrupted.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoresearch.agents.base import Context
from autoresearch.agents.secrets import key_values, keys_in, redact
from autoresearch.process import read_tail
from autoresearch.prompt import history_lines, named
from autoresearch.task import SKIP_DIRS

MAX_OUTPUT = 16000
PAGE_BACK = " (read_history with before={before} lists them)"
READ_BYTES = 1 << 22  # what read_file reads of a file at most: one of gigabytes must not fill memory
HIDDEN = {".git", ".autoresearch"}
GREP_SECONDS = 10.0
GREP_HITS = 100
# the search, in a child (python -I: no module of the worktree's is imported by it)
GREP = """
import json, re, sys
job = json.load(sys.stdin)
regex, found = re.compile(job["pattern"]), 0
for f in job["files"]:
    try:
        with open(job["root"] + "/" + f, encoding="utf-8") as fh:
            text = fh.read(job["chars"])
    except (UnicodeDecodeError, OSError):
        continue
    for i, line in enumerate(text.splitlines(), 1):
        if regex.search(line):
            print(json.dumps(f"{f}:{i}: {line[:300]}"), flush=True)  # one by one: a timeout keeps them
            found += 1
            if found > job["most"]:
                sys.exit()
"""


class ToolError(Exception):
    """A bad tool call; the message goes back to the model."""


def _schema(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required}


_S = {"type": "string"}
_I = {"type": "integer"}

SPECS: list[dict[str, Any]] = [
    {"name": "list_files", "description": "List the files under a folder of the repository "
     "(default: all). Editable files are marked with *.",
     "parameters": _schema({"path": {**_S, "description": "a folder, relative to the repository root"}}, [])},
    {"name": "read_file", "description": "Read a text file with line numbers, optionally only "
     "lines start..end (1-based, inclusive).",
     "parameters": _schema({"path": _S, "start": _I, "end": _I}, ["path"])},
    {"name": "grep", "description": "Search the repository's files for a regular expression; "
     "returns file:line: text for each match (at most 100).",
     "parameters": _schema({"pattern": _S, "path": {**_S, "description": "a file or folder (default: all)"}},
                           ["pattern"])},
    {"name": "edit_file", "description": "Replace an exact piece of text in an editable file. "
     "`search` must occur exactly once (include enough surrounding lines); whitespace counts.",
     "parameters": _schema({"path": _S, "search": _S, "replace": _S}, ["path", "search", "replace"])},
    {"name": "write_file", "description": "Write a whole editable file (creates or replaces it).",
     "parameters": _schema({"path": _S, "content": _S}, ["path", "content"])},
    {"name": "read_history", "description": "The trials so far: number, status, metric, "
     "description, other figures and why failed ones failed. `last` limits to the most recent; "
     "`before` to those numbered below it (to page back through a long history).",
     "parameters": _schema({"last": _I, "before": _I}, [])},
    {"name": "read_log", "description": "The last lines of a past trial's experiment output "
     "(e.g. to see why it crashed).",
     "parameters": _schema({"trial": _I, "lines": _I}, ["trial"])},
    {"name": "finish", "description": "Call when your change is complete: a one-line description "
     "of what you changed and why (it becomes the commit message).",
     "parameters": _schema({"description": _S}, ["description"])},
]


SPEC_BY_NAME = {spec["name"]: spec for spec in SPECS}
JSON_TYPES = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string",
              list: "an array", dict: "an object"}


def _kind(value: Any) -> str:
    return JSON_TYPES.get(type(value), type(value).__name__)


def _whole(name: str, value: Any) -> int:
    """An integer argument: a JSON integer, or a number or string that is one ("12", 12.0)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d{1,12}\s*", value):
        return int(value)
    raise ToolError(f"`{name}` must be a whole number, got {_kind(value)} {cut(repr(value), 60)}")


def checked(name: str, args: Any) -> dict[str, Any]:
    """`args` for tool `name` checked against its schema: no unknown names, the required ones
    present (null counts as absent), strings as strings, integers as integers."""
    params = SPEC_BY_NAME[name]["parameters"]
    props, required = params["properties"], params["required"]
    if not isinstance(args, dict):
        raise ToolError(f"the arguments of {name} must be an object, got {_kind(args)}")
    unknown = sorted(str(k) for k in args if k not in props)
    if unknown:
        raise ToolError(f"{name} takes no argument named {', '.join(unknown)} (it takes: "
                        f"{', '.join(props) or 'none'})")
    out: dict[str, Any] = {}
    for key, schema in props.items():
        value = args.get(key)
        if value is None:
            if key in required:
                raise ToolError(f"{name} needs `{key}` ({'a string' if schema['type'] == 'string' else 'a whole number'})")
            continue
        if schema["type"] == "integer":
            value = _whole(key, value)
        elif not isinstance(value, str):
            raise ToolError(f"`{key}` must be a string, got {_kind(value)} {cut(repr(value), 60)}")
        out[key] = value
    return out


def cut(text: str, limit: int = MAX_OUTPUT) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters cut; ask for a narrower range]"


def sealed(text: str, holdout: str | None) -> str:
    """The holdout figure's values blanked out of a text (e.g. a crash reason in the history)."""
    if not holdout:
        return text
    return re.sub(rf"(?i)({named(holdout)}\s*[:=]?\s*)(?:[-+]?(?:nan|inf(?:inity)?)\b|[-+0-9.eE]+)",
                  r"\1[sealed]", text)


def seal(text: str, holdout: str | None) -> str:
    """Remove every line that mentions the sealed holdout figure (for logs)."""
    if not holdout:
        return text
    pat = re.compile(named(holdout), re.IGNORECASE)
    return "\n".join(line for line in text.splitlines() if not pat.search(line))


@dataclass
class Tools:
    """The tools bound to one proposal's context."""

    ctx: Context
    keys: tuple[str, ...] = ()  # the agent's own keys; every key variable's value is added
    log: Callable[[str], None] | None = None  # where an unexpected failure is told (default: ctx.log)
    changed: set[str] = field(default_factory=set)
    finished: str | None = None
    asked_for_words: bool = False  # a finish with no description was sent back once
    refused: list[str] = field(default_factory=list)  # writes refused for their path, said if nothing changed

    def __post_init__(self) -> None:
        self.keys = key_values(self.keys)
        self.root = Path(os.path.realpath(self.ctx.workdir))
        self.holdout = self.ctx.task.metric.holdout
        self.handlers: dict[str, Callable[..., str]] = {
            "list_files": self.list_files, "read_file": self.read_file, "grep": self.grep,
            "edit_file": self.edit_file, "write_file": self.write_file,
            "read_history": self.read_history, "read_log": self.read_log, "finish": self.finish,
        }

    def call(self, name: str, args: dict[str, Any]) -> str:
        fn = self.handlers.get(name)
        if fn is None:
            return f"error: no tool named {name!r}; tools: {', '.join(self.handlers)}"
        try:
            return cut(fn(**checked(name, args)))
        except ToolError as e:
            return f"error: {e}"
        except Exception as e:  # noqa: BLE001 - our bug, or the machine's: the model is told, the trial goes on
            said = redact(f"{type(e).__name__}: {e}")[:500]
            try:
                (self.log or self.ctx.log)(redact(f"[tool] {name} failed unexpectedly\n{traceback.format_exc()}"))
            except OSError:
                pass
            return f"error: {name} failed ({said}); try another way"

    # -- paths -------------------------------------------------------------------------------

    def resolve(self, path: str | None, must_exist: bool = True) -> tuple[Path, str]:
        """(absolute real path, posix path relative to the root), or ToolError if it escapes."""
        raw = (path or ".").strip()
        if "\0" in raw:
            raise ToolError(f"{path!r}: a path may not hold a NUL character")
        if raw.startswith("/"):
            try:
                raw = str(Path(raw).relative_to(self.ctx.workdir))
            except ValueError:
                raise ToolError(f"{path}: use a path relative to the repository root") from None
        real = Path(os.path.realpath(self.root / raw))
        if real != self.root and self.root not in real.parents:
            raise ToolError(f"{path}: outside the repository")
        rel = real.relative_to(self.root).as_posix() if real != self.root else "."
        if any(part in HIDDEN for part in Path(rel).parts):
            raise ToolError(f"{path}: not readable")
        if must_exist and not real.exists():
            raise ToolError(f"{path}: no such file or folder")
        return real, rel

    def walk(self, top: Path) -> list[str]:
        out = []
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and d not in HIDDEN)
            for f in sorted(filenames):
                if f in HIDDEN:  # a worktree's .git is a file
                    continue
                full = Path(dirpath) / f
                real = Path(os.path.realpath(full))
                if self.root in real.parents:
                    out.append(full.relative_to(self.root).as_posix())
        return out

    # -- the tools ---------------------------------------------------------------------------

    def list_files(self, path: str = ".") -> str:
        real, _ = self.resolve(path)
        files = self.walk(real) if real.is_dir() else [real.relative_to(self.root).as_posix()]
        lines = [("* " if self.ctx.task.is_editable(f) else "  ") + f for f in files[:500]]
        more = f"\n[... {len(files) - 500} more]" if len(files) > 500 else ""
        return "\n".join(lines) + more + "\n(* = editable)"

    def read_file(self, path: str, start: int | None = None, end: int | None = None) -> str:
        real, rel = self.resolve(path)
        if real.is_dir():
            raise ToolError(f"{path} is a folder; use list_files")
        size = real.stat().st_size
        with open(real, "rb") as f:
            data = f.read(READ_BYTES)
        if b"\0" in data[:8192]:  # (a checkpoint, a data shard: no text to show, only noise to pay for)
            return f"{rel} is a binary file ({size} bytes): not shown"
        if size > len(data):  # whole lines of the file's start only
            data = data[: data.rfind(b"\n") + 1] or data
        lines = data.decode(errors="replace").splitlines()
        of = f"the first {len(lines)} (of its first {READ_BYTES >> 20} MB; it holds {size} bytes)" if (
            size > READ_BYTES) else str(len(lines))
        a = max(1, start or 1)
        b = min(len(lines), end or len(lines))
        if a > b:
            return f"{rel} has {of} lines: none in {a}..{end or len(lines)}"
        body = "\n".join(f"{i:5d}  {lines[i - 1]}" for i in range(a, b + 1))
        return f"{rel} (lines {a}-{b} of {of})\n{body}"

    def grep(self, pattern: str, path: str = ".") -> str:
        try:
            regex = re.compile(pattern)
        except re.error as e:
            raise ToolError(f"bad regular expression: {e}") from None
        real, _ = self.resolve(path)
        files = self.walk(real) if real.is_dir() else [real.relative_to(self.root).as_posix()]
        job = json.dumps({"pattern": regex.pattern, "root": str(self.root), "files": files, "most": GREP_HITS,
                          "chars": READ_BYTES})  # (of each file, what read_file would show)
        late = ""
        try:
            done = subprocess.run([sys.executable, "-I", "-c", GREP], input=job, capture_output=True,
                                  text=True, timeout=GREP_SECONDS, cwd="/")
            out, err = done.stdout, done.stderr if done.returncode else ""
        except subprocess.TimeoutExpired as e:
            out, err = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or ""), ""
            late = (f"\n[the search stopped at {GREP_SECONDS:g} s, over {len(files)} file(s): the matches above "
                    "are those found by then; a narrower path, or a pattern without nested repeats such as "
                    "(x+)+, which backtrack without end]")
        try:
            hits = [str(json.loads(line)) for line in out.splitlines()[: GREP_HITS + 1]]
        except ValueError:
            hits = []
        if err:
            raise ToolError(f"grep failed: {err.strip()[-300:]}")
        more = "\n[... more matches cut]" if len(hits) > GREP_HITS else ""
        return ("\n".join(hits[:GREP_HITS]) + more if hits else "no matches") + late

    def _writable(self, path: str) -> tuple[Path, str]:
        try:
            real, rel = self.resolve(path, must_exist=False)
            if (self.root / path).is_symlink() or real.is_dir():
                raise ToolError(f"{path}: not a regular file")
            if not self.ctx.task.is_editable(rel):
                raise ToolError(f"{rel} is not editable; you may change only: {', '.join(self.ctx.task.editable)} "
                                f"(never {', '.join(self.ctx.task.always_protected + self.ctx.task.protected)})")
        except ToolError as e:
            self.refused.append(str(e).split(";")[0][:120])
            raise
        return real, rel

    def _no_key(self, rel: str, old: str, new: str) -> None:
        """Refuse a write that puts a key into a file (one already there is the user's own)."""
        if keys_in(rel, self.keys) or keys_in(new, self.keys) > keys_in(old, self.keys):
            raise ToolError("the text holds an API key, which must never be written into a file "
                            "(it would be committed); read the key from the environment instead")

    @staticmethod
    def _encoded(text: str) -> bytes:
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ToolError(f"the text cannot be written as UTF-8 ({e.reason} at character {e.start})") from None

    @staticmethod
    def _line_ends(real: Path, text: str) -> str:
        """`text` with the line ends of the file it replaces: CRLF when that file's are all CRLF
        (read, shown and matched as "\n", an edit of one line wrote the whole file back with "\n"
        ends: a diff of every line)."""
        try:
            raw = real.read_bytes() if real.is_file() else b""
        except OSError:
            return text
        crlf = raw.count(b"\r\n")
        if crlf and crlf == raw.count(b"\n") == raw.count(b"\r") and "\r" not in text:
            return text.replace("\n", "\r\n")
        return text

    def edit_file(self, path: str, search: str, replace: str) -> str:
        real, rel = self._writable(path)
        if not real.exists():
            raise ToolError(f"{rel} does not exist; use write_file to create it")
        try:
            text = real.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ToolError(f"{rel} is not a UTF-8 text file; use write_file to replace it whole") from None
        count = text.count(search) if search else 0
        if count == 0:
            raise ToolError(f"the search text was not found in {rel}; read the file and copy the "
                            "lines exactly (whitespace counts)")
        if count > 1:
            raise ToolError(f"the search text occurs {count} times in {rel}; include more "
                            "surrounding lines so that it occurs once")
        after = text.replace(search, replace, 1)
        self._no_key(rel, text, after)
        real.write_bytes(self._encoded(self._line_ends(real, after)))
        self.changed.add(rel)
        return f"edited {rel}"

    def write_file(self, path: str, content: str) -> str:
        real, rel = self._writable(path)
        try:
            before = real.read_text(encoding="utf-8", errors="replace") if real.is_file() else ""
        except OSError:
            before = ""
        self._no_key(rel, before, content)
        data = self._encoded(self._line_ends(real, content))
        real.parent.mkdir(parents=True, exist_ok=True)
        real.write_bytes(data)
        self.changed.add(rel)
        return f"wrote {rel} ({len(content.splitlines())} lines)"

    def read_history(self, last: int | None = None, before: int | None = None) -> str:
        trials = [t for t in self.ctx.history if before is None or t.number < before]
        if last is not None:
            if last < 1:
                raise ToolError(f"`last` must be 1 or more, got {last}")
            trials = trials[-last:]
        lines = history_lines(trials, self.ctx.task.metric.name, limit_chars=MAX_OUTPUT - 200, more=PAGE_BACK,
                              recent=40 if before is None else len(trials))  # (a page back: as many as fit)
        return sealed("\n".join(lines), self.holdout) or "no finished trials yet"

    def read_log(self, trial: int, lines: int = 60) -> str:
        n = trial
        if n not in {t.number for t in self.ctx.history}:
            raise ToolError(f"there is no finished trial {n}")
        log = self.ctx.ledger_dir / "logs" / f"{n}.log"
        text = read_tail(log, 256 * 1024)
        if not text:
            return f"trial {n} left no experiment log (it was not run)"
        text = text.split("\n=== evaluate:", 1)[0]  # the evaluator's output is not the agent's
        tail = "\n".join(text.splitlines()[-max(1, min(lines, 400)):])
        return seal(tail, self.holdout)

    def finish(self, description: str) -> str:
        words = " ".join(description.split())[:200]
        if not words and not self.asked_for_words:  # (it becomes the commit message and the ledger's line)
            self.asked_for_words = True
            raise ToolError("the description is empty: call finish again with one line saying what you "
                            "changed and why")
        self.finished = words or "(no description)"
        return "finished"
