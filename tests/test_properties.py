"""Property-based tests (hypothesis): metric extraction, the results.tsv writer, and the
ledger's replay and resume after a kill at any point of a random sequence of writes."""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import make_task
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoresearch.ledger import Ledger, clean_text, tsv_row
from autoresearch.metrics import MetricError, extract, figure_from_text, figures_from_file
from autoresearch.records import Status, Trial
from autoresearch.session import open_session, trial_ref
from autoresearch.task import MetricSpec, load_task

# AUTORESEARCH_PROPERTY_SCALE=10 runs ten times more examples of each property (default 1)
SCALE = float(os.environ.get("AUTORESEARCH_PROPERTY_SCALE", "1"))


def examples(n: int) -> int:
    return max(1, int(n * SCALE))


NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,15}", fullmatch=True)
FINITE = st.floats(allow_nan=False, allow_infinity=False)
ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)
# text with everything that can hurt a line-based format: controls, escapes, odd line breaks
NASTY = st.lists(st.one_of(
    st.characters(),
    st.sampled_from(["\t", "\n", "\r", "\x1b", "\x1b[31m", "\x1b]0;t\x07", "\x07", "\x00", "\x0b", "\x0c",
                     "\x1c", "\x85", "\u2028", "\u2029", "\x9b", "\ufeff", '"', "  "]),
), max_size=60).map("".join)


# ---------------------------------------------------------------------------
# metric extraction


