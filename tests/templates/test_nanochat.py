"""The nanochat template: downloads, token bytes, the smoke run end to end, the causality probe,
and a cache with nothing pickled. Real parts only: an HTTP server on 127.0.0.1, subprocesses."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pa = pytest.importorskip("pyarrow")
np = pytest.importorskip("numpy")
pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")

import pyarrow.parquet as pq  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

pytestmark = pytest.mark.torch

TEMPLATE = Path(__file__).resolve().parents[2] / "src" / "autoresearch" / "templates" / "nanochat"
SUMMARY_KEYS = [
    "val_bpb",
    "training_seconds",
    "total_seconds",
    "peak_vram_mb",
    "mfu_percent",
    "total_tokens_M",
    "num_steps",
    "num_params_M",
    "depth",
]


def load_prepare():
    spec = importlib.util.spec_from_file_location("nanochat_prepare", TEMPLATE / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def figures(output: str) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in re.finditer(r"^(\w+):\s+(-?[\d.]+)\s*$", output, re.M)}


def task_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTORESEARCH_")}
    env.update(
        AUTORESEARCH_CACHE=str(tmp / "cache"), AUTORESEARCH_RUN_DIR=str(tmp / "run"), **extra
    )
    return env


def run(args: list[str], cwd: Path, env: dict, timeout: float = 120, ok: bool = True) -> str:
    """Its output; with ok=False whatever the exit status, stderr after stdout."""
    proc = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if not ok:
        return proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def assert_nothing_pickled(root: Path) -> None:
    """Every file is in a format that cannot run code when loaded, and loads as such."""
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert not path.read_bytes()[:1] == b"\x80", f"{path} looks like a pickle"
        if path.suffix == ".npy":
            assert np.load(path, allow_pickle=False).dtype != object
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".parquet":
            pq.read_metadata(path)
        elif path.suffix == ".safetensors":
            with safe_open(str(path), "pt") as f:
                assert list(f.keys())
        else:
            pytest.fail(f"unexpected file in the cache or run folder: {path}")


# ----------------------------------------------------------------------------
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
    prepare = load_prepare()
    dest = tmp_path / "shards"
    served = shard_server.root

    def get(indices):
        return prepare.download_shards(indices, dest, shard_server.url, workers=2, backoff=0.01)

    for i in (0, 1, 1821, 1822):  # retried at once by four threads: their notes stay whole lines
        shard_server.fail[f"shard_{i:05d}.parquet"] = "500"
    capfd.readouterr()
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads swap often, as on a busy machine: half lines would show
    try:
        prepare.download_shards([0, 1, 1821, 1822], dest, shard_server.url, workers=4, backoff=0.01)
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
    prepare = load_prepare()
    shard_server.fail["shard_00000.parquet"] = "500"
    shard_server.fail["shard_00001.parquet"] = "500"
    with pytest.raises(prepare.PrepareError, match="shard_00000.parquet after 1 attempts"):
        prepare.download_shards([0], tmp_path, shard_server.url, attempts=1)
    with pytest.raises(prepare.PrepareError, match="shard_00042.parquet: HTTP Error 404"):
        prepare.download_shards([42], tmp_path, shard_server.url, attempts=3, backoff=0.01)
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
        (corpus / f"notes_{i}.txt").write_text(f"Plain text number {i}, naïve and über.\n" * 400)
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


def test_local_parquet_files_are_read_alone_or_beside_text(tmp_path):
    prepare = load_prepare()
    only, mixed = tmp_path / "only", tmp_path / "mixed"
    for folder in (only, mixed):
        folder.mkdir()
        write_shard(folder / "a.parquet", 5, docs=3000)
    (mixed / "b.txt").write_text("Plain text, naïve and über.\n" * 100)
    texts = pq.read_table(only / "a.parquet").column("text").to_pylist()
    assert prepare.local_documents(only) == texts
    assert prepare.local_documents(mixed) == [*texts, (mixed / "b.txt").read_text()]
    train, val, test = prepare.split_documents(prepare.local_documents(only))
    assert len(train) > len(val) > 0 and len(test) > 0


def test_prepare_without_data_reads_the_folder_of_the_setup_line(tmp_path, shard_server):
    """`autoresearch init --data FOLDER` (parquet files only), then `python prepare.py` by hand:
    it prepares FOLDER, where train.py reads, and downloads nothing."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_shard(corpus / "docs.parquet", 3, docs=3000)
    task, env = tmp_path / "task", task_env(tmp_path, AUTORESEARCH_DATA_URL=shard_server.url)
    init = ["-m", "autoresearch", "init", str(task), "--template", "nanochat", "--data", str(corpus)]
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
    prepare = load_prepare()
    text = "日本語のテキスト、données naïves über 🙂🙂 and plain ASCII words. " * 30
    tok = prepare.train_tokenizer([text], vocab_size=320)
    counts = prepare.token_byte_counts(tok, 320)

    first_byte = "日".encode()[0]  # a lone lead byte: one raw byte, decoded it is U+FFFD
    token = tok.token_to_id(next(c for c, b in prepare.byte_alphabet().items() if b == first_byte))
    assert tok.decode([token]) == "\ufffd"
    assert counts[token] == 1

    partial = [
        i
        for i in range(tok.get_vocab_size())
        if i != tok.token_to_id(prepare.BOS) and not _is_utf8(prepare.token_raw_bytes(tok, i))
    ]
    assert len(partial) > 10
    for i in partial:  # e.g. b"\xafves", the end of "naïves": 4 bytes, not "\ufffdves" (6)
        assert counts[i] == len(prepare.token_raw_bytes(tok, i))
        assert counts[i] != len(tok.decode([i]).encode())
    assert counts[tok.token_to_id(prepare.BOS)] == 0
    assert counts[tok.get_vocab_size() :].sum() == 0  # ids the vocabulary did not fill

    sample = "テキスト🙂 über naïve"
    assert counts[tok.encode(sample).ids].sum() == len(sample.encode())


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


