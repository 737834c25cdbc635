"""The nanochat template's data: shards downloaded with retries from a server on 127.0.0.1, local
text and parquet folders, and the bytes each token stands for."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("torch")
pa = pytest.importorskip("pyarrow")
np = pytest.importorskip("numpy")
pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")

import pyarrow.parquet as pq  # noqa: E402
from nanochat_helpers import TEMPLATE, assert_nothing_pickled, load_prepare, run, task_env  # noqa: E402

pytestmark = pytest.mark.torch

# A shard server on loopback that fails on demand


class ShardServer:
    """Serves the files of a folder with HTTP ranges. `fail[name]` spoils the first request for
    that file: "500" answers an error, "cut" closes the connection halfway through the body."""

    def __init__(self, root: Path):
        self.root, self.fail, self.log = root, {}, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                spoil = server.fail.pop(name, None)
                server.log.append((name, self.headers.get("Range"), spoil))
                if spoil == "500" or not (server.root / name).exists():
                    self.send_error(500 if spoil else 404)
                    return
                data = (server.root / name).read_bytes()
                start = int(re.match(r"bytes=(\d+)-", self.headers.get("Range") or "bytes=0-")[1])
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                self.wfile.write(body[: len(body) // 2] if spoil == "cut" else body)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/data"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def requests(self, name: str) -> list:
        return [(rng, spoil) for n, rng, spoil in self.log if n == name]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def write_shard(path: Path, index: int, docs: int = 300) -> None:
    """A parquet shard of varied text, some of it outside ASCII."""
    rng = np.random.default_rng(index)
    words = [
        "the",
        "model",
        "learns",
        "bytes",
        "token",
        "über",
        "naïve",
        "日本語",
        "données",
        "🙂",
        "shard",
        str(index),
        "parquet",
        "rotary",
        "window",
        "муон",
    ]
    texts = [" ".join(rng.choice(words, 40)) + "." for _ in range(docs)]
    pq.write_table(pa.table({"text": texts, "id": list(range(docs))}), path)


@pytest.fixture
def shard_server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    for i in (0, 1, 2, 3, 1821, 1822):
        write_shard(served / f"shard_{i:05d}.parquet", i)
    server = ShardServer(served)
    yield server
    server.close()


# ----------------------------------------------------------------------------
# Download


def test_download_retries_resumes_and_skips_complete_shards(tmp_path, shard_server, capfd):
    corpus = load_prepare("corpus")
    dest = tmp_path / "shards"
    served = shard_server.root

    def get(indices):
        return corpus.download_shards(indices, dest, shard_server.url, workers=2, backoff=0.01)

    for i in (0, 1, 1821, 1822):  # retried at once by four threads: their notes stay whole lines
        shard_server.fail[f"shard_{i:05d}.parquet"] = "500"
    capfd.readouterr()
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads swap often, as on a busy machine: half lines would show
    try:
        corpus.download_shards([0, 1, 1821, 1822], dest, shard_server.url, workers=4, backoff=0.01)
    finally:
        sys.setswitchinterval(switch)
    assert shard_server.requests("shard_00001.parquet") == [(None, "500"), (None, None)]
    notes = capfd.readouterr().out.splitlines()
    assert sorted(notes) == [
        f"  shard_{i:05d}.parquet: HTTP Error 500: Internal Server Error; retrying in 0.0s"
        for i in (0, 1, 1821, 1822)
    ]

    # a second run fetches only what is missing; a cut connection resumes from its last byte
    shard_server.fail["shard_00002.parquet"] = "cut"
    get([0, 1, 2])
    assert shard_server.requests("shard_00000.parquet") == [(None, "500"), (None, None)]
    first, again = shard_server.requests("shard_00002.parquet")
    half = (served / "shard_00002.parquet").stat().st_size // 2
    assert first == (None, "cut") and again == (f"bytes={half}-", None)

    # a partial file left by a killed run is continued, not restarted
    data = (served / "shard_00003.parquet").read_bytes()
    (dest / "shard_00003.parquet.part").write_bytes(data[:1000])
    get([3])
    assert shard_server.requests("shard_00003.parquet") == [("bytes=1000-", None)]

    for i in (0, 1, 2, 3):
        name = f"shard_{i:05d}.parquet"
        assert (dest / name).read_bytes() == (served / name).read_bytes()
    assert not list(dest.glob("*.part"))


def test_download_gives_up_with_one_clear_error(tmp_path, shard_server):
    corpus = load_prepare("corpus")
    shard_server.fail["shard_00000.parquet"] = "500"
    shard_server.fail["shard_00001.parquet"] = "500"
    with pytest.raises(corpus.PrepareError, match="shard_00000.parquet after 1 attempts"):
        corpus.download_shards([0], tmp_path, shard_server.url, attempts=1)
    with pytest.raises(corpus.PrepareError, match="shard_00042.parquet: HTTP Error 404"):
        corpus.download_shards([42], tmp_path, shard_server.url, attempts=3, backoff=0.01)
    assert len(shard_server.requests("shard_00042.parquet")) == 1  # a 404 is not retried


def test_prepare_from_served_shards_caches_nothing_pickled(tmp_path, shard_server):
    task = tmp_path / "task"
    shutil.copytree(TEMPLATE, task)
    env = task_env(tmp_path, AUTORESEARCH_DATA_URL=shard_server.url)
    out = run(["prepare.py", "--num-shards", "2", "--workers", "2"], task, env)
    assert "prepared" in out
    data = tmp_path / "cache" / "nanochat" / "prepared"
    meta = json.loads((data / "meta.json").read_text())
    assert set(meta["tokens"]) == {"train_00000", "train_00001", "val", "test"}
    assert np.load(data / "token_bytes.npy").shape == (8192,)
    assert_nothing_pickled(tmp_path / "cache")

    served = len(shard_server.log)
    assert "data ready" in run(["prepare.py", "--num-shards", "2"], task, env)  # idempotent
    assert len(shard_server.log) == served


def test_prepare_from_a_local_folder_follows_the_task_file(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "more").mkdir(parents=True)
    for i in range(3):
        (corpus / f"notes_{i}.txt").write_text("".join(f"Plain text {i}.{j}, naïve and über.\n" for j in range(400)))
    write_shard(corpus / "more" / "docs.parquet", 7, docs=200)
    task = tmp_path / "task"
    shutil.copytree(TEMPLATE, task)
    toml = task / "autoresearch.toml"  # as `autoresearch init --data` writes it
    toml.write_text(
        toml.read_text().replace(
            'setup = "python prepare.py"', f'setup = "python prepare.py --data {corpus}"'
        )
    )
    env = task_env(tmp_path)
    run(["prepare.py", "--data", str(corpus)], task, env)
    where = run(["-c", "import prepare; print(prepare.DATA_DIR)"], task, env).strip()
    assert Path(where).parent == tmp_path / "cache" / "nanochat" and Path(where).name.startswith(
        "local-"
    )
    meta = json.loads((Path(where) / "meta.json").read_text())
    assert meta["tokens"]["val"] > 0 and meta["tokens"]["test"] > 0
    assert meta["tokens"]["train_00000"] > meta["tokens"]["val"]
    assert_nothing_pickled(tmp_path / "cache")


def test_a_corpus_folder_of_the_task_is_found_from_every_worktree(tmp_path, monkeypatch):
    """`setup = "python prepare.py --data corpus"`, a folder committed in the task: setup ran in
    one worktree and each worker's trials in their own, where the relative folder named another
    cache (by its absolute path), so with --workers 2 every trial of the second worker crashed
    on 'no prepared data'."""
    for worktree in ("w0", "w1"):
        (tmp_path / worktree / "corpus").mkdir(parents=True)
        for i in range(20):
            write_shard(tmp_path / worktree / "corpus" / f"part_{i:02d}.parquet", i, docs=60)
        (tmp_path / worktree / "autoresearch.toml").write_text('setup = "python prepare.py --data corpus"\n')
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("AUTORESEARCH_SMOKE", raising=False)
    monkeypatch.chdir(tmp_path / "w0")
    load_prepare().prepare(Path("corpus"))  # setup, in the first worktree
    monkeypatch.chdir(tmp_path / "w1")
    assert len(load_prepare().load_split("val")) > 2048  # a trial of the second worker


def test_local_parquet_files_are_read_alone_or_beside_text(tmp_path):
    corpus = load_prepare("corpus")
    only, mixed = tmp_path / "only", tmp_path / "mixed"
    for folder in (only, mixed):
        folder.mkdir()
        write_shard(folder / "a.parquet", 5, docs=3000)
    (mixed / "b.txt").write_text("Plain text, naïve and über.\n" * 100)
    texts = pq.read_table(only / "a.parquet").column("text").to_pylist()
    assert corpus.local_documents(only) == texts
    assert corpus.local_documents(mixed) == [*texts, (mixed / "b.txt").read_text()]
    train, val, test = corpus.split_documents(corpus.local_documents(only))
    assert len(train) > len(val) > 0 and len(test) > 0


def test_prepare_without_data_reads_the_folder_of_the_setup_line(tmp_path, shard_server):
    """`autoresearch init --data FOLDER` (parquet files only), then `python prepare.py` by hand:
    it prepares FOLDER, where train.py reads, and downloads nothing."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_shard(corpus / "docs.parquet", 3, docs=3000)
    task, env = tmp_path / "task", task_env(tmp_path, AUTORESEARCH_DATA_URL=shard_server.url)
    init = [
        "-m",
        "autoresearch",
        "init",
        str(task),
        "--template",
        "nanochat",
        "--data",
        str(corpus),
    ]
    run(init, tmp_path, env)
    out = run(["prepare.py"], task, env)
    assert f"--data {corpus}" in out and "prepared" in out and "names other data" not in out
    assert shard_server.log == []
    where = Path(run(["-c", "import prepare; print(prepare.DATA_DIR)"], task, env).strip())
    assert where.name.startswith("local-")
    assert json.loads((where / "meta.json").read_text())["tokens"]["val"] > 0


