"""FSDP2 (``system.fsdp=true`` under torchrun): parameters, gradients and AdamW state sharded across
processes, for models past one GPU's memory.

Each transformer block is its own FSDP unit (its full weights exist only while it runs); the root unit
holds the embeddings, the final norm and the tied output head. Checkpoints stay the same files as
without FSDP: the full model and optimizer state are gathered to rank 0 (on the CPU) and written
there, with the optimizer state keyed by parameter index as ``torch.optim`` numbers it, so a run
saved with FSDP resumes with DDP or on one process, and the other way round.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import fully_shard

from piano_gpt.model import GPT

# Gathered on rank 0 only, in CPU memory: one full copy, never on the GPU.
GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)


def shard_model(model: GPT) -> GPT:
    """Shard ``model`` in place across the default process group; returns it.

    Rank 0's weights are broadcast first: DDP does that when it wraps a model, FSDP does not, and each
    rank initialised its own (differently seeded) copy."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor, src=0)
    # The training loop never modifies a forward's outputs in place, which is what this warns about.
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    for block in model.transformer.h:
        fully_shard(block)
    fully_shard(model)
    return model


def _parameter_names(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Names of the optimizer's parameters in torch.optim's index order (groups, then params)."""
    names = {id(p): name for name, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def gather_full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """(model state, optimizer state keyed by index), complete on rank 0 and empty elsewhere.
    A collective: every rank must call it."""
    model_state = get_model_state_dict(model, options=GATHER)
    by_name = get_optimizer_state_dict(model, optimizer, options=GATHER)
    if not model_state:
        return {}, {}
    names = _parameter_names(model, optimizer)
    index = {name: i for i, name in enumerate(names)}
    state = {index[name]: values for name, values in by_name["state"].items()}
    groups = [
        {**group, "params": [index[name] for name in group["params"]]} for group in by_name["param_groups"]
    ]
    return model_state, {"state": state, "param_groups": groups}


def load_full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load an index-keyed full optimizer state (a checkpoint's) into a sharded optimizer; every rank
    passes the same full state and keeps its own shard."""
    names = _parameter_names(model, optimizer)
    by_name = {
        "state": {names[int(i)]: values for i, values in state["state"].items()},
        "param_groups": [
            {**group, "params": [names[int(i)] for i in group["params"]]} for group in state["param_groups"]
        ],
    }
    set_optimizer_state_dict(model, optimizer, by_name, options=StateDictOptions(full_state_dict=True))
