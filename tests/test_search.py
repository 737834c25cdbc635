"""The search agent: its space, its rewriting, its descriptions, ask/tell through the real loop,
resume from the ledger, and `autoresearch space` / `autoresearch demo`."""

from __future__ import annotations

import importlib.util
import math
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import cli, git, make_task, script_agent, wait_for

from autoresearch.agents.constants import apply_edits, scan_file
from autoresearch.agents.search import SearchAgent
from autoresearch.agents.space import space_of
from autoresearch.gitrepo import Git
from autoresearch.ledger import Ledger
from autoresearch.loop import Loop, Options
from autoresearch.records import Status
from autoresearch.session import open_session
from autoresearch.task import load_task

SOURCE = '''\
"""A file with every kind of constant."""
import os

LR = 0.04
DEPTH = 8
ONE = 1
ZERO_INT = 0
ZERO = 0.0
NEG = -0.5
BATCH = 2**19
EXPR = 3e-4 * 2
FLAG = True
NAME = "adamw"
SHAPE = (1, 2)
MODE = "fast"  # search: fast | slow
TUNED = 3e-3  # search: 3e-4..3e-2 log
STEPS = 50  # search: 10..400 int  (free text after the options)
HEADS = 32  # search: 16..64 step 16
SEED = 42  # search: off
BAD = 5  # search: 9..1
TYPO = 5  # search: 1..9 lgo
TWICE = 1
TWICE = 2
DERIVED = DEPTH * 2
TYPED: float = 0.25
lower = 3.0


def f():
    INNER = 4
    return INNER
'''


def space():
    return space_of({"m.py": SOURCE.encode()})


def param(name):
    p = next((p for p in space().params if p.name == name), None)
    assert p is not None, name
    return p


def test_space_reads_numbers_expressions_booleans_and_annotations():
    s = space()
    names = [p.name for p in s.params]
    assert names == ["LR", "DEPTH", "ONE", "ZERO_INT", "ZERO", "NEG", "BATCH", "EXPR", "FLAG",
                     "MODE", "TUNED", "STEPS", "HEADS", "TYPED"]
    lines = {p.name: p.line for p in s.params}
    assert lines["LR"] == 4 and lines["TYPED"] == 25
    assert param("BATCH").value == 2**19 and math.isclose(param("EXPR").value, 6e-4)
    skipped = "\n".join(f"{w} {why}" for w, why in s.skipped)
    assert "m.py:13 NAME: a string" in skipped  # strings and tuples are left alone ...
    assert "m.py:14 SHAPE: a tuple" in skipped
    assert "SEED: `# search: off`" in skipped
    assert "BAD: bad `# search:` comment" in skipped and "empty" in skipped
    assert "TYPO: bad `# search:` comment: unknown option 'lgo' (did you mean 'log'?)" in skipped
    assert "TWICE: assigned more than once" in skipped
    assert "DERIVED" not in skipped and "lower" not in skipped and "INNER" not in skipped


def test_inferred_ranges():
    lr = param("LR")
    assert (lr.kind, lr.log) == ("float", True) and math.isclose(lr.low, 0.01) and math.isclose(lr.high, 0.16)
    depth = param("DEPTH")
    assert (depth.kind, depth.low, depth.high, depth.log) == ("int", 4, 16, True)
    assert (param("ONE").low, param("ONE").high) == (1, 2)
    assert (param("ZERO_INT").low, param("ZERO_INT").high, param("ZERO_INT").log) == (0, 2, False)
    assert (param("ZERO").low, param("ZERO").high, param("ZERO").log) == (0.0, 1.0, False)
    neg = param("NEG")
    assert neg.range_text == "-2.0..-0.125" and neg.log
    batch = param("BATCH")
    assert (batch.base, batch.low, batch.high) == (2, 18, 20) and batch.range_text == "2**18..2**20"
    assert param("FLAG").kind == "bool"
    assert math.isclose(param("TYPED").high, 0.625)  # (1 + v) / 2: a fraction stays below 1


def test_inferred_ranges_keep_what_ml_constants_mean():
    """A momentum or beta near 1 moves by its distance to 1; a rate or a fraction stays below
    1; a width that is a power of two stays one; a seed is not tuned unless annotated."""
    s = space_of({"m.py": b"MOMENTUM = 0.9\nBETA2 = 0.999\nDROPOUT = 0.5\nN_EMBD = 128\nN_HEAD = 4\n"
                          b"SEED = 1337\nDATA_SEED = 3  # search: 1..9\nLR = 3e-4  # SEARCH: 1e-4..1e-3 logarithmic\n"
                          b"RANDOM_STATE = 42\nSPLIT_RANDOM_STATE = 0\n"})
    p = {x.name: x for x in s.params}
    assert (round(p["MOMENTUM"].low, 6), round(p["MOMENTUM"].high, 6), p["MOMENTUM"].log) == (0.6, 0.975, False)
    assert (round(p["BETA2"].low, 6), round(p["BETA2"].high, 6)) == (0.996, 0.99975)
    assert (p["DROPOUT"].low, p["DROPOUT"].high) == (0.125, 0.75)
    assert p["N_EMBD"].range_text == "32..512" and p["N_EMBD"].scale_text == "powers of 2 int"
    assert p["N_EMBD"].render(8)[1] == "256" and p["N_EMBD"].sampled(128) == 7
    assert (p["N_HEAD"].low, p["N_HEAD"].high) == (2, 8)
    assert "SEED" not in p and "DATA_SEED" in p
    assert any("SEED: a seed" in f"{w} {why}" for w, why in s.skipped)
    assert "RANDOM_STATE" not in p and "SPLIT_RANDOM_STATE" not in p  # scikit-learn's name for a seed
    assert (p["LR"].low, p["LR"].high, p["LR"].log, p["LR"].annotated) == (1e-4, 1e-3, True, True)


def test_annotated_ranges():
    tuned = param("TUNED")
    assert (tuned.kind, tuned.log, tuned.low, tuned.high, tuned.annotated) == ("float", True, 3e-4, 3e-2, True)
    steps = param("STEPS")
    assert (steps.kind, steps.low, steps.high, steps.log) == ("int", 10, 400, False)
    heads = param("HEADS")
    assert heads.range_text == "16..64 step 16"
    assert param("MODE").choices == ("'fast'", "'slow'")


def test_a_step_that_leaves_one_value_in_the_range_is_a_bad_comment():
    """`1..10 step 20` holds 1 alone: searched, it wrote 1 over the 5 in the file at the first
    trial that picked it, and never anything else."""
    s = space_of({"m.py": b"A = 5  # search: 1..10 step 20\nB = 0.5  # search: 0..1 step 2\n"
                          b"C = 7  # search: 1..10 int step 9\nD = 0.5  # search: 0..1 step 1\n"})
    assert [p.name for p in s.params] == ["C", "D"]  # 1 and 10; 0.0 and 1.0
    assert (s.get("C").low, s.get("C").high, s.get("D").high) == (1, 10, 1.0)
    assert s.broken == [("m.py:1", "A: bad `# search:` comment: `step 20` leaves one value in 1..10"),
                        ("m.py:2", "B: bad `# search:` comment: `step 2` leaves one value in 0..1")]


