"""Sampling one token per row from logits: temperature, top-k, top-p, min-p, one RNG per row.

Each row (sample) has its own ``torch.Generator`` seeded with that sample's seed, and draws through
the exponential race (``argmax(p / E)``, ``E ~ Exp(1)`` i.i.d., picks ``i`` with probability
``p_i / sum(p)``), so a sample depends only on its own seed, not on which other samples share its
batch. Filters are applied in this order: the mask of allowed ids, temperature, top-k, top-p, min-p.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from piano_gpt.generation.conditioning import GenerationError
from piano_gpt.schema import Rule, check_values

SAMPLING_RULES = {  # nan and inf are refused: they would turn every probability into nan
    "temperature": Rule("float", 0.0, 1e6, meaning="a temperature (0: greedy)"),
    "top_k": Rule("int", 0, optional=True, meaning="a number of ids (0 or null: off)"),
    "top_p": Rule("float", 0.0, 1.0, low_open=True, meaning="a probability mass (1: off)"),
    "min_p": Rule("float", 0.0, 0.999999, meaning="a share of the top probability (0: off)"),
}


@dataclass(frozen=True)
class SamplingConfig:
    """``temperature`` 0 means greedy (argmax); ``top_k`` 0 or None, ``top_p`` 1 and ``min_p`` 0 are off."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0
    min_p: float = 0.0

    def __post_init__(self):
        check_values(asdict(self), SAMPLING_RULES)

    def to_dict(self) -> dict:
        return asdict(self)


class Sampler:
    """Draws one id per row from ``(B, V)`` logits, restricted to ``allowed`` ids."""

    def __init__(self, config: SamplingConfig, seeds: list[int], allowed: torch.Tensor):
        self.config = config
        device = allowed.device
        self.generators = [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]
        self.bias = torch.zeros(allowed.shape, device=device).masked_fill_(~allowed, float("-inf"))
        self.noise = torch.empty(len(seeds), allowed.size(-1), device=device)
        top_k = config.top_k or 0
        self.top_k = top_k if 0 < top_k < int(allowed.sum()) else 0

    def __call__(self, logits: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
        """One id per row; ``allowed`` (``(B, V)`` bool), when given, narrows the ids further this step."""
        config = self.config
        logits = logits.float() + self.bias
        if allowed is not None:
            logits = logits.masked_fill(~allowed[: logits.size(0)], float("-inf"))
        # A nan logit (a broken model) is no probability: argmax would otherwise pick it, masked or not.
        logits = logits.masked_fill(logits.isnan(), float("-inf"))
        possible = logits > float("-inf")
        if config.temperature == 0:
            return self._only_possible(logits, possible)
        if config.temperature != 1:
            logits = logits / config.temperature
        if self.top_k:
            kth = torch.topk(logits, self.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if config.top_p < 1:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            # Keep the smallest set of most likely ids whose mass reaches top_p.
            drop = (sorted_probs.cumsum(dim=-1) - sorted_probs) >= config.top_p
            probs = probs.scatter(-1, order, sorted_probs.masked_fill(drop, 0.0))
        if config.min_p > 0:
            floor = probs.amax(dim=-1, keepdim=True) * config.min_p
            probs = probs.masked_fill(probs < floor, 0.0)
        noise = self.noise[: probs.size(0)]
        for row, generator in enumerate(self.generators[: probs.size(0)]):
            noise[row].exponential_(generator=generator)
        noise.clamp_(min=torch.finfo(noise.dtype).tiny)  # a zero draw over a masked id would be 0/0
        return self._only_possible((probs / noise).nan_to_num(nan=-1.0), possible)

    @staticmethod
    def _only_possible(scores: torch.Tensor, possible: torch.Tensor) -> torch.Tensor:
        """The best-scoring id of each row among the possible (allowed, finite-logit) ones; never a
        masked id. A row with none (every logit nan or masked) is an error, not a silent id 0."""
        if not possible.any(dim=-1).all():
            raise GenerationError(
                "no allowed token has a finite logit (the model's output is nan or all masked)"
            )
        return scores.masked_fill(~possible, float("-inf")).argmax(dim=-1)
