"""Sampling one token per row from logits: temperature, top-k, top-p, min-p, one RNG per row.

Each row (sample) has its own (CPU) ``torch.Generator`` seeded with that sample's seed, and draws through
the exponential race (``argmax(p / E)``, ``E ~ Exp(1)`` i.i.d., picks ``i`` with probability
``p_i / sum(p)``), so a sample depends only on its own seed, not on which other samples share its
batch. Filters are applied in this order: the mask of allowed ids, temperature, top-k, top-p, min-p.

The filters run on the host in numpy, whatever the model's device: one step's logits are a few
thousand numbers, where each torch op costs more in dispatch than in arithmetic (a generation reads
every step's tokens on the host anyway, for the grammar and the stopping rules).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
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
        self.generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
        self.allowed = _host_mask(allowed)
        self.noise = torch.empty(len(seeds), self.allowed.shape[-1])
        top_k = config.top_k or 0
        self.top_k = top_k if 0 < top_k < int(self.allowed.sum()) else 0

    def __call__(self, logits: torch.Tensor, allowed: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
        """One id per row, on the host (``(B,)`` int64); ``allowed`` (``(B, V)`` bool), when given,
        narrows the ids further this step."""
        config = self.config
        scores = logits.detach().float().cpu().numpy()
        B = scores.shape[0]
        # A nan logit (a broken model) is no probability: argmax would otherwise pick it, masked or not.
        possible = self.allowed & (scores > -np.inf)  # nan compares false
        if allowed is not None:
            possible &= _host_mask(allowed)[:B]
        if not possible.any(axis=-1).all():
            raise GenerationError(
                "no allowed token has a finite logit (the model's output is nan or all masked)"
            )
        scores = np.where(possible, scores, np.float32(-np.inf))
        if config.temperature == 0:
            return scores.argmax(axis=-1)
        if config.temperature != 1:
            scores = scores / np.float32(config.temperature)
        if self.top_k:
            kth = np.partition(scores, -self.top_k, axis=-1)[:, -self.top_k, None]
            scores = np.where(scores < kth, np.float32(-np.inf), scores)
        probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        if config.top_p < 1:
            order = np.argsort(-probs, axis=-1, kind="stable")
            sorted_probs = np.take_along_axis(probs, order, axis=-1)
            # Keep the smallest set of most likely ids whose mass reaches top_p.
            drop = (sorted_probs.cumsum(axis=-1) - sorted_probs) >= config.top_p
            np.put_along_axis(probs, order, np.where(drop, np.float32(0), sorted_probs), axis=-1)
        if config.min_p > 0:
            floor = probs.max(axis=-1, keepdims=True) * np.float32(config.min_p)
            probs = np.where(probs < floor, np.float32(0), probs)
        noise = self.noise[:B]
        for row, generator in enumerate(self.generators[:B]):
            noise[row].exponential_(generator=generator)
        # A zero draw would make 0/0 of an id filtered out above.
        race = probs / np.maximum(noise.numpy(), np.finfo(np.float32).tiny)
        # Never a masked id, even where every kept probability underflowed to 0.
        return np.where(possible, race, np.float32(-1)).argmax(axis=-1)


def _host_mask(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    return mask.cpu().numpy().astype(bool) if torch.is_tensor(mask) else np.asarray(mask, bool)