def test_the_usual_names_of_a_log_scale_mean_log():
    """`loguniform` (Optuna's and Ray Tune's word), `log-uniform`, `logscale`: a log scale, not
    free text after a range searched on a linear scale."""
    words = ["log", "LOG", "logarithmic", "loguniform", "log-uniform", "log_uniform", "logscale", "log-scale"]
    s = space_of({"m.py": "".join(f"LR_{i} = 1e-3  # search: 1e-5..1e-1 {w}, as usual\n"
                                  for i, w in enumerate(words)).encode()
                          + b"LIN = 1e-3  # search: 1e-5..1e-1 uniform\n"})
    assert [(p.name, p.log) for p in s.params] == [(f"LR_{i}", True) for i in range(len(words))] + [("LIN", False)]


def test_text_may_follow_the_last_choice_as_it_may_follow_a_range():
    s = space_of({"m.py": b'OPT = "adamw"   # search: adamw | sgd     (strings only with choices)\n'
                          b'NAME = "a b"  # search: "a b" | "c d"  why\nBAD = 1  # search: 1 | (2, \n'})
    p = {x.name: x for x in s.params}
    assert p["OPT"].choices == ("'adamw'", "'sgd'") and p["NAME"].choices == ('"a b"', '"c d"')
    assert "BAD" not in p


def test_a_choice_given_twice_is_one_choice():
    """`2 | 4 | 8 | 8` drew 8 twice as often as the others; `adamw | "adamw"` is one string."""
    s = space_of({"m.py": b'N = 4  # search: 2 | 4 | 8 | 8\nOPT = "adamw"  # search: adamw | "adamw" | sgd\n'
                          b"SAME = 1  # search: 1 | 1\n"})
    assert s.get("N").choices == ("2", "4", "8") and s.get("OPT").choices == ("'adamw'", "'sgd'")
    assert s.get("N").distribution().choices == ("2", "4", "8")
    assert s.broken == [("m.py:3", "SAME: bad `# search:` comment: give at least two different choices, got '1 | 1'")]


def test_a_first_choice_that_is_an_off_word_is_a_choice():
    """`none | layer | rms` lists choices (`None` among them is a value: no clipping); only
    `off` and its synonyms alone, or followed by free text, leave a constant out."""
    s = space_of({"m.py": b'GRAD_CLIP = 1.0  # search: None | 0.5 | 1.0\nNORM = "layer"  # search: none | layer | rms\n'
                          b'SCHEDULE = "cosine"  # search: fixed | cosine\nA = 3  # search: off (tried 2 | 4)\n'
                          b'B = 3  # search: no, the data fixes it\n'})
    p = {x.name: x for x in s.params}
    assert p["GRAD_CLIP"].choices == ("None", "0.5", "1.0") and p["GRAD_CLIP"].render("None") == (None, "None")
    assert p["NORM"].choices == ("'none'", "'layer'", "'rms'") and p["SCHEDULE"].choices == ("'fixed'", "'cosine'")
    assert sorted(why for _, why in s.skipped) == ["A: `# search: off`", "B: `# search: off`"]


def test_values_written_back_compactly():
    assert param("LR").render(0.0523417)[1] == "0.0523"
    assert param("TUNED").render(4.4567e-4, "3e-3")[1] == "4.46e-4"  # the style of the original
    assert param("DEPTH").render(9)[1] == "9"
    assert param("BATCH").render(20)[1] == "2**20"
    assert param("NEG").render(0.25)[1] == "-0.25"
    assert param("ZERO").render(1.0)[1] == "1.0"  # a float stays a float
    assert param("FLAG").render(False)[1] == "False"
    assert param("MODE").render("'slow'")[1] == "'slow'"
    assert param("HEADS").render(48)[1] == "48"
    # a value from another trial's code is clipped into the range (or refused)
    assert param("STEPS").sampled(1000) == 400 and param("HEADS").sampled(40) == 48
    assert param("NEG").sampled(0.5) is None and param("MODE").sampled("medium") is None


def test_an_int_written_in_hex_octal_or_binary_keeps_its_base():
    """`0x100` was written back as `512`: the style of the original, as `1_000` keeps its
    underscores and `3e-3` its exponent."""
    data = b"BUCKET = 0x100\nMASK_BITS = 0xFF  # search: 1..0x1ff\nMODE = 0o17\nFLAGS = -0b1010\nN = 3_000\n"
    s = space_of({"m.py": data})
    assert s.get("BUCKET").render(9, "0x100") == (512, "0x200")  # powers of two, as numbers
    assert s.get("MASK_BITS").render(171, "0xFF")[1] == "0xAB"
    assert s.get("MODE").render(9, "0o17")[1] == "0o11" and s.get("FLAGS").render(5, "-0b1010")[1] == "-0b101"
    assert s.get("N").render(4500, "3_000")[1] == "4_500"
    consts = {c.name: c for c in scan_file(data, "m.py").constants}
    edits = [(consts[n].start, consts[n].end, s.get(n).render(x, consts[n].text)[1])
             for n, x in (("BUCKET", 9), ("MASK_BITS", 171), ("MODE", 9), ("FLAGS", 5))]
    assert {c.name: c.value for c in scan_file(apply_edits(data, edits), "m.py").constants} == \
        {"BUCKET": 512, "MASK_BITS": 171, "MODE": 9, "FLAGS": -5, "N": 3000}


def test_a_value_rounded_for_writing_stays_inside_its_range():
    """A float is written with few digits, but never rounded past an end of its range: near
    `0.9999` three digits make 1.0, a dropout that drops everything or an Adam beta2 that
    divides by zero."""
    s = space_of({"m.py": b"BETA2 = 0.999  # search: 0.99..0.9999 log\nDROPOUT = 0.5  # search: 0.001..0.9999\n"
                          b"STEPS = 500.0  # search: 100..999.9 log\n"})
    for p in s.params:
        for x in (p.low, p.high, p.high * (1 - 1e-5), p.low * (1 + 1e-5)):
            value, text = p.render(x, p.text)
            assert p.low <= value <= p.high and float(text) == value, (p.name, x, text)
    assert s.get("BETA2").render(0.99986)[1] == "0.9999"
    assert s.get("DROPOUT").render(0.5004)[1] == "0.5"  # inside: as few digits as before
    # an end that is itself rounded (3 * 0.3 is 0.8999999999999999) is written as the grid has it
    grid = space_of({"m.py": b"X = 0.3  # search: 0..1 step 0.3\n"}).get("X")
    assert grid.high == 3 * 0.3 and grid.render(grid.high, "0.3") == (0.9, "0.9")


