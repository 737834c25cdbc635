"""UPPER_CASE constants in Python source: where each value's text is, what it is, and how to
write a new one back.

Reading is by `ast` (values) and `tokenize` (trailing comments); writing replaces exact byte
spans, so a file changes only where a value's text is replaced: formatting, comments and line
endings stay byte for byte. Only literal values are read: numbers, booleans, simple expressions
of numbers (`2**19`, `3e-4 * 2`, `-0.5`) and other Python literals (strings, tuples); nothing
is ever evaluated beyond that.
"""

from __future__ import annotations

import ast
import io
import math
import operator
import re
import tokenize
from dataclasses import dataclass, field
from typing import Any

NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")


class NotLiteral(ValueError):
    """A value that is not a literal the search may read or write."""


# ---------------------------------------------------------------------------------------------
# literal values


_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
           ast.Pow: operator.pow, ast.LShift: operator.lshift}


def number_of(node: ast.AST) -> int | float:
    """The value of a numeric literal expression (`3`, `-1e-3`, `2**19`, `1 << 19`, `3e-4 * 2`)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
            and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        value = number_of(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = number_of(node.left), number_of(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > 256 or abs(left) > 1e6):
            raise NotLiteral("too large a power")
        if isinstance(node.op, ast.LShift) and not (type(left) is int and type(right) is int and 0 <= right <= 256):
            raise NotLiteral("a shift of whole numbers by 0 to 256 bits only")
        try:
            result = _BINOPS[type(node.op)](left, right)
        except (ArithmeticError, ValueError) as e:
            raise NotLiteral(str(e)) from None
        if isinstance(result, complex) or not math.isfinite(result):
            raise NotLiteral("not a finite real number")
        return result
    raise NotLiteral("not a numeric literal")


def value_of(node: ast.AST) -> Any:
    """A constant's value: a number (or numeric expression), a boolean, or any Python literal."""
    if isinstance(node, ast.Constant) and isinstance(node.value, bool):
        return node.value
    try:
        return number_of(node)
    except NotLiteral:
        pass
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise NotLiteral("not a literal") from None


def value_of_text(text: str) -> Any:
    return value_of(ast.parse(text.strip(), mode="eval").body)


def power_form(node: ast.AST) -> int | None:
    """The base B of a constant written `B**E` with whole numbers, B >= 2 (else None)."""
    if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow)
            and isinstance(node.left, ast.Constant) and type(node.left.value) is int
            and isinstance(node.right, ast.Constant) and type(node.right.value) is int
            and node.left.value >= 2 and node.right.value >= 1):
        return node.left.value
    return None


def power_base_of(text: str) -> int | None:
    try:
        return power_form(ast.parse(text.strip(), mode="eval").body)
    except SyntaxError:
        return None


# ---------------------------------------------------------------------------------------------
# formatting values as compact literals


def _short_exponent(text: str) -> str:
    return re.sub(r"e([+-]?)0*(\d)", lambda m: "e" + m.group(1).replace("+", "") + m.group(2), text)


def format_float(value: float, digits: int = 3, sci: bool = False) -> str:
    """`value` rounded to `digits` significant digits as a short float literal (always with a
    '.' or an exponent, so it stays a float)."""
    if value == 0:
        return "0.0"
    rounded = float(f"{value:.{digits}g}")
    if sci:
        mantissa, exp = f"{rounded:.{digits - 1}e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".") if "." in mantissa else mantissa
        return f"{mantissa}e{int(exp)}"
    text = _short_exponent(repr(rounded))
    return text


def format_value(value: Any, template: str = "") -> str:
    """A value as source text in the style of `template` (the text it replaces)."""
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        radix = re.match(r"\s*[-+]?\s*0([xXoObB])", template)
        if radix:  # 0x10 stays hexadecimal (0xFF in capitals: 0xAB), 0o17 octal, 0b1010 binary
            digits = format(abs(value), radix.group(1).lower())
            digits = digits.upper() if any(ch.isupper() for ch in template[radix.end():]) else digits
            return ("-" if value < 0 else "") + "0" + radix.group(1) + digits
        shift = re.fullmatch(r"\s*1\s*<<\s*\d+\s*", template)
        if shift and value > 0 and value & (value - 1) == 0:  # 1 << 19 stays a shift: 1 << 18
            return f"1 << {value.bit_length() - 1}"
        return f"{value:_}" if "_" in template else str(value)
    if isinstance(value, float):
        return format_float(value, sci="e" in template.lower() and "**" not in template)
    quote = re.match(r"\s*[rRuU]*(['\"])", template) if isinstance(value, str) else None
    if quote:  # in the original's quotes (repr picks its own: 'sgd' where "adamw" was)
        return quote_string(value, quote.group(1))
    return repr(value)


