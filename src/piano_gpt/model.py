"""A GPT language model over piano tokens, in one file (after nanoGPT).

Pre-LN transformer blocks, causal self-attention through ``scaled_dot_product_attention``, weight
tying between the token embedding and the output head, no biases. Two architecture families share
the code, chosen by switches of :class:`GPTConfig` (each can be turned on alone, to be measured):

- ``gpt2`` (the defaults): learned position table ``wpe``, LayerNorm, GELU MLP (4x wide);
- ``piano``, a modern small LM: rotary positions (``rotary``: no ``wpe``, relative positions in the
  attention scores, so no learned limit on length), RMSNorm (``norm="rmsnorm"``), a SwiGLU MLP
  (``mlp="swiglu"``, hidden width ~8/3 x so the parameter count stays close), and RMSNorm of each
  head's queries and keys (``qk_norm``), which keeps attention logits bounded at high learning rates.

Two additions to both:

- a *music time* embedding: the running time (in tokenizer time units) at each token, as a learned
  table added to the token and position embeddings, so the model knows where in the bar-less
  timeline of a performance each token falls;
- a KV cache for incremental decoding (``KVCache``), used by ``piano_gpt.generation``.

While training on the CPU, the linear layers and causal attention run through the kernels of
``piano_gpt.model_kernels`` (the same functions, faster; ``CpuTrainingKernels`` switches them).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from piano_gpt import model_kernels as kernels
from piano_gpt.schema import Rule, check_values


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 1241
    n_layer: int = 12
    n_head: int = 8
    n_embd: int = 256
    dropout: float = 0.0
    bias: bool = False
    music_time_embedding: bool = True
    max_music_time: int = 10_000
    # The architecture: a family name (recorded, for people and lists) and the switches that define
    # it. The defaults are GPT-2 exactly; checkpoints saved before these fields existed load as gpt2.
    architecture: str = "gpt2"  # gpt2 | piano | custom (a mix of switches)
    rotary: bool = False  # rotary position embedding instead of the learned table wpe
    rope_base: float = 10_000.0
    norm: str = "layernorm"  # layernorm | rmsnorm
    mlp: str = "gelu"  # gelu | swiglu
    qk_norm: bool = False  # RMSNorm of queries and keys, per head

    def __post_init__(self) -> None:
        # Untrusted configs (a checkpoint's config.json, a command line) reach here: every field is
        # checked, with bounds far above any piano model, before a single tensor is allocated.
        check_values(self.__dict__, MODEL_RULES, prefix="model.")
        if self.n_embd % self.n_head:
            raise ValueError(f"model.n_embd={self.n_embd} must be divisible by model.n_head={self.n_head}")
        choices = {"architecture": ARCHITECTURES, "norm": ("layernorm", "rmsnorm"), "mlp": ("gelu", "swiglu")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"model {key}={getattr(self, key)!r}: use one of {', '.join(allowed)}")
        if self.rotary and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"rotary positions need an even head size, got {self.n_embd // self.n_head}")

    @property
    def is_gpt2(self) -> bool:
        """The GPT-2 layout (whatever the family name says)."""
        return not self.rotary and self.norm == "layernorm" and self.mlp == "gelu" and not self.qk_norm

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GPTConfig:
        """A saved config; keys it lacks take their defaults (older checkpoints: gpt2), unknown keys
        are refused (a model this code does not know how to build)."""
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(
                f"unknown model config keys {', '.join(unknown)} (written by a newer piano_gpt?)"
            )
        return cls(**data)


ARCHITECTURES = ("gpt2", "piano", "custom")
MODEL_RULES = {
    "block_size": Rule("int", 1, 1 << 20, meaning="the context length"),
    "vocab_size": Rule("int", 1, 1 << 22),
    "n_layer": Rule("int", 1, 1024, meaning="the number of blocks"),
    "n_head": Rule("int", 1, 1024),
    "n_embd": Rule("int", 1, 1 << 16, meaning="the embedding width"),
    "dropout": Rule("float", 0.0, 1.0, meaning="a probability below 1"),
    "bias": Rule("bool"),
    "music_time_embedding": Rule("bool"),
    "max_music_time": Rule("int", 1, 1 << 24),
    "architecture": Rule("str"),
    "rotary": Rule("bool"),
    "rope_base": Rule("float", 1.0, low_open=True),
    "norm": Rule("str"),
    "mlp": Rule("str"),
    "qk_norm": Rule("bool"),
}


def swiglu_hidden(n_embd: int) -> int:
    """SwiGLU hidden width: 8/3 of n_embd (three matrices instead of two of 4x), a multiple of 64."""
    return 64 * max(1, round(8 * n_embd / 3 / 64))


def make_norm(config: GPTConfig, size: int | None = None) -> nn.Module:
    size = size or config.n_embd
    if config.norm == "rmsnorm":
        return nn.RMSNorm(size, eps=1e-5)
    return nn.LayerNorm(size, bias=config.bias)


def rotary_tables(config: GPTConfig, start: int, length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each ``(length, head_dim / 2)``, for absolute positions ``start .. start+length-1``."""
    head_dim = config.n_embd // config.n_head
    inv_freq = config.rope_base ** (
        -torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim
    )
    angles = torch.outer(torch.arange(start, start + length, device=device, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate the two halves of each head of ``x`` ``(B, nh, T, hs)`` by the position angles."""
    cos, sin = (t.to(x.dtype) for t in rope)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class KVCache:
    """Pre-allocated keys and values for every layer; ``length`` tokens are filled."""

    def __init__(self, config: GPTConfig, batch_size: int, max_length: int, device, dtype):
        head_dim = config.n_embd // config.n_head
        shape = (config.n_layer, batch_size, config.n_head, max_length, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.max_length = max_length
        self.length = 0

    def reset(self) -> None:
        self.length = 0


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer_index: int):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.layer_index = layer_index
        if config.qk_norm:
            self.q_norm = nn.RMSNorm(config.n_embd // config.n_head, eps=1e-5)
            self.k_norm = nn.RMSNorm(config.n_embd // config.n_head, eps=1e-5)
        self.qk_norm = config.qk_norm

    def forward(
        self,
        x: torch.Tensor,
        cache: KVCache | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = kernels.linear(self.c_attn, x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:  # the cache keeps rotated keys: rotation depends on absolute position only
            q, k = apply_rotary(q, rope), apply_rotary(k, rope)
        if cache is None:
            y = kernels.causal_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        else:
            past = cache.length
            cache.keys[self.layer_index, :, :, past : past + T] = k
            cache.values[self.layer_index, :, :, past : past + T] = v
            k = cache.keys[self.layer_index, :, :, : past + T]
            v = cache.values[self.layer_index, :, :, : past + T]
            if T == 1:
                y = F.scaled_dot_product_attention(q, k, v)  # one new token sees everything
            elif past == 0:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                # Query i (absolute position past+i) sees keys 0..past+i.
                mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(kernels.linear(self.c_proj, y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(kernels.linear(self.c_proj, self.gelu(kernels.linear(self.c_fc, x))))


class SwiGLU(nn.Module):
    """``c_proj(silu(gate) * up)``; ``c_fc`` holds gate and up as one matrix (one matmul)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.hidden = swiglu_hidden(config.n_embd)
        self.c_fc = nn.Linear(config.n_embd, 2 * self.hidden, bias=config.bias)
        self.c_proj = nn.Linear(self.hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = kernels.linear(self.c_fc, x).split(self.hidden, dim=-1)
        return self.dropout(kernels.linear(self.c_proj, F.silu(gate) * up))


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer_index: int):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config, layer_index)
        self.ln_2 = make_norm(config)
        self.mlp = SwiGLU(config) if config.mlp == "swiglu" else MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        cache: KVCache | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, rope)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        modules = dict(wte=nn.Embedding(config.vocab_size, config.n_embd))
        if not config.rotary:
            modules["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        modules.update(
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            ln_f=make_norm(config),
        )
        if config.music_time_embedding:
            modules["wtime"] = nn.Embedding(config.max_music_time, config.n_embd)
        self.transformer = nn.ModuleDict(modules)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying

        self.apply(self._init_weights)
        # Scaled init of the residual projections, per the GPT-2 paper.
        for name, parameter in self.named_parameters():
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(parameter, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            if not self.config.rotary:
                n -= self.transformer.wpe.weight.numel()
            if self.config.music_time_embedding:
                n -= self.transformer.wtime.weight.numel()
        return n

    def forward(
        self,
        idx: torch.Tensor,
        time_steps: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
        all_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits, and the mean cross-entropy over targets != -1 when targets are given.

        Without targets only the last position's logits are computed, unless ``all_logits``.
        """
        B, T = idx.size()
        past = cache.length if cache is not None else 0
        if not self.config.rotary and past + T > self.config.block_size:  # the end of the wpe table
            raise ValueError(f"sequence of {past + T} tokens exceeds block_size {self.config.block_size}")
        if cache is not None and past + T > cache.max_length:
            raise ValueError(f"sequence of {past + T} tokens exceeds the cache's {cache.max_length}")
        x = self.transformer.wte(idx)
        rope = None
        if self.config.rotary:
            rope = rotary_tables(self.config, past, T, idx.device)
        else:
            x = x + self.transformer.wpe(torch.arange(past, past + T, dtype=torch.long, device=idx.device))
        if self.config.music_time_embedding:
            if time_steps is None:
                raise ValueError("this model uses the music time embedding: pass time_steps")
            x = x + self.transformer.wtime(time_steps.clamp(0, self.config.max_music_time - 1))
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x, cache, rope)
        if cache is not None:
            cache.length = past + T
        x = self.transformer.ln_f(x)

        if targets is not None:
            logits = kernels.linear(self.lm_head, x)
            loss = F.cross_entropy(
                logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1
            )
            return logits, loss
        if all_logits:
            return self.lm_head(x), None
        return self.lm_head(x[:, [-1], :]), None

    def configure_optimizers(
        self, weight_decay: float, learning_rate: float, betas: tuple[float, float], device_type: str
    ) -> torch.optim.AdamW:
        """AdamW with decay on 2-D weights (matmuls, embeddings) only; biases and norms undecayed."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        fused = device_type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **({"fused": True} if fused else {}))

    def flops_per_token(self) -> float:
        """Training FLOPs per token (PaLM appendix B: 6N + 12 L H Q T)."""
        cfg = self.config
        n = self.num_parameters(non_embedding=True)
        head_dim = cfg.n_embd // cfg.n_head
        return 6 * n + 12 * cfg.n_layer * cfg.n_head * head_dim * cfg.block_size