def test_rewriting_changes_only_the_literals():
    data = ('# -*- coding: utf-8 -*-\r\n'
            'LR   =   3e-4    # search: 1e-5..1e-2 log  — the learning rate (é)\r\n'
            'X = {"a": 1}\r\n'
            'DEPTH: int = (8)  # why: depth is the dial\r\n'
            'NEG = -0.5;  OTHER = 2\r\n').encode()
    scan = scan_file(data, "t.py")
    by_name = {c.name: c for c in scan.constants}
    assert data[by_name["DEPTH"].start:by_name["DEPTH"].end] == b"8"
    edits = [(by_name["LR"].start, by_name["LR"].end, "1.2e-4"),
             (by_name["DEPTH"].start, by_name["DEPTH"].end, "10"),
             (by_name["NEG"].start, by_name["NEG"].end, "-0.75")]
    out = apply_edits(data, edits)
    assert out == data.replace(b"3e-4 ", b"1.2e-4 ").replace(b"(8)", b"(10)").replace(b"-0.5;", b"-0.75;")
    rescanned = {c.name: c.value for c in scan_file(out, "t.py").constants}
    assert rescanned["LR"] == 1.2e-4 and rescanned["DEPTH"] == 10 and rescanned["OTHER"] == 2


def test_long_descriptions_fit_the_ledger():
    from autoresearch.agents.search import describe

    assert describe([("A", "1", "2"), ("B", "0.1", "0.13")]) == "A 1 -> 2, B 0.1 -> 0.13"
    many = [(f"CONSTANT_{i}", "0.00123", "0.00456") for i in range(15)]
    text = describe(many)
    assert len(text) <= 200 and text.startswith("CONSTANT_0=0.00456, CONSTANT_1=0.00456")
    assert re.search(r"\(\+\d+ more\)$", text)


def test_a_type_declared_before_the_value_is_no_second_assignment():
    """`LR: float` alone declares a type; `LR = 0.01` below it was taken for a second
    assignment, and LR was not searched. `M += 1` still is one."""
    s = space_of({"m.py": b"LR: float\nLR = 0.01\nN: int\nN = 4  # search: 2..8\nM: int = 3\nM += 1\nprint(LR)\n"})
    assert [p.name for p in s.params] == ["LR", "N"] and s.get("N").high == 8
    assert s.skipped == [("m.py:5", "M: assigned more than once")]


def test_same_name_in_two_files_is_kept_apart():
    s = space_of({"a.py": b"LR = 0.1\n", "b.py": b"LR = 0.2\nWD = 0.1\n"})
    assert sorted(p.key for p in s.params) == ["WD", "a.py:LR", "b.py:LR"]


# ---------------------------------------------------------------------------------------------
# through the real loop

NOISY = '''\
"""A noisy bowl of four constants; the optimum is LR=0.02, WIDTH=40, MOMENTUM=0.9, USE_BIAS."""
import math, os, random

LR = 0.2
WIDTH = 12  # search: 4..64 int
MOMENTUM = 0.3  # search: 0..0.99
USE_BIAS = False

rng = random.Random(int(os.environ["AUTORESEARCH_TRIAL"]))
loss = (math.log10(LR / 0.02) ** 2 + ((WIDTH - 40) / 20) ** 2 + 4 * (MOMENTUM - 0.9) ** 2
        + (0.0 if USE_BIAS else 0.3) + rng.gauss(0, 0.01))
print(f"loss: {loss:.6f}")
'''


def noisy_task(root: Path) -> Path:
    return make_task(root, experiment=NOISY)


def constants_at(repo: Path, commit: str) -> dict[str, object]:
    data = git(repo, "show", f"{commit}:exp.py").encode() + b"\n"
    return {c.name: c.value for c in scan_file(data, "exp.py").constants}


def test_search_improves_a_noisy_task_and_describes_each_change(tmp_path):
    repo = noisy_task(tmp_path / "t")
    r = cli("run", str(repo), "--tag", "s", "--trials", "25", "--seed", "3")
    assert r.returncode == 0, r.stderr + r.stdout
    led = Ledger.read(repo, "s")
    trials = led.trials()
    baseline, best = trials[0], led.best()
    assert len(trials) == 26 and best.metric < baseline.metric - 0.8  # baseline is about 1.6
    assert sum(t.status is Status.KEEP for t in trials) >= 3
    for t in trials[1:]:
        assert t.agent == "search" and t.model == "optuna-tpe"
        before, after = constants_at(repo, t.parent), constants_at(repo, t.commit)
        changed = {k for k in after if after[k] != before[k]}
        described = dict(re.findall(r"(\w+) \S+ -> ([^,\s]+)", t.description))
        assert changed and set(described) == changed, t.description
        assert 1 <= len(changed) <= 3
        for name, text in described.items():
            assert str(after[name]) == text or math.isclose(float(text), after[name])
        # only the values changed: the rest of the file is the parent's, byte for byte
        diff = git(repo, "diff", "--unified=0", t.parent, t.commit)
        removed = [x for x in diff.splitlines() if x.startswith("-") and not x.startswith("---")]
        assert len(removed) == len(changed)
        for line in removed:
            assert re.match(r"-[A-Z_]+ = \S+(  # search: .*)?$", line)


@pytest.mark.extended
def test_resume_learns_from_every_trial_in_the_ledger(tmp_path):
    repo = noisy_task(tmp_path / "t")
    agent = script_agent(tmp_path / "agent.sh", """\
        n=$AUTORESEARCH_TRIAL
        if [ "$n" = 1 ]; then sed -i 's/^LR = .*/LR = 0.1/' exp.py; fi
        if [ "$n" = 2 ]; then sed -i 's/^WIDTH = 12 /WIDTH = 30 /' exp.py; fi
        if [ "$n" = 3 ]; then sed -i 's/^WIDTH = 30 /WIDTH = 60 /; s/^import math, os, random/&; raise SystemExit(3)/' exp.py; fi
        echo "hand edit $n"
        """)
    r = cli("run", str(repo), "--tag", "mix", "--trials", "3", "--agent", "cli", "--agent-cmd", agent)
    assert r.returncode == 0, r.stderr + r.stdout
    r = cli("run", str(repo), "--tag", "mix", "--trials", "2", "--agent", "search")  # the search agent resumes it
    assert r.returncode == 0, r.stderr + r.stdout

    task = load_task(repo)
    session = open_session(task, "mix")
    try:
        agent_ = SearchAgent(task, seed=1)
        Loop(session, agent_, Options(trials=0)).run()  # observes the ledger, runs nothing
        trials = session.ledger.trials()
        if importlib.util.find_spec("cmaes"):  # CMA-ES gets whole configurations
            cma = SearchAgent(task, sampler="cmaes")
            Loop(session, cma, Options(trials=0)).run()
            assert [len(t.params) for t in cma.study.trials] == [4] * 6
    finally:
        session.close()
    assert [t.status for t in trials] == [Status.KEEP, Status.KEEP, Status.KEEP, Status.CRASH,
                                          trials[4].status, trials[5].status]
    study = agent_.study.trials
    assert len(study) == 6  # every finished trial, whichever agent made it
    # the baseline with every constant, then what each trial changed
    assert study[0].params == {"LR": 0.2, "WIDTH": 12, "MOMENTUM": 0.3, "USE_BIAS": False}
    assert study[1].params == {"LR": 0.1} and study[2].params == {"WIDTH": 30}
    assert study[3].params == {"WIDTH": 60}
    worst = max(t.metric for t in trials[:3])
    assert study[3].value == pytest.approx(worst)  # a crash is told as the worst so far
    assert [s.value for s in study[:3]] == pytest.approx([t.metric for t in trials[:3]])
    for t, s in zip(trials[4:], study[4:], strict=True):
        before, after = constants_at(repo, t.parent), constants_at(repo, t.commit)
        assert s.params == pytest.approx({k: v for k, v in after.items() if v != before[k]})
        assert s.value == pytest.approx(t.metric)