# ----------------------------------------------------------------------------
# Smoke run and causality probe, on one prepared smoke cache


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    env = task_env(
        root,
        AUTORESEARCH_SMOKE="1",
        AUTORESEARCH_TIME_BUDGET="10",
        AUTORESEARCH_SEED="1",
        AUTORESEARCH_TRIAL="0",
    )
    task = root / "task"
    shutil.copytree(TEMPLATE, task)
    run(["prepare.py"], task, env)
    return root, task, env


def test_smoke_prepare_says_it_ignores_data(smoke, tmp_path):
    _, task, env = smoke
    args = [sys.executable, "prepare.py", "--data", str(tmp_path / "nowhere")]
    proc = subprocess.run(args, cwd=task, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"--data {tmp_path / 'nowhere'} is ignored" in proc.stderr
    assert "data ready" in proc.stdout


def test_smoke_run_prints_the_summary_and_evaluates_the_checkpoint(smoke):
    root, task, env = smoke
    trained = run(["train.py"], task, env)
    summary = trained[trained.index("\n---\n") :]
    got = figures(summary)
    assert list(got) == SUMMARY_KEYS
    assert got["num_steps"] > 10 and got["depth"] == 2

    scored = run(["prepare.py", "--evaluate"], task, env)
    got_eval = figures(scored)
    assert got_eval["val_bpb"] == pytest.approx(got["val_bpb"], abs=1e-5)  # same checkpoint
    for echoed in (
        "training_seconds",
        "peak_vram_mb",
        "mfu_percent",
        "total_tokens_M",
        "num_steps",
        "num_params_M",
        "depth",
    ):
        assert got_eval[echoed] == pytest.approx(got[echoed], abs=0.06)
    assert 0 < got_eval["test_bpb"]

    # it learned: far below the bits per byte of a uniform guess over the vocabulary
    data = root / "cache" / "nanochat" / "smoke"
    token_bytes, val = np.load(data / "token_bytes.npy"), np.load(data / "val.npy")[: 8192 + 1]
    targets = val[1:]
    uniform = (token_bytes[targets] > 0).sum() * np.log2(512) / token_bytes[targets].sum()
    assert got_eval["val_bpb"] < 0.85 * uniform

    assert_nothing_pickled(root / "cache")
    assert_nothing_pickled(root / "run")


def score_embedding_model(env: dict, tmp_path: Path, preamble: str, forward: str, ok: bool = True) -> str:
    """What `prepare.py --evaluate` prints for a train.py whose model is one random embedding
    table (512 x 512) with `forward` as the body of its forward(idx), `preamble` above it."""
    task = tmp_path / "task"
    task.mkdir()
    shutil.copy(TEMPLATE / "prepare.py", task)
    (task / "train.py").write_text(f"""
import torch.nn as nn
{preamble}

class Model(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.emb = nn.Embedding(config["vocab_size"], config["vocab_size"])

    def forward(self, idx):
        {forward}

def build_model(config):
    return Model(config)
""")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_file({"emb.weight": torch.randn(512, 512)}, str(run_dir / "model.safetensors"))
    (run_dir / "model_config.json").write_text(json.dumps({"vocab_size": 512}))
    return run(["prepare.py", "--evaluate"], task, {**env, "AUTORESEARCH_RUN_DIR": str(run_dir)}, ok=ok)


CHEATS = {
    "reads the next token": "logits + self.emb(idx.roll(-1, dims=1))",
    "reads another row": "logits + self.emb(idx.roll(1, dims=0))",
}


@pytest.mark.parametrize("cheat", CHEATS)
def test_a_model_that_sees_the_answers_is_rejected(smoke, tmp_path, cheat):
    out = score_embedding_model(smoke[2], tmp_path, "", f"logits = self.emb(idx)\n        return {CHEATS[cheat]}")
    assert "autoresearch_reject: model is not causal" in out
    assert "val_bpb" not in out


def test_a_train_py_that_replaces_the_evaluators_code_is_rejected(smoke, tmp_path):
    """Its module-level code runs in the evaluator's process (the model is needed there)."""
    patch = 'import sys\nsetattr(sys.modules["__main__"], "evaluate_" + "bpb", lambda *a, **k: 0.5)'
    out = score_embedding_model(smoke[2], tmp_path, patch, "return self.emb(idx)")
    assert "autoresearch_reject: train.py replaced what the evaluation runs: evaluate_bpb" in out, out
    assert "val_bpb" not in out


@pytest.mark.parametrize("hide, needle", [
    ("_null = os.open(os.devnull, os.O_WRONLY)\nos.dup2(_null, 1)", "redirected the evaluator's output"),
    ("os._exit(0)", "end, fork or replace its process"),
])
def test_a_train_py_that_prints_figures_and_hides_the_real_ones_fails(smoke, tmp_path, hide, needle):
    forged = 'import os\nos.write(1, b"---\\nval_bpb: 0.1\\ntest_bpb: 0.1\\n")\n' + hide
    out = score_embedding_model(smoke[2], tmp_path, forged, "return self.emb(idx)", ok=False)
    assert needle in out, out


@pytest.mark.parametrize("name, tflops", [
    ("NVIDIA H200", 989), ("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H100 PCIe", 756), ("NVIDIA H100 NVL", 835),
    ("NVIDIA A100-SXM4-80GB", 312), ("NVIDIA A40", 150), ("NVIDIA L40S", 362), ("NVIDIA L4", 121),
    ("NVIDIA GeForce RTX 5090", 209), ("NVIDIA GeForce RTX 4090", 165), ("NVIDIA RTX 6000 Ada Generation", 364),
    ("NVIDIA RTX A6000", 155), ("NVIDIA A10G", None), ("Some Future GPU", None),
])
def test_the_peak_of_each_gpu_name(name: str, tflops: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """MFU is against the detected GPU's own peak; an unknown one has none (MFU 0, with a note),
    not the H100's."""
    prepare = load_prepare()
    monkeypatch.delenv("AUTORESEARCH_PEAK_TFLOPS", raising=False)
    monkeypatch.setattr(prepare.torch.cuda, "get_device_name", lambda device: name)
    peak, seen = prepare.peak_flops(torch.device("cuda", 0))
    assert seen == name
    assert (None if peak is None else round(peak / 1e12)) == tflops


def test_the_small_machine_settings_lie_inside_the_ranges_program_md_gives(tmp_path):
    """Each row of program.md's table, applied to train.py as a user would (values and `# search:`
    ranges): `autoresearch space` lists those ranges and finds no value outside them."""
    table = re.findall(r"^\| (.+?) \| (.+?) \| (.+?) \|$", (TEMPLATE / "program.md").read_text(), re.M)
    rows = [row for row in table if "DEPTH = " in row[1]]
    assert [r[0].split()[0] for r in rows] == ["24", "8", "Apple"]
    for machine, settings, ranges in rows:
        task = tmp_path / machine.split()[0]
        shutil.copytree(TEMPLATE, task)
        source = (task / "train.py").read_text()
        for name, value in re.findall(r"`([A-Z_]+) = (\d+)`", settings):
            source, n = re.subn(rf"^{name} = \S+", f"{name} = {value}", source, flags=re.M)
            assert n == 1, name
        bounds = re.findall(r"`([A-Z_]+)` (\d+)\.\.(\d+)", ranges)
        assert {"DEPTH", "TOTAL_BATCH_SIZE"} <= {name for name, _, _ in bounds}
        for name, lo, hi in bounds:
            ranged = rf"^({name} = \S+\s+# search: )\S+"
            source, n = re.subn(ranged, rf"\g<1>{lo}..{hi}", source, flags=re.M)
            assert n == 1, name
        (task / "train.py").write_text(source)
        listed = run(["-m", "autoresearch", "space", str(task)], tmp_path, task_env(tmp_path))
        assert "outside" not in listed, (machine, listed)
        for name, lo, hi in bounds:
            assert re.search(rf"^{name}\s+train\.py:\d+\s+\S+\s+{lo}\.\.{hi}\s", listed, re.M), name
