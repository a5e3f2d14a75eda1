"""The optimizer a run config names: ``optimizer.name`` = ``adamw`` (the default) or ``muon``.

``muon``: Muon (momentum, then the update orthogonalised by Newton-Schulz iterations) for the 2-D
weight matrices of the transformer blocks, at its own learning rate ``optimizer.muon_lr``; AdamW as
before for everything else (token / time / position embeddings and the tied head, norm gains, biases),
which Muon is not meant for. The two are stepped together by :class:`MuonAdamW`, which looks like one
``torch.optim.Optimizer`` to the loop: ``param_groups`` (each group's ``lr_scale`` is its learning
rate over the schedule's: the loop sets ``lr = schedule * lr_scale``), ``step``, ``zero_grad`` and a
single ``state_dict`` keyed by parameter index, so checkpoints and exact resume work unchanged.
"""

from __future__ import annotations

import torch

from piano_gpt.model import GPT
from piano_gpt.train.config import OPTIMIZERS


def muon_parameters(model: GPT) -> list[torch.nn.Parameter]:
    """The block weight matrices: 2-D parameters under ``transformer.h`` (not embeddings nor the head)."""
    return [p for name, p in model.named_parameters() if name.startswith("transformer.h.") and p.dim() == 2]


class MuonAdamW:
    """Muon and AdamW over disjoint parameters, stepped, zeroed and saved as one optimizer."""

    def __init__(self, adamw: torch.optim.Optimizer, muon: torch.optim.Optimizer):
        self.optimizers = (adamw, muon)
        self.param_groups = adamw.param_groups + muon.param_groups

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for optimizer in self.optimizers:
            optimizer.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        """One state dict: AdamW's parameters are indices 0.., Muon's follow them."""
        merged = {"state": {}, "param_groups": []}
        offset = 0
        for optimizer in self.optimizers:
            part = optimizer.state_dict()
            merged["state"].update({offset + i: s for i, s in part["state"].items()})
            for group in part["param_groups"]:
                merged["param_groups"].append({**group, "params": [offset + i for i in group["params"]]})
            offset += sum(len(g["params"]) for g in optimizer.param_groups)
        return merged

    def load_state_dict(self, state: dict) -> None:
        groups, offset = list(state["param_groups"]), 0
        for optimizer in self.optimizers:
            count = sum(len(g["params"]) for g in optimizer.param_groups)
            mine = groups[: len(optimizer.param_groups)]
            groups = groups[len(optimizer.param_groups) :]
            optimizer.load_state_dict(
                {
                    "state": {
                        int(i) - offset: s
                        for i, s in state["state"].items()
                        if offset <= int(i) < offset + count
                    },
                    "param_groups": [{**g, "params": [i - offset for i in g["params"]]} for g in mine],
                }
            )
            offset += count
        # load_state_dict replaces the group dicts: point at the new ones.
        self.param_groups = [g for optimizer in self.optimizers for g in optimizer.param_groups]


def build_optimizer(
    model: GPT,
    name: str,
    learning_rate: float,
    weight_decay: float,
    betas: tuple[float, float],
    device_type: str,
    muon_lr: float = 0.02,
    muon_weight_decay: float = 0.0,
    muon_momentum: float = 0.95,
):
    """AdamW as ``GPT.configure_optimizers`` builds it, or :class:`MuonAdamW` (see the module docstring)."""
    if name == "adamw":
        return model.configure_optimizers(weight_decay, learning_rate, betas, device_type)
    if name != "muon":
        raise ValueError(f"optimizer.name={name}: use one of {', '.join(OPTIMIZERS)}")
    matrices = muon_parameters(model)
    chosen = {id(p) for p in matrices}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in chosen]
    groups = [
        {"params": [p for p in rest if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0},
    ]
    adamw = torch.optim.AdamW(groups, lr=learning_rate, betas=betas)
    muon = torch.optim.Muon(
        [{"params": matrices, "lr_scale": muon_lr / learning_rate}],
        lr=muon_lr,
        weight_decay=muon_weight_decay,
        momentum=muon_momentum,
    )
    return MuonAdamW(adamw, muon)
