"""The configuration the harness's own git runs with: not the user's, which an agent may rewrite
(a filter driver there would run inside the harness, outside any seal), but the few settings
of it the harness needs, read once when a loop starts, in a file of its own."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from autoresearch.programs import GIT

# What the harness's git keeps of the user's global and system configuration, read once when a
# loop starts (includes followed): git-lfs's filter, the repositories marked safe, line endings
# and the global ignore file. Nothing else (no other filter driver, no global attributes file):
# an agent may rewrite those files, even for a later run, and the harness's git runs outside any
# seal. The kept entries are written to a private file that stands in for the global config
# (a file, not `-c`: git before 2.38 reads safe.directory from the config files only).
KEPT_CONFIG = (r"^(safe\.directory|filter\.lfs\..*|lfs\..*|"
               r"core\.(autocrlf|eol|safecrlf|excludesfile|longpaths|symlinks|precomposeunicode))$")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


def kept_config(env: dict[str, str]) -> str:
    """The KEPT_CONFIG entries of the system and global config, as a config file's text."""
    lines = ["[core]", f"\tattributesFile = {_quote(os.devnull)}"]
    for scope in ("--system", "--global"):
        out = subprocess.run([GIT, "config", scope, "--includes", "-z", "--get-regexp", KEPT_CONFIG], env=env,
                             capture_output=True, text=True, errors="surrogateescape", start_new_session=True)
        for item in out.stdout.split("\0"):
            key, sep, value = item.partition("\n")
            if not (key and sep) or key.count(".") < 1:
                continue
            section, _, name = key.rpartition(".")
            head, _, sub = section.partition(".")
            lines.append(f"[{head}" + (f" {_quote(sub)}" if sub else "") + "]")
            lines.append(f"\t{name} = {_quote(value)}")
    return "\n".join(lines) + "\n"


def private_file(text: str, prefix: str) -> Path:
    """A file holding `text`, in this user's cache folder (one per content: kept, as a killed
    loop cannot remove it), else a new temporary one removed when this process ends."""
    import hashlib
    import tempfile

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "autoresearch"
    path = cache / f"{prefix}{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    try:
        if not (path.is_file() and not path.is_symlink() and path.read_text() == text):
            cache.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
        return path
    except OSError:
        import atexit

        fd, name = tempfile.mkstemp(prefix=prefix)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        atexit.register(lambda: Path(name).unlink(missing_ok=True))
        return Path(name)