@pytest.mark.parametrize("sampler", ["random", pytest.param("cmaes", marks=pytest.mark.slow),
                                     pytest.param("gp", marks=pytest.mark.slow)])
def test_other_samplers_run(tmp_path, sampler):
    if sampler == "cmaes":
        pytest.importorskip("cmaes")
    if sampler == "gp":
        pytest.importorskip("scipy")
        pytest.importorskip("torch")
    repo = noisy_task(tmp_path / "t")
    r = cli("run", str(repo), "--tag", "s", "--trials", "7", "--sampler", sampler)
    assert r.returncode == 0, r.stderr + r.stdout
    trials = Ledger.read(repo, "s").trials()
    assert len(trials) == 8 and all(t.model == f"optuna-{sampler}" for t in trials[1:])
    assert all(t.status in (Status.KEEP, Status.DISCARD) for t in trials)
    if sampler == "cmaes":  # CMA-ES moves every number at once
        assert sum(t.description.count("->") >= 2 for t in trials[1:]) >= 5


def test_an_exhausted_space_is_one_agent_error_that_ends_the_loop(tmp_path):
    repo = make_task(tmp_path / "t", experiment="FLAG = False\nprint(f'loss: {1.0 if FLAG else 2.0}')\n")
    r = cli("run", str(repo), "--tag", "s", "--trials", "2")
    assert r.returncode == 0, r.stderr + r.stdout
    trials = Ledger.read(repo, "s").trials()
    assert trials[1].status is Status.KEEP and trials[1].description == "FLAG False -> True"
    assert trials[2].status is Status.AGENT_ERROR and "no untried change" in trials[2].reason
    # it will not change (30 asks found nothing): that one row ends the loop, not a night of
    # agent errors (it was three in a row); the search is done, not failed (exit 0, as at the end
    # of --trials)
    r = cli("run", str(repo), "--tag", "s", "--trials", "20")
    assert r.returncode == 0, r.stderr
    assert "the agent has nothing left to propose: " in r.stdout + r.stderr, r.stdout
    assert len(Ledger.read(repo, "s").trials()) == 4  # 1 more in this run
    # each its own commit and results.tsv row (they were one commit: same tree, parent, message
    # and second), so that tools keyed on the commit read a row each
    hashes = [line.split("\t")[0] for line in (repo / ".autoresearch/s/results.tsv").read_text().splitlines()[1:]]
    assert len(hashes) == 4 and len(set(hashes)) == 4, hashes
    status = cli("status", str(repo)).stdout
    last = next(line for line in status.splitlines() if line.startswith("last run"))
    assert "ended" in last and "nothing left to propose" in last and "error" not in last, status


def test_bad_sampler_and_empty_space_are_clear_errors(tmp_path):
    repo = make_task(tmp_path / "t", experiment="print('loss: 1.0')\n")
    r = cli("run", str(repo), "--tag", "s", "--trials", "1")
    assert r.returncode == 2 and "found no constants to tune" in r.stderr
    assert "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------------
# autoresearch space


def test_space_command_lists_each_constant(tmp_path):
    repo = make_task(tmp_path / "t", experiment=SOURCE)
    r = cli("space", str(repo))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["name", "where", "value", "range", "scale"]
    rows = {line.split()[0]: line.split() for line in lines[1:] if not line.startswith("not searched")}
    assert rows["LR"][:4] == ["LR", "exp.py:4", "0.04", "0.01..0.16"] and "log float" in " ".join(rows["LR"])
    assert rows["TUNED"][3] == "0.0003..0.03" and "inferred" not in " ".join(rows["TUNED"])
    assert rows["BATCH"][2:4] == ["2**19", "2**18..2**20"]
    assert rows["FLAG"][3] == "False|True"
    assert "not searched: exp.py:13 NAME: a string" in r.stdout


def test_space_command_without_constants_says_so(tmp_path):
    repo = make_task(tmp_path / "t", experiment="print('loss: 1.0')\n")
    r = cli("space", str(repo))
    assert r.returncode == 2  # as `run --agent search` on it: the task gives the search nothing
    assert "no constants to search" in r.stderr and "exp.py" in r.stderr and "Traceback" not in r.stderr


def test_space_command_with_a_tag_shows_the_best_code_beside_its_baseline(tmp_path):
    repo = make_task(tmp_path / "t", experiment="X = 5  # search: 0..10 int\nY = 3  # search: 0..10 int\n"
                     "print(f'loss: {abs(X - 8) + abs(Y - 3)}')\n")
    r = cli("run", str(repo), "--tag", "s", "--trials", "12", "--seed", "1")
    assert r.returncode == 0, r.stderr + r.stdout
    best = Ledger.read(repo, "s").best()
    assert best is not None and best.number > 0  # the search kept something
    r = cli("space", str(repo), "--tag", "s")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert f"trial {best.number}" in lines[0] and best.commit[:7] in lines[0]
    assert lines[1].split() == ["name", "where", "value", "baseline", "range", "scale"]
    rows = {line.split()[0]: line.split() for line in lines[2:4]}
    kept = dict(line.split(" = ") for line in Git(repo).show_file(best.commit, "exp.py").splitlines()[:2])
    for name in ("X", "Y"):  # the values of the best code, the baseline's where they moved
        assert rows[name][2] == kept[name].split()[0]
        assert rows[name][3] == ("=" if rows[name][2] == {"X": "5", "Y": "3"}[name] else {"X": "5", "Y": "3"}[name])
    assert rows["X"][3] == "5" and "moved from the baseline" in lines[-1]
    # the checkout is untouched: without --tag, its values
    plain = cli("space", str(repo)).stdout.splitlines()
    assert plain[1].split()[:3] == ["X", "exp.py:1", "5"]
    r = cli("space", str(repo), "--tag", "nope")
    assert r.returncode == 2 and "no tag 'nope'" in r.stderr and "(tags: s)" in r.stderr and "Traceback" not in r.stderr


def test_space_command_on_the_blank_template(tmp_path):
    assert cli("init", str(tmp_path / "b"), "--template", "blank").returncode == 0
    r = cli("space", str(tmp_path / "b"))
    assert r.returncode == 0
    assert [line.split()[0] for line in r.stdout.splitlines()[1:6]] == [
        "LEARNING_RATE", "MOMENTUM", "STEPS", "WARMUP", "USE_NESTEROV"]


def test_task_file_example_in_docstring_is_valid():
    # the docstring of the space module shows annotations; keep them parseable
    from autoresearch.agents import space as mod

    examples = [line.strip() for line in (mod.__doc__ or "").splitlines() if "# search:" in line]
    s = space_of({"x.py": textwrap.dedent("\n".join(examples)).encode() + b"\n"})
    assert {p.name for p in s.params} == {"LR", "DEPTH", "HEAD_DIM", "OPTIMIZER"}


# ---------------------------------------------------------------------------------------------
# autoresearch demo


