"""
The text and the tokenizer of the nanochat task. Protected, like prepare.py, which runs it.

Download: parquet shards fetched by parallel workers, retried with backoff, resumed with HTTP
ranges, and renamed into place only once complete and readable, so a killed download resumes
where it stopped. Documents: from parquet shards, a local folder of text and .parquet files, or
(smoke) the Python standard library; split into train, val and test by documents. Tokenizer: a
byte-level BPE, so every token stands for definite raw bytes, which is what bits per byte
counts. Every file written is parquet, JSON or numpy (no pickle), renamed into place.
"""

from __future__ import annotations

import functools
import http.client
import os
import shutil
import sysconfig
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

BOS = "<|bos|>"  # starts every document; the only special token
# GPT-4's split pattern with numbers cut at 2 digits, kinder to a small vocabulary
SPLIT_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""


class PrepareError(Exception):
    """A problem the user can fix (no data, no checkpoint); printed as one line."""


PRINT_LOCK = threading.Lock()  # download threads print whole lines, never into each other's


# ----------------------------------------------------------------------------
# Download: parallel, retried with backoff, resumed with HTTP ranges, renamed into place


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.parquet"


def download_shards(
    indices: Iterable[int],
    dest: Path,
    base_url: str,
    workers: int = 8,
    attempts: int = 5,
    backoff: float = 1.0,
) -> list[Path]:
    """Fetch the shards not yet complete in `dest`; returns their paths in order."""
    dest.mkdir(parents=True, exist_ok=True)

    def one(i: int) -> Path:
        return download_file(
            f"{base_url.rstrip('/')}/{shard_name(i)}", dest / shard_name(i), attempts, backoff
        )

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(one, indices))


def download_file(url: str, path: Path, attempts: int = 5, backoff: float = 1.0) -> Path:
    if path.exists():  # only a complete, readable file is ever renamed to this name
        return path
    part = path.with_name(path.name + ".part")
    for attempt in range(1, attempts + 1):
        try:
            fetch(url, part)
            pq.read_metadata(part)  # a truncated parquet file has no footer
            os.replace(part, path)
            return path
        except (OSError, http.client.HTTPException, pa.ArrowException) as e:
            code = getattr(e, "code", None)
            if code in (400, 401, 403, 404, 410):  # asking again will not help
                raise PrepareError(f"could not download {url}: {e}") from e
            if isinstance(e, pa.ArrowException) or code == 416:
                part.unlink(missing_ok=True)  # corrupt, or a range past its end: start over
            if attempt == attempts:
                raise PrepareError(
                    f"could not download {url} after {attempts} attempts: {e}"
                ) from e
            wait = backoff * 2 ** (attempt - 1)
            with PRINT_LOCK:
                print(f"  {path.name}: {e}; retrying in {wait:.1f}s", flush=True)
            time.sleep(wait)
    raise AssertionError("unreachable")


def fetch(url: str, part: Path) -> None:
    """Append the rest of `url` to `part`, asking only for the bytes it lacks."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=60) as response:
        if response.status != 206:
            have = 0  # the server sent the whole file
        length = response.headers.get("Content-Length")
        with open(part, "ab" if have else "wb") as f:
            shutil.copyfileobj(response, f, 1 << 20)
            got = f.tell() - have
    # http.client does not complain when a connection closes early; count the bytes ourselves
    if length is not None and got < int(length):
        raise OSError(f"connection closed after {got} of {length} bytes")


# ----------------------------------------------------------------------------
# Documents from parquet shards, local folders, or (smoke) the Python standard library


def parquet_documents(path: Path) -> Iterator[str]:
    """The documents of a parquet file's `text` column."""
    try:
        shard = pq.ParquetFile(path)
    except Exception as e:  # (pyarrow's own errors: not a parquet file, a truncated one)
        raise PrepareError(f"{path}: cannot be read as parquet ({e})") from None
    names = shard.schema_arrow.names
    if "text" not in names:
        raise PrepareError(f"{path}: no 'text' column (its columns: {', '.join(names) or 'none'})")
    for batch in shard.iter_batches(columns=["text"], batch_size=1024):
        yield from (t for t in batch.column(0).to_pylist() if isinstance(t, str) and t)


def is_text(path: Path) -> bool:
    """A file of text: not hidden, with no NUL byte in its first 8 KB."""
    if path.name.startswith(".") or not path.is_file():
        return False
    with open(path, "rb") as f:
        return b"\0" not in f.read(8192)