def quote_string(value: str, quote: str) -> str:
    """`value` as a string literal between `quote`s, escaped as repr escapes it (a backslash, a
    newline), the quote too."""
    return quote + "".join("\\" + ch if ch == quote else ch if ch in "'\"" else repr(ch)[1:-1]
                           for ch in value) + quote


def short(value: Any, digits: int = 4) -> str:
    """A value for a description or a table: compact, never long."""
    if isinstance(value, float) and not isinstance(value, bool):
        return format_float(value, digits)
    text = repr(value) if not isinstance(value, int) or isinstance(value, bool) else str(value)
    return text if len(text) <= 24 else text[:21] + "..."


# ---------------------------------------------------------------------------------------------
# constants in a file


@dataclass(frozen=True)
class Constant:
    """One UPPER_CASE module-level assignment: where its value's text is and what it is."""

    name: str
    path: str
    line: int
    start: int  # byte offsets of the value's text in the file
    end: int
    text: str
    value: Any
    comment: str
    power_base: int | None = None


@dataclass
class FileScan:
    constants: list[Constant] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (where, why)
    # `# search:` comments on a line of their own just above a constant (file:line, the constant):
    # only a comment at the end of the constant's line is read, so it is searched as if unannotated
    above: list[tuple[str, str]] = field(default_factory=list)
    # of `skipped`, those whose line has a `# search` comment: (where, why, the comment)
    annotated: list[tuple[str, str, str]] = field(default_factory=list)
    # constants set again inside a block below (`if SMOKE: DEPTH = 2`): (where, name, what to say);
    # still searched (whether the block runs is not known), and `space` says so
    again: list[tuple[str, str, str]] = field(default_factory=list)

    def skip(self, where: str, why: str, comment: str = "") -> None:
        self.skipped.append((where, why))
        if re.search(r"\bsearch\b", comment, re.IGNORECASE):
            self.annotated.append((where, why, comment))


def _comments(data: bytes) -> dict[int, str]:
    """Each comment by its line, counted as `ast` counts them (a lone CR ends a line too)."""
    out: dict[int, str] = {}
    for tok in tokenize.tokenize(io.BytesIO(data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")).readline):
        if tok.type == tokenize.COMMENT:
            out[tok.start[0]] = tok.string
    return out


_DEFINES = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
            ast.Pass)


def runs_code(stmt: ast.stmt) -> bool:
    """Whether a module-level statement runs code: anything but an import, a def, a class, a
    docstring, an assignment, or an `if`/`try` made of those. (An assignment that calls
    something, `DATA_DIR = os.path.expanduser(...)` in a config module, sets a value that
    later code may read, as the constants below it are read by whoever imports the module.)"""
    if isinstance(stmt, _DEFINES):
        return False
    if isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        return False
    if isinstance(stmt, ast.Expr):
        return not (isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str))
    if isinstance(stmt, (ast.If, ast.Try)):
        inner = [*stmt.body, *stmt.orelse, *getattr(stmt, "finalbody", [])]
        inner += [s for h in getattr(stmt, "handlers", []) for s in h.body]
        return any(runs_code(s) for s in inner)
    return True


