"""`autoresearch trial` driven for many steps, as a coding agent following program.md does,
mixed with `run` loops on the same tag: what the user's files started from is what their change
is laid over, so the loop's kept work is never put back by a stale copy in the working tree."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from conftest import cli, git, make_task, script_agent, trials

TWO_FILES = """\
from helper import Y
X = 3.0
loss = (X - 1.0) ** 2 + (Y - 1.0) ** 2
print(f"loss: {loss}")
"""


def trial(repo: Path, message: str, *extra: str) -> str:
    r = cli("trial", "-m", message, str(repo), "--tag", "t", *extra)
    assert r.returncode in (0, 1), r.stderr
    return r.stdout


def set_line(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (old, text)
    path.write_text(text.replace(old, new))


def test_a_file_your_head_lacks_is_not_put_back_over_what_the_loop_kept(tmp_path: Path) -> None:
    """helper.py came with trial 1 (your HEAD lacks it); a `run` loop then improved it; a trial
    of an edit of exp.py alone keeps the loop's helper.py, not the old copy in your tree."""
    repo = make_task(tmp_path / "task", toml_extra="", experiment="X = 3.0\nloss = (X - 1.0) ** 2 + 2\nprint(f'loss: {loss}')\n")
    set_line(repo / "autoresearch.toml", 'editable = ["exp.py"]', 'editable = ["exp.py", "helper.py"]')
    git(repo, "commit", "-qam", "helper.py may be edited")
    (repo / "helper.py").write_text("Y = 1.5\n")
    (repo / "exp.py").write_text(TWO_FILES)
    assert "trial 1: keep" in trial(repo, "add helper.py")  # 4.25 against 6
    agent = script_agent(tmp_path / "a.sh", 'sed -i "s/^Y = .*/Y = 1.0/" helper.py\necho Y to 1.0\n')
    r = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "1")
    assert r.returncode == 0, r.stderr
    assert git(repo, "show", "autoresearch/t:helper.py") == "Y = 1.0"
    set_line(repo / "exp.py", "X = 3.0", "X = 2.0")
    out = trial(repo, "X to 2.0")
    assert "trial 3: keep" in out, out  # 1.0 (with the loop's Y), not 1.25 (the old copy's)
    assert git(repo, "show", "autoresearch/t:helper.py") == "Y = 1.0"
    assert (repo / "helper.py").read_text() == "Y = 1.0\n"  # your tree is the best code again


def test_no_rewind_goes_on_from_your_own_file_over_what_the_loop_kept_since(tmp_path: Path) -> None:
    """`--no-rewind` on a kept trial, a `run` loop then changes another line, and you edit the
    line you kept again: your edit is laid over the loop's best (no revert, no conflict)."""
    repo = make_task(tmp_path / "task")
    exp = repo / "exp.py"
    set_line(exp, "X = 3.0", "X = 2.0")
    assert "trial 1: keep" in trial(repo, "X to 2.0", "--no-rewind")  # 3.0 against 6.0
    agent = script_agent(tmp_path / "a.sh", 'sed -i "s/^Y = .*/Y = 1/" exp.py\necho Y to 1\n')
    r = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "1")
    assert r.returncode == 0, r.stderr
    set_line(exp, "X = 2.0", "X = 1.5")  # your file: X = 2.0 (kept), Y = 2 (the loop made it 1)
    out = trial(repo, "X to 1.5")
    assert "trial 3: keep" in out, out  # (1.5 - 1)^2 + 1 = 1.25 against 2.0
    code = git(repo, "show", "autoresearch/t:exp.py")
    assert "X = 1.5" in code and "Y = 1" in code, code


def test_bytecode_of_a_run_of_yours_is_not_part_of_the_change(tmp_path: Path) -> None:
    """An editable folder without a .gitignore: the __pycache__ a run of yours left there is not
    laid into the trial, nor kept on the tag's branch."""
    repo = make_task(tmp_path / "task", files={"model/net.py": "W = 3.0\n"},
                     experiment="from model.net import W\nprint(f'loss: {W}')\n")
    set_line(repo / "autoresearch.toml", 'editable = ["exp.py"]', 'editable = ["exp.py", "model"]')
    git(repo, "commit", "-qam", "the model folder may be edited")
    cache = repo / "model" / "__pycache__" / "net.cpython-311.pyc"
    cache.parent.mkdir()
    cache.write_bytes(b"\x00bytecode")
    set_line(repo / "model" / "net.py", "W = 3.0", "W = 2.0")
    assert "trial 1: keep" in trial(repo, "W to 2.0")
    assert "__pycache__" not in git(repo, "ls-tree", "-r", "--name-only", "autoresearch/t")
    assert "__pycache__" not in git(repo, "diff", "--cached", "--name-only")


