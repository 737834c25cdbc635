"""The command line where the user stands: from a subfolder of the task repository, with a task
file below the root, with `init` inside another repository; and the words of a few messages
(the trial conflict's command, the space's files, the report's quiet terminal)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from conftest import EXPERIMENT, cli, git, make_task, script_agent, trials, wait_for

from autoresearch.records import Status


def test_commands_find_the_task_file_above_the_current_folder(tmp_path: Path) -> None:
    """Without DIR, each command looks up from the current folder to the git root, as git looks
    for .git; an explicit DIR is used as given."""
    repo = make_task(tmp_path / "task", files={"sub/deep/notes.txt": "notes\n"})
    deep = repo / "sub" / "deep"
    r = cli("run", "--tag", "t", "--trials", "1", cwd=deep)
    assert r.returncode == 0, r.stderr
    assert (repo / ".autoresearch" / "t" / "results.tsv").is_file() and not (deep / ".autoresearch").exists()
    for args in (["status"], ["show", "1"], ["space"], ["report"]):
        r = cli(*args, cwd=deep)
        assert r.returncode == 0, (args, r.stderr)
    assert "baseline" in cli("status", cwd=deep).stdout
    assert (repo / ".autoresearch" / "t" / "report" / "report.html").is_file()
    (repo / "exp.py").write_text((repo / "exp.py").read_text().replace("Y = 2", "Y = 1"))
    r = cli("trial", "-m", "Y to 1", cwd=deep)
    assert r.returncode == 0, r.stderr
    assert "trial 2: keep" in r.stdout.splitlines()

    for args in (["show", "1", "--tag", "t", str(repo)], ["show", "1", str(repo), "--tag", "t"],
                 ["show", "--tag", "t", "1", str(repo)]):  # DIR after the flag: it was "unrecognized"
        r = cli(*args, cwd=tmp_path)
        assert r.returncode == 0 and r.stdout.startswith("trial 1 of tag t"), (args, r.stderr)
    r = cli("status", ".", cwd=deep)  # given, so not looked for
    assert r.returncode == 2 and f"no autoresearch.toml in {deep}" in r.stderr
    r = cli("trial", "-m", "nothing", cwd=deep)  # the change was rewound: nothing to judge, nothing recorded
    assert r.returncode == 2 and "nothing to judge" in r.stderr, r.stderr
    assert "trial 3" not in cli("status", cwd=deep).stdout
    (repo / "program.md").write_text("# program\nMinimise loss, and quickly.\n")  # not an editable file
    r = cli("trial", "-m", "a program edit", cwd=deep)
    assert r.returncode == 1 and "trial 3: rejected" in r.stdout, r.stdout + r.stderr  # recorded: it is a verdict
    assert "editable files was rewound" not in r.stdout and "git checkout -- program.md" in r.stdout


def test_the_look_up_stops_at_the_git_root(tmp_path: Path) -> None:
    make_task(tmp_path / "above")  # a task file above the repository is not the repository's
    shutil.copy(tmp_path / "above" / "autoresearch.toml", tmp_path / "autoresearch.toml")
    plain = tmp_path / "plain"
    (plain / "sub").mkdir(parents=True)
    git(plain, "init", "-q")
    r = cli("space", cwd=plain / "sub")
    assert r.returncode == 2 and f"no autoresearch.toml in {plain / 'sub'}" in r.stderr


def test_a_task_file_below_the_git_root_is_refused_with_the_layout_that_works(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(make_task(tmp_path / "t"), repo / "sub", ignore=shutil.ignore_patterns(".git"))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "task in sub/")
    r = cli("run", str(repo / "sub"), "--tag", "t", "--trials", "1")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{repo / 'sub'} is not the root of its git repository ({repo} is)" in r.stderr
    assert f"move it to {repo}" in r.stderr
    assert 'editable = ["sub/exp.py"]' in r.stderr and 'command = "cd sub && python exp.py"' in r.stderr
    assert r.stderr.count("\n") == 1
    # a task file there that does not load on its own (no program.md beside it) is told the same
    (repo / "sub" / "program.md").unlink()
    (repo / "sub" / "autoresearch.toml").write_text('program = "program.md"\n' + (repo / "sub" / "autoresearch.toml").read_text())
    for command in (["run", str(repo / "sub"), "--tag", "t", "--trials", "1"], ["status", str(repo / "sub")]):
        r = cli(*command)
        assert r.returncode == 2 and f"{repo / 'sub'} is not the root of its git repository" in r.stderr, r.stderr
        assert 'editable = ["sub/exp.py"]' in r.stderr and 'command = "cd sub && python exp.py"' in r.stderr
    git(repo, "checkout", "-q", "--", "sub")

    # what it says, done, works
    toml = (repo / "sub" / "autoresearch.toml").read_text()
    toml = 'program = "sub/program.md"\n' + (
        toml.replace('["exp.py"]', '["sub/exp.py"]').replace('["prepare.py"]', '["sub/prepare.py"]')
        .replace('"python exp.py"', '"cd sub && python exp.py"'))
    (repo / "autoresearch.toml").write_text(toml)
    git(repo, "rm", "-q", "sub/autoresearch.toml")
    git(repo, "add", "autoresearch.toml")
    git(repo, "commit", "-qm", "task file at the root")
    r = cli("run", "--tag", "t", "--trials", "1", cwd=repo / "sub")
    assert r.returncode == 0, r.stderr


def test_init_inside_a_repository_warns_of_the_nested_repository(tmp_path: Path) -> None:
    outer = make_task(tmp_path / "outer")
    r = cli("init", str(outer / "inner"))
    assert r.returncode == 0, r.stderr
    warning = r.stderr.strip()
    assert warning.startswith("autoresearch: warning:") and "\n" not in warning
    assert f"inside the git repository {outer}" in warning and "`inner/`" in warning
    assert (outer / "inner" / ".git").is_dir()
    assert "?? inner/" in git(outer, "status", "--porcelain")

    r = cli("init", str(tmp_path / "alone"))
    assert r.returncode == 0 and r.stderr == ""


def test_the_demo_inside_a_repository_warns_of_the_nested_repository(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """The demo made the same nested repository as `init` without a word, and the outer
    repository's own loops were then refused as dirty."""
    from autoresearch.demo import create

    outer = make_task(tmp_path / "outer")
    create(outer / "demo", 5)
    warning = capsys.readouterr().err.strip()
    assert f"inside the git repository {outer}" in warning and "`demo/`" in warning, warning


