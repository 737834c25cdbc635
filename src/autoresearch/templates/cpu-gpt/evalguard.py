"""
The evaluator's guard: protected, like prepare.py, and the same file in every ML template.

`python prepare.py --evaluate` imports train.py to rebuild the model it scores, so train.py's
module-level code runs in the very process that prints the figures of record. This module is
what keeps that code from writing them:

    train, verdict = import_train(path, prepare_module)
        imports train.py with the process locked (it can neither end the process early, after
        printing figures of its own, fork or exec, nor set a tracer or a profiler), after noting
        the output and what the scoring runs: the given modules' functions and settings, this
        module's, builtins, every function of torch (down to torch._C._nn, where
        torch.nn.functional calls in), numpy (and np.load's own module), math, os, random,
        pathlib, json, hashlib and sys, every method of a tensor or array, and how many torch
        function and dispatch modes are entered;
    verdict(lines)
        prints the figures of record (or a reject line) last, straight to the output as it was
        before train.py ran, and ends the process at once. The figures become a reject line
        when train.py's code replaced anything the scoring runs or moved the output;
    probe_points(n), check_causal(...)
        probes a few of the scored batches, drawn after train.py's code ran, for a model that
        peeks at later tokens or other rows: two more calls each, of the same shape;
    moved(new, ref)
        how far two calls' predictions lie apart, as every probe (prepare.py's fixed one too)
        judges it.

Everything the verdict runs is bound when import_train starts, before any of train.py's code:
rebinding a module's attribute afterwards (this module's, os's, builtins') does not reach it.
What reaches past attributes (ctypes, frames, the garbage collector's referrers, torch's
dispatcher) can change anything in a process; the figures of record therefore also rest on the
harness's own checks (the hash of every protected file, the sealed holdout), not on this module
alone. docs/trust.md lists what is known to get past it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import numpy as np

EXIT = os._exit  # read before lockdown() refuses it to train.py
REFUSED = ("_exit", "abort", "fork", "forkpty", "system", "kill", "killpg", "posix_spawn", "posix_spawnp",
           "execv", "execve", "execl", "execle", "execlp", "execlpe", "execvp", "execvpe")
EARLY = "autoresearch_reject: train.py ended the evaluation early"


def sealed(modules: tuple[ModuleType, ...]) -> Callable[[list[str]], NoReturn]:
    """The verdict of an evaluation, with all it uses bound now (see the module's docstring)."""
    import builtins
    import hashlib
    import json
    import pathlib

    import torch
    import torch.nn.functional as F

    with contextlib.suppress(Exception):  # loaded now, not by an honest train.py's torch.compile
        import torch._dynamo  # noqa: F401  (its first import rebinds torch.manual_seed)

    write, fstat, dup, end, stdout, stderr = os.write, os.fstat, os.dup, EXIT, sys.stdout, sys.stderr
    vars_, sorted_, callable_, isinstance_, type_ = vars, sorted, callable, isinstance, type
    plain = (int, float, str, bytes, bool, tuple, type(None))
    watched = (*modules, sys.modules[__name__], builtins)
    # every callable of the namespaces the scoring's own tensors and arrays go through (a loss
    # times a mask, a sum, a log, an array read from disk), down to where torch.nn.functional and
    # np.load call in: a function replaced below the one the evaluator names counts as well
    spaces = [(name, vars(space)) for name, space in (
        ("Tensor", torch.Tensor), ("TensorBase", torch._C.TensorBase), ("torch", torch), ("torch._C", torch._C),
        ("torch._C._nn", torch._C._nn), ("torch._C._VariableFunctions", type(torch._C._VariableFunctions)),
        ("F", F), ("torch.nn._reduction", sys.modules.get("torch.nn._reduction")),
        ("torch.overrides", sys.modules.get("torch.overrides")), ("np", np), ("ndarray", np.ndarray),
        ("numpy.lib.format", sys.modules.get("numpy.lib.format")), ("math", math), ("os", os),
        ("random", random), ("SystemRandom", random.SystemRandom), ("Random", random.Random),
        ("Path", pathlib.Path), ("PurePath", pathlib.PurePath), ("PosixPath", pathlib.PosixPath),
        ("json", json), ("hashlib", hashlib), ("sys", sys))
        if space is not None] + [("np.load's module", np.load.__globals__)]
    function_modes, dispatch_modes = torch._C._len_torch_function_stack, torch._C._len_torch_dispatch_stack

    def state() -> dict:
        mine = {f"{'' if m is modules[0] else m.__name__ + '.'}{k}": v
                for m in watched for k, v in vars_(m).items()
                if not k.startswith("__") and not isinstance_(v, ModuleType)}
        theirs = {f"{name}.{k}": v for name, space in spaces for k, v in space.items()
                  if callable_(v) and not isinstance_(v, ModuleType)}
        # a torch function or dispatch mode entered (it sees every torch call, the loss's too)
        modes = {"torch function modes": function_modes(), "torch dispatch modes": dispatch_modes()}
        return {**mine, **theirs, **modes}

    def same(a, b) -> bool:
        return a is b or (type_(a) is type_(b) and isinstance_(a, plain) and (a == b or (a != a and b != b)))

    def identity(fd: int) -> tuple:
        st = fstat(fd)
        return st.st_dev, st.st_ino

    before, fd, output = state(), dup(1), identity(1)

    def verdict(lines: list[str]) -> NoReturn:
        """Print `lines` last and end the process at once, so that nothing train.py left behind (an
        atexit handler, a thread) prints a figure after them; a reject line instead when train.py's
        code replaced what the scoring runs or moved the output (what it printed before could
        then not be told from the figures)."""
        now, code = state(), 0
        changed = sorted_(k for k, v in before.items() if not same(now.get(k), v))
        if changed:
            lines = [f"autoresearch_reject: train.py replaced what the evaluation runs: {', '.join(changed[:5])}"]
        try:
            moved = not (identity(1) == identity(fd) == output)
        except OSError:
            moved = True
        if moved:
            lines, code = ["autoresearch_reject: train.py redirected the evaluator's output"], 3
        for stream in (stdout, stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - train.py may have broken it
                pass
        try:
            write(fd, ("\n".join(lines) + "\n").encode())
        except OSError:
            code = 3
        end(code)

    return verdict


class Peeked(Exception):
    """The model's logits at a position moved with what it must not see: later tokens, or the
    other sequences of its batch (the next window of the text may be one of them)."""


def probe_points(batches: int, count: int = 4) -> set[int]:
    """Which of `batches` scored batches to probe: drawn from the OS's randomness after
    train.py's code ran, so it cannot know which calls of its model are probes."""
    return set(random.SystemRandom().sample(range(batches), min(count, batches)))


def moved(new, ref) -> float:
    """How far the predictions of logits `new` (..., vocab) lie from those of `ref`: the largest
    change of a log-probability, each relative to 1 + its size in `ref`; 0 when nothing moved, nan
    when either holds a nan. Log-probabilities are what is scored (a constant added to a row of
    logits moves none of them), and each change is judged on its own scale: one tolerance scaled
    by the largest logit let a model put one far-out logit where nothing is scored (BOS, a byte
    that never occurs) and peek by as much as that logit was large. Row by row along the first
    dimension, so a batch of logits never has a second copy."""
    worst = 0.0
    for a, b in zip(new, ref, strict=True):
        a, b = a.float().log_softmax(-1), b.float().log_softmax(-1)
        change = ((a - b).abs() / (1 + b.abs())).masked_fill(a == b, 0).max().item()
        if change != change:  # nan: a prediction that is no number
            return change
        worst = max(worst, change)
    return worst


def check_causal(logits_of: Callable, x, ref, other, tol: float = 1e-3) -> None:
    """Raise Peeked if the model peeks, judged on a batch it was just scored on: `x` (B, T) the
    tokens, `ref` the float logits it gave, `other` (B, T) real tokens from elsewhere in the
    split. Two more calls of the same shape: every row but a random one replaced (that row's
    predictions must not move), and every row's tokens after a random position t replaced (the
    predictions up to t must not move). Identical kernels on identical shapes give identical
    values, so an honest model moves by exactly 0; `tol` (see moved) only absorbs
    nondeterministic kernels."""
    rng = random.SystemRandom()
    rows, length = x.shape[0], x.shape[1]
    if rows > 1:
        r = rng.randrange(rows)
        mixed = other.clone()
        mixed[r] = x[r]
        diff = moved(logits_of(mixed)[r : r + 1], ref[r : r + 1])
        if not diff <= tol:
            raise Peeked(f"predictions of one sequence moved by {diff:.3g} when the other sequences of its batch changed")
    t = rng.randrange(length - 1)
    spliced = x.clone()
    spliced[:, t + 1:] = other[:, t + 1:]
    diff = moved(logits_of(spliced)[:, : t + 1], ref[:, : t + 1])
    if not diff <= tol:
        raise Peeked(f"predictions at positions <= {t} moved by {diff:.3g} when only later tokens changed")


def lockdown() -> None:
    """Refuse the calls that end, fork or replace the process, and those that would let code
    watch and rewrite the evaluator's frames as they run (a tracer, a profiler), for as long as
    it lives."""

    def refused(*args, **kwargs):
        raise PermissionError("the evaluator does not let train.py end, fork or replace its process, "
                              "or trace it")

    import posix
    import threading

    for module in (os, posix):
        for name in REFUSED:
            if hasattr(module, name):
                setattr(module, name, refused)
    for module, names in ((sys, ("settrace", "setprofile")),  # (not sys.monitoring: torch.compile may use it)
                          (threading, ("settrace", "setprofile", "settrace_all_threads", "setprofile_all_threads"))):
        for name in names:
            if hasattr(module, name):
                setattr(module, name, refused)


def import_train(path: Path, *modules: ModuleType) -> tuple[ModuleType, Callable[[list[str]], NoReturn]]:
    """train.py as a module (it trains only under `if __name__ == "__main__"`, so importing it
    builds nothing) and the verdict that watches what its code does to `modules` (the first is
    the evaluator's own), to this module and to the calls the scoring makes. The output is noted
    and the process locked before any of its code runs. The caller ends with verdict(lines);
    a SystemExit with success from train.py's code on the way should end it as verdict([EARLY])."""
    lockdown()  # first: what it refuses is then the os module's own, not a change of train.py's
    verdict = sealed(modules)
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("train", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train"] = module
    try:
        spec.loader.exec_module(module)
    except SystemExit as e:
        if e.code not in (0, None):
            raise  # a failure: the evaluation fails with it
        verdict([EARLY])
    return module, verdict