def scan_file(data: bytes, path: str) -> FileScan:
    """Every UPPER_CASE constant at module level of a Python file but those after its last
    statement that runs code (nothing reads them once they are set: `POST = 5` after the final
    print). Names assigned more than once are skipped (which assignment counts would be a
    guess); so are constants after the code with a literal value or a `# search` comment, with
    the reason."""
    scan = FileScan()
    try:
        data.decode("utf-8")
        tree = ast.parse(data)
        comments = _comments(data)
    except (UnicodeDecodeError, SyntaxError, tokenize.TokenError, ValueError) as e:
        why = f"{e.msg} (line {e.lineno})" if isinstance(e, SyntaxError) else str(e)  # (not `(<unknown>, line 2)`)
        scan.skipped.append((path, f"cannot parse the file: {why}"))
        return scan
    last = max((i for i, stmt in enumerate(tree.body) if runs_code(stmt)), default=len(tree.body))
    seen, found = _assignments(tree, last, path, comments, scan)
    _nested(tree, path, comments, scan)
    code_line = tree.body[last].lineno if last < len(tree.body) else 0
    starts = _line_starts(data)
    blocks = _set_in_blocks(tree)
    for name, node, after, first in found:
        where = f"{path}:{node.lineno}"
        comment = comments.get(node.end_lineno or node.lineno, "")
        if seen[name] > 1:
            scan.skip(where, f"{name}: assigned more than once", comment)
        elif after:
            if _value(node) is not NotLiteral or re.search(r"\bsearch\b", comment, re.IGNORECASE):
                scan.skip(where, f"{name}: after the last statement that runs code (line {code_line}); move "
                          "it up to search it", comment)
        else:
            scan.constants.append(_constant(data, starts, path, name, node, comment))
            scan.again += [(where, name, f"{name} is set again at line {line}, under `{head}` (line {block}): "
                            "when that runs, it replaces the value the search writes")
                           for line, block, head in blocks.get(name, []) if block > node.lineno]  # (one above: the constant wins)
            if not ANNOTATION.search(comment):
                scan.above += [(f"{path}:{n}", name) for n in _comment_block(data, starts, comments, first)
                               if ANNOTATION.match(comments[n])]
    return scan


def _assignments(tree: ast.Module, last: int, path: str, comments: dict[int, str],
                 scan: FileScan) -> tuple[dict[str, int], list[tuple[str, ast.expr, bool, int]]]:
    """How often each module-level name is assigned, and the UPPER_CASE constants assigned
    one to a line (name, value, whether after statement `last`, line); an annotated name that
    is not UPPER_CASE, and constants unpacked or chained together, are skipped with the reason."""
    seen: dict[str, int] = {}
    found: list[tuple[str, ast.expr, bool, int]] = []
    for i, stmt in enumerate(tree.body):
        targets: list[ast.expr] = []
        if isinstance(stmt, ast.Assign):
            targets = stmt.targets
        elif isinstance(stmt, ast.AugAssign) or (isinstance(stmt, ast.AnnAssign) and stmt.value is not None):
            targets = [stmt.target]  # (`LR: float` alone declares a type: no assignment)
        names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
        for n in names:
            seen[n] = seen.get(n, 0) + 1
        if (isinstance(stmt, (ast.Assign, ast.AnnAssign)) and stmt.value is not None
                and len(targets) == 1 and isinstance(targets[0], ast.Name)
                and NAME_RE.match(targets[0].id)):
            found.append((targets[0].id, stmt.value, i > last, stmt.lineno))
        elif (len(targets) == 1 and isinstance(targets[0], ast.Name) and not isinstance(stmt, ast.AugAssign)
              and ANNOTATION.search(note := comments.get(stmt.end_lineno or stmt.lineno, ""))):
            scan.skip(f"{path}:{stmt.lineno}", f"{names[0]}: not UPPER_CASE (name it "
                      f"{names[0].upper().lstrip('_') or 'X'} to search it)", note)
        elif isinstance(stmt, ast.Assign) and any(NAME_RE.match(n) for n in names):
            shown = ", ".join(n for n in names if NAME_RE.match(n))
            how = "unpacked together" if any(isinstance(t, (ast.Tuple, ast.List)) for t in targets) else "chained"
            scan.skip(f"{path}:{stmt.lineno}", f"{shown}: {how} (write one constant per line to search it)",
                      comments.get(stmt.end_lineno or stmt.lineno, ""))
    return seen, found


def _line_starts(data: bytes) -> list[int]:
    """The byte offset of each line's start, in ast's terms (a leading BOM is left out)."""
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0  # (a Windows editor's): ast's offsets leave it out
    starts = [bom]
    for line in data[bom:].splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    return starts