def metric_line(name: str, value: float, style: int) -> str:
    text = [repr(value), f"{value:.6g}", f"{value:e}", f"{value:.3f}"][style % 4]
    sep = [": ", ":", ":\t", ":   "][style // 4 % 4]
    end = ["", " ", "\r", " (best so far)"][style // 16 % 4]  # what follows the number is not read
    return f"{name}{sep}{text}{end}"


def near_miss(name: str, value: float, kind: int) -> str:
    """Lines that look like the metric but are not it by the default rule."""
    return [f" {name}: {value}", f"val_{name}: {value}", f"{name}_ema: {value}", f"{name} : {value}",
            f"{name}2: {value}", f"# {name}: {value}", f"{name}= {value}", f"{name}: ~{value}"][kind % 8]


LINE_TEXT = st.text(st.characters(blacklist_characters="\r\n"))


@given(name=NAMES, junk=st.lists(LINE_TEXT, max_size=8),
       values=st.lists(st.tuples(FINITE, st.integers(0, 63)), min_size=1, max_size=5),
       misses=st.lists(st.tuples(FINITE, st.integers(0, 7)), max_size=4), rnd=st.randoms())
@settings(max_examples=examples(150), deadline=None)
def test_the_last_exact_metric_line_wins(name: str, junk: list[str], values: list[tuple[float, int]],
                                         misses: list[tuple[float, int]], rnd) -> None:  # noqa: ANN001
    lines: list[tuple[str, float | None]] = [("#" + j, None) for j in junk]  # never the metric
    lines += [(near_miss(name, v, k), None) for v, k in misses]
    rnd.shuffle(lines)
    for v, style in values:
        text = metric_line(name, v, style)
        lines.insert(rnd.randint(0, len(lines)), (text, float(text.split(":", 1)[1].split(" (")[0].strip())))
    expected = [value for _, value in lines if value is not None][-1]
    assert figure_from_text("\n".join(text for text, _ in lines), name) == expected


@given(name=NAMES, value=FINITE, progress=st.lists(st.text(st.characters(blacklist_characters="\r\n",
                                                                       blacklist_categories=["Cs"])), max_size=4))
@settings(max_examples=examples(60), deadline=None)
def test_a_metric_line_after_carriage_return_progress_is_read(name: str, value: float, progress: list[str]) -> None:
    """tqdm(leave=False) ends with '\\r': the next print shares the raw line but is a line on screen."""
    output = "training\n" + "".join(f"\r{p}" for p in progress) + f"\r{name}: {value!r}\n"
    assert figure_from_text(output, name) == value


@given(name=NAMES, output=NASTY)
@settings(max_examples=examples(150), deadline=None)
def test_extraction_never_raises_on_any_output(name: str, output: str) -> None:
    spec = MetricSpec(name=name, record=("peak_vram_mb", "num_steps"), holdout="test_" + name)
    figures = extract(spec, output)
    assert all(isinstance(v, float) for v in figures.values())
    assert set(figures) <= {name, "peak_vram_mb", "num_steps", "test_" + name}


JSON_VALUES = st.recursive(st.none() | st.booleans() | FINITE | st.integers() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                           max_leaves=6)


@given(data=st.one_of(st.dictionaries(st.sampled_from(["loss", "mem", "x"]), JSON_VALUES), JSON_VALUES),
       raw=st.one_of(st.none(), st.binary(max_size=40)))
@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_metric_file_gives_floats_or_one_clear_error(tmp_path: Path, data: object, raw: bytes | None) -> None:
    path = tmp_path / "m.json"
    path.write_bytes(raw if raw is not None else json.dumps(data).encode())
    try:
        figures = figures_from_file(path, ["loss", "mem"])
    except MetricError as e:
        assert "\n" not in str(e) and "m.json" in str(e)
        return
    assert all(isinstance(v, float) for v in figures.values())
    if isinstance(data, dict) and raw is None:
        for k, v in figures.items():
            src = data[k]
            assert not isinstance(src, bool)
            if isinstance(src, (int, float)):
                assert v == float(src)


# ---------------------------------------------------------------------------
# results.tsv rows


TRIALS = st.builds(
    Trial,
    number=st.integers(0, 10**6),
    status=st.sampled_from([s for s in Status if s is not Status.RUNNING]),
    description=NASTY,
    commit=st.from_regex(r"[0-9a-f]{40}", fullmatch=True),
    metric=st.one_of(st.none(), ANY_FLOAT),
    figures=st.dictionaries(st.sampled_from(["peak_vram_mb", "loss", "x"]), ANY_FLOAT, max_size=3),
)


@given(t=TRIALS)
@settings(max_examples=examples(80), deadline=None)
def test_a_tsv_row_is_always_five_clean_fields(t: Trial) -> None:
    row = tsv_row(t)
    assert len(row.splitlines()) == 1 and row == row.strip("\n")
    fields = row.split("\t")
    assert len(fields) == 5
    assert all(ch.isprintable() for f in fields for ch in f), repr(row)
    commit, metric, memory, status, description = fields
    assert commit == t.commit[:7]
    assert status in ("keep", "discard", "crash")
    whole, _, decimals = metric.lstrip("-").partition(".")
    assert whole.isdigit() and len(decimals) == 6 and decimals.isdigit(), metric
    whole, _, decimals = memory.partition(".")
    assert whole.isdigit() and len(decimals) == 1 and decimals.isdigit(), memory
    assert len(whole) <= 7, memory  # up to a petabyte: beyond is no memory figure (0.0)
    assert description and description == description.strip() and "  " not in description
    assert '"' not in description  # a leading quote makes csv/pandas swallow the rows after it
    assert len(description) <= 200


@given(text=NASTY, limit=st.integers(1, 300))
@settings(max_examples=examples(100), deadline=None)
def test_clean_text_is_one_printable_line_and_idempotent(text: str, limit: int) -> None:
    out = clean_text(text, limit)
    assert len(out) <= limit and all(ch.isprintable() for ch in out) and "\x1b" not in out
    assert clean_text(out, limit) == out


# ---------------------------------------------------------------------------
# the ledger: replay and resume after a kill at any point


OPS = st.lists(st.tuples(st.sampled_from(["begin", "update", "finish"]), st.integers(0, 7),
                         st.sampled_from(["keep", "discard", "crash", "timeout", "rejected"]),
                         FINITE, NASTY.map(lambda s: s[:40])), min_size=1, max_size=30)

WRITER = textwrap.dedent("""\
    import json, sys
    from autoresearch.ledger import Ledger
    from autoresearch.records import Status, Trial
    from autoresearch.errors import AutoresearchError
    led = Ledger(sys.argv[1], "loss")
    commit = sys.argv[2]
    for op, n, status, metric, desc in json.load(sys.stdin):
        t = Trial(number=n, status=Status.RUNNING, description=desc, commit=commit, agent="p")
        try:
            if op == "begin":
                led.begin(t)
            elif op == "update":
                led.update(t.with_(reason="updated"))
            else:
                led.finish(t.with_(status=Status(status), metric=metric))
        except AutoresearchError:
            print("refused", op, n, flush=True)
            continue
        print("done", op, n, status, flush=True)
    print("end", flush=True)
    """)


TAGS = itertools.count()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_task(tmp_path_factory.mktemp("props") / "repo")


def expected_state(acked: list[list[str]]) -> dict[int, str]:
    """What the acknowledged writes say each trial's status is (the model)."""
    state: dict[int, str] = {}
    for op, n, *rest in acked:
        n = int(n)
        if op == "begin":
            state[n] = "running"
        elif op == "finish" and n in state:
            state[n] = rest[0]
    return state


@given(ops=OPS, kill_after=st.integers(0, 40), delay=st.floats(0, 0.004))
@settings(max_examples=examples(8), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_ledger_resumes_consistently_after_a_sigkill_anywhere(repo: Path, ops: list, kill_after: int,
                                                              delay: float) -> None:
    """A writer process applies random begin/update/finish calls and is SIGKILLed after
    `kill_after` acknowledgements (plus a random delay, so the kill lands inside a write);
    then the tag is resumed: every acknowledged write is there, nothing is running, refs and
    results.tsv agree with the ledger."""
    import time

    tag = f"p{next(TAGS)}"
    task = load_task(repo)
    directory = repo / ".autoresearch" / tag
    directory.mkdir(parents=True)
    Ledger(directory, "loss").close()  # a tag whose ledger exists: the next open is a resume
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(directory), commit], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(ops))
    proc.stdin.close()
    acked: list[list[str]] = []
    answered = 0  # ops the writer answered (done or refused); later ones may land before the kill
    for line in proc.stdout:
        words = line.split()
        answered += words[0] in ("done", "refused")
        if words[0] == "done":
            acked.append(words[1:])
        if words[0] == "end" or len(acked) >= kill_after:
            break
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()

    session = open_session(task, tag)  # resume: repair
    try:
        trials = {t.number: t for t in session.ledger.trials()}
        for n, status in expected_state(acked).items():
            assert n in trials, f"acknowledged trial {n} lost"
            got = trials[n].status.value
            later = {st for op, m, st, *_ in ops[answered:] if op == "finish" and m == n}  # sent, not yet answered
            assert got == status or got in later or (status == "running" and got in (
                "interrupted", "keep", "discard", "crash", "timeout", "rejected")), (n, status, got)
        assert not session.ledger.running()
        refs = session.git.refs(f"refs/autoresearch/{tag}/")
        for t in trials.values():
            assert refs.get(trial_ref(tag, t.number)) == t.commit
        tsv = (directory / "results.tsv").read_text()
        assert tsv == session.ledger.tsv_text()
        assert all(line.count("\t") == 4 for line in tsv.splitlines())
    finally:
        session.close()
    db = sqlite3.connect(directory / "ledger.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()


# -- the snapshot's change list ----------------------------------------------------------------

EDITS = st.lists(st.tuples(
    st.sampled_from(["write", "append", "delete", "chmod", "symlink", "mkdir_file", "big", "ignored",
                     "commit_head", "gitignore_self", "nested_repo"]),
    st.sampled_from(["exp.py", "prepare.py", "new.txt", "sub/a.py", "sub/deep/b.txt", "odd name é.txt"]),
), min_size=0, max_size=6)


def _apply(ws_path: Path, env: dict[str, str], op: str, name: str) -> None:
    path = ws_path / name
    if op in ("write", "append", "mkdir_file", "ignored", "big"):
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            path.unlink()
    if op == "write" or op == "mkdir_file":
        path.write_text(f"x = {len(name)}\n")
    elif op == "append":
        with open(path, "a") as f:
            f.write("# more\n")
    elif op == "delete":
        if path.is_symlink() or path.is_file():
            path.unlink()
    elif op == "chmod" and path.is_file() and not path.is_symlink():
        path.chmod(path.stat().st_mode ^ 0o111)
    elif op == "symlink":
        if path.is_symlink() or path.is_file():
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to("exp.py")
    elif op == "big":
        path.write_bytes(b"0" * 5000)
    elif op == "ignored":
        with open(ws_path / ".gitignore", "a") as f:
            f.write(f"/{name}\n")
        path.write_text("ignored\n")
    elif op == "gitignore_self":
        (ws_path / ".gitignore").write_text(".gitignore\n*.txt\n")
    elif op == "commit_head":  # an agent that commits in its worktree (HEAD moves)
        subprocess.run(["git", "-c", "user.name=a", "-c", "user.email=a@a", "commit", "-qam", "agent", "--allow-empty"],
                       cwd=ws_path, capture_output=True)
    elif op == "nested_repo":
        sub = ws_path / "vendored"
        sub.mkdir(exist_ok=True)
        subprocess.run(["git", "init", "-q"], cwd=sub, capture_output=True)
        (sub / "f").write_text("f\n")
        subprocess.run(["git", "-c", "user.name=a", "-c", "user.email=a@a", "add", "f"], cwd=sub, capture_output=True)
        subprocess.run(["git", "-c", "user.name=a", "-c", "user.email=a@a", "commit", "-qm", "v"], cwd=sub,
                       capture_output=True)


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=EDITS)
def test_the_snapshot_change_list_is_what_git_diff_tree_says(tmp_path_factory: pytest.TempPathFactory,
                                                              edits: list[tuple[str, str]]) -> None:
    """The change list comes from one `git status` after `add` (no diff-tree) when it can; on
    any mix of edits, big files, ignored files, links, modes, a nested repository and an agent's
    own commit, it is exactly what `git diff-tree` between the parent and the commit says."""
    from autoresearch.gitrepo import Git
    from autoresearch.gitstatus import parse_raw

    root = make_task(tmp_path_factory.mktemp("snap") / "task", files={"sub/a.py": "A = 1\n"})
    git = Git.open(root)
    parent = git.head()
    ws = git.add_worktree(root / ".autoresearch" / "w", parent)
    for op, name in edits:
        _apply(ws.path, git.wt_env(ws), op, name)
    commit, changes, tree = git.snapshot(ws, parent, "m", max_file_bytes=1000)
    truth = parse_raw(git.run("diff-tree", "-r", "-z", "--raw", "--no-renames", parent, commit))
    key = lambda c: (c.path, c.status, c.old_mode, c.new_mode, c.new_blob)  # noqa: E731
    nested = [("vendored", "A", "000000", "160000", "")] if (ws.path / "vendored" / ".git").exists() else []
    assert sorted(map(key, changes)) == sorted([*map(key, truth), *nested])  # a repository inside: a submodule
    assert not any(c.path.startswith("vendored") for c in truth)  # never committed
    assert git.tree_of(commit) == tree
    status = git.run("status", "--porcelain", "-uall", "--ignored", env=git.wt_env(ws), cwd=ws.path)
    assert all(not line.startswith("!!") for line in status.splitlines()), status


JUNK = st.lists(st.tuples(
    st.sampled_from(["file", "dir_file", "pycache", "link_out", "link_dir_out", "readonly_dir", "modify", "delete",
                     "replace_dir_with_file"]),
    st.sampled_from(["exp.py", "prepare.py", "out.txt", "sub/a.py", "runs/x/y.bin", "sub"]),
), min_size=0, max_size=6)


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=JUNK, back=st.booleans(),
       before=st.lists(st.sampled_from(["nested_repo", "dot_git_folder", "empty_dir"]), max_size=3))
