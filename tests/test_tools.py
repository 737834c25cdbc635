"""The llm agent's tools (agents/tools.py): they stay inside the worktree and the editable files
(no path, link or .git gets out; protected files are never written), the holdout is sealed from
the logs and the history they show, a wrong argument or an unexpected failure is an error text
for the model (never the end of the proposal), no API key is written into a file, and the
best code shown first stays within the context budget. Called directly on a task repository,
and through the loop against a fake OpenAI server.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from conftest import git, make_task
from fakes.llm_server import FakeLLM, Say
from llm_helpers import KEY, branch_file, good_edit, ledger, run_llm

from autoresearch.agents.base import Context
from autoresearch.agents.tools import Tools, seal, sealed
from autoresearch.records import Status, Trial
from autoresearch.task import load_task

# ---------------------------------------------------------------------------
# tools stay inside the worktree and the editable files


def _ctx(tmp_path: Path) -> Context:
    repo = make_task(tmp_path / "task", files={"sub/notes.txt": "hello\n"})
    task = load_task(repo)
    ledger_dir = tmp_path / "ledger"
    (ledger_dir / "logs").mkdir(parents=True)
    (ledger_dir / "logs" / "0.log").write_text("loss: 6.0\ntest_loss: 1.5\n")
    best = Trial(number=0, status=Status.KEEP, description="baseline", metric=6.0)
    return Context(task=task, workdir=repo, number=1, best=best, history=(best,),
                   log_path=ledger_dir / "agent.log", ledger_dir=ledger_dir)


def test_tools_are_confined(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret\n")
    (ctx.workdir / "link.txt").symlink_to(secret)
    (ctx.workdir / "linkdir").symlink_to(tmp_path)
    tools = Tools(ctx)
    for path in ["../secret.txt", str(secret), "link.txt", "linkdir/secret.txt", ".git/config",
                 "sub/../../secret.txt"]:
        out = tools.call("read_file", {"path": path})
        assert out.startswith("error:") and "top secret" not in out, (path, out)
    assert "top secret" not in tools.call("grep", {"pattern": "secret"})
    assert "secret.txt" not in tools.call("list_files", {})
    assert ".git" not in tools.call("list_files", {})
    assert "error" in tools.call("list_files", {"path": ".."})
    # writes: only editable files, never protected ones, never through a link
    for path, content in [("prepare.py", "DATA = 'x'\n"), ("program.md", "x"), ("autoresearch.toml", "x"),
                          ("new.py", "x"), ("../escape.py", "x"), ("link.txt", "x")]:
        assert tools.call("write_file", {"path": path, "content": content}).startswith("error:"), path
    assert tools.call("edit_file", {"path": "prepare.py", "search": "fixed", "replace": "x"}).startswith("error:")
    assert (ctx.workdir / "prepare.py").read_text() == "DATA = 'fixed'\n"
    assert secret.read_text() == "top secret\n" and not (tmp_path / "escape.py").exists()
    # what is allowed works, and the holdout never shows
    assert tools.call("edit_file", {"path": "exp.py", "search": "X = 3.0", "replace": "X = 1.0"}) == "edited exp.py"
    assert "not found" in tools.call("edit_file", {"path": "exp.py", "search": "X = 3.0", "replace": "X = 1.0"})
    assert tools.call("read_file", {"path": "exp.py", "start": 3, "end": 3}).endswith("\n    3  Y = 2")
    assert "hello" in tools.call("read_file", {"path": "sub/notes.txt"})


def test_holdout_is_sealed_from_logs(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    task = dataclasses.replace(ctx.task, metric=dataclasses.replace(ctx.task.metric, holdout="test_loss"))
    tools = Tools(dataclasses.replace(ctx, task=task))
    out = tools.call("read_log", {"trial": 0})
    assert "loss: 6.0" in out and "test_loss" not in out and "1.5" not in out
    crashed = Trial(number=1, status=Status.CRASH, description="bigger model",
                    reason="the evaluator failed: test_loss: 1.5 then nan")
    tools = Tools(dataclasses.replace(ctx, task=task, history=(ctx.best, crashed)))
    out = tools.call("read_history", {})
    assert "#1 crash" in out and "bigger model" in out and "1.5" not in out


def test_forbidden_tool_calls_do_not_stop_the_trial(tmp_path: Path) -> None:
    """A model that tries to escape gets errors back, and its legitimate edit is still kept."""
    repo = make_task(tmp_path / "task")
    script = [Say("", [("read_file", {"path": "../../ledger.sqlite"}),
                       ("write_file", {"path": "prepare.py", "content": "DATA = 'cheat'\n"}),
                       ("read_file", {"path": ".git/HEAD"})])] + good_edit()[1:]
    with FakeLLM("openai", script) as fake:
        r = run_llm(repo, fake)
    assert r.returncode == 0, r.stderr
    assert [x.status for x in ledger(repo)] == [Status.KEEP, Status.KEEP]
    assert branch_file(repo, "prepare.py") == "DATA = 'fixed'"
    results = [m["content"] for m in fake.requests[1]["body"]["messages"] if m["role"] == "tool"]
    assert len(results) == 3 and all(x.startswith("error:") for x in results)


# ---------------------------------------------------------------------------
# what the audit of --agent llm found: bad tool arguments, a key in an edit


def test_tool_arguments_of_the_wrong_type_are_errors_for_the_model(tmp_path: Path) -> None:
    """A wrongly typed, missing or unknown argument is an error text naming it, never an
    exception; numbers sent as text are taken."""
    tools = Tools(_ctx(tmp_path))
    bad = [("read_file", {"path": "exp.py", "start": "abc"}, "`start` must be a whole number"),
           ("read_file", {"path": ["a"]}, "`path` must be a string, got an array"),
           ("read_file", {"path": None}, "read_file needs `path`"),
           ("read_file", {}, "read_file needs `path`"),
           ("read_file", {"path": "exp.py", "end": True}, "`end` must be a whole number"),
           ("list_files", {"path": 123}, "`path` must be a string, got a number"),
           ("grep", {"pattern": {"x": 1}}, "`pattern` must be a string, got an object"),
           ("edit_file", {"path": "exp.py", "search": "X = 3.0", "replace": 1.0}, "`replace` must be a string"),
           ("write_file", {"path": "exp.py"}, "write_file needs `content`"),
           ("read_log", {"trial": "x"}, "`trial` must be a whole number"),
           ("read_log", {"trial": 0, "lines": [1]}, "`lines` must be a whole number"),
           ("read_history", {"last": "all"}, "`last` must be a whole number"),
           ("read_history", {"last": 0}, "`last` must be 1 or more"),
           ("finish", {"description": ["a", "b"]}, "`description` must be a string"),
           ("read_file", {"path": "exp.py", "lines": 3}, "read_file takes no argument named lines"),
           ("read_file", {"path": "exp\x00.py"}, "NUL"),
           ("nosuch", {}, "no tool named 'nosuch'")]
    for name, args, needle in bad:
        out = tools.call(name, args)
        assert out.startswith("error:") and needle in out, (name, args, out)
    assert (tools.ctx.workdir / "exp.py").read_text().count("X = 3.0") == 1 and tools.finished is None
    assert tools.call("read_file", {"path": "exp.py", "start": "3", "end": 3.0}).endswith("\n    3  Y = 2")
    assert "none in 50..60" in tools.call("read_file", {"path": "exp.py", "start": 50, "end": 60})
    assert "#0 keep" in tools.call("read_history", {"last": "1"})
    assert "loss: 6.0" in tools.call("read_log", {"trial": "0", "lines": None})


def test_an_unexpected_failure_in_a_tool_is_an_error_for_the_model(tmp_path: Path) -> None:
    """A tool that fails in a way nobody checked for (here: read_file on a socket, which the
    system refuses to open) answers an error text and logs the traceback."""
    import socket

    ctx = _ctx(tmp_path)
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(ctx.workdir / "agent.sock"))
        out = Tools(ctx).call("read_file", {"path": "agent.sock"})
    finally:
        sock.close()
    assert out.startswith("error: read_file failed (OSError") and "try another way" in out, out
    assert "Traceback" in ctx.log_path.read_text()


def test_a_worktrees_git_file_is_never_listed(tmp_path: Path) -> None:
    """In a trial's worktree `.git` is a file (gitdir: ...): list_files and grep skip it too."""
    ctx = _ctx(tmp_path)
    wt = tmp_path / "wt"
    git(ctx.workdir, "worktree", "add", "-q", "--detach", str(wt))
    tools = Tools(dataclasses.replace(ctx, workdir=wt))
    listed = tools.call("list_files", {})
    assert "exp.py" in listed and ".git" not in listed, listed
    assert tools.call("grep", {"pattern": "gitdir"}) == "no matches"
    assert tools.call("read_file", {"path": ".git"}).startswith("error:")