def test_a_duplicate_says_your_change_was_rewound_and_a_new_protected_file_is_explained(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    exp = repo / "exp.py"
    set_line(exp, "X = 3.0", "X = 4.0")
    assert "trial 1: discard" in trial(repo, "X to 4.0")
    set_line(exp, "X = 3.0", "X = 4.0")
    out = trial(repo, "X to 4.0 again")
    assert "trial 2: duplicate" in out and "your change to the editable files was rewound" in out, out
    assert "X = 3.0" in exp.read_text()
    set_line(repo / "autoresearch.toml", 'protected = ["prepare.py"]', 'protected = ["prepare.py", "data/*.txt"]')
    git(repo, "commit", "-qam", "data is protected")
    (repo / "data").mkdir()
    (repo / "data" / "b.txt").write_text("2\n")
    set_line(exp, "X = 3.0", "X = 2.0")
    r = cli("trial", "-m", "with new data", str(repo), "--tag", "t")
    assert r.returncode == 2 and "git commit -m 'add data/b.txt' -- data/b.txt" in r.stderr, r.stderr
    assert "then start a new --tag" in r.stderr


def test_ctrl_c_during_a_trial_records_it_as_interrupted_and_exits_130(tmp_path: Path) -> None:
    """SIGINT while the experiment runs: the trial is recorded as interrupted at once (status
    does not say the loop was killed), the change stays in your tree, and the exit is 130."""
    import os
    import signal
    import subprocess
    import sys

    from conftest import trials, wait_for

    marker = tmp_path / "running"
    exp = (f"import os, pathlib, time\nX = 3.0\nif os.environ['AUTORESEARCH_TRIAL'] != '0':\n"
           f"    pathlib.Path({str(marker)!r}).touch()\n    time.sleep(30)\nprint(f'loss: {{X}}')\n")
    repo = make_task(tmp_path / "task", experiment=exp)
    assert cli("run", str(repo), "--tag", "t", "--trials", "0").returncode == 0
    set_line(repo / "exp.py", "X = 3.0", "X = 2.0")
    proc = subprocess.Popen([sys.executable, "-m", "autoresearch", "trial", "-m", "X to 2", str(repo), "--tag", "t"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    wait_for(marker, 30)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert [t.status.value for t in trials(repo)] == ["keep", "interrupted"], out
    assert "X = 2.0" in (repo / "exp.py").read_text()  # not judged: left as it is
    status = cli("status", str(repo), "--tag", "t").stdout
    assert "without a word" not in status and "stopped by a signal" in status, status


def test_a_stop_before_the_trial_opens_judges_nothing_and_leaves_your_files(tmp_path: Path) -> None:
    """Ctrl-C between setup and the trial's opening: the last trial in the ledger (an earlier
    keep) was taken as this one, and its rewind overwrote your edit. Now nothing is judged."""
    import pytest

    from autoresearch.drive import run_working_tree_trial
    from autoresearch.loop import Loop
    from autoresearch.task import load_task

    repo = make_task(tmp_path / "task")
    set_line(repo / "exp.py", "X = 3.0", "X = 2.0")
    assert "trial 1: keep" in trial(repo, "X to 2")
    set_line(repo / "exp.py", "X = 2.0", "X = 1.5")

    def stopped_first(loop: Loop):  # noqa: ANN202 - Ctrl-C lands before the loop opens a trial
        loop.stop()
        return loop.run()

    with pytest.raises(KeyboardInterrupt):
        run_working_tree_trial(load_task(repo), "t", "X to 1.5", runner=stopped_first)
    assert "X = 1.5" in (repo / "exp.py").read_text()
    assert len(__import__("conftest").trials(repo)) == 2  # nothing recorded


def test_a_new_file_of_a_rejected_no_rewind_trial_is_judged_again(tmp_path: Path) -> None:
    """--no-rewind, rejected (a protected file edited too), with a new editable file: once the
    protected edit is undone, the next trial judges the new file, not "nothing to judge"."""
    repo = make_task(tmp_path / "task")
    set_line(repo / "autoresearch.toml", 'editable = ["exp.py"]', 'editable = ["exp.py", "extra.py"]')
    git(repo, "commit", "-qam", "extra.py may be added")
    (repo / "extra.py").write_text("Z = 1\n")
    with open(repo / "prepare.py", "a") as f:
        f.write("# edited\n")
    assert "trial 1: rejected" in trial(repo, "add extra.py", "--no-rewind")
    git(repo, "checkout", "--", "prepare.py")
    out = trial(repo, "add extra.py")
    assert "trial 2:" in out and "nothing to judge" not in out, out


def test_a_trial_rejected_for_a_change_outside_the_editable_files_leaves_the_editable_change(tmp_path: Path) -> None:
    """A protected file edited beside exp.py: the trial is rejected before anything runs, and
    exp.py's edit (never measured) stays in your tree; undo the stray edit and the next trial
    judges it. Rejected for the editable change itself (a link), it is rewound as before."""
    repo = make_task(tmp_path / "task")
    set_line(repo / "exp.py", "X = 3.0", "X = 2.0")
    with open(repo / "prepare.py", "a") as f:
        f.write("# edited\n")
    out = trial(repo, "X to 2.0")
    assert "trial 1: rejected" in out and "was rewound" not in out, out
    assert "left as it is too" in out, out
    assert "X = 2.0" in (repo / "exp.py").read_text()
    git(repo, "checkout", "--", "prepare.py")
    out = trial(repo, "X to 2.0")
    assert "trial 2: keep" in out, out
    with open(repo / "prepare.py", "a") as f:  # only a stray edit: nothing editable to speak of
        f.write("# edited\n")
    set_line(repo / "exp.py", "X = 2.0", "X = 1.0")
    git(repo, "checkout", "--", "exp.py")
    out = trial(repo, "stray only")
    assert "trial 3: rejected" in out and "left as it is too" not in out, out


def test_a_stray_file_named_with_terminal_escapes_is_named_without_them(tmp_path: Path) -> None:
    """`trial` names the files outside the editable scope and the command that undoes them: a
    name holding escapes (set the window title, clear the screen) went to the terminal as it
    was. Now the list is printed without them, and the command spells them out as bash reads them."""
    import subprocess

    repo = make_task(tmp_path / "task")
    set_line(repo / "exp.py", "X = 3.0", "X = 2.0")
    name = "\x1b]0;PWNED\x07\x1b[2Jstray.txt"
    (repo / name).write_text("x\n")
    git(repo, "add", "--", name)
    out = trial(repo, "X to 2.0")
    assert "trial 1: rejected" in out and "outside the editable files: stray.txt;" in out, out
    assert "\x1b" not in out and "\x07" not in out, out
    word = out.split("`git checkout -- ", 1)[1].split("`", 1)[0]
    assert word == "$'\\x1b]0;PWNED\\x07\\x1b[2Jstray.txt'", word
    listed = subprocess.run(["bash", "-c", f"ls -- {word}"], cwd=repo, capture_output=True, text=True)
    assert listed.returncode == 0 and listed.stdout == name + "\n", listed  # the word is the file's name


def test_a_rewind_replaces_a_link_in_your_tree_and_never_writes_through_it(tmp_path: Path) -> None:
    """exp.py made a link (to a file of yours outside, or to the protected file) or a hard link:
    the trial is rejected and exp.py becomes the best code again, a file of its own; what the
    link pointed at keeps its content."""
    repo = make_task(tmp_path / "task", experiment="X = 3.0\nprint(f'loss: {X}')\n")
    assert cli("run", str(repo), "--tag", "t", "--agent", "search", "--trials", "0").returncode == 0
    victim = tmp_path / "victim.txt"
    makes = [(lambda p: p.symlink_to(victim), "rejected"), (lambda p: p.symlink_to("prepare.py"), "rejected"),
             (lambda p: os.link(victim, p), "crash")]  # (a hard link is a file: its text is the change)
    for n, (make, status) in enumerate(makes, start=1):
        victim.write_text("precious\n")
        (repo / "exp.py").unlink()
        make(repo / "exp.py")
        out = trial(repo, f"link {n}")
        assert f"trial {n}: {status}" in out, out
        assert victim.read_text() == "precious\n"
        assert (repo / "prepare.py").read_text() == "DATA = 'fixed'\n"
        assert not (repo / "exp.py").is_symlink() and (repo / "exp.py").stat().st_nlink == 1
        assert (repo / "exp.py").read_text() == "X = 3.0\nprint(f'loss: {X}')\n"


def test_a_file_you_made_a_folder_is_a_trial_rewound_like_any_other(tmp_path: Path) -> None:
    """lib/a.py (editable) replaced by a folder lib/a.py/ holding a file (editable too: `*` crosses
    folders): the trial is that change (it was an agent error, and the folder's file was lost
    from everywhere); discarded, it is rewound: lib/a.py is the file again, and the folder's
    file is in the trial's commit."""
    repo = make_task(tmp_path / "task", experiment="X = 3.0\nprint(f'loss: {X}')\n",
                     files={"lib/a.py": "B = 1\n"})
    set_line(repo / "autoresearch.toml", 'editable = ["exp.py"]', 'editable = ["exp.py", "lib/*"]')
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "lib/ editable")
    assert cli("run", str(repo), "--tag", "t", "--agent", "search", "--trials", "0").returncode == 0
    (repo / "lib" / "a.py").unlink()
    (repo / "lib" / "a.py").mkdir()
    (repo / "lib" / "a.py" / "inner.py").write_text("B = 2\n")
    (repo / "lib" / "a.py" / "__pycache__").mkdir()  # (python run once in it)
    (repo / "lib" / "a.py" / "__pycache__" / "inner.cpython-311.pyc").write_bytes(b"\x00")
    out = trial(repo, "lib/a.py made a folder")
    assert "trial 1: agent_error" not in out and "trial 1:" in out, out
    assert git(repo, "ls-tree", "-r", "--name-only", "refs/autoresearch/t/trials/1").split() == \
        ["autoresearch.toml", "exp.py", "lib/a.py/inner.py", "prepare.py", "program.md"]
    assert "trial 1: discard" in out, out
    assert git(repo, "show", "refs/autoresearch/t/trials/1:lib/a.py/inner.py") == "B = 2"
    assert (repo / "lib" / "a.py").read_text() == "B = 1\n"


def test_trials_in_a_checkout_with_crlf_line_ends_go_on(tmp_path: Path) -> None:
    """core.autocrlf: your files have CRLF line ends, git's have LF; after a first trial rewound
    exp.py, each next edit is an edit (it was a conflict with the best code, every time)."""
    repo = make_task(tmp_path / "task", experiment="X = 3.0\nY = 2.0\nprint(f'loss: {X + Y}')\n")
    git(repo, "config", "core.autocrlf", "true")
    (repo / "exp.py").unlink()
    git(repo, "checkout", "--", "exp.py")
    assert b"\r\n" in (repo / "exp.py").read_bytes()
    assert cli("run", str(repo), "--tag", "t", "--agent", "search", "--trials", "0").returncode == 0
    for n, (old, new) in enumerate([("X = 3.0", "X = 2.0"), ("Y = 2.0", "Y = 1.0"), ("X = 2.0", "X = 1.0")], start=1):
        text = (repo / "exp.py").read_bytes().decode()
        assert old in text, text
        (repo / "exp.py").write_bytes(text.replace(old, new).encode())
        out = trial(repo, f"{old} -> {new}")
        assert f"trial {n}: keep" in out, out
    assert git(repo, "show", "autoresearch/t:exp.py").splitlines()[:2] == ["X = 1.0", "Y = 1.0"]


def test_a_baseline_run_again_is_labelled_the_baseline_not_trial_0_of_n(tmp_path: Path) -> None:
    """A baseline that failed for want of a file runs again as trial 1: its start line said
    `[trial 1] (0/1) started`, a count that reads as a trial of the run, where the live view
    and a first baseline say `(baseline)`."""
    data = tmp_path / "offset.txt"
    repo = make_task(tmp_path / "task", experiment=f"X = 3.0\nprint('loss:', X + float(open({str(data)!r}).read()))\n")
    r = cli("run", str(repo), "--tag", "t", "--agent", "search", "--trials", "1")
    assert r.returncode == 1 and "[trial 0] (baseline) started" in r.stdout, r.stdout + r.stderr
    data.write_text("1\n")
    r = cli("run", str(repo), "--tag", "t", "--agent", "search", "--trials", "1")
    assert r.returncode == 0, r.stderr
    assert "[trial 1] (baseline) started" in r.stdout, r.stdout
    assert "[trial 2] (1/1) started" in r.stdout, r.stdout


def test_a_loop_on_the_tag_trial_took_by_default_is_named_as_the_default(tmp_path: Path) -> None:
    """You judge changes on tag a; a `run` loop starts on tag b beside it; your next `trial`
    without --tag takes b (written last) and is refused: the refusal said only that a loop runs
    on 'b', a tag you never named; it says the tag was the default and how to give another."""
    import signal
    import subprocess
    import sys

    from conftest import wait_for

    marker = tmp_path / "running"
    exp = (f"import os, pathlib, time\nX = 3.0\nif os.environ['AUTORESEARCH_TAG'] == 'b':\n"
           f"    pathlib.Path({str(marker)!r}).touch()\n    time.sleep(30)\nprint(f'loss: {{X}}')\n")
    repo = make_task(tmp_path / "task", experiment=exp)
    set_line(repo / "exp.py", "X = 3.0", "X = 2.0")
    assert "trial 1: keep" in trial(repo, "X to 2")
    git(repo, "reset", "-q")
    git(repo, "checkout", "-q", "--", "exp.py")  # a clean checkout: `run` on a new tag needs one
    loop = subprocess.Popen([sys.executable, "-m", "autoresearch", "run", str(repo), "--tag", "b", "--trials", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        wait_for(marker, 30)
        set_line(repo / "exp.py", "X = 3.0", "X = 1.5")
        r = cli("trial", "-m", "X to 1.5", str(repo))
        assert r.returncode == 2, r.stdout + r.stderr
        assert "another autoresearch loop is running on tag 'b'" in r.stderr, r.stderr
        assert "no --tag was given" in r.stderr and "one of t" in r.stderr, r.stderr
        r = cli("trial", "-m", "X to 1.5", str(repo), "--tag", "b")  # named: the plain refusal
        assert r.returncode == 2 and r.stderr.strip().endswith("running on tag 'b'"), r.stderr
    finally:
        loop.send_signal(signal.SIGINT)
        loop.wait(timeout=60)


def test_no_edit_after_the_loop_moved_on_is_nothing_to_judge_and_says_how_to_take_the_best(tmp_path: Path) -> None:
    """A kept `trial` leaves its best in your tree; a `run` loop then keeps another change. A
    `trial` with no edit said the files are "the best code" (they are an older one); after
    `git checkout autoresearch/t -- exp.py` (the way to take the best) it judged the best
    against itself: an empty change recorded as `rejected`, exit 1. Both are nothing to judge."""
    from conftest import trials

    repo = make_task(tmp_path / "task")
    set_line(repo / "exp.py", "X = 3.0", "X = 2.0")
    assert "trial 1: keep" in trial(repo, "X to 2.0")
    agent = script_agent(tmp_path / "a.sh", 'sed -i "s/^Y = .*/Y = 1/" exp.py\necho Y to 1\n')
    r = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "1")
    assert r.returncode == 0, r.stderr
    assert [t.status.value for t in trials(repo)] == ["keep", "keep", "keep"]
    r = cli("trial", "-m", "no edit", str(repo), "--tag", "t")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "the tag's best has moved on since: `git checkout autoresearch/t -- exp.py` takes it" in r.stderr, r.stderr
    git(repo, "checkout", "autoresearch/t", "--", "exp.py")
    r = cli("trial", "-m", "no edit", str(repo), "--tag", "t")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "nothing to judge: your editable files are the tag's best code (autoresearch/t)" in r.stderr, r.stderr
    assert len(trials(repo)) == 3  # nothing recorded
    set_line(repo / "exp.py", "X = 2.0", "X = 1.0")  # an edit of it is judged as usual
    assert "trial 3: keep" in trial(repo, "X to 1.0")


def test_trial_names_the_tag_it_starts_and_refuses_a_changed_task_file_before_saying_how_it_goes_on(
        tmp_path: Path) -> None:
    """`trial` taking today's date as a new tag said so only in its last line; and `run` of a tag
    whose task file changed said the tag goes on (its agent, its workers), then refused it."""
    repo = make_task(tmp_path / "task")
    set_line(repo / "exp.py", "X = 3.0", "X = 2.0")
    r = cli("trial", "-m", "X to 2", str(repo), "--tag", "t")
    assert r.returncode == 0, r.stderr
    assert "autoresearch: new tag t on branch autoresearch/t" in r.stdout.splitlines()[0], r.stdout
    set_line(repo / "exp.py", "X = 2.0", "X = 1.5")
    assert "new tag" not in trial(repo, "X to 1.5")
    agent = script_agent(tmp_path / "a.sh", "sed -i 's/^Y = .*/Y = 1/' exp.py\necho 'Y to 1'\n")
    r = cli("run", str(repo), "--tag", "t", "--agent-cmd", agent, "--trials", "1", "--workers", "2")
    assert r.returncode == 0, r.stderr
    set_line(repo / "autoresearch.toml", "time_budget = ", "time_budget = 1")
    git(repo, "commit", "-qam", "a longer budget")
    for args in (["run", str(repo), "--tag", "t", "--trials", "1"], ["trial", "-m", "X to 1", str(repo), "--tag", "t"]):
        if args[0] == "trial":
            set_line(repo / "exp.py", "X = 1.5", "X = 1.0")
        r = cli(*args)
        assert r.returncode == 2 and r.stdout == "", r.stdout
        assert r.stderr.startswith("autoresearch: error: autoresearch.toml changed since tag t started (time_budget:")
        assert len(r.stderr.splitlines()) == 1, r.stderr
    set_line(repo / "autoresearch.toml", "time_budget = 1", "time_budget = ")
    git(repo, "commit", "-qam", "the budget as it was")
    (repo / "autoresearch.toml").write_text((repo / "autoresearch.toml").read_text() + "# a note\n")
    r = cli("run", str(repo), "--tag", "t", "--trials", "1")  # (not committed: refused, and only that said)
    assert r.returncode == 2 and r.stderr.startswith("autoresearch: error: autoresearch.toml has uncommitted changes")
    assert len(r.stderr.splitlines()) == 1, r.stderr


def test_trial_or_run_inside_a_loops_worktree_is_refused_and_the_loop_measures_the_change(tmp_path: Path) -> None:
    """A CLI agent that follows program.md-style habits and calls `autoresearch trial` (or `run`)
    in its worktree made a loop of its own there: its change was measured by it and rewound, the
    loop's trial read "empty change", and refs of a tag with no ledger were left in the repository."""
    repo = make_task(tmp_path / "task")
    agent = script_agent(tmp_path / "a.sh", f"""\
        sed -i 's/^X = .*/X = 2.0/' exp.py
        "{sys.executable}" -m autoresearch trial -m "X to 2" > "{tmp_path}/trial.out" 2>&1 || echo "$?" >> "{tmp_path}/trial.out"
        "{sys.executable}" -m autoresearch run . --tag inner --trials 1 > "{tmp_path}/run.out" 2>&1 || echo "$?" >> "{tmp_path}/run.out"
        echo "X to 2"
        """)
    r = cli("run", str(repo), "--tag", "t", "--agent-cmd", agent, "--trials", "1")
    assert r.returncode == 0, r.stderr
    for name in ("trial.out", "run.out"):
        said = (tmp_path / name).read_text().splitlines()
        assert said[-1] == "2" and "a trial's worktree of the loop of tag t" in said[0], said
    got = trials(repo)
    assert (got[1].status, got[1].description) == ("keep", "X to 2")
    assert git(repo, "for-each-ref", "--format=%(refname)", "refs/autoresearch/", "refs/heads/").split() == [
        "refs/autoresearch/t/trials/0", "refs/autoresearch/t/trials/1", "refs/heads/autoresearch/t", "refs/heads/main"]