def test_trial_conflict_is_refused_and_names_the_tag(tmp_path: Path) -> None:
    """A change made from an older best that conflicts with the tag's best is refused (exit 2):
    it was recorded as an agent_error, a crash row in results.tsv that never ran, and spent a
    number. The advice is a command that can be pasted: the real tag, from any folder."""
    repo = make_task(tmp_path / "task")
    agent = script_agent(tmp_path / "a.sh", "sed -i 's/^X = .*/X = 2.0/; s/^Y = .*/Y = 1/' exp.py\necho 'X and Y'\n")
    r = cli("run", str(repo), "--tag", "mytag", "--agent", "cli", "--agent-cmd", agent, "--trials", "1")
    assert r.returncode == 0, r.stderr
    results = (repo / ".autoresearch" / "mytag" / "results.tsv").read_text()
    (repo / "exp.py").write_text((repo / "exp.py").read_text().replace("X = 3.0", "X = 9.0"))
    (repo / "exp.py").write_text((repo / "exp.py").read_text() + "# an hour of work\n")
    edited = (repo / "exp.py").read_text()
    git(repo, "add", "exp.py")
    r = cli("trial", "-m", "X to 9", str(repo), "--tag", "mytag")
    assert r.returncode == 2 and r.stdout == "", r.stdout
    assert r.stderr.startswith("autoresearch: error: nothing was run or recorded: your change to exp.py conflicts "
                               "with the tag's best code"), r.stderr
    assert f"`git -C {repo} checkout autoresearch/mytag -- exp.py`" in r.stderr, r.stderr
    assert "<tag>" not in r.stderr and len(r.stderr.splitlines()) == 1
    assert (repo / "exp.py").read_text() == edited  # never judged: left as it is, nothing lost
    assert len(trials(repo, "mytag")) == 2 and (repo / ".autoresearch" / "mytag" / "results.tsv").read_text() == results
    git(repo, "checkout", "autoresearch/mytag", "--", "exp.py")  # as it says; then the change made again
    (repo / "exp.py").write_text((repo / "exp.py").read_text().replace("X = 2.0", "X = 1.0"))
    r = cli("trial", "-m", "X to 1", str(repo), "--tag", "mytag")
    assert r.returncode == 0 and "trial 2: keep" in r.stdout, r.stdout + r.stderr


def test_a_task_file_not_yet_committed_is_asked_to_be_committed_not_stashed(tmp_path: Path) -> None:
    """A user who writes autoresearch.toml in a repository (README: the task file) and runs `run`
    was told to commit or stash it, `git stash -u` first: that took the task file away."""
    repo = make_task(tmp_path / "task")
    toml = (repo / "autoresearch.toml").read_text()
    git(repo, "rm", "-q", "--cached", "autoresearch.toml")
    git(repo, "commit", "-qm", "the task file, not committed yet")
    (repo / "autoresearch.toml").write_text(toml)
    r = cli("run", str(repo), "--tag", "t", "--trials", "0")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "autoresearch.toml is not committed" in r.stderr and "git add autoresearch.toml" in r.stderr, r.stderr
    assert "stash" not in r.stderr, r.stderr
    git(repo, "add", "autoresearch.toml")
    git(repo, "commit", "-qm", "the task")
    assert cli("run", str(repo), "--tag", "t", "--trials", "0").returncode == 0


def test_show_of_a_trial_the_last_tag_lacks_names_the_other_tags(tmp_path: Path) -> None:
    """`show 3` without --tag reads the tag used last (a `run --trials 0` of another tag, say):
    'no trial 3 in tag 'b'' left the user to guess why a trial they had just seen was gone."""
    repo = make_task(tmp_path / "task")
    assert cli("run", str(repo), "--tag", "a", "--trials", "3").returncode == 0
    assert cli("run", str(repo), "--tag", "b", "--trials", "0").returncode == 0
    r = cli("show", "3", str(repo))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "no trial 3 in tag 'b' (the tag used last; the others here: a: give --tag)" in r.stderr, r.stderr
    r = cli("show", "3", str(repo), "--tag", "b")  # a tag given: nothing to guess
    assert r.returncode == 2 and r.stderr.strip() == "autoresearch: error: no trial 3 in tag 'b'", r.stderr
    assert cli("show", "3", str(repo), "--tag", "a").returncode == 0


def test_trial_unstages_what_it_rewinds_and_refuses_the_tag_branch_checked_out(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    (repo / "exp.py").write_text((repo / "exp.py").read_text().replace("X = 3.0", "X = 9.0"))
    git(repo, "add", "exp.py")
    r = cli("trial", "-m", "X to 9 (worse)", str(repo), "--tag", "t")
    assert "discard" in r.stdout, r.stdout + r.stderr
    assert git(repo, "status", "--porcelain") == ""  # rewound and unstaged: a commit now holds nothing
    git(repo, "checkout", "-q", "autoresearch/t")
    (repo / "exp.py").write_text((repo / "exp.py").read_text().replace("X = 3.0", "X = 2.0"))
    r = cli("trial", "-m", "X to 2", str(repo), "--tag", "t")
    assert r.returncode == 2 and "you have autoresearch/t checked out" in r.stderr, r.stderr


def test_report_has_no_font_warnings_for_descriptions_the_font_lacks(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    agent = script_agent(tmp_path / "a.sh", "sed -i 's/^X = .*/X = 2.0/' exp.py\necho '学习率 日本語 X to 2'\n")
    r = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "1")
    assert r.returncode == 0, r.stderr
    r = cli("report", str(repo), "--tag", "t")
    assert r.returncode == 0, r.stderr
    assert "Glyph" not in r.stderr and "Warning" not in r.stderr, r.stderr
    assert (repo / ".autoresearch" / "t" / "report" / "progress.png").stat().st_size > 0


def test_space_names_only_the_files_that_hold_constants(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task", files={"pkg/__init__.py": "", "pkg/config.py": "LR = 0.1\n",
                                               "pkg/util.py": "def f():\n    return 1\n"})
    toml = (repo / "autoresearch.toml").read_text().replace('["exp.py"]', '["exp.py", "pkg/*.py"]')
    (repo / "autoresearch.toml").write_text(toml)
    git(repo, "commit", "-qam", "pkg")
    r = cli("space", str(repo))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1].startswith("3 constants in exp.py, pkg/config.py;"), r.stdout