def test_demo_sets_the_budget_and_keeps_the_rest_of_the_task_file():
    from autoresearch.demo import set_budget

    toml = 'name = "cpu-gpt"\ntime_budget = 60                # seconds\ntimeout = 180   # hard\n'
    assert set_budget(toml, 20) == 'name = "cpu-gpt"\ntime_budget = 20                # seconds\ntimeout = 140   # hard\n'


@pytest.mark.slow
def test_demo_runs_the_loop_on_cpu_gpt(tmp_path):
    pytest.importorskip("torch")
    r = cli("demo", str(tmp_path / "demo"), "--trials", "2", "--budget", "3", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    trials = Ledger.read(tmp_path / "demo", "demo").trials()
    assert len(trials) == 3 and trials[0].status is Status.KEEP and trials[0].metric > 0
    assert all(t.agent == "search" for t in trials[1:])
    assert "val_bpb" in r.stdout and ("report: " in r.stdout or "results: " in r.stdout)
    assert git(tmp_path / "demo", "status", "--porcelain") == ""
    again = cli("demo", str(tmp_path / "demo"), "--trials", "1", timeout=900)  # resumes the tag
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(Ledger.read(tmp_path / "demo", "demo").trials()) == 4


def test_demo_without_torch_is_one_line_and_exit_2_before_anything_is_made(tmp_path: Path) -> None:
    """Without PyTorch every trial of the demo's task would crash: it says so at once instead."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None; from autoresearch.cli import main; "
            f"sys.exit(main(['demo', {str(tmp_path / 'demo')!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "PyTorch" in r.stderr and "pip install torch" in r.stderr
    assert not (tmp_path / "demo").exists()


def test_demo_into_a_folder_of_other_things_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """It said it was creating the task there, then refused."""
    (tmp_path / "notes.txt").write_text("mine\n")
    r = cli("demo", str(tmp_path))
    assert r.returncode == 2 and r.stdout == "", r.stdout
    assert r.stderr.strip().count("\n") == 0 and "holds no demo" in r.stderr, r.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.extended
def test_tpe_on_a_small_space_keeps_finding_untried_changes(tmp_path):
    """TPE keeps asking for the best's own values once it has a favourite; after a few such
    asks the free constants are drawn at random, so a space far from used up never ends the
    run as "exhausted" (it used to stop a 48-point space after 18 trials)."""
    exp = ("A = 1  # search: 1..4\nB = 1  # search: 1..6\nFLAG = False\n"
           "print(f'loss: {(A - 3) ** 2 + (B - 5) ** 2 + FLAG}')\n")
    repo = make_task(tmp_path / "t", experiment=exp)
    r = cli("run", str(repo), "--tag", "s", "--trials", "30")
    assert r.returncode == 0, r.stderr[-2000:]
    trials = Ledger.read(repo, "s").trials()
    # (a draw can still miss in 30 asks once most of the space is tried: rarely, never three in a row)
    assert sum(t.status is Status.AGENT_ERROR for t in trials) <= 1, [t.reason for t in trials if t.reason]
    assert min(t.metric for t in trials if t.metric is not None) == 0.0  # the optimum, A=3 B=5 FLAG=False


def test_a_resumed_run_does_not_replay_the_first_runs_proposals(tmp_path):
    exp = "X = 1.0  # search: 0.1..10 log\nY = 1.0  # search: 0.1..10 log\nprint(f'loss: {(X - 2) ** 2 + (Y - 3) ** 2}')\n"
    repo = make_task(tmp_path / "t", experiment=exp)
    for _ in range(3):
        r = cli("run", str(repo), "--tag", "s", "--trials", "4", "--sampler", "random")
        assert r.returncode == 0, r.stderr[-2000:]
    trials = Ledger.read(repo, "s").trials()[1:]
    assert len(trials) == 12 and not [t for t in trials if t.status is Status.DUPLICATE]
    # each run draws from a stream of its own: none asks again for what an earlier run tried
    logs = "".join((repo / ".autoresearch/s/agent" / f"{t.number}.log").read_text() for t in trials)
    assert "tried already" not in logs


def test_a_run_resumed_with_a_large_seed_proposes(tmp_path):
    """A resumed run draws from a stream seeded by --seed and its first trial's number: from
    --seed 4295 on, that seed was past what Optuna's samplers take, and the first trial of every
    resumed run was an agent error (ValueError: Seed must be between 0 and 2**32 - 1)."""
    repo = noisy_task(tmp_path / "t")
    for _ in range(2):
        r = cli("run", str(repo), "--tag", "s", "--trials", "2", "--seed", str(2**32 - 1))
        assert r.returncode == 0, r.stderr[-2000:]
    trials = Ledger.read(repo, "s").trials()
    assert len(trials) == 5 and all(t.status in (Status.KEEP, Status.DISCARD) for t in trials), \
        [(t.number, t.status, t.reason) for t in trials]


def test_space_names_what_it_cannot_search_and_values_off_their_range(tmp_path):
    from autoresearch.agents.spaceview import space_table

    table = space_table(space_of({"m.py": b"BETA1, BETA2 = 0.9, 0.95\nA = B = 5\nLO = 0.1  # search: 0.2..0.5\n"
                                          b"OPT = 5  # search: 1 | 10\nLR = 0.1\n"}))
    assert "not searched: m.py:1 BETA1, BETA2: unpacked together (write one constant per line" in table
    assert "not searched: m.py:2 A, B: chained" in table
    assert "note: m.py:3 LO = 0.1 is outside its `# search:` range 0.2..0.5" in table
    assert "note: m.py:4 OPT = 5 is not among its `# search:` choices" in table
    assert "LR" in table and "note: m.py:5" not in table


def test_run_warns_of_a_search_comment_it_cannot_use(tmp_path):
    """A typo in a `# search:` comment left the constant out of the search without a word at
    `run` (only `autoresearch space` said it): the constant meant to be tuned never was."""
    repo = make_task(tmp_path / "t", experiment="LR = 0.5  # search: 0..1 log\nDEPTH = 5  # search: 10..1\n"
                                                "BS = 8  # search: off\nNAME = 'x'\nX = 1.0\nprint(f'loss: {X + LR}')\n")
    r = cli("run", str(repo), "--tag", "s", "--trials", "1")
    assert r.returncode == 0, r.stderr + r.stdout
    warned = [line for line in r.stderr.splitlines() if "not searched" in line]
    assert warned == [
        "autoresearch: warning: not searched: exp.py:1 LR: bad `# search:` comment: a log range must be positive, "
        "got 0..1; it keeps its value (see `autoresearch space`)",
        "autoresearch: warning: not searched: exp.py:2 DEPTH: bad `# search:` comment: the range 10..1 is empty "
        "(LOW must be < HIGH); it keeps its value (see `autoresearch space`)"], r.stderr  # not BS (off), NAME
    assert Ledger.read(repo, "s").trials()[1].description.startswith("X 1.0 -> ")


def test_run_warns_of_an_annotated_constant_it_leaves_out(tmp_path):
    """A constant with a `# search:` comment is meant to be tuned: assigned twice (`LR = LR *
    BATCH / 256` below it), unpacked, or after the last code, it was left out with a word from
    `space` only, none at `run`. One whose comment turns it off is not warned of."""
    repo = make_task(tmp_path / "t", experiment="LR = 3e-4  # search: 1e-4..1e-3 log\nBATCH = 64\nLR = LR * BATCH / 256\n"
                                                "A, B = 1, 2  # search: 1..4\nWD = 0.1  # search: off\nWD = 0.2\nX = 1.0\n"
                                                "print(f'loss: {X + LR}')\nLATE = 3  # search: 1..9\nLATER = 3  # search off\n")
    r = cli("run", str(repo), "--tag", "s", "--trials", "1")
    assert r.returncode == 0, r.stderr + r.stdout
    warned = [line.split(" not searched: ")[1].split(";")[0] for line in r.stderr.splitlines() if "not searched" in line]
    assert warned == ["exp.py:4 A, B: unpacked together (write one constant per line to search it)",
                      "exp.py:1 LR: assigned more than once",
                      "exp.py:9 LATE: after the last statement that runs code (line 8)"], r.stderr


def test_a_search_comment_on_the_line_above_its_constant_is_named_not_dropped(tmp_path):
    """Only a comment at the end of a constant's line is read: one on the line above (where many
    put their comments) left LR searched over the inferred range, and nothing said so."""
    repo = make_task(tmp_path / "t", experiment="import os\n# the learning rate\n# search: 1e-4..1e-2 log\nLR = 3e-4\n"
                                                "# search: off\nDEPTH = 4  # search: 2..8\n# Search: 0.1..0.9\n\nX = 0.5\n"
                                                "print(f'loss: {X + LR}')\n")
    note = "exp.py:3 the `# search:` comment above LR is not read (only one at the end of its line is): move it there"
    r = cli("space", str(repo))
    assert r.returncode == 0 and f"note: {note}" in r.stdout.splitlines(), r.stdout
    assert "DEPTH" not in r.stdout.split("note:", 1)[1] and "exp.py:7" not in r.stdout  # its own comment is read; X's is not right above it
    r = cli("run", str(repo), "--tag", "s", "--trials", "1")
    assert r.returncode == 0 and f"autoresearch: warning: {note}" in r.stderr.splitlines(), r.stderr


AFTER_CODE = b'''"""A script whose constants are not all at the top."""
import os
try:
    import numpy as np
except ImportError:
    np = None
LR = 0.1
print("warming up")  # code between the constants: they are still the top
DEPTH = 4
COMPUTED = DEPTH * 64
B = 2.5  # search: 1..10 int
D = 30  # search: 16..64 step 16
E = 32  # search: 16..64 step 16
F = 0.3  # search: 0..1 step 0.1
H = 5  # search 1..10
S = 5  # search : 1..10
print(LR * DEPTH)
POST = 5
LATE = "x"  # search: a | b
LATER = DEPTH * 2
'''


def test_a_config_module_of_assignments_is_searched_whole():
    """An assignment is no code that ends the top, whatever it calls: a config module's
    constants below `DATA_DIR = os.path.expanduser(...)` are read by whoever imports it."""
    s = space_of({"config.py": b'import os\nDATA_DIR = os.path.expanduser("~/data")\nLR = 3e-4\nBATCH = 64\n'})
    assert [p.name for p in s.params] == ["LR", "BATCH"]


def test_space_names_constants_after_the_code_malformed_comments_and_values_off_their_grid(tmp_path):
    from autoresearch.agents.spaceview import space_table

    s = space_of({"m.py": AFTER_CODE})
    assert [p.name for p in s.params] == ["LR", "DEPTH", "B", "D", "E", "F", "S"]
    table = space_table(s)
    assert "not searched: m.py:18 POST: after the last statement that runs code (line 17)" in table
    assert "not searched: m.py:19 LATE: after the last statement that runs code" in table
    assert "not searched: m.py:15 H: bad `# search:` comment: `# search 1..10` lacks the colon " \
           "(write `# search: 1..10`)" in table
    assert "note: m.py:11 B = 2.5 is not a whole number" in table and "knows it as 2" in table
    assert "note: m.py:12 D = 30 is off the steps of its `# search:` range 16..64 step 16; " \
           "the search knows it as 32" in table
    notes = [line for line in table.splitlines() if line.startswith("note:")]
    assert len(notes) == 2  # E = 32 and F = 0.3 are on their grids
    # computed values are never candidates, and the docs say they are not listed
    assert "COMPUTED" not in table and "LATER" not in table
    r = cli("space", str(make_task(tmp_path / "t", experiment=AFTER_CODE.decode())))
    assert r.returncode == 0 and "exp.py:18 POST: after the last statement that runs code" in r.stdout


def test_search_docs_state_the_precision_the_agent_writes():
    """docs/search.md: three significant digits on a log scale, enough for 1/200 of a linear
    range (four for 0..1, as `X 0.5 -> 0.02005` and `0.9749`)."""
    x = space_of({"m.py": b"X = 0.5  # search: 0..1\nLR = 0.01  # search: 1e-3..1e-1 log\n"})
    assert x.get("X").render(0.0200512)[1] == "0.02005" and x.get("X").render(0.974912)[1] == "0.9749"
    assert x.get("LR").render(0.0123456)[1] == "0.0123"
    docs = (Path(__file__).resolve().parents[1] / "docs" / "search.md").read_text()
    assert "`0..1`: four, so `0.9749` and `0.02005`" in " ".join(docs.split())


def test_a_step_too_small_to_measure_is_widened_on_the_samplers_side(tmp_path):
    """TPE near its favourite asks for steps under MIN_MOVE; they are widened to one that can
    be measured, on the side the sampler went, and the study is told the value written (not
    the one asked), so it learns from what ran."""
    import threading

    from autoresearch.agents.base import Context
    from autoresearch.agents.search import MIN_MOVE, WIDEN
    from autoresearch.records import Trial

    exp = "LR = 0.01  # search: 0.001..0.1 log\nprint(f'loss: {LR}')\n"
    repo = make_task(tmp_path / "t", experiment=exp)
    task = load_task(repo)
    for asked, side in ((0.0101, 1), (0.00995, -1)):
        git(repo, "checkout", "-q", "--", "exp.py")
        agent = SearchAgent(task, sampler="tpe", seed=0)
        agent._study().enqueue_trial({"LR": asked})  # a step of 0.1 % of the log range
        ctx = Context(task=task, workdir=repo, number=1, best=Trial(number=0, status=Status.KEEP),
                      history=(), log_path=tmp_path / "agent.log", ledger_dir=tmp_path, cancel=threading.Event())
        proposal = agent.propose(ctx)
        written = scan_file((repo / "exp.py").read_bytes(), "exp.py").constants[0].value
        move = (math.log(written) - math.log(0.01)) / math.log(100)
        assert MIN_MOVE <= side * move <= WIDEN * MIN_MOVE + 0.01, (asked, written)  # (+ rounding)
        assert proposal.description == f"LR 0.01 -> {written:g}"
        assert agent.pending[1].params["LR"] == pytest.approx(written)  # what Optuna will be told
        assert agent.widened == 1 and agent.refused == 0
    assert "widened to 10%-20% of the range" in (tmp_path / "agent.log").read_text()
    # a constant the sampler was free to move and left where it was is not told as a sample
    exp2 = "LR = 0.01  # search: 0.001..0.1 log\nDEPTH = 4  # search: 2..8 int\nprint(f'loss: {LR}')\n"
    repo2 = make_task(tmp_path / "t2", experiment=exp2)
    agent = SearchAgent(load_task(repo2), sampler="tpe", seed=0, changes=2)
    agent._study().enqueue_trial({"LR": 0.05, "DEPTH": 4})
    ctx2 = Context(task=load_task(repo2), workdir=repo2, number=1, best=Trial(number=0, status=Status.KEEP),
                   history=(), log_path=tmp_path / "agent2.log", ledger_dir=tmp_path, cancel=threading.Event())
    assert agent.propose(ctx2).description == "LR 0.01 -> 0.05"
    assert agent.pending[1].params == {"LR": pytest.approx(0.05)} and agent.widened == 0


def test_widen_keeps_to_the_range_and_the_grid():
    import random

    from autoresearch.agents.search import widen
    from autoresearch.agents.space import Param

    def draws(p: Param, a: float, x: float) -> list[float]:
        rng = random.Random(0)
        return [widen(p, a, x, rng) for _ in range(200)]

    linear = Param(key="D", name="D", path="e.py", line=1, kind="float", low=0.0, high=0.5)
    up = draws(linear, 0.2, 0.21)  # 1 to 2 tenths of the range (0.05 to 0.1), upward
    assert 0.25 - 1e-9 <= min(up) and max(up) <= 0.3 + 1e-9 and len(set(up)) == 200
    down = draws(linear, 0.2, 0.19)
    assert 0.1 - 1e-9 <= min(down) and max(down) <= 0.15 + 1e-9
    turned = draws(linear, 0.48, 0.49)  # no room above: the other side
    assert 0.38 - 1e-9 <= min(turned) and max(turned) <= 0.43 + 1e-9
    either = draws(linear, 0.25, 0.25)  # the sampler went nowhere: a side at random
    assert min(either) < 0.25 < max(either)
    stepped = Param(key="S", name="S", path="e.py", line=1, kind="float", low=0.0, high=1.0, step=0.05)
    assert {round(y, 9) for y in draws(stepped, 0.5, 0.51)} == {0.65, 0.7}  # 0.6 to 0.7, up to the grid
    logs = Param(key="L", name="L", path="e.py", line=1, kind="float", low=1e-4, high=1e-2, log=True)
    moves = [math.log10(y / 1e-3) / 2 for y in draws(logs, 1e-3, 1.01e-3)]  # shares of the log range
    assert 0.1 - 1e-9 <= min(moves) and max(moves) <= 0.2 + 1e-9


def test_a_proposal_stopped_before_it_was_measured_may_be_made_again(tmp_path):
    """Ctrl-C during trial 1 leaves its code unmeasured (interrupted): the resumed search may
    propose it again. It was counted as tried, so in a space of two booleans one of the four
    codes was never measured and the search said it had nothing left to propose."""
    marker = tmp_path / "running"
    repo = make_task(tmp_path / "t", toml_extra="", experiment=textwrap.dedent(f"""\
        import os, time
        A = False
        B = False
        if os.environ["AUTORESEARCH_TRIAL"] == "1":
            open({str(marker)!r}, "w").close()
            time.sleep(60)
        print(f"loss: {{3 - A - 0.5 * B}}")
        """))
    proc = subprocess.Popen([sys.executable, "-m", "autoresearch", "run", str(repo), "--tag", "s", "--trials", "5"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(marker)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130
    finally:
        proc.kill()
    r = cli("run", str(repo), "--tag", "s", "--trials", "5")
    assert r.returncode == 0, r.stderr + r.stdout
    trials = Ledger.read(repo, "s").trials()
    assert trials[1].status is Status.INTERRUPTED
    measured = {git(repo, "rev-parse", f"{t.commit}^{{tree}}") for t in trials if t.status in (Status.KEEP, Status.DISCARD)}
    assert len(measured) == 4 and git(repo, "rev-parse", f"{trials[1].commit}^{{tree}}") in measured


def test_an_exhausted_space_waits_for_the_trials_in_flight_before_it_ends_the_loop(tmp_path):
    """With a proposal prepared ahead, the search found nothing untried three times while trial 1
    still ran, and the loop ended: a keep of trial 1 could have opened changes not yet tried.
    It now asks again once the trials in flight have ended, and ends only then (exit 0)."""
    repo = make_task(tmp_path / "t", experiment=(
        "import time\nFLAG = False\nif FLAG:\n    time.sleep(3)\nprint(f'loss: {1.0 if FLAG else 2.0}')\n"))
    r = cli("run", str(repo), "--tag", "s", "--trials", "20", "--agent-concurrency", "1")
    assert r.returncode == 0, r.stderr + r.stdout
    trials = Ledger.read(repo, "s").trials()
    one = trials[1]
    assert one.status is Status.KEEP and one.description == "FLAG False -> True"
    errors = [t for t in trials if t.status is Status.AGENT_ERROR]
    assert all("no untried change" in t.reason for t in errors)
    assert errors[-1].started >= one.ended  # asked again after trial 1 ended, before the loop ended
    assert "nothing left to propose" in r.stdout + r.stderr


def test_a_file_that_starts_with_a_byte_order_mark_is_searched_and_edited_in_place():
    """A Windows editor's BOM: the first constant's value is read and rewritten where it stands
    (it was read as '' and the edit turned `A = 3` into `A2 = 3`)."""
    data = b"\xef\xbb\xbfA = 3  # search: 1..9\nLR = 0.01\nprint(A, LR)\n"
    (a, lr) = scan_file(data, "cfg.py").constants
    assert (a.text, lr.text) == ("3", "0.01")
    edited = apply_edits(data, [(a.start, a.end, "7"), (lr.start, lr.end, "0.02")])
    assert edited == b"\xef\xbb\xbfA = 7  # search: 1..9\nLR = 0.02\nprint(A, LR)\n"


def test_a_linked_editable_file_is_not_searched(tmp_path):
    """src/cfg.py, a link committed to a file outside the repository: an edit would go through
    it, where git sees nothing (two trials of one commit, the first's value left behind)."""
    outside = tmp_path / "outside_cfg.py"
    outside.write_text("Y = 2\n")
    root = make_task(tmp_path / "task", experiment="import cfg\nX = 3.0\nprint(f'loss: {X + cfg.Y}')\n")
    (root / "cfg.py").symlink_to(outside)
    (root / "autoresearch.toml").write_text((root / "autoresearch.toml").read_text().replace(
        'editable = ["exp.py"]', 'editable = ["exp.py", "cfg.py"]'))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "cfg.py, a link")
    listed = cli("space", str(root))
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:-1]] == ["X"], listed.stdout
    r = cli("run", str(root), "--tag", "t", "--agent", "search", "--trials", "2")
    assert r.returncode == 0, r.stderr
    assert outside.read_text() == "Y = 2\n"


