"""The search space of a task: the UPPER_CASE constants at the top of its editable files (module
level, above the last statement that runs code: see `constants.scan_file`).

A constant is searched when its value is a number, a boolean or a simple literal expression of
numbers (`2**19`, `3e-4 * 2`, `-0.5`). Strings, tuples and the like are left alone unless a
comment gives their choices. The range comes from a trailing comment:

    LR = 3e-3        # search: 3e-4..3e-2 log
    DEPTH = 4        # search: 2..8 int         (text after the options is free, choices too)
    HEAD_DIM = 32    # search: 16..64 step 16
    OPTIMIZER = "adamw"  # search: "adamw" | "sgd"
    SEED = 42        # search: off

and is otherwise inferred from the value (`infer`; the rules, with examples, are in
docs/search.md); a seed (`SEED`, `*_SEED`, scikit-learn's `RANDOM_STATE`) is searched only when
annotated.

Nothing here imports Optuna except `Param.distribution`. Reading and writing the constants'
text is `autoresearch.agents.constants`'s; reading the comments, `autoresearch.agents.annotation`'s.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from autoresearch.agents.annotation import OFF_WORDS, Annotation, parse_annotation
from autoresearch.agents.constants import (
    Constant,
    FileScan,
    NotLiteral,
    format_float,
    format_value,
    power_base_of,
    scan_file,
    short,
    value_of_text,
)
from autoresearch.task import Task, list_files

# ---------------------------------------------------------------------------------------------
# parameters: a constant with a range


@dataclass(frozen=True)
class Param:
    """A searched constant. Optuna samples in the distribution's terms (`sampled`); `render`
    turns a sampled value into the file's value and its source text."""

    key: str  # the Optuna parameter name: NAME, or path:NAME when two files share the name
    name: str
    path: str
    line: int
    kind: str  # "float", "int", "bool" or "choice"
    low: float = 0.0
    high: float = 1.0
    log: bool = False
    step: float | None = None
    choices: tuple[str, ...] = ()  # source texts, for kind "choice"
    sign: int = 1  # -1: the range is over |value| of a negative constant
    base: int | None = None  # searched over the exponent E of base**E
    plain: bool = False  # with `base`: written as the number (128), not as base**E
    annotated: bool = False
    value: Any = None
    text: str = ""
    digits: int = 3  # significant digits written for a float

    def distribution(self) -> Any:
        from optuna import distributions as d

        if self.kind == "bool":
            return d.CategoricalDistribution((False, True))
        if self.kind == "choice":
            return d.CategoricalDistribution(self.choices)
        if self.kind == "int":
            return d.IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return d.FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def sampled(self, value: Any) -> Any:
        """A file value in the distribution's terms, clipped to the range (None when it cannot
        be represented: a string for a number, a sign change, a value not among the choices)."""
        if self.kind == "bool":
            return value if isinstance(value, bool) else None
        if self.kind == "choice":
            for text in self.choices:
                v = value_of_text(text)
                if type(v) is type(value) and v == value:
                    return text
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        x = value * self.sign
        if self.base is not None:
            if x <= 0:
                return None
            x = round(math.log(x) / math.log(self.base))
        elif self.sign < 0 and x <= 0:
            return None
        x = min(max(x, self.low), self.high)
        if self.step:
            x = self.low + round((x - self.low) / self.step) * self.step
            x = min(x, self.high)
        return int(round(x)) if self.kind == "int" else float(x)

    def render(self, x: Any, template: str = "") -> tuple[Any, str]:
        """The file value and source text for a sampled value `x`."""
        if self.kind == "bool":
            return bool(x), repr(bool(x))
        if self.kind == "choice":  # a string in the original's quotes, whichever the choice has
            value = value_of_text(x)
            return value, format_value(value, template) if isinstance(value, str) else str(x)
        if self.kind == "int":
            n = int(x)
            if self.base is not None:
                if self.plain:
                    return self.sign * self.base**n, format_value(self.sign * self.base**n, template)
                return self.sign * self.base**n, ("-" if self.sign < 0 else "") + f"{self.base}**{n}"
            v = self.sign * n
            base = power_base_of(template)
            if base and v > 0 and base ** round(math.log(v, base)) == v:
                return v, f"{base}**{round(math.log(v, base))}"
            return v, format_value(v, template)
        f = self.sign * float(x)
        sci = "e" in template.lower() and "**" not in template
        digits = self.digits
        text = format_float(f, digits, sci)
        # more digits while off the step's grid, or rounded past an end of the range (0.99986 is 1.0,
        # out of `0.99..0.9999`) by more than the end's own rounding (`0..1 step 0.3`: 0.8999999999999999)
        slack = 1e-9 * (self.high - self.low)
        while digits < 17 and (self.step and abs(float(text) - f) > self.step * 1e-3
                               or not self.low - slack <= self.sign * float(text) <= self.high + slack):
            digits += 1
            text = format_float(f, digits, sci)
        return float(text), text

    def move(self, old: Any, new: Any) -> float:
        """How far a change goes, as a share of the range (on the log scale for a log range);
        1.0 for any change of a boolean or a choice or from a value outside the range."""
        a, b = self.sampled(old), self.sampled(new)
        if self.kind in ("bool", "choice") or a is None or b is None:
            return 0.0 if old == new else 1.0
        if self.log:
            return abs(math.log(b) - math.log(a)) / (math.log(self.high) - math.log(self.low))
        return abs(b - a) / (self.high - self.low)

    @property
    def range_text(self) -> str:
        if self.kind == "bool":
            return "False|True"
        if self.kind == "choice":
            return "|".join(self.choices)
        lo, hi = ((-self.high, -self.low) if self.sign < 0 else (self.low, self.high))
        if self.base is not None:
            sign = "-" if self.sign < 0 else ""
            ends = [f"{sign}{self.base ** int(e)}" if self.plain else f"{sign}{self.base}**{int(e)}"
                    for e in (self.low, self.high)]
            return "..".join(reversed(ends) if self.sign < 0 else ends)
        if self.kind == "int":
            return f"{int(lo)}..{int(hi)}" + (f" step {int(self.step)}" if self.step and self.step != 1 else "")
        return f"{short(lo)}..{short(hi)}" + (f" step {short(self.step)}" if self.step else "")

    @property
    def scale_text(self) -> str:
        if self.kind in ("bool", "choice"):
            return self.kind
        scale = "log" if self.log else "linear"
        if self.base is not None:
            scale = f"powers of {self.base}"
        return f"{scale} {self.kind}"


