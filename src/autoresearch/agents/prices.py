"""What an LLM call costs: USD per million tokens (input, output) for common models.

The table is a convenience, not a bill: providers change prices. Override or extend it with a
JSON file named by AUTORESEARCH_PRICES, e.g. {"gpt-4.1": [2.0, 8.0], "my-model": {"input": 0.5,
"output": 1.5}} (USD per million tokens). A model is matched by its exact name, then by the
longest known prefix (so dated snapshots such as claude-sonnet-4-5-20250929 find their family).
The local providers (vllm/, ollama/, llamacpp/) cost nothing unless the AUTORESEARCH_PRICES file
names the model; another provider's model at a base URL on this machine, unless the table does.
An unknown model costs 0 and says so.

A few models cost more per token once a request's prompt passes a size (claude-haiku-5-5 past
100,000 tokens, the gemini pro models past 200,000): their entry is (input, output, above, input_above,
output_above), and each call is priced by its own prompt's size.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

Price = tuple[float, ...]
"""(input, output) USD per million tokens, or (input, output, above, input_above, output_above)
for a model whose calls with a prompt of more than `above` tokens cost the second pair."""

PRICES: dict[str, Price] = {
    # OpenAI (gpt-5.5 is four times gpt-5's price: never gpt-5's by prefix)
    "gpt-5.5": (5.0, 30.0), "gpt-5.4": (2.50, 15.0), "gpt-5.4-mini": (0.75, 4.50), "gpt-5.4-nano": (0.20, 1.25),
    "gpt-5": (1.25, 10.0), "gpt-5-mini": (0.25, 2.0), "gpt-5-nano": (0.05, 0.40),
    "gpt-4.1": (2.0, 8.0), "gpt-4.1-mini": (0.40, 1.60), "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.0), "gpt-4o-mini": (0.15, 0.60),
    "o3": (2.0, 8.0), "o3-mini": (1.10, 4.40), "o4-mini": (1.10, 4.40), "o1": (15.0, 60.0),
    "o1-mini": (1.10, 4.40),  # (a fourteenth of o1's: never o1's by prefix)
    "o3-deep-research": (10.0, 40.0), "o4-mini-deep-research": (2.0, 8.0),
    # the -pro models are priced apart (10x and more): never their family's price by prefix
    "o1-pro": (150.0, 600.0), "o3-pro": (20.0, 80.0), "gpt-5-pro": (15.0, 120.0),
    "gpt-5.5-pro": (30.0, 180.0), "gpt-5.4-pro": (30.0, 180.0),
    # Anthropic (claude-haiku-5-5's calls with a prompt of more than 100,000 tokens cost 5x)
    "claude-haiku-5-5": (0.10, 0.50, 100_000, 0.50, 2.50),
    "claude-fable-5-2": (8.0, 40.0), "claude-fable-5-1": (10.0, 50.0),
    "claude-opus-5-5": (4.0, 20.0), "claude-opus-5": (5.0, 25.0), "claude-sonnet-5": (2.0, 10.0),
    "claude-opus-4-8": (5.0, 25.0), "claude-opus-4-7": (5.0, 25.0), "claude-opus-4-6": (5.0, 25.0),
    "claude-sonnet-4-6": (3.0, 15.0), "claude-opus-4-5": (5.0, 25.0), "claude-opus-4-1": (15.0, 75.0), "claude-opus-4": (15.0, 75.0),
    "claude-sonnet-4-5": (3.0, 15.0), "claude-sonnet-4": (3.0, 15.0), "claude-3-7-sonnet": (3.0, 15.0),
    "claude-3-5-sonnet": (3.0, 15.0), "claude-haiku-4-5": (1.0, 5.0), "claude-3-5-haiku": (0.80, 4.0),
    # Google, DeepSeek, others reached through OpenAI-compatible endpoints
    "gemini-3.1-pro": (2.0, 12.0, 200_000, 4.0, 18.0), "gemini-3-pro": (2.0, 12.0, 200_000, 4.0, 18.0),
    "gemini-2.5-pro": (1.25, 10.0, 200_000, 2.50, 15.0), "gemini-2.5-flash": (0.30, 2.50), "gemini-2.0-flash": (0.10, 0.40),
    "deepseek-chat": (0.27, 1.10), "deepseek-reasoner": (0.55, 2.19),
    "grok-4": (3.0, 15.0), "mistral-large": (2.0, 6.0), "codestral": (0.30, 0.90),
}


def load_overrides(env: Mapping[str, str] | None = None) -> dict[str, Price]:
    """Prices from the JSON file in AUTORESEARCH_PRICES (ValueError names the file if it is bad)."""
    env = os.environ if env is None else env
    path = env.get("AUTORESEARCH_PRICES")
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text())
        out: dict[str, Price] = {}
        for name, v in data.items():
            pair = (v.get("input"), v.get("output")) if isinstance(v, dict) else v
            if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                    or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0
                               for x in pair)):
                raise ValueError(f"{name!r} is {json.dumps(v)}, not [input, output] or "
                                 '{"input": ..., "output": ...} (USD per million tokens, 0 or more)')
            out[str(name)] = (float(pair[0]), float(pair[1]))
        return out
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise ValueError(f"AUTORESEARCH_PRICES={path}: expected a JSON object of "
                         f'"model": [input, output] USD per million tokens ({e})') from None


def normalise(name: str) -> str:
    """openrouter's anthropic/claude-sonnet-4.5 -> claude-sonnet-4-5."""
    name = name.lower().rsplit("/", 1)[-1].split(":", 1)[0]
    return name.replace(".", "-") if name.startswith("claude") else name


def price_of(model: str, table: Mapping[str, Price]) -> Price | None:
    """(input, output) USD per million tokens, or None when the model is not in the table."""
    for key in (model, model.rsplit("/", 1)[-1], normalise(model)):
        if key in table:
            return table[key]
    name = normalise(model)
    best = max((k for k in table if name.startswith(k)), key=len, default=None)
    return table[best] if best else None


def cost(price: Price | None, tokens_in: int, tokens_out: int,
         cache_read: int = 0, cache_write: int = 0, one_call: bool = True) -> float:
    """USD for one call (tokens_in: its whole prompt, cached parts included); cached input reads
    at 10%, cache writes at 125% of the input price. A tiered model's higher pair applies to a
    call whose prompt passes its size; tokens summed over many calls (one_call=False: a CLI
    tool's totals) are priced at the first pair, as most of a coding agent's calls are."""
    if price is None:
        return 0.0
    rate_in, rate_out = price[0], price[1]
    if one_call and len(price) == 5 and tokens_in > price[2]:
        rate_in, rate_out = price[3], price[4]
    plain = max(0, tokens_in - cache_read - cache_write)
    return (rate_in * (plain + 0.1 * cache_read + 1.25 * cache_write) + rate_out * tokens_out) / 1e6