def test_constants_too_large_or_too_small_for_a_range_are_left_out_not_a_crash(tmp_path: Path) -> None:
    """EPS = 5e-324 was given the log range 0.0..2e-323, and the sampler refused it after the
    baseline (a traceback, trial 1 left running); A = 1e308 got 2.5e307..inf, and every trial an
    OverflowError; `# search: 0..1e400` a traceback in `space`. Each is now left out, with why."""
    exp = ("EPS = 5e-324\nA = 1e308\nB = 12345678901234567890\nC = 1.0  # search: 0..1e400\n"
           "LR = 0.01\nprint(f'loss: {LR}')\n")
    repo = make_task(tmp_path / "task", experiment=exp)
    r = cli("space", str(repo))
    assert r.returncode == 0, r.stderr
    for line in ("EPS: 5e-324 is too small to infer a range from", "A: 1e+308 is too large to infer a range from",
                 "B: 12345678901234567890 is too large", "C: bad `# search:` comment: the range 0..1e400 is not finite"):
        assert line in r.stdout, r.stdout
    r = cli("run", str(repo), "--tag", "t", "--trials", "3")
    assert r.returncode == 0, r.stderr
    led = Ledger.read(repo, "t")
    try:
        assert all(t.status is not Status.AGENT_ERROR and t.status.finished for t in led.trials())
    finally:
        led.close()


