"""The loop's look at the best code's git objects after a `git gc` of yours, against the number
of files in the repository. The loop watches every file of the best commit by its object name
(a rewritten object would feed the evaluator other data); a `git gc` while it runs moves all of
them into a pack at once, and the next look has to tell a gc from a forged pack.

    python bench/objectwatch.py [--files 500,2000,8000]

For each size: a real repository of that many files (in folders of 50), its commit watched as
the loop watches its best, `git gc`, then the look (ObjectWatch.check_and_restore), timed two
ways side by side on the same pack: as it runs (one `cat-file --batch-check` for the objects
that left their loose files, one `verify-pack` per new pack) and object by object (one git
process per object and one read of each from the pack: how the look ran before). Prints the
seconds of each and their ratio.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from autoresearch import objects  # noqa: E402
from autoresearch.gitrepo import Git  # noqa: E402
from autoresearch.treecheck import structure  # noqa: E402

ENV = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}


def make_repo(root: Path, files: int) -> str:
    import os

    subprocess.run(["git", "init", "-q", str(root)], check=True)
    for i in range(files):
        folder = root / f"d{i // 50}"
        folder.mkdir(exist_ok=True)
        (folder / f"f{i}.txt").write_text(f"file {i}\n" * 20)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-qm", "data"], cwd=root, check=True, env={**os.environ, **ENV})
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, check=True, capture_output=True,
                          text=True).stdout.strip()


def watched(git: Git, commit: str) -> objects.ObjectWatch:
    """Remembered as the loop remembers its best: the commit, its trees, every file by name."""
    watch = objects.ObjectWatch(git)
    names = [(path, sha) for path, mode, sha, _ in objects.tree_blobs(git, commit) if mode != "160000"]
    watch.remember([], structure(git, commit), names)
    return watch


class ObjectByObject(objects.ObjectWatch):
    """The look as it ran before: a git process per object that left its loose file, and a read
    of each watched object from a new pack."""

    def _git_has(self, names: list[str]) -> set[str]:
        return {n for n in names if subprocess.run(
            ["git", f"--git-dir={self.common_dir}", "cat-file", "-e", n], capture_output=True).returncode == 0}

    def _verified(self, idx: Path) -> bool:
        return False


def look(watch: objects.ObjectWatch) -> tuple[float, str | None]:
    t0 = time.perf_counter()
    said = watch.check_and_restore()
    return time.perf_counter() - t0, said


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", default="500,2000,8000")
    args = ap.parse_args()
    print(f"{'files':>7} {'batched (s)':>12} {'object by object (s)':>21} {'ratio':>7}")
    for n in (int(x) for x in args.files.split(",")):
        with tempfile.TemporaryDirectory(prefix="bench-objectwatch-") as tmp:
            root = Path(tmp) / "repo"
            commit = make_repo(root, n)
            git = Git(root)
            now, before = watched(git, commit), watched(git, commit)
            before.__class__ = ObjectByObject
            subprocess.run(["git", "gc", "-q"], cwd=root, check=True)
            fast, said_fast = look(now)
            slow, said_slow = look(before)
            if said_fast or said_slow:  # a gc changes no content: neither may call it a rewrite
                sys.exit(f"a gc was taken for a rewrite: {said_fast or said_slow}")
            print(f"{n:>7} {fast:>12.2f} {slow:>21.2f} {slow / fast:>6.1f}x", flush=True)


if __name__ == "__main__":
    main()
