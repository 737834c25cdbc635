"""The measurement (protected): the agent may not change how the loss is computed."""


def loss_of(x: float, y: float, rng) -> float:
    return (1 - x) ** 2 + 100 * (y - x * x) ** 2 + rng.gauss(0, 1e-4)