def _float_digits(low: float, high: float, log: bool) -> int:
    """Significant digits that resolve about 1/200 of a linear range (3 for a log range)."""
    digits = 3
    if log or high <= low:
        return digits
    top = max(abs(low), abs(high))
    while digits < 8 and 10 ** (math.floor(math.log10(top)) - digits + 1) > (high - low) / 200:
        digits += 1
    return digits


def infer(const: Constant) -> dict[str, Any]:
    """The range of a constant with no annotation (see the module docstring); raises
    ValueError when its value is not a number or a boolean, or is too large or too small for a
    range to be inferred from it (1e308 * 4 is inf; 5e-324 / 4 is 0)."""
    found = _inferred(const)
    low, high = found.get("low"), found.get("high")
    if found["kind"] in ("int", "float") and "base" not in found and low is not None and high is not None:
        limit = 2.0**53 if found["kind"] == "int" else 1e300
        if not (math.isfinite(low) and math.isfinite(high) and low < high and max(abs(low), abs(high)) < limit
                and (not found.get("log") or low > 0)):
            raise ValueError(f"{const.value!r} is too {'large' if abs(const.value) > 1 else 'small'} to infer a range "
                             "from: annotate it (`# search: LO..HI`)")
    return found


def _inferred(const: Constant) -> dict[str, Any]:
    v = const.value
    if isinstance(v, bool):
        return {"kind": "bool"}
    if isinstance(v, int):
        if const.power_base is not None:
            e = round(math.log(v, const.power_base))
            return {"kind": "int", "base": const.power_base, "low": max(0, e - 1), "high": e + 1}
        if v == 0:
            return {"kind": "int", "low": 0, "high": 2}
        m = abs(v)
        if m >= 16 and m & (m - 1) == 0:  # a power of two (a width, a batch): it stays one
            e = m.bit_length() - 1
            return {"kind": "int", "base": 2, "plain": True, "low": max(0, e - 2), "high": e + 2,
                    "sign": -1 if v < 0 else 1}
        low = max(1, m // 2)
        return {"kind": "int", "low": low, "high": max(2 * m, low + 1), "log": True,
                "sign": -1 if v < 0 else 1}
    if isinstance(v, float):
        if v == 0:
            return {"kind": "float", "low": 0.0, "high": 1.0}
        if 0.5 < v < 1:  # near 1 (a momentum, a beta, a decay): what matters is 1 - v
            gap = 1 - v
            return {"kind": "float", "low": max(v / 4, 1 - 4 * gap), "high": 1 - gap / 4}
        if 0 < v <= 0.5:  # a rate, a fraction, a probability: kept below 1
            return {"kind": "float", "low": v / 4, "high": min(4 * v, (1 + v) / 2), "log": True}
        return {"kind": "float", "low": abs(v) / 4, "high": abs(v) * 4, "log": True,
                "sign": -1 if v < 0 else 1}
    if v is NotLiteral:
        raise ValueError("not a literal")
    kinds: dict[type, str] = {str: "a string", tuple: "a tuple", list: "a list", dict: "a dict"}
    what = kinds.get(type(v), type(v).__name__)
    raise ValueError(f"{what}: annotate it (`# search: A | B`) to search it")


def from_annotation(const: Constant, ann: Annotation) -> dict[str, Any]:
    if ann.choices:
        return {"kind": "choice", "choices": ann.choices}
    v = const.value
    if v is NotLiteral or isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError("a range needs a number (give choices with `# search: A | B`)")
    assert ann.low is not None and ann.high is not None
    kind = ann.kind or ("int" if isinstance(v, int) else "float")  # (`N = 3  # search: 1.5..6.5`: 2..6)
    low, high, step = ann.low, ann.high, ann.step
    if kind == "int":
        low, high = float(math.ceil(low)), float(math.floor(high))
        step = float(max(1, round(step))) if step else None
        if not low < high:
            raise ValueError(f"no two whole numbers in {ann.low:g}..{ann.high:g}"
                             + ("" if ann.kind else " (the value is an int: add `float` to search fractions)"))
    if step:
        high = low + math.floor((high - low) / step + 1e-9) * step
        if not low < high:  # (the search would only ever write LOW)
            raise ValueError(f"`step {ann.step:g}` leaves one value in {ann.low:g}..{ann.high:g}")
    return {"kind": kind, "low": low, "high": high, "log": bool(ann.log), "step": step}


class BadAnnotation(ValueError):
    """A `# search:` comment that asks for a search the constant cannot have (a typo there leaves
    the constant you meant to tune as it is)."""


def make_param(const: Constant, key: str) -> Param:
    """The parameter for a constant; raises ValueError (the reason) when it is not searched,
    BadAnnotation when its `# search:` comment cannot be used."""
    try:
        ann = parse_annotation(const.comment)
    except ValueError as e:
        raise BadAnnotation(f"bad `# search:` comment: {e}") from None
    if ann is not None and ann.off:
        raise ValueError("`# search: off`")
    if ann is None and (const.name in ("SEED", "RANDOM_STATE") or const.name.endswith(("_SEED", "_RANDOM_STATE"))):
        raise ValueError("a seed: tuning it fits the noise (annotate it to search it anyway)")
    if ann is None:
        spec = infer(const)
    else:
        try:
            spec = from_annotation(const, ann)
        except ValueError as e:
            raise BadAnnotation(f"bad `# search:` comment: {e}") from None
    p = Param(key=key, name=const.name, path=const.path, line=const.line, annotated=ann is not None,
              value=const.value, text=const.text, **spec)
    if p.kind == "float":
        p = replace(p, digits=_float_digits(p.low, p.high, p.log))
    return p


# ---------------------------------------------------------------------------------------------
# the space of a task


@dataclass
class Space:
    params: list[Param] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file:line, why)
    # of those, the constants whose `# search:` comment could not be used (BadAnnotation: said
    # when a run starts)
    broken: list[tuple[str, str]] = field(default_factory=list)
    above: list[tuple[str, str]] = field(default_factory=list)  # FileScan.above's
    again: list[tuple[str, str]] = field(default_factory=list)  # FileScan.again's, of searched constants: (where, note)
    files: list[str] = field(default_factory=list)

    def get(self, key: str) -> Param:
        return next(p for p in self.params if p.key == key)

    @property
    def searched_files(self) -> list[str]:
        """The files that hold a searched constant (`files` is every file scanned)."""
        return [f for f in self.files if any(p.path == f for p in self.params)]

    def unparsed(self) -> str:
        """The files that could not be read as Python, and why (`a.py: cannot parse the file: invalid
        syntax (line 2); `): said when there is nothing to tune, as their constants are not searched."""
        return "".join(f"{where}: {why}; " for where, why in self.skipped
                       if why.startswith("cannot parse the file"))

    def find(self, path: str, name: str) -> Param | None:
        for p in self.params:
            if p.path == path and p.name == name:
                return p
        return None

    def add(self, scans: dict[str, FileScan]) -> list[Param]:
        """Add the constants of `scans` that are not in the space yet; returns the new ones."""
        names: dict[str, int] = {}
        for scan in scans.values():
            for c in scan.constants:
                names[c.name] = names.get(c.name, 0) + 1
        keys = {p.key for p in self.params}
        new = []
        for path, scan in scans.items():
            if path not in self.files:
                self.files.append(path)
            for c in scan.constants:
                if self.find(path, c.name) is not None:
                    continue
                key = c.name if names[c.name] == 1 and c.name not in keys else f"{path}:{c.name}"
                try:
                    p = make_param(c, key)
                except ValueError as e:
                    if c.value is not NotLiteral or re.search(r"\bsearch\b", c.comment, re.I):
                        self.skipped.append((f"{c.path}:{c.line}", f"{c.name}: {e}"))
                    if isinstance(e, BadAnnotation):
                        self.broken.append((f"{c.path}:{c.line}", f"{c.name}: {e}"))
                    continue
                self.params.append(p)
                keys.add(key)
                new.append(p)
            self.skipped.extend(s for s in scan.skipped if s not in self.skipped)
            for where, why, comment in scan.annotated:  # meant to be searched: said at run too
                if not _off(comment) and (where, why) not in self.broken:
                    self.broken.append((where, why))
            self.above.extend(a for a in scan.above if a not in self.above)
            self.again.extend((where, note) for where, name, note in scan.again
                              if self.find(path, name) is not None and (where, note) not in self.again)
        return new


def _off(comment: str) -> bool:
    try:
        return (ann := parse_annotation(comment)) is None or ann.off
    except ValueError:  # (`# search off`: the colon missing, but off)
        return bool(re.search(rf"search\W*(?:{'|'.join(OFF_WORDS)})\b", comment, re.IGNORECASE))


def above_note(name: str) -> str:
    """What `space` and `run` say of a `# search:` comment on the line above constant `name`."""
    return f"the `# search:` comment above {name} is not read (only one at the end of its line is): move it there"


def editable_sources(root: Path, task: Task) -> dict[str, bytes]:
    """The editable Python files under `root` (a task root or a trial's worktree)."""
    out = {}
    for rel in sorted(list_files(root)):
        if rel.endswith(".py") and task.is_editable(rel) and not (root / rel).is_symlink():  # (a link's
            out[rel] = (root / rel).read_bytes()  # target may lie outside: git would not see the edit)
    return out


def scan_files(files: dict[str, bytes]) -> dict[str, FileScan]:
    return {path: scan_file(data, path) for path, data in files.items()}


def space_of(files: dict[str, bytes]) -> Space:
    space = Space()
    space.add(scan_files(files))
    return space