# ----------------------------------------------------------------------------
# Token bytes


def test_token_bytes_count_raw_bytes_not_replacement_characters():
    corpus = load_prepare("corpus")
    text = "日本語のテキスト、données naïves über 🙂🙂 and plain ASCII words. " * 30
    tok = corpus.train_tokenizer([text], vocab_size=320)
    counts = corpus.token_byte_counts(tok, 320)

    first_byte = "日".encode()[0]  # a lone lead byte: one raw byte, decoded it is U+FFFD
    token = tok.token_to_id(next(c for c, b in corpus.byte_alphabet().items() if b == first_byte))
    assert tok.decode([token]) == "\ufffd"
    assert counts[token] == 1

    partial = [
        i
        for i in range(tok.get_vocab_size())
        if i != tok.token_to_id(corpus.BOS) and not _is_utf8(corpus.token_raw_bytes(tok, i))
    ]
    assert len(partial) > 10
    for i in partial:  # e.g. b"\xafves", the end of "naïves": 4 bytes, not "\ufffdves" (6)
        assert counts[i] == len(corpus.token_raw_bytes(tok, i))
        assert counts[i] != len(tok.decode([i]).encode())
    assert counts[tok.token_to_id(corpus.BOS)] == 0
    assert counts[tok.get_vocab_size() :].sum() == 0  # ids the vocabulary did not fill

    sample = "テキスト🙂 über naïve"
    assert counts[tok.encode(sample).ids].sum() == len(sample.encode())


