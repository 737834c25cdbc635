"""The search space as the search agent builds and writes it: a string choice written in the
original's quotes, and the ranges `autoresearch space --tag` shows."""

from __future__ import annotations

import pytest
from conftest import cli, git, make_task, script_agent

from autoresearch.agents.search import SearchAgent
from autoresearch.agents.space import space_of
from autoresearch.ledger import Ledger
from autoresearch.records import Status
from autoresearch.task import load_task


def test_a_string_choice_is_written_in_the_originals_quotes(tmp_path):
    repo = make_task(tmp_path / "t", experiment=(
        'OPT = "adamw"   # search: adamw | sgd\n'
        "WHO = 'a'  # search: a | \"it's\"\n"
        "print('loss:', len(OPT) + len(WHO))\n"))
    r = cli("run", str(repo), "--tag", "s", "--trials", "3")
    assert r.returncode == 0, r.stderr + r.stdout
    led = Ledger.read(repo, "s")
    lines = {tuple(git(repo, "show", f"{t.commit}:exp.py").splitlines()[:2]) for t in led.trials()}
    led.close()
    # every pair of choices, each in its original's quotes; only the value's text changed
    assert lines == {(f"OPT = {opt}   # search: adamw | sgd", f"WHO = {who}  # search: a | \"it's\"")
                     for opt in ('"adamw"', '"sgd"') for who in ("'a'", r"'it\'s'")}
    p = space_of({"m.py": b'Q = "a"  # search: a | \'say "hi"\'\n'}).params[0]
    assert p.render(p.choices[1], p.text) == ('say "hi"', r'"say \"hi\""')


def test_space_with_a_tag_shows_the_ranges_the_search_has_not_ones_from_the_best_code(tmp_path):
    repo = make_task(tmp_path / "t", experiment=(
        "LR = 0.1\nprint('loss:', abs(LR - 0.03) + globals().get('WD', 1.0))\n"))
    agent = script_agent(tmp_path / "a.sh", """\
        if [ "$AUTORESEARCH_TRIAL" = 1 ]; then sed -i 's/^LR = .*/LR = 0.05\\nWD = 0.2/' exp.py
        else sed -i 's/^WD = .*/WD = 0.01/' exp.py; fi
        echo "step $AUTORESEARCH_TRIAL"
        """)
    r = cli("run", str(repo), "--tag", "s", "--agent", "cli", "--agent-cmd", agent, "--trials", "2")
    assert r.returncode == 0, r.stderr + r.stdout
    led = Ledger.read(repo, "s")
    trials = led.trials()
    led.close()
    assert [t.status for t in trials] == [Status.KEEP] * 3
    r = cli("space", str(repo), "--tag", "s")
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()[2:4]}
    # LR's range from the baseline's 0.1 (0.05 gives 0.0125..0.2), WD's from its first value,
    # 0.2 at trial 1 (the best's 0.01 gives 0.0025..0.04)
    assert rows["LR"][:5] == ["LR", "exp.py:1", "0.05", "0.1", "0.025..0.4"]
    assert rows["WD"][:5] == ["WD", "exp.py:2", "0.01", "(new)", "0.05..0.6"]
    search = SearchAgent(load_task(repo))  # as the search agent has them, read from the ledger
    for t in trials:
        search.observe(t)
    assert [search.space.get(k).range_text for k in ("LR", "WD")] == ["0.025..0.4", "0.05..0.6"]


def test_a_search_comment_on_a_name_the_search_cannot_tune_says_why(tmp_path):
    """`lr = 3e-4  # search: ...` and a class attribute with a range were left out without a
    word (the search tunes UPPER_CASE module-level constants), and `space` then said it tunes
    "constants with a `# search:` comment"; now each is a `not searched:` line naming the fix."""
    repo = make_task(tmp_path / "t", experiment=(
        "lr = 3e-4  # search: 1e-4..1e-2 log\n"
        "plain = 5\n"
        "class Config:\n"
        "    DEPTH = 4  # search: 2..8\n"
        "def main():\n"
        "    WIDTH = 8  # search: 4..16\n"
        "print('loss:', lr)\n"))
    r = cli("space", str(repo))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "exp.py:1 lr: not UPPER_CASE (name it LR to search it)" in r.stdout, r.stdout
    assert "exp.py:4 DEPTH: inside class Config" in r.stdout and "exp.py:6 WIDTH: inside function main" in r.stdout
    assert "plain" not in r.stdout  # (a lower-case name with no comment is no candidate)
    assert "constants with a `# search:` comment" not in r.stderr, r.stderr


def test_a_search_comment_inside_an_if_or_try_block_says_why_it_is_not_searched(tmp_path):
    """`if ...:  X = 3  # search: 1..10` and the same in a `try`: a range on a constant the search
    never tunes (it tunes the top level, outside any block) was dropped without a word by `space`
    and `run` alike, as one inside a class or a function had been."""
    repo = make_task(tmp_path / "t", experiment=(
        "import sys\n"
        "if sys.platform:\n"
        "    IN_IF = 3  # search: 1..10\n"
        "else:\n"
        "    IN_IF = 4\n"
        "try:\n"
        "    TRY_C = 0.1  # search: 0.01..1 log\n"
        "except ImportError:\n"
        "    pass\n"
        "PLAIN = 2.0\n"
        "print('loss:', PLAIN + IN_IF + TRY_C)\n"))
    r = cli("space", str(repo))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "not searched: exp.py:3 IN_IF: inside the `if` block at line 2" in r.stdout, r.stdout
    assert "not searched: exp.py:7 TRY_C: inside the `try` block at line 6" in r.stdout, r.stdout
    assert "exp.py:5" not in r.stdout  # (the branch with no comment: never a candidate)
    r = cli("run", str(repo), "--tag", "s", "--trials", "1")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "warning: not searched: exp.py:3 IN_IF: inside the `if` block at line 2" in r.stderr, r.stderr
    assert "warning: not searched: exp.py:7 TRY_C: inside the `try` block at line 6" in r.stderr, r.stderr


