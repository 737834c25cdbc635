"""Bad input, through the real command line: every malformed task file, bad flag and unusable
repository of the test suite (tests/test_task.py and tests/test_bad_input.py), each run as
`python -m autoresearch ...`. An answer is clear when the exit code is 2 and stderr is one line
that names the key, flag or path, with no traceback.

    python bench/bad_input.py [-v]

Prints "bad inputs answered clearly: N of M".
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the cases live with the tests; conftest puts src/ first

import test_bad_input as tb  # noqa: E402
import test_task as tt  # noqa: E402
from conftest import make_task  # noqa: E402


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "autoresearch", *argv], capture_output=True, text=True,
                          errors="replace", timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})


def clear(proc: subprocess.CompletedProcess[str], needle: str) -> str | None:
    """Why the answer is not clear, or None."""
    err = proc.stderr
    if proc.returncode != 2:
        return f"exit {proc.returncode}"
    if "Traceback" in err:
        return "a traceback"
    if err.count("\n") != 1 or not err.startswith("autoresearch"):
        return f"{err.count(chr(10))} lines on stderr"
    if needle not in err:
        return f"does not say {needle!r}"
    return None


def cases(tmp: Path) -> list[tuple[str, list[str], str]]:
    """(label, argv, needle) for every case, with its folder prepared under tmp."""
    out = []
    for i, (label, text, needle) in enumerate(tt.BAD):
        repo = make_task(tmp / f"task{i}", toml=text)
        out.append((f"task file: {label}", ["run", str(repo), "--tag", "x", "--agent", "cli", "--agent-cmd", "true"], needle))
    for i, (label, toml, needle) in enumerate(tb.TASK_CASES):
        repo = tb.write_task(tmp / f"more{i}", toml)
        out.append((f"task file: {label}", ["run", str(repo), "--tag", "x", "--agent", "cli", "--agent-cmd", "true"], needle))
    for i, (label, argv, needle, prepare) in enumerate(tb.FLAG_CASES):
        folder = tmp / f"flag{i}"
        folder.mkdir()
        repo = prepare(folder)
        out.append((f"flags: {label}", [a.replace("{repo}", str(repo)) for a in argv], needle))
    return out


def main() -> int:
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__.strip() + "\n\n-v prints every case's outcome.")
        return 0
    verbose = "-v" in sys.argv
    with tempfile.TemporaryDirectory(prefix="bad-input-") as tmp:
        todo = cases(Path(tmp))
        with ThreadPoolExecutor(max_workers=2) as pool:
            procs = list(pool.map(lambda c: run(c[1]), todo))
    clear_count = 0
    for (label, _, needle), proc in zip(todo, procs, strict=True):
        why = clear(proc, needle)
        clear_count += why is None
        if why is not None or verbose:
            print(f"  {'ok' if why is None else 'UNCLEAR':8} {label:55} {why or proc.stderr.strip()[:100]}")
    print(f"bad inputs answered clearly: {clear_count} of {len(todo)}")
    return 0 if clear_count == len(todo) else 1


if __name__ == "__main__":
    sys.exit(main())