def test_the_text_of_the_bos_token_inside_a_document_is_text_with_its_bytes():
    """A document that holds the text `<|bos|>` (a page about tokenizers, a folder of code) was
    tokenized with BOS there: a document boundary in mid-text, and 7 bytes that bits per byte
    neither counted nor scored."""
    corpus = load_prepare("corpus")
    text = "tokens like <|bos|> start documents; naïve 🙂 text around them. " * 20
    tok = corpus.train_tokenizer([text], vocab_size=300)
    counts = corpus.token_byte_counts(tok, 300)
    stream = corpus.tokenize(tok, [text, "a <|bos|> b"])
    assert (stream == tok.token_to_id(corpus.BOS)).sum() == 2  # one before each document
    assert counts[stream].sum() == len(text.encode()) + len(b"a <|bos|> b")


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


@pytest.mark.slow
def test_the_gpu_bench_writes_its_figures_as_it_goes_and_prints_them_whatever_fails(tmp_path):
    """bench/nanochat_gpu.py is run once, on a lent machine, with minutes to spare: in smoke form
    here it must finish, write results.json and each stage's log to --out, and, given too little
    time for a training run, still print its table (n/a) instead of dying on a missing figure."""
    bench = Path(__file__).resolve().parents[2] / "bench" / "nanochat_gpu.py"
    env = {**os.environ, "AUTORESEARCH_SMOKE": "1"}
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(bench), "--workdir", str(tmp_path / "w"), "--out", str(out),
                        "--deadline", "400"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert all(results["stages"][s]["ok"] for s in ("prepare", "train-flex", "evaluate")), results
    assert results["figures"]["val_bpb"] > 0 and results["figures"]["test_bpb"] > 0
    assert results["summary"]["num_steps"] > results["last_step"]["step"] - 25 > 0
    assert {"prepare.log", "train-flex.log", "evaluate.log", "summary.json"} <= {p.name for p in out.iterdir()}
    assert re.search(r"^tokens_per_second:\s+[\d,]+$", r.stdout, re.M)
    short = subprocess.run([sys.executable, str(bench), "--workdir", str(tmp_path / "w2"), "--out", str(tmp_path / "o2"),
                            "--deadline", "60"], env=env, capture_output=True, text=True, timeout=300)
    assert short.returncode == 1 and "no time left for a training run" in short.stdout
    assert re.search(r"^val_bpb:\s+n/a$", short.stdout, re.M) and "prepare_seconds:" in short.stdout