def _value(node: ast.expr) -> Any:
    """The literal value of `node`, or the class NotLiteral when it has none."""
    try:
        return value_of(node)
    except NotLiteral:
        return NotLiteral


def _constant(data: bytes, starts: list[int], path: str, name: str, node: ast.expr, comment: str) -> Constant:
    start = starts[node.lineno - 1] + node.col_offset
    end = starts[(node.end_lineno or node.lineno) - 1] + (node.end_col_offset or 0)
    return Constant(name=name, path=path, line=node.lineno, start=start, end=end,
                    text=data[start:end].decode("utf-8"), value=_value(node),
                    comment=comment, power_base=power_form(node))


ANNOTATION = re.compile(r"#\s*search\s*:", re.IGNORECASE)


def _nested(tree: ast.Module, path: str, comments: dict[int, str], scan: FileScan) -> None:
    """A `# search:` range on an assignment inside a class, a function or a block (`if`, `try`,
    `for`, `with`): skipped with the reason (it was meant to be searched; the search tunes the
    constants assigned at the top level of the file only)."""
    for top in tree.body:
        if isinstance(top, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            where = f"{'class' if isinstance(top, ast.ClassDef) else 'function'} {top.name}"
            fix = "module-level constants: move it to the top of the file"
        elif not isinstance(top, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Expr)) and hasattr(top, "body"):
            where = f"the `{_BLOCKS.get(type(top), 'block')}` block at line {top.lineno}"
            fix = "constants assigned at the top level of the file, outside any block: move it out to search it"
        else:
            continue
        for node in ast.walk(top):
            if not isinstance(node, (ast.Assign, ast.AnnAssign)):
                continue
            target = node.target if isinstance(node, ast.AnnAssign) else (
                node.targets[0] if len(node.targets) == 1 else None)
            comment = comments.get(node.end_lineno or node.lineno, "")
            if isinstance(target, ast.Name) and ANNOTATION.search(comment):
                scan.skip(f"{path}:{node.lineno}", f"{target.id}: inside {where} (the search tunes {fix})", comment)


def _set_in_blocks(tree: ast.Module) -> dict[str, list[tuple[int, int, str]]]:
    """The module-level names assigned inside a top-level block (`if`, `try`, `for`, `with`; not
    in a function or class there): name -> (line, the block's line, its head: `if SMOKE:`, `try:`)."""
    out: dict[str, list[tuple[int, int, str]]] = {}
    for top in tree.body:
        if type(top) not in _BLOCKS:
            continue
        head = _BLOCKS[type(top)] + (f" {ast.unparse(top.test)}"[:40] if isinstance(top, (ast.If, ast.While)) else "") + ":"
        todo: list[ast.AST] = list(ast.iter_child_nodes(top))
        while todo:
            node = todo.pop()
            if isinstance(node, _SCOPES):
                continue  # (their names are their own)
            todo.extend(ast.iter_child_nodes(node))
            name = node.id if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) else (
                node.name if isinstance(node, ast.ExceptHandler) else None)
            if name and NAME_RE.match(name):
                out.setdefault(name, []).append((getattr(node, "lineno", top.lineno), top.lineno, head))
    return {name: sorted(set(where)) for name, where in out.items()}


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.ListComp, ast.SetComp,
           ast.DictComp, ast.GeneratorExp)
_BLOCKS: dict[type, str] = {ast.If: "if", ast.Try: "try", ast.For: "for", ast.AsyncFor: "async for",
                            ast.While: "while", ast.With: "with", ast.AsyncWith: "async with"}


def _comment_block(data: bytes, starts: list[int], comments: dict[int, str], line: int) -> list[int]:
    """The lines of the comments on lines of their own right above `line` (1-based)."""
    out = []
    while line > 1 and (line - 1) in comments and data[starts[line - 2]:starts[line - 1]].lstrip().startswith(b"#"):
        line -= 1
        out.append(line)
    return out


def apply_edits(data: bytes, edits: list[tuple[int, int, str]]) -> bytes:
    """Replace byte spans (start, end) of `data` by new texts; nothing else changes."""
    out = data
    for start, end, text in sorted(edits, reverse=True):
        out = out[:start] + text.encode("utf-8") + out[end:]
    return out


