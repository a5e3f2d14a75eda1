"""A GPT-2 language model over piano tokens, in one file (after nanoGPT).

Pre-LN transformer blocks, causal self-attention through ``scaled_dot_product_attention``, weight
tying between the token embedding and the output head, no biases. Two additions:

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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GPTConfig:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


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

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = kernels.linear(self.c_attn, x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
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


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer_index: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer_index)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        modules = dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
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
        if past + T > self.config.block_size:
            raise ValueError(f"sequence of {past + T} tokens exceeds block_size {self.config.block_size}")
        pos = torch.arange(past, past + T, dtype=torch.long, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        if self.config.music_time_embedding:
            if time_steps is None:
                raise ValueError("this model uses the music time embedding: pass time_steps")
            x = x + self.transformer.wtime(time_steps.clamp(0, self.config.max_music_time - 1))
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x, cache)
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


MODEL_PRESETS: dict[str, dict] = {
    "gpt2_10M": dict(n_layer=12, n_head=8, n_embd=256),
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),
    "gpt2_medium": dict(n_layer=24, n_head=16, n_embd=1024),
    "gpt2_large": dict(n_layer=36, n_head=20, n_embd=1280),
}