def test_an_agent_that_fails_to_take_in_a_trial_does_not_end_the_loop(tmp_path: Path) -> None:
    """`observe` is the agent's code too: an error there ended a long loop with a traceback."""
    from autoresearch.agents.base import BaseAgent, Context, Proposal

    class Forgetful(BaseAgent):
        name = "forgetful"

        def propose(self, ctx: Context) -> Proposal:
            path = ctx.workdir / "exp.py"
            path.write_text(re.sub(r"(?m)^X = .*$", f"X = 2.{ctx.number}", path.read_text()))
            return Proposal(description=f"X = 2.{ctx.number}")

        def observe(self, trial) -> None:  # noqa: ANN001
            raise RuntimeError("cannot learn")

    repo = make_task(tmp_path / "task")
    said: list[str] = []

    class Told:
        def __getattr__(self, name: str):  # noqa: ANN204 - every event ignored but messages
            return (lambda text: said.append(text)) if name == "message" else (lambda *a, **k: None)

    session = open_session(load_task(repo), "t")
    try:
        Loop(session, Forgetful(), Options(trials=3), events=Told()).run()  # type: ignore[arg-type]
    finally:
        session.close()
    led = Ledger.read(repo, "t")
    try:
        assert [t.status for t in led.trials()] == [Status.KEEP, Status.KEEP, Status.DISCARD, Status.DISCARD]
    finally:
        led.close()
    assert sum("the agent could not take in trial" in m and "RuntimeError: cannot learn" in m for m in said) == 1, said


