"""`autoresearch init`: a new task repository from a template (git init, files, first commit)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

from autoresearch.errors import AutoresearchError, UsageError
from autoresearch.gitrepo import IDENTITY
from autoresearch.programs import GIT

TEMPLATES = ("cpu-gpt", "nanochat", "blank")


def template_dir(name: str) -> Path:
    if name not in TEMPLATES:
        raise UsageError(f"--template {name!r} is not a template (choose from {', '.join(TEMPLATES)})")
    path = Path(str(resources.files("autoresearch") / "templates" / name))
    if not (path / "autoresearch.toml").is_file():
        raise UsageError(f"the {name} template is not installed with this copy of autoresearch")
    return path


def enclosing_repository(directory: str | os.PathLike[str]) -> Path | None:
    """The root of the git repository `directory` (which may not exist yet) lies in, if any:
    `init` would make a repository nested in that one."""
    here = Path(directory).resolve()
    while not here.is_dir() and here != here.parent:
        here = here.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    try:
        out = subprocess.run([GIT, "rev-parse", "--show-toplevel"], cwd=here, env=env,
                             capture_output=True, text=True)
    except FileNotFoundError:  # no git: `init` says so
        return None
    return Path(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else None


def init(directory: str | os.PathLike[str], template: str = "blank", data: str | None = None) -> Path:
    """Create a task repository in `directory` (new or empty) from `template`, committed."""
    src = template_dir(template)
    dest = Path(directory).resolve()
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest} is a file: give a new folder (or an empty one) for the task")
    if dest.exists() and any(dest.iterdir()):
        raise UsageError(f"{dest} already exists and is not empty: choose a new folder (for a project of "
                         "your own, write an autoresearch.toml in it instead: see the README's task file)")
    if data is not None:
        data_dir = Path(data).expanduser().resolve()
        if not data_dir.is_dir():
            raise UsageError(f"--data {data!r} is not a folder")
        if template == "blank":
            raise UsageError("--data applies to the cpu-gpt and nanochat templates only")
    existed = dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        _fill(dest, src, template, data_dir if data is not None else None)
    except BaseException:  # (a failed git, a full disk, Ctrl-C): nothing half made is left to block a retry
        if existed:
            for item in dest.iterdir():
                shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
        else:
            shutil.rmtree(dest, ignore_errors=True)
        raise
    return dest


def init_here(directory: str | os.PathLike[str], template: str = "blank", data: str | None = None) -> Path:
    """`init`, with a warning on stderr when the new task lands inside another git repository
    (which then lists it as untracked, so that repository's own loops find it dirty)."""
    outer = enclosing_repository(directory)
    dest = init(directory, template, data)
    if outer is not None:
        rel = Path(os.path.relpath(dest, outer)).as_posix()
        print(f"autoresearch: warning: {dest} is inside the git repository {outer}, so it is now a "
              f"repository of its own nested in that one, which does not track its files "
              f"(add `{rel}/` to {outer}/.gitignore, or move the task out)", file=sys.stderr)
    return dest


def _fill(dest: Path, src: Path, template: str, data_dir: Path | None) -> None:
    """The template's files copied into `dest`, `--data` set in its task file, and committed."""
    for item in sorted(src.iterdir()):
        if item.name in ("__pycache__",) or item.name.endswith(".pyc"):
            continue
        if item.is_dir():
            shutil.copytree(item, dest / item.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(item, dest / item.name)
    if data_dir is not None:
        toml = dest / "autoresearch.toml"
        text = toml.read_text()
        value = f"python prepare.py --data {shlex.quote(str(data_dir))}"
        line = 'setup = "' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        text, n = re.subn(r'^setup\s*=\s*"python prepare.py"', lambda _: line, text, count=1, flags=re.MULTILINE)
        if n == 0:
            raise UsageError(f"the {template} template has no setup line to take --data")
        toml.write_text(text)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")}, **IDENTITY}
    # your git config may sign commits (with a key that asks for a passphrase, or fails): the
    # template's first commit is the harness's, as its trial commits are, and is not signed
    unsigned = ["-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main", "-c", "core.hooksPath=/dev/null"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", f"autoresearch init --template {template}"]):
        try:
            subprocess.run([GIT, *unsigned, *args], cwd=dest, env=env, check=True, capture_output=True, text=True)
        except FileNotFoundError:
            raise UsageError("git is not installed (a task is a git repository)") from None
        except subprocess.CalledProcessError as e:
            said = " ".join((e.stderr or "").split())[:300] or "(no message)"
            raise AutoresearchError(f"git {args[0]} failed in {dest} (exit {e.returncode}): {said}") from None
