"""Results you can trust, the causality probe: a self-made evaluator with the templates'
`autoresearch_reject:` contract rejects a model that attends to future tokens (torch; slow) and
a predictor that peeks ahead (no torch; fast).

Real task repositories, real loops through the CLI, real subprocesses. (Results you can trust
also: noise in test_noise.py, the sealed holdout in test_holdout.py, the evaluator in
test_evaluator.py, the causality probe in test_causality.py; the sandbox in test_sandbox.py,
the audit in test_audit.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_task, script_agent, trials
from trust_helpers import run

from autoresearch.records import Status

# ---------------------------------------------------------------------------
# the causality probe (a self-made evaluator with the templates' `autoresearch_reject:` contract)


MODEL = '''\
"""A one-layer attention model over bytes, trained for a second; saved for the evaluator."""
import os, time
import torch
import torch.nn.functional as F

CAUSAL = True
torch.manual_seed(int(os.environ.get("AUTORESEARCH_SEED", "0")))
DIM, CONTEXT = 32, 16


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(256, DIM)
        self.pos = torch.nn.Parameter(torch.zeros(CONTEXT, DIM))
        self.qkv = torch.nn.Linear(DIM, 3 * DIM)
        self.out = torch.nn.Linear(DIM, 256)

    def forward(self, idx):
        x = self.embed(idx) + self.pos[: idx.shape[1]]
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=CAUSAL)
        return self.out(x + y)


def batches(text):
    data = torch.tensor(list(text.encode()), dtype=torch.long)
    while True:
        i = torch.randint(0, len(data) - CONTEXT - 1, (32,))
        yield torch.stack([data[j:j + CONTEXT] for j in i]), torch.stack([data[j + 1:j + CONTEXT + 1] for j in i])


if __name__ == "__main__":
    model = Model()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    text = open("corpus.txt").read()
    start = time.time()
    for x, y in batches(text):
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(); loss.backward(); opt.step()
        if time.time() - start > 1.5:
            break
    torch.save(model.state_dict(), os.path.join(os.environ["AUTORESEARCH_RUN_DIR"], "model.pt"))
    print(f"train_loss: {loss.item():.4f}")
'''


PROBE = '''\
"""The evaluator: validation loss and a causality probe (changing tokens after position t must
not change the prediction at t)."""
import os
import torch
import torch.nn.functional as F
from train import Model, CONTEXT

model = Model()
model.load_state_dict(torch.load(os.path.join(os.environ["AUTORESEARCH_RUN_DIR"], "model.pt")))
model.eval()
torch.manual_seed(0)
with torch.no_grad():
    x = torch.randint(0, 256, (4, CONTEXT))
    t = CONTEXT // 2
    y = x.clone()
    y[:, t + 1:] = torch.randint(0, 256, (4, CONTEXT - t - 1))
    if not torch.allclose(model(x)[:, : t + 1], model(y)[:, : t + 1], atol=1e-5):
        print(f"autoresearch_reject: the prediction at position {t} depends on later tokens")
    data = torch.tensor(list(open("corpus.txt").read().encode()), dtype=torch.long)
    n = (len(data) - 1) // CONTEXT * CONTEXT
    xs, ys = data[:n].view(-1, CONTEXT), data[1:n + 1].view(-1, CONTEXT)
    loss = F.cross_entropy(model(xs).flatten(0, 1), ys.flatten())
print(f"loss: {loss.item():.6f}")
'''


CAUSAL_TASK = """\
name = "causal"
editable = ["train.py"]
protected = ["prepare.py", "corpus.txt"]
command = "python train.py"
evaluate = "python prepare.py"
time_budget = 2
timeout = 60

[metric]
name = "loss"
goal = "minimize"
"""


@pytest.mark.slow
@pytest.mark.torch
def test_a_model_that_attends_to_future_tokens_is_rejected(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    corpus = "".join(f"the {w} sat on the mat; " for w in ("cat", "dog", "bird", "fox")) * 40
    root = make_task(tmp_path / "task", toml=CAUSAL_TASK,
                     files={"train.py": MODEL, "prepare.py": PROBE, "corpus.txt": corpus})
    agent = script_agent(tmp_path / "agent.sh", """\
        sed -i 's/^CAUSAL = True/CAUSAL = False/' train.py
        echo "let attention see the whole window"
        """)
    run(root, agent, 1)
    base, peek = trials(root)
    assert base.status is Status.KEEP
    assert peek.status is Status.REJECTED
    assert "depends on later tokens" in peek.reason
    assert "autoresearch_reject" in (root / ".autoresearch" / "t" / "logs" / "1.log").read_text()


# the same contract without torch (fast): a "model" that predicts each byte from a window of
# the text, which a one-character change lets reach one position ahead


COUNTING = """\
import collections, json, os
AHEAD = 0  # how far past position t the model may look (0: causal)


def predict(data, t):
    \"\"\"The distribution of the byte at t + 1, from the bytes up to t + AHEAD.\"\"\"
    seen = data[max(0, t - 1): t + 1 + AHEAD]
    return {b: 1.0 / len(seen) for b in seen}


if __name__ == "__main__":
    json.dump({"ahead": AHEAD}, open(os.path.join(os.environ["AUTORESEARCH_RUN_DIR"], "model.json"), "w"))
"""


COUNTING_PROBE = """\
import math
from train import predict
data = open("corpus.txt", "rb").read()
t = 10
changed = data[: t + 1] + bytes(255 - b for b in data[t + 1:])
if predict(data, t) != predict(changed, t):
    print(f"autoresearch_reject: the prediction at position {t} depends on later tokens")
loss = -sum(math.log(predict(data, i).get(data[i + 1], 1e-3)) for i in range(len(data) - 2)) / (len(data) - 2)
print(f"loss: {loss:.6f}")
"""


def test_a_predictor_that_peeks_ahead_is_rejected(tmp_path: Path) -> None:
    root = make_task(tmp_path / "task", toml=CAUSAL_TASK, files={
        "train.py": COUNTING, "prepare.py": COUNTING_PROBE, "corpus.txt": "abcabcabd" * 30})
    agent = script_agent(tmp_path / "agent.sh", """\
        sed -i 's/^AHEAD = 0/AHEAD = 1/' train.py
        echo "use one more byte of context"
        """)
    run(root, agent, 1)
    base, peek = trials(root)
    assert base.status is Status.KEEP
    assert peek.status is Status.REJECTED and "depends on later tokens" in peek.reason