def test_an_int_constant_is_searched_over_whole_numbers_whatever_its_ranges_ends() -> None:
    """`N = 3  # search: 1.5..6.5` was searched as a float: the search wrote `N = 4.37` into a
    count (`range(N)` fails), and most trials crashed. An int constant is searched over the whole
    numbers of its range (`float` asks for fractions); one with none there says what to write."""
    s = space_of({"m.py": b"N = 3  # search: 1.5..6.5\nWD = 0  # search: 0..0.1\nLR = 1  # search: 0.1..10 log float\n"
                          b"K = 4  # search: 1...10\n"})
    p = {x.name: x for x in s.params}
    assert (p["N"].kind, p["N"].low, p["N"].high, p["N"].range_text) == ("int", 2, 6, "2..6")
    assert all(isinstance(p["N"].render(x)[0], int) for x in (2.2, 4.7, 6))
    assert (p["LR"].kind, p["LR"].low, p["LR"].high) == ("float", 0.1, 10)
    skipped = dict(s.skipped)
    assert skipped["m.py:2"].endswith("no two whole numbers in 0..0.1 (the value is an int: add `float` to search fractions)")
    # (`1...10` was read as 1 to .10: "the range is empty")
    assert skipped["m.py:4"].endswith("`1...10`: a range is written with two dots, LOW..HIGH")


def test_a_power_of_two_written_as_a_shift_is_searched_and_stays_a_shift() -> None:
    """`BATCH = 1 << 19` was not a literal to the search: neither searched nor listed."""
    p = {x.name: x for x in space_of({"m.py": b"BATCH = 1 << 19\nODD = 3 << 2\nBIG = 1 << 999\n"}).params}
    assert (p["BATCH"].value, p["BATCH"].scale_text, p["BATCH"].range_text) == (2**19, "powers of 2 int", "131072..2097152")
    assert p["BATCH"].render(p["BATCH"].sampled(2**18), p["BATCH"].text)[1] == "1 << 18"
    assert p["ODD"].value == 12 and p["ODD"].render(24, p["ODD"].text)[1] == "24"
    assert "BIG" not in p


def test_a_file_with_lone_cr_line_ends_keeps_each_comment_on_its_own_constant() -> None:
    """Python ends a line at a lone CR (old Mac line ends); the comments were read as one line,
    so A took B's `# search:` comment and B none."""
    from autoresearch.agents.constants import apply_edits, scan_file

    data = b"A = 3  # search: 1..9\rB = 0.5  # search: 0.1..0.9\rprint(A)\r"
    p = {x.name: x for x in space_of({"m.py": data}).params}
    assert (p["A"].range_text, p["B"].range_text, p["B"].annotated) == ("1..9", "0.1..0.9", True)
    a = next(c for c in scan_file(data, "m.py").constants if c.name == "A")
    assert apply_edits(data, [(a.start, a.end, "5")]) == data.replace(b"A = 3", b"A = 5")


def test_a_resume_learns_each_search_trial_from_its_record_even_with_its_code_gone(tmp_path):
    """A trial the search agent proposed records the constants it moved (`extra["search"]`);
    a resumed search learns them from there (parsing every trial's file again took seconds at
    thousands of trials), so it learns them as well where only the kept trials' commits are
    left (the branch pushed and the tag's folder carried to another clone, say)."""
    repo = noisy_task(tmp_path / "t")
    r = cli("run", str(repo), "--tag", "s", "--trials", "8", "--seed", "5")
    assert r.returncode == 0, r.stderr + r.stdout
    task = load_task(repo)
    led = Ledger.read(repo, "s")
    trials = [t for t in led.trials() if t.status.finished]
    led.close()

    def learnt() -> list[tuple[dict[str, object], float | None]]:
        agent = SearchAgent(task, seed=1)
        for t in trials:
            agent.observe(t)
        return [(s.params, s.value) for s in agent.study.trials]

    before = learnt()
    assert len(before) == 9 and all(p for p, _ in before)  # the baseline and every search trial
    gone = [t for t in trials if t.status is not Status.KEEP]
    assert gone  # (a discard or a crash in 8 trials of a noisy bowl)
    for t in gone:  # their refs and commits gone: only the branch's trials are left
        git(repo, "update-ref", "-d", f"refs/autoresearch/s/trials/{t.number}")
    git(repo, "reflog", "expire", "--expire=now", "--all")
    git(repo, "gc", "-q", "--prune=now")
    assert all(subprocess.run(["git", "cat-file", "-e", t.commit], cwd=repo).returncode != 0 for t in gone)
    assert learnt() == before
