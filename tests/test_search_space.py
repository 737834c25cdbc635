"""The search space as the search agent builds and writes it: a string choice written in the
original's quotes, and the ranges `autoresearch space --tag` shows."""

from __future__ import annotations

from conftest import cli, git, make_task

from autoresearch.agents.space import space_of
from autoresearch.ledger import Ledger


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