def test_a_reset_worktree_holds_exactly_the_commit(tmp_path_factory: pytest.TempPathFactory,
                                                   junk: list[tuple[str, str]], back: bool,
                                                   before: list[str]) -> None:
    """Whatever an experiment leaves (files, folders, links out of the worktree, a read-only
    folder, edits), resetting the worktree to a commit leaves exactly that commit's files, with
    or without a git clean process, and nothing outside the worktree is touched."""
    from autoresearch.filetree import walk
    from autoresearch.gitrepo import Git

    base = tmp_path_factory.mktemp("reset")
    outside = base / "outside"
    (outside / "d").mkdir(parents=True)
    (outside / "keep.txt").write_text("keep\n")
    (outside / "d" / "f").write_text("f\n")
    root = make_task(base / "task", files={"sub/a.py": "A = 1\n"})
    git = Git.open(root)
    parent = git.head()
    ws = git.add_worktree(root / ".autoresearch" / "w", parent)
    (ws.path / "exp.py").write_text("X = 9\n")
    for what in before:  # what an agent may leave that git never commits
        if what == "nested_repo":
            subprocess.run(["git", "init", "-q", str(ws.path / "vendor")], check=True)
            (ws.path / "vendor" / "v.txt").write_text("v\n")
        elif what == "dot_git_folder":
            (ws.path / "x" / ".git").mkdir(parents=True, exist_ok=True)
            (ws.path / "x" / ".git" / "hidden").write_text("state\n")
        else:
            (ws.path / "empty" / "deeper").mkdir(parents=True, exist_ok=True)
    commit, _, _ = git.snapshot(ws, parent, "m")
    for op, name in junk:
        path = ws.path / name
        if op in ("file", "dir_file", "modify"):
            if path.is_symlink() or path.is_dir() or any(p.is_symlink() or p.is_file() for p in path.parents):
                continue  # (the test's own writes stay in the worktree, and need folders)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("junk\n")
        elif op == "pycache":
            (ws.path / "__pycache__").mkdir(exist_ok=True)
            (ws.path / "__pycache__" / "exp.cpython-311.pyc").write_bytes(b"\0")
        elif op == "link_out" and not os.path.lexists(path) and not any(p.is_file() for p in path.parents):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.symlink_to(outside / "keep.txt")
        elif op == "link_dir_out" and not os.path.lexists(ws.path / "lnk"):
            (ws.path / "lnk").symlink_to(outside / "d")
        elif op == "readonly_dir":
            (ws.path / "ro").mkdir(exist_ok=True)
            (ws.path / "ro" / "f").write_text("x\n")
            (ws.path / "ro").chmod(0o555)
        elif op == "delete" and path.is_file():
            path.unlink()
        elif op == "replace_dir_with_file" and path.is_dir() and not path.is_symlink():
            import shutil

            shutil.rmtree(path)
            path.write_text("now a file\n")
    target = commit if back else parent
    try:
        git.reset_worktree(ws, target)
    finally:
        if (ws.path / "ro").exists():
            (ws.path / "ro").chmod(0o755)
    left = walk(ws.path)
    files = {rel for rel, (is_dir, _) in left.items() if not is_dir}
    tracked = set(git.run("ls-tree", "-r", "--name-only", target).splitlines())
    assert files == tracked
    assert not [rel for rel in left if rel.endswith("/.git") or "/.git/" in rel or rel.startswith("empty")]
    assert (outside / "keep.txt").read_text() == "keep\n" and (outside / "d" / "f").read_text() == "f\n"
