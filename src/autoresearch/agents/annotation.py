"""`# search: ...` comments: the range, scale, type, step or choices a constant is searched
over (`space` turns them into parameters). A malformed one raises ValueError with a message
fit for the user; a near miss (`# search 1..10`, an option misspelt) is malformed, not free text.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass

from autoresearch.agents.constants import NotLiteral, value_of_text

OFF_WORDS = {"off", "no", "skip", "fixed", "none"}
OPTIONS = ["log", "linear", "int", "float", "step"]
# what ML code calls a log scale (Optuna's and Ray Tune's `loguniform` among them): any other word
# there is free text, so a synonym left out here would search the range on a linear scale
LOG_WORDS = {"log", "logarithmic", "log-scale", "logscale", "log_scale", "loguniform", "log-uniform",
             "log_uniform"}
# `# search 1..10`, `# search= a | b`, `# search off`: meant as an annotation, the colon missing
MALFORMED = re.compile(r"#\s*search\b\s*[=\-;,.]?\s*(?=\S+\s*(?:\.\.|\|)|(?:off|no|skip|fixed|none)\b)",
                       re.IGNORECASE)


@dataclass(frozen=True)
class Annotation:
    off: bool = False
    low: float | None = None
    high: float | None = None
    log: bool | None = None
    kind: str | None = None  # "int" or "float" when stated
    step: float | None = None
    choices: tuple[str, ...] = ()


def parse_annotation(comment: str) -> Annotation | None:
    """The `search:` part of a comment (None if there is none); raises ValueError when it is
    malformed, with a message fit for the user."""
    m = re.search(r"\bsearch\s*:\s*(.*)$", comment, re.IGNORECASE)
    if not m:
        _colon_missing(comment)
        return None
    spec = m.group(1).strip()
    word = spec.split(maxsplit=1)[0].lower() if spec else ""
    first = spec.split("|", 1)[0].strip()
    if "|" in spec and ".." not in first and (word.rstrip(".,;") not in OFF_WORDS or first.lower() == word):
        return Annotation(choices=_choices(spec))  # (`none | layer | rms`: a choice, not `off`)
    if word.rstrip(".,;") in OFF_WORDS:
        return Annotation(off=True)
    r = re.match(r"(?P<lo>\S+?)\s*\.\.\s*(?P<hi>[^\s,;]+)[,;]?(?P<rest>.*)$", spec)  # (`1..5, int`)
    if not r:
        raise ValueError(f"expected `search: LOW..HIGH [log] [int] [step S]` or `search: A | B`, got {spec!r}")
    low, high = _range(r.group("lo"), r.group("hi"))
    log, kind, step = _options(r.group("rest").split())
    if log and low <= 0:
        raise ValueError(f"a log range must be positive, got {r.group('lo')}..{r.group('hi')}")
    if log and step is not None:
        raise ValueError("`log` and `step` cannot be combined")
    return Annotation(low=low, high=high, log=log, kind=kind, step=step)


def _colon_missing(comment: str) -> None:
    """Raise when a comment with no `search:` was meant as one (`# search 1..10`)."""
    bad = MALFORMED.match(comment.strip())
    if bad:
        fixed = "# search: " + comment.strip()[bad.end():]
        raise ValueError(f"`{comment.strip()}` lacks the colon (write `{fixed}`)")


def _range(lo: str, hi: str) -> tuple[float, float]:
    """LOW..HIGH as two finite numbers, LOW < HIGH."""
    try:
        low, high = float(value_of_text(lo)), float(value_of_text(hi))
    except (NotLiteral, SyntaxError, TypeError, ValueError):
        raise ValueError(f"the range {lo}..{hi} is not two numbers") from None
    if not (math.isfinite(low) and math.isfinite(high)) or max(abs(low), abs(high)) >= 1e300:
        raise ValueError(f"the range {lo}..{hi} is not finite")
    if not low < high or hi.startswith("."):  # (`1...10`: 1 to .10)
        raise ValueError(f"`{lo}..{hi}`: a range is written with two dots, LOW..HIGH"
                         if hi.startswith(".") else f"the range {lo}..{hi} is empty (LOW must be < HIGH)")
    return low, high


def _options(words: list[str]) -> tuple[bool | None, str | None, float | None]:
    """The options after the range (log or linear, int or float, step S), up to the first word
    that is none of them: free text, unless it is a near miss of one (`lgo`)."""
    log: bool | None = None
    kind = None
    step = None
    i = 0
    while i < len(words):
        w = words[i].lower().rstrip(",;")
        if not w[:1].isalpha():
            break  # free text after the options
        if w in LOG_WORDS or w in ("linear", "lin", "uniform"):
            log = w in LOG_WORDS
        elif w in ("int", "float"):
            kind = w
        elif w == "step" and i + 1 < len(words):
            try:
                step = float(value_of_text(words[i + 1]))
            except (NotLiteral, SyntaxError, TypeError, ValueError):
                raise ValueError(f"`step {words[i + 1]}` is not a number") from None
            if not step > 0:
                raise ValueError(f"`step {words[i + 1]}` must be > 0")
            i += 1
        elif difflib.get_close_matches(w, OPTIONS, n=1, cutoff=0.6):
            near = difflib.get_close_matches(w, OPTIONS, n=1, cutoff=0.6)[0]
            raise ValueError(f"unknown option {words[i]!r} (did you mean {near!r}?)")
        else:
            break  # free text
        i += 1
    return log, kind, step


def _choice(text: str) -> str | None:
    """One choice as Python source (a bare word is a string), or None."""
    try:
        value_of_text(text)
        return text
    except (NotLiteral, SyntaxError, TypeError, ValueError, MemoryError, RecursionError):
        return repr(text) if re.fullmatch(r"[\w.\-]+", text) else None


def _choices(spec: str) -> tuple[str, ...]:
    out = []
    parts = spec.split("|")
    for i, part in enumerate(parts):
        text = part.strip()
        if not text:
            raise ValueError(f"an empty choice in {spec!r}")
        choice = _choice(text)
        if choice is None and i == len(parts) - 1:  # text may follow the last option: `a | b  (why)`
            heads = (text[:m.start()] for m in reversed(list(re.finditer(r"\s+", text))))
            choice = next((c for c in map(_choice, heads) if c is not None), None)
        if choice is None:
            raise ValueError(f"the choice {text!r} is not a Python literal")
        out.append(choice)
    # one of each value (`4 | 8 | 8`, `adamw | "adamw"`): a value given twice would be drawn twice as often
    seen: dict[tuple[str, str], str] = {}
    for choice in out:
        value = value_of_text(choice)
        seen.setdefault((type(value).__name__, repr(value)), choice)
    if len(seen) < 2:
        raise ValueError(f"give at least two different choices, got {spec!r}")
    return tuple(seen.values())