def test_bad_tool_arguments_do_not_end_the_proposal(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    script = [Say("", [("read_file", {"path": "exp.py", "start": "abc"}), ("list_files", {"path": 123}),
                       ("read_history", {"last": "all"}), ("read_log", {"trial": "x"}),
                       ("read_file", {"path": None})])] + good_edit()[1:]
    with FakeLLM("openai", script) as fake:
        r = run_llm(repo, fake)
    assert r.returncode == 0, r.stderr
    assert [x.status for x in ledger(repo)] == [Status.KEEP, Status.KEEP]
    results = [m["content"] for m in fake.requests[1]["body"]["messages"] if m["role"] == "tool"]
    assert len(results) == 5 and all(x.startswith("error:") for x in results), results


def test_an_edit_that_writes_a_key_is_refused(tmp_path: Path) -> None:
    """The model cannot put a key into a committed file: not the agent's own key, not another
    provider's key variable, even one that does not look like a key, nor one split over lines."""
    repo = make_task(tmp_path / "task")
    other = "plainvalue0000with0no0key0shape"
    script = [Say("", [("edit_file", {"path": "exp.py", "search": "X = 3.0", "replace": f'X = 3.0\nKEY = "{KEY}"'}),
                       ("write_file", {"path": "exp.py", "content": f"TOKEN = '{other}'\n"}),
                       ("edit_file", {"path": "exp.py", "search": "X = 3.0",
                                      "replace": f'X = 3.0\nK = ("{KEY[:10]}"\n     "{KEY[10:]}")'})]),
              *good_edit()[1:]]
    with FakeLLM("openai", script) as fake:
        r = run_llm(repo, fake, env={"ANTHROPIC_API_KEY": other})
    assert r.returncode == 0, r.stderr
    results = [m["content"] for m in fake.requests[1]["body"]["messages"] if m["role"] == "tool"]
    assert len(results) == 3 and all("holds an API key" in x for x in results), results
    assert [x.status for x in ledger(repo)] == [Status.KEEP, Status.KEEP]
    history = git(repo, "log", "--all", "-p")
    assert "X = 1.0" in history and KEY[:10] not in history and other not in history


def test_a_pattern_that_backtracks_without_end_is_an_error_not_a_frozen_loop(tmp_path: Path, monkeypatch) -> None:
    """(x+x+)+y over a line of x's takes Python's `re` hours, and `re` holds the interpreter:
    the agent's time limit and a SIGTERM went unheard. grep runs it in a child with a limit."""
    import time

    from autoresearch.agents import tools as tools_module

    monkeypatch.setattr(tools_module, "GREP_SECONDS", 1.5)
    ctx = _ctx(tmp_path)
    (ctx.workdir / "sub" / "x.txt").write_text("x" * 60 + "\n")
    (ctx.workdir / "sub" / "a.txt").write_text("xxy\n")  # found before the search is stopped: kept
    tools = Tools(ctx)
    start = time.monotonic()
    out = tools.call("grep", {"pattern": "(x+x+)+y", "path": "sub"})
    assert out.startswith("sub/a.txt:1: xxy\n[the search stopped at 1.5 s, over 3 file(s): the matches above "
                          "are those found by then;") and time.monotonic() - start < 10, out
    # a plain pattern still finds its lines, with the file and line number; many are cut at 100
    assert tools.call("grep", {"pattern": "hel+o"}) == "sub/notes.txt:1: hello"
    (ctx.workdir / "sub" / "many.txt").write_text("match\n" * 150)
    many = tools.call("grep", {"pattern": "^match$", "path": "sub/many.txt"})
    assert many.count("\n") == 100 and many.endswith("[... more matches cut]"), many[-200:]
    # the child imports nothing of the worktree's, nor what PYTHONPATH names (the experiments'
    # environment may: a json.py or re.py there is not run)
    (ctx.workdir / "re.py").write_text("raise SystemExit('the worktree was imported')\n")
    monkeypatch.setenv("PYTHONPATH", str(ctx.workdir))
    assert tools.call("grep", {"pattern": "hello"}) == "sub/notes.txt:1: hello"


def test_an_edit_keeps_a_crlf_files_line_ends(tmp_path: Path) -> None:
    """A file with CRLF line ends is read and matched with "\n" ends; a one-line edit (or a
    whole write of it) wrote it back with "\n" ends: a commit whose diff changed every line."""
    ctx = _ctx(tmp_path)
    exp = ctx.workdir / "exp.py"
    exp.write_bytes(exp.read_bytes().replace(b"\n", b"\r\n"))
    git(ctx.workdir, "commit", "-qam", "crlf")
    tools = Tools(ctx)
    assert tools.call("edit_file", {"path": "exp.py", "search": "X = 3.0\nY = 2", "replace": "X = 1.0\nY = 2"}) == "edited exp.py"
    assert git(ctx.workdir, "diff", "--numstat") == "1\t1\texp.py"
    text = exp.read_bytes().decode()
    assert tools.call("write_file", {"path": "exp.py", "content": text.replace("\r\n", "\n").replace("Y = 2", "Y = 3")})
    assert git(ctx.workdir, "diff", "--numstat") == "2\t2\texp.py" and exp.read_bytes().count(b"\r\n") == 7


# ---------------------------------------------------------------------------
# what the model is shown first stays within the context budget


def test_thousands_of_editable_files_do_not_outgrow_the_first_message(tmp_path: Path) -> None:
    """The best code is shown as far as half the budget goes and the rest named, but every
    name was listed: an editable glob matching 3000 files made a first message half as long
    again as the whole budget, sent on every request. The names now go as far as a tenth of it."""
    from autoresearch.agents.llm import first_message

    files = {f"pkg/module_{i:04d}/implementation.py": "x = 1\n" * 300 for i in range(3000)}
    repo = make_task(tmp_path / "task", files=files,
                     toml='name = "t"\neditable = ["exp.py", "pkg/**/*.py"]\ncommand = "python exp.py"\n'
                          'time_budget = 5\ntimeout = 10\n[metric]\nname = "loss"\ngoal = "minimize"\n')
    best = Trial(number=0, status=Status.KEEP, description="baseline", metric=6.0)
    ctx = Context(task=load_task(repo), workdir=repo, number=1, best=best, history=(best,),
                  log_path=tmp_path / "agent.log", ledger_dir=tmp_path)
    message = first_message(ctx, 120_000)
    assert len(message) < 100_000
    assert "pkg/module_2999/implementation.py" not in message and "more (list_files names them)" in message
    assert "X = 3.0" in message  # the small file is still shown whole


def test_read_file_of_a_huge_file_reads_only_its_start(tmp_path: Path) -> None:
    """A data file of gigabytes in the worktree was read whole (50 MB took the process to 280 MB):
    read_file reads its first READ_BYTES, in whole lines, and says so."""
    import tracemalloc

    ctx = _ctx(tmp_path)
    with open(ctx.workdir / "data.txt", "w") as f:
        for i in range(400_000):  # 40 MB of lines of 100 bytes
            f.write(f"{i:06d}" + "x" * 93 + "\n")
    tools = Tools(ctx)
    tracemalloc.start()
    try:
        out = tools.call("read_file", {"path": "data.txt", "start": 2, "end": 3})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 30 * 2**20, peak
    assert out.startswith("data.txt (lines 2-3 of the first 41943 (of its first 4 MB; it holds 40000000 bytes))"), out[:200]
    assert "none in" in tools.call("read_file", {"path": "data.txt", "start": 50_000})


def test_read_file_of_a_binary_file_says_so_instead_of_sending_its_bytes(tmp_path: Path) -> None:
    """A checkpoint or a data shard in the worktree was sent to the model as 16,000 characters of
    replacement characters and control bytes; a text file with a stray byte still reads."""
    ctx = _ctx(tmp_path)
    (ctx.workdir / "model.pt").write_bytes(bytes(range(256)) * 40)
    (ctx.workdir / "latin.txt").write_bytes(b"caf\xe9\nline two\n")
    tools = Tools(ctx)
    out = tools.call("read_file", {"path": "model.pt"})
    assert out == "model.pt is a binary file (10240 bytes): not shown", out
    assert "line two" in tools.call("read_file", {"path": "latin.txt"})


def test_the_seal_blanks_every_spelling_of_the_holdouts_value_and_nothing_else() -> None:
    """A crash reason can quote the evaluator's output: the holdout's value is blanked whatever
    it is (`nan` and `inf` were let through), and a figure whose name only contains the
    holdout's (`val_loss` beside a holdout `loss`) is left as it is."""
    text = "val_loss=1.25 loss: 2.5 LOSS=nan loss -inf loss=+Infinity metrics.loss=3e-2 loss_avg: 7"
    assert sealed(text, "loss") == ("val_loss=1.25 loss: [sealed] LOSS=[sealed] loss [sealed] loss=[sealed] "
                                    "metrics.loss=[sealed] loss_avg: 7")
    assert seal("val_loss: 1.25\nloss: 2.5\nstep 3", "loss") == "val_loss: 1.25\nstep 3"
