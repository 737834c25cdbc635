"""A non-ML experiment: any command that prints `name: value` lines works with autoresearch.

Here: the loss of a small noisy function of a few constants. The search agent tunes the
UPPER_CASE constants below; an LLM agent may change anything in this file.
"""

import math
import os
import random

from check import loss_of

# ---------------------------------------------------------------------------
# Constants the search agent tunes (ranges from the trailing comments)

LEARNING_RATE = 0.01  # search: 0.0001..1 log
MOMENTUM = 0.5  # search: 0..0.99
STEPS = 50  # search: 10..400 int
WARMUP = 5  # search: 0..50 int
USE_NESTEROV = False

# ---------------------------------------------------------------------------
# A little gradient descent on a Rosenbrock valley

seed = int(os.environ.get("AUTORESEARCH_SEED", "0"))
rng = random.Random(seed)
x, y = -1.5, 2.0
vx = vy = 0.0
for step in range(STEPS):
    lr = LEARNING_RATE * min(1.0, (step + 1) / (WARMUP + 1))
    px, py = (x + MOMENTUM * vx, y + MOMENTUM * vy) if USE_NESTEROV else (x, y)
    gx = -2 * (1 - px) - 400 * px * (py - px * px)
    gy = 200 * (py - px * px)
    norm = math.hypot(gx, gy)
    if norm > 10:  # clip so a large learning rate does not blow up
        gx, gy = gx * 10 / norm, gy * 10 / norm
    vx = MOMENTUM * vx - lr * gx
    vy = MOMENTUM * vy - lr * gy
    x, y = x + vx, y + vy

print("---")
print(f"loss: {loss_of(x, y, rng):.6f}")
print(f"evaluations: {STEPS}")