def test_a_cli_agent_gets_the_time_budget_and_how_to_finish(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    seen = tmp_path / "seen"
    agent = script_agent(tmp_path / "a.sh", f"""\
        echo "budget=$AUTORESEARCH_TIME_BUDGET" > {seen}
        cat "$AUTORESEARCH_PROMPT_FILE" >> {seen}
        echo boom >&2
        exit 3
        """)
    r = cli("run", str(repo), "--tag", "t", "--agent-cmd", agent, "--trials", "1")
    assert r.returncode == 0, r.stderr
    text = seen.read_text()
    assert "budget=5" in text and "AUTORESEARCH_DESCRIPTION_FILE" in text
    assert "git show refs/autoresearch/t/trials/N" in text
    # (it was also told "Do not run git commands", which forbade that very `git show`)
    assert "Do not run git commands" not in text and "change no git state" in text
    out = cli("status", str(repo), "--tag", "t").stdout
    assert "exited with 3: boom" in out, out  # the agent's own words first, not its command line


def test_trial_says_where_a_rewound_change_went(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    (repo / "exp.py").write_text((repo / "exp.py").read_text().replace("X = 3.0", "X = 9.0"))
    r = cli("trial", "-m", "X to 9 (worse)", str(repo), "--tag", "t")
    assert "trial 1: discard" in r.stdout and "(tag t)" in r.stdout, r.stdout
    assert "git checkout refs/autoresearch/t/trials/1 -- FILE" in r.stdout
    git(repo, "checkout", "refs/autoresearch/t/trials/1", "--", "exp.py")
    assert "X = 9.0" in (repo / "exp.py").read_text()


def test_trial_of_code_that_crashed_before_exits_1_as_the_crash_did(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task", experiment="X = 3.0\nassert X < 5\nprint(f'loss: {X}')\n")
    for expected in ("crash", "duplicate"):
        (repo / "exp.py").write_text((repo / "exp.py").read_text().replace("X = 3.0", "X = 9.0"))
        r = cli("trial", "-m", "X to 9 (it asserts)", str(repo), "--tag", "t")
        assert f"\ntrial 1: {expected}" in r.stdout or f"\ntrial 2: {expected}" in r.stdout, r.stdout
        assert r.returncode == 1, (r.returncode, r.stdout)
    row = (repo / ".autoresearch/t/results.tsv").read_text().splitlines()[-1].split("\t")
    assert row[1] == "0.000000" and row[3] == "crash"


def test_trial_knows_the_best_code_it_left_and_the_one_its_advice_stages(tmp_path: Path) -> None:
    """After a kept trial the working file holds the best code; an edit of it that also takes out
    a line the kept trial added looked nearer HEAD and was merged into a false conflict. Trial
    now keeps a note of what it left; and the conflict's own advice (check out the best) works."""
    repo = make_task(tmp_path / "task")
    exp = repo / "exp.py"
    exp.write_text(exp.read_text().replace("X = 3.0", "X = 2.0\nZ = 1"))  # a line added
    r = cli("trial", "-m", "X to 2, Z", str(repo), "--tag", "t")
    assert "trial 1: keep" in r.stdout, r.stdout + r.stderr
    exp.write_text(exp.read_text().replace("X = 2.0\nZ = 1", "X = 1.5"))  # the line taken out
    r = cli("trial", "-m", "X to 1.5, no Z", str(repo), "--tag", "t")
    assert "trial 2: keep" in r.stdout, r.stdout + r.stderr
    assert "Z = 1" not in git(repo, "show", "autoresearch/t:exp.py")
    # the same edit with neither the note nor the best staged (as an older `trial` left a tag):
    # the conflict, and then its advice, followed, is judged
    (repo / ".autoresearch" / "t" / "working-tree.json").unlink()
    git(repo, "reset", "-q", "--", "exp.py")
    exp.write_text(exp.read_text().replace("X = 1.5", "X = 1.0\nW = 2"))
    assert "trial 3: keep" in cli("trial", "-m", "X to 1, W", str(repo), "--tag", "t").stdout
    (repo / ".autoresearch" / "t" / "working-tree.json").unlink()
    git(repo, "reset", "-q", "--", "exp.py")
    exp.write_text(exp.read_text().replace("X = 1.0\nW = 2", "X = 1.25"))
    r = cli("trial", "-m", "X to 1.25", str(repo), "--tag", "t")
    assert r.returncode == 2 and "nothing was run or recorded: your change to exp.py conflicts" in r.stderr, r.stderr
    git(repo, "checkout", "autoresearch/t", "--", "exp.py")
    exp.write_text(exp.read_text().replace("X = 1.0\nW = 2", "X = 1.25"))
    r = cli("trial", "-m", "X to 1.25", str(repo), "--tag", "t")
    assert "trial 4: discard" in r.stdout, r.stdout + r.stderr
    assert "W = 2" not in git(repo, "show", "refs/autoresearch/t/trials/4:exp.py")


def test_trial_judges_taking_away_a_file_a_kept_trial_added(tmp_path: Path) -> None:
    """`git rm` of a file that a kept `trial` added (and left staged) leaves it as HEAD has it:
    `trial` said there was nothing to judge, while the best code still held the file."""
    experiment = "import os\nprint('loss:', 1.0 if os.path.exists('extra.py') else 2.0)\n"
    repo = make_task(tmp_path / "task", experiment=experiment,
                     toml='name = "t"\neditable = ["*.py"]\ncommand = "python exp.py"\n'
                     '[metric]\nname = "loss"\ngoal = "minimize"\n')
    (repo / "extra.py").write_text("E = 1\n")
    r = cli("trial", "-m", "add extra", str(repo), "--tag", "t")
    assert "trial 1: keep" in r.stdout, r.stdout + r.stderr
    git(repo, "rm", "-qf", "extra.py")
    r = cli("trial", "-m", "take extra away", str(repo), "--tag", "t")
    assert "trial 2: duplicate (same code as trial 0)" in r.stdout, r.stdout + r.stderr  # judged
    assert git(repo, "ls-tree", "--name-only", "refs/autoresearch/t/trials/2") == "autoresearch.toml\nexp.py\nprepare.py\nprogram.md"
    assert (repo / "extra.py").read_text() == "E = 1\n"  # discarded: the best code is back


def test_trial_refuses_an_uncommitted_task_file_and_names_what_it_leaves(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    git(repo, "rm", "-q", "--cached", "autoresearch.toml")
    git(repo, "commit", "-qm", "the task file untracked")
    (repo / "exp.py").write_text((repo / "exp.py").read_text().replace("X = 3.0", "X = 2.0"))
    r = cli("trial", "-m", "X to 2", str(repo), "--tag", "t")
    assert r.returncode == 2 and "autoresearch.toml is protected and not committed" in r.stderr, r.stderr
    assert "git commit -m 'add autoresearch.toml' -- autoresearch.toml`)" in r.stderr and "new --tag" not in r.stderr
    assert "X = 2.0" in (repo / "exp.py").read_text()  # nothing rewound
    git(repo, "add", "autoresearch.toml")
    git(repo, "commit", "-qm", "the task file back")
    with open(repo / "prepare.py", "a") as f:
        f.write("# a protected file edited\n")
    r = cli("trial", "-m", "X to 2", str(repo), "--tag", "t")
    assert "trial 1: rejected" in r.stdout, r.stdout + r.stderr
    assert "left as it is in your working tree, outside the editable files: prepare.py" in r.stdout
    assert "`git checkout -- prepare.py`" in r.stdout
    assert "a protected file edited" in (repo / "prepare.py").read_text()  # never erased


def test_demo_refuses_another_task_and_a_bad_flag_leaves_nothing(tmp_path: Path) -> None:
    other = make_task(tmp_path / "other")
    r = cli("demo", str(other), "--trials", "1")
    assert r.returncode == 2 and "holds the task 't', not the demo's cpu-gpt task" in r.stderr, r.stderr
    assert not (other / ".autoresearch").exists()
    r = cli("demo", str(tmp_path / "new"), "--agent", "nosuch")
    assert r.returncode == 2 and "'nosuch' is not an agent" in r.stderr
    assert not (tmp_path / "new").exists()  # no half-made demo
    (tmp_path / "empty").mkdir()
    assert cli("demo", str(tmp_path / "empty"), "--agent", "nosuch").returncode == 2
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())


def test_a_crash_reason_names_files_of_the_trial_relative_and_show_names_what_is_empty(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    agent = script_agent(tmp_path / "a.sh", "sed -i 's/^X = .*/X = undefined_name/' exp.py\necho break X\n")
    assert cli("run", str(repo), "--tag", "t", "--agent-cmd", agent, "--trials", "1").returncode == 0
    out = cli("status", str(repo), "--tag", "t").stdout
    assert "NameError: name 'undefined_name' is not defined]" in out, out  # the end of a long reason stays
    reason = next(x for x in cli("show", "1", str(repo), "--tag", "t").stdout.splitlines() if x.startswith("reason:"))
    assert "File \"exp.py\", line 2" in reason and "worktrees" not in reason, reason
    (repo / ".autoresearch" / "t" / "logs" / "1.log").unlink()
    shown = cli("show", "1", str(repo), "--tag", "t").stdout
    assert "logs/1.log is missing" in shown, shown


def test_status_cuts_a_long_reason_visibly() -> None:
    from autoresearch.views import clip

    assert clip("short", 10) == "short"
    long = "a description  [exit code 1: a long traceback goes here and on ValueError: bad]"
    assert clip(long, 40) == "a description  [ ... on ValueError: bad]"


def test_trial_after_the_user_took_heads_version_back_keeps_the_best(tmp_path: Path) -> None:
    """`git checkout -- FILE` after a kept trial, then an edit: the edit of HEAD's version is laid
    over the best (the note of what trial left must not make it the best edited, which dropped
    the kept change)."""
    repo = make_task(tmp_path / "task")
    exp = repo / "exp.py"
    exp.write_text(exp.read_text().replace("X = 3.0", "X = 1.0"))
    assert "trial 1: keep" in cli("trial", "-m", "X to 1", str(repo), "--tag", "t").stdout
    git(repo, "checkout", "--", "exp.py")
    exp.write_text(exp.read_text().replace("Y = 2", "Y = 1"))
    r = cli("trial", "-m", "Y to 1", str(repo), "--tag", "t")
    assert "trial 2: keep" in r.stdout, r.stdout + r.stderr
    code = git(repo, "show", "autoresearch/t:exp.py")
    assert "X = 1.0" in code and "Y = 1" in code


def test_an_edit_of_heads_version_after_a_reset_is_not_taken_as_the_best_edited(tmp_path: Path) -> None:
    """After a kept trial, `git reset` and `git checkout -- FILE` (the file back to HEAD's), an
    edit of a line the best also changed conflicts with the best; the note of what `trial` left
    made it "the best edited" instead: the file was taken whole, and the trial silently undid
    every other change the tag had kept. It is refused as the conflict it is (exit 2)."""
    repo = make_task(tmp_path / "task")
    exp = repo / "exp.py"
    exp.write_text(exp.read_text().replace("X = 3.0", "X = 1.0").replace("Y = 2", "Y = 1"))
    assert "trial 1: keep" in cli("trial", "-m", "X to 1, Y to 1", str(repo), "--tag", "t").stdout
    git(repo, "reset", "-q")
    git(repo, "checkout", "--", "exp.py")  # HEAD's version: X = 3.0, Y = 2
    exp.write_text(exp.read_text().replace("Y = 2", "Y = 0"))
    r = cli("trial", "-m", "Y to 0", str(repo), "--tag", "t")
    assert r.returncode == 2 and "your change to exp.py conflicts with the tag's best code" in r.stderr, r.stdout + r.stderr
    assert len(trials(repo, "t")) == 2 and "Y = 0" in exp.read_text()  # nothing run, your edit as it was


def test_demo_with_flags_that_cannot_go_together_leaves_nothing(tmp_path: Path) -> None:
    r = cli("demo", str(tmp_path / "d"), "--agent", "search", "--agent-cmd", "foo")
    assert r.returncode == 2 and not (tmp_path / "d").exists()


def test_trial_reads_an_edit_that_reverts_a_line_of_the_best_as_an_edit_of_the_best(tmp_path: Path) -> None:
    """After a kept trial the best code is staged as well as written: an edit that takes back a
    line the best changed (and changes another) looks nearer HEAD, yet it is the best edited."""
    repo = make_task(tmp_path / "task", experiment=EXPERIMENT.replace("X = 3.0\n", "X = 3.0\nA = 0\nB = 0\n"))
    exp = repo / "exp.py"
    exp.write_text(exp.read_text().replace("Y = 2", "Y = 1"))
    r = cli("trial", "-m", "Y to 1", str(repo), "--tag", "t")
    assert "trial 1: keep" in r.stdout, r.stdout + r.stderr
    assert git(repo, "diff") == "" and "Y = 1" in git(repo, "show", ":exp.py")  # staged
    exp.write_text(exp.read_text().replace("Y = 1", "Y = 2").replace("X = 3.0", "X = 3.5"))
    r = cli("trial", "-m", "Y back to 2, X to 3.5", str(repo), "--tag", "t")
    assert "trial 2: discard (8.25," in r.stdout, r.stdout + r.stderr  # the revert is not lost
    tried = git(repo, "show", "refs/autoresearch/t/trials/2:exp.py")
    assert "X = 3.5" in tried and "Y = 2" in tried, tried
    exp.write_text("an edit gone wrong\n")
    git(repo, "checkout", "--", "exp.py")  # the best again, as the index holds it
    assert "Y = 1" in exp.read_text() and "X = 3.0" in exp.read_text()


def test_trial_gives_back_the_best_code_byte_for_byte(tmp_path: Path) -> None:
    """An editable file with CRLF line ends and a Latin-1 byte: the rewind wrote it back decoded
    (U+FFFD, LF) and staged that, and the next kept trial carried the damage into the best code."""
    repo = make_task(tmp_path / "task", files={"lib.py": "HELP = 1\n"})
    (repo / "lib.py").write_bytes(b"HELP = 1\r\n# caf\xe9\r\n")
    toml = repo / "autoresearch.toml"
    toml.write_text(toml.read_text().replace('editable = ["exp.py"]', 'editable = ["exp.py", "lib.py"]'))
    git(repo, "commit", "-qam", "lib.py in bytes")
    original = (repo / "lib.py").read_bytes()
    (repo / "lib.py").write_bytes(original.replace(b"HELP = 1", b"HELP = 2"))
    r = cli("trial", "-m", "HELP to 2", str(repo), "--tag", "t")
    assert "trial 1: discard" in r.stdout, r.stdout + r.stderr
    assert (repo / "lib.py").read_bytes() == original and git(repo, "status", "--porcelain") == ""
    exp = repo / "exp.py"
    exp.write_text(exp.read_text().replace("X = 3.0", "X = 2.0"))
    r = cli("trial", "-m", "X to 2", str(repo), "--tag", "t")
    assert "trial 2: keep" in r.stdout, r.stdout + r.stderr
    assert git(repo, "diff", "--stat", "autoresearch/t~1", "autoresearch/t").count("|") == 1  # exp.py only
    # an edit of a CRLF file laid over a best code that moved on (a three-way merge) keeps its bytes
    (repo / "lib.py").write_bytes(original.replace(b"# caf", b"# the caf"))
    git(repo, "reset", "-q", "--", "exp.py")  # the best no longer staged: lib.py is merged from HEAD
    git(repo, "checkout", "-q", "--", "exp.py")
    r = cli("trial", "-m", "a comment", str(repo), "--tag", "t", "--no-rewind")
    assert "trial 3:" in r.stdout, r.stdout + r.stderr
    assert git_bytes(repo, "refs/autoresearch/t/trials/3:lib.py") == original.replace(b"# caf", b"# the caf")


def git_bytes(repo: Path, spec: str) -> bytes:
    import subprocess

    return subprocess.run(["git", "cat-file", "blob", spec], cwd=repo, capture_output=True, check=True).stdout


def test_trial_stages_the_files_it_names_not_files_their_names_match_as_globs(tmp_path: Path) -> None:
    """`lib[1].py` is a glob that matches lib1.py: staged as a pathspec, the rewind deleted the
    user's lib1.py from the index."""
    repo = make_task(tmp_path / "task", files={"lib1.py": "A = 1\n"})
    toml = repo / "autoresearch.toml"
    toml.write_text(toml.read_text().replace('editable = ["exp.py"]', 'editable = ["exp.py", "lib*.py"]'))
    git(repo, "commit", "-qam", "lib*.py editable")
    (repo / "lib[1].py").write_text("B = 2\n")
    r = cli("trial", "-m", "a new module", str(repo), "--tag", "t")
    assert "trial 1: discard" in r.stdout, r.stdout + r.stderr
    assert git(repo, "status", "--porcelain") == "" and (repo / "lib1.py").read_text() == "A = 1\n"


def test_resuming_a_tag_after_a_commit_of_your_own_says_the_tag_goes_on_without_it(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    assert cli("run", str(repo), "--tag", "t", "--trials", "0").returncode == 0
    (repo / "README.md").write_text("notes\n")
    git(repo, "add", "README.md")
    git(repo, "commit", "-qm", "notes: not a file of the task")
    again = cli("run", str(repo), "--tag", "t", "--trials", "0")
    assert again.returncode == 0 and "your HEAD has" not in again.stdout + again.stderr
    (repo / "exp.py").write_text((repo / "exp.py").read_text().replace("Y = 2", "Y = 1"))
    git(repo, "commit", "-qam", "a fix of my own")
    r = cli("run", str(repo), "--tag", "t", "--trials", "0")
    assert r.returncode == 0, r.stderr
    assert "your HEAD has 2 commits that tag t does not hold (exp.py differs)" in r.stdout + r.stderr


def test_the_note_names_only_the_files_your_commits_changed(tmp_path: Path) -> None:
    """The tag's kept trial changed exp.py, your commit only the task file: the note said
    "autoresearch.toml, exp.py differ", as if you had changed exp.py."""
    repo = make_task(tmp_path / "task")
    agent = script_agent(tmp_path / "agent.sh", """\
        sed -i 's/^Y = 2/Y = 1/' exp.py; echo "Y down"
        """)
    r = cli("run", str(repo), "--tag", "t", "--trials", "1", "--agent", "cli", "--agent-cmd", agent)
    assert r.returncode == 0 and trials(repo)[1].status is Status.KEEP, r.stdout + r.stderr
    toml = repo / "autoresearch.toml"
    toml.write_text(toml.read_text().replace("timeout = 10", "timeout = 12"))
    git(repo, "commit", "-qam", "a longer timeout")
    r = cli("run", str(repo), "--tag", "t", "--trials", "0")
    assert r.returncode == 0, r.stderr
    assert "your HEAD has 1 commit that tag t does not hold (autoresearch.toml differs)" in r.stdout + r.stderr


def test_the_templates_smoke_mode_is_pinned_with_the_tag(tmp_path: Path) -> None:
    """AUTORESEARCH_SMOKE=1 makes a template tiny (its figures are no real run's): a tag started
    in smoke mode is not resumed without it, nor the other way round; the run says it is on."""
    repo = make_task(tmp_path / "task")
    r = cli("run", str(repo), "--tag", "s", "--trials", "0", env={"AUTORESEARCH_SMOKE": "1"})
    assert r.returncode == 0, r.stderr
    assert "AUTORESEARCH_SMOKE is set: a template runs in smoke mode" in r.stdout + r.stderr
    r = cli("run", str(repo), "--tag", "s", "--trials", "0", env={"AUTORESEARCH_SMOKE": ""})
    assert r.returncode == 2 and ("tag s was started AUTORESEARCH_SMOKE=1 (the templates' smoke mode: tiny data "
                                  "and model) and this run is without AUTORESEARCH_SMOKE") in r.stderr, r.stderr
    assert cli("run", str(repo), "--tag", "s", "--trials", "0", env={"AUTORESEARCH_SMOKE": "1"}).returncode == 0
    assert cli("run", str(repo), "--tag", "real", "--trials", "0", env={"AUTORESEARCH_SMOKE": ""}).returncode == 0
    r = cli("run", str(repo), "--tag", "real", "--trials", "0", env={"AUTORESEARCH_SMOKE": "0"})  # as templates read it:
    assert r.returncode == 0 and "smoke mode" not in r.stdout + r.stderr, r.stderr  # not smoke mode
    r = cli("run", str(repo), "--tag", "real", "--trials", "0", env={"AUTORESEARCH_SMOKE": "1"})
    assert r.returncode == 2 and "tag real was started without AUTORESEARCH_SMOKE" in r.stderr


def test_what_the_templates_score_is_pinned_with_the_tag(tmp_path: Path) -> None:
    """AUTORESEARCH_EVAL_TOKENS (nanochat's evaluation size) and AUTORESEARCH_DATA_DIR change
    what is scored: a tag resumed in a shell that forgot the export compared unlike figures."""
    repo = make_task(tmp_path / "task")
    unset = {"AUTORESEARCH_EVAL_TOKENS": "", "AUTORESEARCH_DATA_DIR": ""}
    r = cli("run", str(repo), "--tag", "e", "--trials", "0", env={**unset, "AUTORESEARCH_EVAL_TOKENS": "1048576"})
    assert r.returncode == 0, r.stderr
    r = cli("run", str(repo), "--tag", "e", "--trials", "0", env=unset)
    assert r.returncode == 2 and ("tag e was started with AUTORESEARCH_EVAL_TOKENS=1048576 and this run has "
                                  "AUTORESEARCH_EVAL_TOKENS unset") in r.stderr, r.stderr
    r = cli("run", str(repo), "--tag", "e", "--trials", "0", env={**unset, "AUTORESEARCH_EVAL_TOKENS": "1048576",
                                                                   "AUTORESEARCH_DATA_DIR": str(tmp_path)})
    assert r.returncode == 2 and "AUTORESEARCH_DATA_DIR=" in r.stderr
    assert cli("run", str(repo), "--tag", "e", "--trials", "0",
               env={**unset, "AUTORESEARCH_EVAL_TOKENS": " 1048576 "}).returncode == 0


def test_a_mistyped_agent_and_a_tag_git_refuses_say_what_to_write(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    r = cli("run", str(repo), "--agent", "serch", "--trials", "1")
    assert r.returncode == 2 and "--agent 'serch' is not an agent (did you mean 'search'?)" in r.stderr
    for tag in ("-x", "a..b", "x.lock"):
        r = cli("run", str(repo), f"--tag={tag}", "--trials", "0")
        assert r.returncode == 2 and "without '..' and not ending in '.' or '.lock'" in r.stderr, r.stderr
    assert not (repo / ".autoresearch").exists()


def test_a_setup_that_fails_says_what_it_printed_or_that_it_printed_nothing(tmp_path: Path) -> None:
    """A setup that failed without a word ended its error with `log .../setup.log:` and an
    empty line, as if its output had gone missing: it says it printed nothing."""
    repo = make_task(tmp_path / "task", toml_extra='setup = "exit 3"\n')
    r = cli("run", str(repo), "--tag", "d", "--trials", "0")
    log = repo / ".autoresearch" / "d" / "logs" / "setup.log"
    assert r.returncode == 1, r.stderr
    assert r.stderr.rstrip("\n").endswith(f"failed (exit 3); it printed nothing (log {log})"), r.stderr
    toml = repo / "autoresearch.toml"
    toml.write_text(toml.read_text().replace('"exit 3"', '"echo no data here; exit 3"'))
    git(repo, "commit", "-qam", "setup says why")
    r = cli("run", str(repo), "--tag", "d", "--trials", "0")
    assert r.returncode == 1 and r.stderr.rstrip("\n").endswith(f"failed (exit 3); log {log}:\nno data here"), r.stderr


def test_a_tag_whose_setup_failed_before_any_trial_takes_the_fixed_task_file(tmp_path: Path) -> None:
    """A first run whose setup fails records no trial: nothing is measured yet, so the tag is
    resumed with the fixed task file (its setup pinned anew), not refused as a changed one, and
    starts again from the commit of the fix: a fix not committed is refused as for a new tag, and
    a branch with commits the tag did not make is not moved."""
    repo = make_task(tmp_path / "task", toml_extra='setup = "false"\n')
    r = cli("run", str(repo), "--tag", "d", "--trials", "0")
    assert r.returncode == 1 and "setup command `false` failed" in r.stderr, r.stderr
    toml = repo / "autoresearch.toml"
    toml.write_text(toml.read_text().replace('setup = "false"', 'setup = "true"'))
    git(repo, "commit", "-qam", "fix setup")
    (repo / "notes.txt").write_text("not committed\n")
    r = cli("run", str(repo), "--tag", "d", "--trials", "0")
    assert r.returncode == 2 and "uncommitted changes (notes.txt)" in r.stderr, r.stderr
    (repo / "notes.txt").unlink()
    git(repo, "branch", "-f", "autoresearch/d", "HEAD")  # a commit of yours on the tag's branch
    r = cli("run", str(repo), "--tag", "d", "--trials", "0")
    assert r.returncode == 2 and "branch autoresearch/d has commits the tag did not make" in r.stderr, r.stderr
    git(repo, "branch", "-D", "autoresearch/d")
    r = cli("run", str(repo), "--tag", "d", "--trials", "0")
    assert r.returncode == 0, r.stderr
    assert "(started again from your HEAD: it had no trial)" in r.stdout + r.stderr
    assert git(repo, "rev-parse", "autoresearch/d") == git(repo, "rev-parse", "HEAD")  # from the fix
    toml.write_text(toml.read_text().replace('setup = "true"', 'setup = "echo again"'))
    git(repo, "commit", "-qam", "change setup after a trial")
    r = cli("run", str(repo), "--tag", "d", "--trials", "0")
    assert r.returncode == 2 and "(setup: 'true' -> 'echo again')" in r.stderr, r.stderr


def test_show_keeps_terminal_escapes_of_the_log_and_the_diff_off_the_terminal(tmp_path: Path) -> None:
    """An experiment's output and an agent's diff went to the terminal as they were: a window
    title set, the screen cleared, the clipboard written (OSC 52). A trial number past SQLite's
    integers was a traceback."""
    hostile = "\\x1b]0;PWNED\\x07\\x1b[2J\\x1b]52;c;cHduZWQ=\\x07"
    repo = make_task(tmp_path / "task", experiment=EXPERIMENT + f'print("{hostile}esc-test")\n')
    agent = script_agent(tmp_path / "agent.sh", """\
        printf '# \\033]0;FROM-DIFF\\007\\n' >> exp.py
        echo "a comment"
        """)
    assert cli("run", str(repo), "--tag", "t", "--trials", "1", "--agent", "cli", "--agent-cmd", agent).returncode == 0
    out = cli("show", "1", str(repo)).stdout
    assert "esc-test" in out
    assert "\x1b" not in out and "\x07" not in out, repr(out)
    assert "# " in out.split("diff against its parent:")[1]
    r = cli("show", "99999999999999999999", str(repo))
    assert r.returncode == 2 and "no trial 99999999999999999999" in r.stderr and "Traceback" not in r.stderr


def test_status_while_a_loop_runs_says_so_and_how_long_its_trial_has_run(tmp_path: Path) -> None:
    """`status` beside a running loop gave the previous invocation's end ("last run: ended ...
    --trials 1 done") as if nothing ran, counted the trial in flight as one of the trials, and
    gave it 0.0 seconds."""
    import os
    import subprocess
    import sys
    import time

    repo = make_task(tmp_path / "task")
    assert cli("run", str(repo), "--tag", "t", "--trials", "0").returncode == 0
    marker = tmp_path / "thinking"
    agent = script_agent(tmp_path / "agent.sh", f"""\
        touch {marker}
        sleep 2
        sed -i 's/^Y = 2/Y = 1/' exp.py; echo "Y down"
        """)
    loop = subprocess.Popen([sys.executable, "-m", "autoresearch", "run", str(repo), "--tag", "t", "--trials", "1",
                             "--agent", "cli", "--agent-cmd", agent], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.8)
        out = cli("status", str(repo)).stdout
        assert "tag t: 1 trial (the baseline included), 0 kept improvements, 1 in flight" in out, out
        assert "a loop is running on this tag now (trial 1 in flight)" in out and "last run" not in out, out
        row = next(line.split() for line in out.splitlines() if line.split()[:1] == ["1"])
        assert row[2] == "running" and float(row[4]) >= 0.8, out  # how long it has run (it said 0.0)
        assert " s so far, seed " in cli("show", "1", str(repo)).stdout
    finally:
        assert loop.wait(timeout=60) == 0
    out = cli("status", str(repo)).stdout
    assert "last run: ended" in out and "running on this tag" not in out, out


def test_the_default_tag_is_the_one_a_running_or_killed_loop_writes(tmp_path: Path) -> None:
    """Without --tag, status and trial take the most recently used tag. It was read from
    ledger.sqlite's mtime, which SQLite leaves alone while a loop runs (its writes go to the
    -wal file until a clean end): the tag of a loop running now, or killed, was not the default,
    and `trial` judged your change against another tag's best."""
    exp = ("import os, time\nX = 3.0\nif os.environ['AUTORESEARCH_TRIAL'] == '2':\n"
           f"    open({str(tmp_path / 'running')!r}, 'w').close()\n    time.sleep(60)\nprint(f'loss: {{X}}')\n")
    repo = make_task(tmp_path / "task", experiment=exp)
    agent = script_agent(tmp_path / "a.sh", "sed -i \"s/^X = .*/X = 2.$AUTORESEARCH_TRIAL/\" exp.py\necho X\n")
    for tag in ("bbb", "aaa"):
        assert cli("run", str(repo), "--tag", tag, "--agent-cmd", agent, "--trials", "1").returncode == 0
    assert cli("status", str(repo)).stdout.startswith("tag aaa")
    loop = subprocess.Popen([sys.executable, "-m", "autoresearch", "run", str(repo), "--tag", "bbb",
                             "--agent-cmd", agent, "--trials", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(tmp_path / "running")
        assert (tmp_path / "running").exists()
        assert cli("status", str(repo)).stdout.startswith("tag bbb")
        (repo / "exp.py").write_text((repo / "exp.py").read_text().replace("X = 3.0", "X = 1.5"))
        r = cli("trial", str(repo), "-m", "mine")
        assert r.returncode == 2 and "bbb" in r.stderr, (r.stdout, r.stderr)  # its loop holds it: refused
    finally:
        os.killpg(loop.pid, signal.SIGKILL)
        loop.wait()
    assert cli("status", str(repo)).stdout.startswith("tag bbb")


def test_init_with_a_git_config_that_signs_commits_and_a_git_that_fails(tmp_path: Path) -> None:
    """A user's git config that signs commits with a signer that fails made `init` (and the
    demo) end in a traceback, leaving a folder with files and no commit that blocked a retry.
    The template's commit is not signed; a git that still fails is one line, and nothing is left."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[commit]\n\tgpgsign = true\n[gpg]\n\tprogram = /bin/false\n")
    r = cli("init", str(tmp_path / "signed"), "--template", "blank", env={"HOME": str(home)})
    assert r.returncode == 0, r.stderr
    assert git(tmp_path / "signed", "log", "--format=%s") == "autoresearch init --template blank"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    real = shutil.which("git")
    (bindir / "git").write_text(f'#!/bin/sh\nfor a in "$@"; do [ "$a" = commit ] && {{ echo "fatal: disk on fire" >&2; exit 128; }}; done\n'
                                f'exec {real} "$@"\n')
    (bindir / "git").chmod(0o755)
    failing = {"HOME": str(home), "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    for folder in (tmp_path / "new", tmp_path / "empty"):
        if folder.name == "empty":
            folder.mkdir()
        r = cli("init", str(folder), "--template", "blank", env=failing)
        assert r.returncode == 1 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
        assert "git commit failed" in r.stderr and "disk on fire" in r.stderr
        assert (folder.exists() and not any(folder.iterdir())) if folder.name == "empty" else not folder.exists()
        assert cli("init", str(folder), "--template", "blank", env={"HOME": str(home)}).returncode == 0  # the retry


def test_an_error_naming_a_file_prints_no_terminal_escape(tmp_path: Path) -> None:
    """An agent that is not sealed can write into your checkout (its worktree lies inside it):
    a file named with escapes made the next `run`'s one-line refusal set the window title and
    clear the screen. Errors are printed without them."""
    repo = make_task(tmp_path / "task")
    (repo / "\x1b]0;PWNED\x07\x1b[2Jplanted.txt").write_text("x\n")
    r = cli("run", str(repo), "--tag", "t", "--trials", "0")
    assert r.returncode == 2 and "uncommitted changes (planted.txt)" in r.stderr, r.stderr
    assert "\x1b" not in r.stderr and "\x07" not in r.stderr


def test_every_argument_of_every_command_says_in_its_help_what_it_is() -> None:
    """`autoresearch init --help` listed `dir` and `show --help` listed `number` with no word on
    what they take (a new folder? the trial's number as status shows it?)."""
    import argparse

    from autoresearch.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    bare = [f"{name} {action.dest}" for name, sub in commands.choices.items() for action in sub._actions
            if not action.help and not isinstance(action, argparse._HelpAction)]
    assert bare == [], bare
    show = cli("show", "--help")
    assert re.search(r"\n  N +the trial.s number", show.stdout), show.stdout


def test_a_loop_whose_output_goes_to_a_file_in_the_repository_is_not_refused_for_it(tmp_path: Path) -> None:
    """`nohup autoresearch run --tag t > loop.log 2>&1 &` from the task's folder: the shell made
    loop.log before the loop started, and the loop refused the repository as dirty because of its
    own log (written into that log, read in the morning). The next run is not refused for the last
    one's log either; a file of the user's still is."""
    repo = make_task(tmp_path / "task")

    def run_to(tag: str, log: str) -> int:
        cmd = f"{shlex.quote(sys.executable)} -m autoresearch run --tag {tag} --trials 0 > {log} 2>&1"
        return subprocess.run(["sh", "-c", cmd], cwd=repo, timeout=120).returncode

    assert run_to("a", "loop.log") == 0, (repo / "loop.log").read_text()
    assert "best: trial 0" in (repo / "loop.log").read_text()
    assert run_to("b", "'second log.txt'") == 0, (repo / "second log.txt").read_text()
    assert git(repo, "status", "--porcelain") == ""
    (repo / "notes.txt").write_text("mine\n")
    assert run_to("c", "third.log") == 2
    said = (repo / "third.log").read_text()
    assert "uncommitted changes (notes.txt)" in said, said


def test_a_loop_piped_to_tee_a_file_in_the_repository_is_not_refused_for_it(tmp_path: Path) -> None:
    """`autoresearch run --tag t 2>&1 | tee run.log` from the task's folder: tee made run.log
    before the loop looked at the repository, and the loop refused it as dirty."""
    repo = make_task(tmp_path / "task")
    cmd = f"{shlex.quote(sys.executable)} -m autoresearch run --tag a --trials 0 2>&1 | tee run.log; exit ${{PIPESTATUS[0]}}"
    r = subprocess.run(["bash", "-c", cmd], cwd=repo, timeout=120, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
    assert "best: trial 0" in (repo / "run.log").read_text() and "best: trial 0" in r.stdout
    assert git(repo, "status", "--porcelain") == ""


def test_a_subfolder_given_as_dir_names_the_task_above_it(tmp_path: Path) -> None:
    """`autoresearch trial -m x .` (or `status .`) from a subfolder of the task: a DIR given is
    used as it is, and the error told the user to create a task with `init`, one they have;
    it names the folder that holds it. Past the git repository's root nothing is named."""
    repo = make_task(tmp_path / "task")
    (repo / "sub").mkdir()
    r = cli("trial", "-m", "x", ".", cwd=repo / "sub")
    assert r.returncode == 2, r.stderr
    assert f"the task's is in {repo}: give that folder, or leave DIR out" in r.stderr, r.stderr
    assert "autoresearch init" not in r.stderr
    other = repo / "sub" / "other"
    other.mkdir()
    git(other, "init", "-q")  # a repository of its own: the task above is not its task
    r = cli("status", str(other))
    assert r.returncode == 2 and str(repo) + ":" not in r.stderr, r.stderr


def test_the_views_given_a_subfolder_as_dir_name_the_task_above_it(tmp_path: Path) -> None:
    """`autoresearch status sub` (and show, report, serve) answered "no autoresearch.toml in sub
    or a folder above it", of a folder whose parent holds the task file: they name it, as
    `run`, `trial` and `space` do."""
    repo = make_task(tmp_path / "task")
    (repo / "sub").mkdir()
    for args in (["status"], ["show", "0"], ["report"], ["serve", "--port", "0"]):
        r = cli(*args, str(repo / "sub"), timeout=60)
        assert r.returncode == 2, (args, r.stderr)
        assert f"the task's is in {repo}: give that folder, or leave DIR out" in r.stderr, (args, r.stderr)


def test_the_help_says_what_the_exit_codes_mean() -> None:
    """An agent driving itself reads `autoresearch trial --help`: the exit codes that tell it
    whether its change was measured were in the README only."""
    r = cli("trial", "--help", timeout=60)
    said = " ".join(r.stdout.split())
    assert r.returncode == 0 and "exit status: 0 the change was measured" in said and "1 it was not" in said, said
    said = " ".join(cli("--help", timeout=60).stdout.split())
    assert "exit status: 0 success, 1 the loop or trial failed, 2 bad usage or a bad task file, 130 stopped" in said, said