def test_space_notes_a_searched_constant_set_again_inside_a_block():
    """`LR = 3e-4` at the top and `if not SMOKE: LR = 1e-3` below it: the search tuned LR and every
    value it wrote was replaced when the block ran, trials of noise without a word. Whether a
    block runs is not known (nanochat's `if SMOKE:` sets its sizes for smoke runs only), so LR is
    still searched, and `space` says where it is set again."""
    from autoresearch.agents.spaceview import space_table

    space = space_of({"m.py": (
        b"import os\nif os.name:\n    WD = 5.0\nLR = 3e-4  # search: 1e-4..1e-2 log\nBATCH = 64\nWD = 0.1\nSMOKE = bool(os.environ.get('S'))\n"
        b"if not SMOKE:\n    LR = 1e-3\ntry:\n    import torch\n    BATCH = 128\nexcept ImportError:\n    pass\n"
        b"def f():\n    WD = 0.2\n    return WD\nprint('loss:', LR + BATCH + WD)\n")})
    assert [p.key for p in space.params] == ["LR", "BATCH", "WD"]
    notes = [line for line in space_table(space).splitlines() if line.startswith("note:")]
    assert notes == [
        "note: m.py:4 LR is set again at line 9, under `if not SMOKE:` (line 8): when that runs, it replaces "
        "the value the search writes",
        "note: m.py:5 BATCH is set again at line 12, under `try:` (line 10): when that runs, it replaces the "
        "value the search writes"]  # (WD in f is f's own; the one above WD = 0.1 is replaced by it)


def test_a_search_with_nothing_to_tune_names_the_file_it_could_not_parse(tmp_path):
    """An editable file with a syntax error: `run` said only "found no constants to tune" (the user
    sees constants in the file), and `space` named the error with Python's `(<unknown>, line 2)`."""
    repo = make_task(tmp_path / "t", experiment="LR = 3e-3\nprint('loss:', LR\n")
    r = cli("space", str(repo))
    assert r.returncode == 2
    assert "not searched: exp.py cannot parse the file: '(' was never closed (line 2)\n" in r.stdout, r.stdout
    r = cli("run", str(repo), "--tag", "s", "--trials", "2")
    assert r.returncode == 2, r.stderr + r.stdout
    assert "found no constants to tune in " in r.stderr
    assert "(exp.py: cannot parse the file: '(' was never closed (line 2); see `autoresearch space " in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1  # one line, no traceback


@pytest.mark.extended  # (two runs: 3 to 4 s)
def test_a_constant_made_a_computed_value_by_a_kept_trial_is_left_alone(tmp_path):
    """Another agent (or a person) turned `LR = 3e-3` into `LR = math.sqrt(1e-4)` (and `ACT = 1`
    into `ACT = "gelu"`) and it was kept:
    the search then wrote a literal over that code at every trial that moved LR (`LR math.sqrt(1e-4)
    -> 2.51e-3`), undoing the change, where computed values are left alone."""
    repo = make_task(tmp_path / "t", experiment=(
        "import math\nLR = 3e-3\nDEPTH = 8\nACT = 1\nprint('loss:', abs(LR - 0.01) * 100 + abs(DEPTH - 11))\n"))
    agent = script_agent(tmp_path / "a.sh", """\
        sed -i 's/^LR = .*/LR = math.sqrt(1e-4)/; s/^ACT = .*/ACT = "gelu"/' exp.py
        echo "LR computed"
        """)
    r = cli("run", str(repo), "--tag", "s", "--agent", "cli", "--agent-cmd", agent, "--trials", "1")
    assert r.returncode == 0, r.stderr + r.stdout
    r = cli("run", str(repo), "--tag", "s", "--agent", "search", "--trials", "2")
    assert r.returncode == 0, r.stderr + r.stdout
    led = Ledger.read(repo, "s")
    trials = led.trials()
    led.close()
    assert [t.status for t in trials[:2]] == [Status.KEEP, Status.KEEP] and len(trials) == 4
    for t in trials[2:]:
        assert t.description.startswith("DEPTH 8 -> "), t.description
        assert git(repo, "show", f"{t.commit}:exp.py").splitlines()[1:4:2] == ["LR = math.sqrt(1e-4)", 'ACT = "gelu"']


def test_a_comma_after_the_range_is_punctuation_not_part_of_the_high_end():
    """`# search: 1..5, int` (as options are written in prose) was a bad comment, "the range 1..5,
    is not two numbers", and the constant kept its value all run; a comma or semicolon after an
    option was already read as punctuation."""
    from autoresearch.agents.spaceview import space_table

    space = space_of({"m.py": b"H = 3  # search: 1..5, int\nI = 0.01  # search: 1e-3..1e-1; log\nprint(H, I)\n"})
    assert space_table(space).splitlines()[1:] == ["H     m.py:1  3      1..5        linear int",
                                                    "I     m.py:2  0.01   0.001..0.1  log float"]