def read_text(path: Path, damaged: list[Path]) -> str:
    """The file's text; one that is not UTF-8 (Latin-1, say) is added to `damaged`."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        damaged.append(path)
        return raw.decode("utf-8", "replace")


def visible_files(root: Path) -> list[Path]:
    """Every file under `root` that is not hidden (nor in a hidden folder), in name order."""
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))


def local_documents(root: Path, piece: int | None = None) -> list[str]:
    """Every .parquet file and every text file (.txt, .md, source code: any file with no NUL
    byte) under `root`, in name order, hidden ones left out, long texts cut at line ends into
    pieces of about a hundredth of all the text (10 KB to 1 MB), so that the held-out tenths
    come out near a tenth each even from one big file."""
    files = [p for p in visible_files(root) if p.suffix == ".parquet" or is_text(p)]
    if not files:
        raise PrepareError(f"--data {root}: no text or .parquet files found")
    damaged: list[Path] = []
    all_texts = [  # lists, not iterators: the total below reads them once before the real pass
        list(parquet_documents(f)) if f.suffix == ".parquet" else [read_text(f, damaged)] for f in files
    ]
    if damaged:
        print(f"note: {len(damaged)} of the text files are not UTF-8 (the first: {damaged[0]}); "
              "their undecodable bytes are read as U+FFFD, 3 bytes each", flush=True)
    if piece is None:
        total = sum(len(t) for texts in all_texts for t in texts)
        piece = max(10_000, min(1_000_000, total // 100))
    docs: list[str] = []
    for texts in all_texts:
        for text in texts:
            while len(text) > piece:
                cut = text.rfind("\n", 0, piece) + 1 or piece
                docs.append(text[:cut])
                text = text[cut:]
            if text.strip():
                docs.append(text)
    return docs


def smoke_documents(target: int = 600_000, cap: int = 30_000) -> list[str]:
    """A few hundred KB of real text found on every machine: the standard library's modules
    (at most `cap` characters of each, so that no one module fills a split)."""
    docs, size = [], 0
    for f in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("[a-z]*.py")):
        docs.append(f.read_text("utf-8", "replace")[:cap])
        size += len(docs[-1])
        if size >= target:
            return docs
    words = "the a model learns to predict next token from every byte of text it sees".split()
    rng = np.random.default_rng(0)  # no sources shipped: filler that is at least learnable
    return [" ".join(rng.choice(words, 200)) + ".\n" for _ in range(target // 1000)]


def split_documents(docs: list[str], fraction: float = 0.1, cap: int = 100_000_000):
    """Train, val and test by documents: the last tenth (at most `cap` characters) is val, the
    tenth before it is test, so the held-out text is never seen by the tokenizer or the model."""
    want = min(cap, int(fraction * sum(map(len, docs))))
    held: list[list[str]] = []
    end = len(docs)
    for _ in range(2):
        start, size = end, 0
        while start > 1 and size < want:
            start -= 1
            size += len(docs[start])
        held.append(docs[start:end])
        end = start
    if not docs[:end] or not all(held):
        raise PrepareError(
            f"too little text to split into train, val and test ({len(docs)} documents)"
        )
    return docs[:end], held[0], held[1]


# ----------------------------------------------------------------------------
# Tokenizer: byte-level BPE, so every token stands for definite raw bytes


@functools.cache
def byte_alphabet() -> dict[str, int]:
    """The printable stand-in of each raw byte in byte-level BPE vocabularies (GPT-2's scheme):
    printable Latin-1 bytes stand for themselves, the other 68 move to code points 256 and up."""
    kept = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {chr(b): b for b in kept}
    moved = [b for b in range(256) if b not in table.values()]
    table.update({chr(256 + n): b for n, b in enumerate(moved)})
    assert set(table) == set(pre_tokenizers.ByteLevel.alphabet())
    return table


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> HFTokenizer:
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def token_raw_bytes(tok: HFTokenizer, token_id: int) -> bytes:
    """The bytes a token stands for. Decoding to text instead would turn a token that holds part
    of a UTF-8 character into U+FFFD, three bytes whatever the token's real length."""
    alphabet = byte_alphabet()
    return bytes(alphabet[c] for c in tok.id_to_token(token_id))


def token_byte_counts(tok: HFTokenizer, size: int) -> np.ndarray:
    """Raw byte length of every id below `size`; 0 for BOS and unused ids, which then count
    neither bytes nor loss in bits per byte."""
    counts = np.zeros(size, dtype=np.int32)
    for i in range(tok.get_vocab_size()):
        if tok.id_to_token(i) != BOS:
            counts[i] = len(token_raw_bytes(tok, i))
    return counts


def batched(items: Iterable[str], n: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def tokenize(tok: HFTokenizer, docs: Iterable[str], limit: int | None = None) -> np.ndarray:
    """One uint16 stream, each document preceded by BOS; stops once `limit` tokens are in. The
    text `<|bos|>` inside a document is its 7 bytes, not BOS: BOS counts no bytes in bits per byte."""
    bos = tok.token_to_id(BOS)
    tok.encode_special_tokens = True  # (not saved in tokenizer.json: set wherever text is encoded)
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)  # fast: no offsets kept
    chunks, total = [], 0
    for batch in batched(docs, 1024):  # the Rust side spreads a batch over every core
        for enc in encode(batch, add_special_tokens=False):
            chunks.append(np.array([bos, *enc.ids], dtype=np.uint16))
            total += len(chunks[-1])
        if limit is not None and total >= limit:
            break
    stream = np.concatenate(chunks) if chunks else np.zeros(0, np.uint16)
    return stream[:limit]


def save_array(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
    os.replace(tmp, path)


def documents(part: Path | list[str]) -> Iterator[str]:
    """A part of a split is either one parquet shard or a list of documents held in memory."""
    return parquet_documents(part) if isinstance(part, Path) else iter(part)