def test_local_data_of_any_text_kind_and_a_parquet_file_without_text_said_clearly(tmp_path):
    """`--data` took .txt and .parquet only (a folder of .md notes was accepted by init, then
    failed at setup), and a parquet file without a `text` column ended in pyarrow's IndexError."""
    corpus = load_prepare("corpus")
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.md").write_text("# Notes\nSome markdown.\n")
    (folder / "sub" / "b.py").write_text("print('code is text too')\n")
    (folder / "c.bin").write_bytes(b"\x00\x01binary")
    (folder / ".hidden.txt").write_text("left out\n")
    assert corpus.local_documents(folder) == ["# Notes\nSome markdown.\n", "print('code is text too')\n"]
    pq.write_table(pa.table({"content": ["x" * 50] * 3}), folder / "d.parquet")
    with pytest.raises(corpus.PrepareError, match=r"d\.parquet: no 'text' column \(its columns: content\)"):
        corpus.local_documents(folder)
    (folder / "d.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(corpus.PrepareError, match=r"d\.parquet: cannot be read as parquet"):
        corpus.local_documents(folder)


def test_text_files_that_are_not_utf8_are_named(tmp_path, capsys):
    """A Latin-1 file's accented letters became U+FFFD without a word: the model trained on, and
    was scored on, text the user never wrote."""
    corpus = load_prepare("corpus")
    (tmp_path / "a.txt").write_text("plain words\n")
    (tmp_path / "b.txt").write_bytes("données naïves\n".encode("latin-1"))
    assert corpus.local_documents(tmp_path)[1] == "donn\ufffdes na\ufffdves\n"
    assert f"1 of the text files are not UTF-8 (the first: {tmp_path / 'b.txt'})" in capsys.readouterr().out


@pytest.mark.parametrize("lines", [0, 80])
def test_held_out_splits_too_small_to_score_are_refused_at_setup(tmp_path, lines):
    """Setup accepted val and test splits shorter than one sequence (a note only); every trial
    then trained for its whole budget and crashed in evaluation. Now setup fails, and says why.
    So it does for splits of one sequence but not two (80 lines a file: about 2,200 val tokens),
    which the causality probe, two sequences of val, failed on with a traceback."""
    corpus = tmp_path / "small"
    corpus.mkdir()
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron".split()
    for i in range(30):
        rng = random.Random(i)
        text = "".join(" ".join(rng.choice(words) for _ in range(8)) + "\n" for _ in range(lines))
        (corpus / f"f{i:02d}.txt").write_text(text or f"Note {i}: a short text, not enough to score on.\n" * 40)
    task = tmp_path / "task"
    shutil.copytree(TEMPLATE, task)
    out = run(["prepare.py", "--data", str(corpus)], task, task_env(tmp_path), timeout=300, ok=False)
    assert "scoring needs at least 2 x MAX_SEQ_LEN (4096) in each: add more text" in out, out
    assert not list((tmp_path / "cache").rglob("meta.json"))  # not taken for prepared next time


@pytest.mark.parametrize("args,needle", [
    (["--num-shards", "1822"], "--num-shards must be 1 to 1821, not 1822"),  # would train on the test shard
    (["--num-shards", "0"], "--num-shards must be 1 to 1821, not 0"),  # nothing to train on
    (["--workers", "0"], "--workers must be 1 or more, not 0"),
])
def test_shard_and_worker_counts_out_of_range_are_refused_before_any_download(tmp_path, args, needle):
    env = task_env(tmp_path, AUTORESEARCH_DATA_URL="http://127.0.0.1:9/")
    r = subprocess.run([sys.executable, str(TEMPLATE / "prepare.py"), *args], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and needle in r.stderr, r.stderr
    assert not (tmp_path / "cache" / "nanochat").exists()


@pytest.mark.parametrize("spelling", ["--data {}", "--data={}", "--data /elsewhere --data {}"])
def test_the_setup_lines_data_is_found_however_argparse_would_read_it(tmp_path, monkeypatch, spelling):
    """`setup = "python prepare.py --data=DIR"` (argparse's other spelling): setup prepared DIR,
    but training and the evaluation read the default shards' folder, another text or none."""
    corpus = tmp_path / "corpus"
    (tmp_path / "autoresearch.toml").write_text(f'setup = "python prepare.py {spelling.format(corpus)}"\n')
    monkeypatch.chdir(tmp_path)
    assert load_prepare().task_data() == corpus
