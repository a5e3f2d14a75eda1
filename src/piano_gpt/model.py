"""A GPT-2 language model over piano tokens, in one file (after nanoGPT).

Pre-LN transformer blocks, causal self-attention through ``scaled_dot_product_attention``, weight
tying between the token embedding and the output head, no biases. Two additions:

- a *music time* embedding: the running time (in tokenizer time units) at each token, as a learned
  table added to the token and position embeddings, so the model knows where in the bar-less
  timeline of a performance each token falls;
- a KV cache for incremental decoding (``KVCache``), used by ``piano_gpt.generation``.

Two CPU training fast paths (``bench/train.py`` measures them; both off outside training, i.e. with
gradients disabled, and under ``torch.compile``), each computing the same function in the same precision,
so results differ from the plain path by rounding only:

- fp32 matmuls through oneDNN (inside every x86 PyTorch) instead of MKL (``ONEDNN_LINEAR``): on the
  AMD Zen 5 CPU of ``bench/RESULTS.md`` MKL's fp32 GEMM ran at ~100 GFLOP/s per core (AVX2 speed),
  oneDNN's at ~250 (AVX-512): 1.5-2.3x faster per matmul of this model;
- causal attention in query chunks (``ATTENTION_CHUNK``): PyTorch's CPU flash-attention kernel computes
  whole 512-key blocks even under ``is_causal``, so below 512 tokens it does the work of full attention;
  chunk ``[a, b)`` of queries attends to keys ``[0, b)`` only, which skips most of the masked half.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

# --- CPU training fast paths ------------------------------------------------------------------------

ONEDNN_LINEAR = True  # fp32 CPU training matmuls through oneDNN (False: torch's default, MKL)
ATTENTION_CHUNK = 128  # query rows per chunk of CPU training attention (0: one SDPA call)
_MIN_ROWS = 64  # below this many rows a matmul stays on the default path

_onednn_linear = (
    getattr(torch.ops.mkldnn, "_linear_pointwise", None) if torch.backends.mkldnn.is_available() else None
)


def _cpu_training(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and torch.is_grad_enabled() and not torch.compiler.is_compiling()


def _dnn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight.T (+ bias)`` by oneDNN, for 2-D ``x``; ``weight`` may be a transposed view."""
    return _onednn_linear(x, weight, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    """``F.linear`` in fp32 whose three matmuls (forward, input and weight gradients) run in oneDNN."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        y = _dnn(x.reshape(-1, x.shape[-1]), weight, bias)
        return y.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        x2 = x.reshape(-1, x.shape[-1])
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _dnn(g, weight.t()).view(x.shape)  # g @ W
        if ctx.needs_input_grad[1]:
            # g.T @ x; oneDNN copies its first operand to contiguous: pass the narrower one first.
            if x2.shape[1] <= g.shape[1]:
                grad_w = _dnn(x2.t(), g.t()).t()
            else:
                grad_w = _dnn(g.t(), x2.t())
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(0)
        return grad_x, grad_w, grad_b


def linear(module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``; while training in fp32 on CPU, through oneDNN (see ``ONEDNN_LINEAR``)."""
    weight = module.weight
    if (
        ONEDNN_LINEAR
        and _onednn_linear is not None
        and type(module) is nn.Linear  # not a subclass with its own forward, and no hooks to skip
        and not (module._forward_hooks or module._forward_pre_hooks)
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and _cpu_training(x)
        and not torch.is_autocast_enabled("cpu")
        and x.numel() >= _MIN_ROWS * x.shape[-1]
    ):
        return _OneDNNLinear.apply(x, weight, module.bias)
    return module(x)


_flash_cpu = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_flash_cpu_backward = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
_chunk_masks: dict[tuple, torch.Tensor] = {}


def _chunk_mask(start: int, stop: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Additive mask of query rows ``start..stop-1`` x keys ``0..stop-1``: -inf on future keys."""
    key = (start, stop, dtype, str(device))
    if key not in _chunk_masks:
        future = ~torch.ones(stop - start, stop, dtype=torch.bool, device=device).tril(start)
        _chunk_masks[key] = torch.zeros(future.shape, dtype=dtype, device=device).masked_fill_(
            future, -math.inf
        )
    return _chunk_masks[key]


class _ChunkedCausalAttention(torch.autograd.Function):
    """Causal attention, query chunk ``[a, b)`` against keys ``[0, b)``, by PyTorch's CPU flash kernel."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int) -> torch.Tensor:
        T = q.size(2)
        bounds = [(a, min(a + chunk, T)) for a in range(0, T, chunk)]
        outs, lses = [], []
        for a, b in bounds:
            mask = None if a == 0 else _chunk_mask(a, b, q.dtype, q.device)
            out, lse = _flash_cpu(q[:, :, a:b], k[:, :, :b], v[:, :, :b], 0.0, a == 0, attn_mask=mask)
            outs.append(out)
            lses.append(lse)
        # (B, T, nh, hs) memory, the layout the caller turns the (B, nh, T, hs) result into.
        out = torch.cat([o.transpose(1, 2) for o in outs], dim=1).transpose(1, 2)
        ctx.save_for_backward(q, k, v, out, torch.cat(lses, dim=2))
        ctx.bounds = bounds
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        q, k, v, out, lse = ctx.saved_tensors
        dqs, dk, dv = [], None, None
        for a, b in reversed(ctx.bounds):  # the last chunk sees every key: its dk, dv start the sums
            mask = None if a == 0 else _chunk_mask(a, b, q.dtype, q.device)
            gq, gk, gv = _flash_cpu_backward(
                grad[:, :, a:b],
                q[:, :, a:b],
                k[:, :, :b],
                v[:, :, :b],
                out[:, :, a:b],
                lse[:, :, a:b],
                0.0,
                a == 0,
                attn_mask=mask,
            )
            dqs.append(gq)
            if dk is None:
                dk, dv = gk, gv
            else:
                dk[:, :, :b] += gk
                dv[:, :, :b] += gv
        return torch.cat(dqs[::-1], dim=2), dk, dv, None


def chunked_attention_applies(qkv: torch.Tensor, dropout: float) -> bool:
    """Whether ``CausalSelfAttention`` takes the chunked path (CPU training, no dropout, T > chunk)."""
    chunk = ATTENTION_CHUNK
    return bool(
        chunk
        and qkv.size(1) > chunk
        and dropout == 0.0
        and _flash_cpu_backward is not None
        and qkv.dtype in (torch.float32, torch.bfloat16, torch.float16)
        and _cpu_training(qkv)
    )


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
        qkv = linear(self.c_attn, x)
        dropout = self.dropout if self.training else 0.0
        chunked = cache is None and chunked_attention_applies(qkv, dropout)
        dtype = qkv.dtype
        if chunked:
            # In fp32 also in bf16 / fp16: more precise, and PyTorch's CPU kernel is no faster in bf16
            # (slower on short query chunks); the result is cast back.
            qkv = qkv.float()
        q, k, v = qkv.split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if chunked:
            with torch.autocast(x.device.type, enabled=False):
                y = _ChunkedCausalAttention.apply(q, k, v, ATTENTION_CHUNK).to(dtype)
        elif cache is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
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
        return self.resid_dropout(linear(self.c_proj, y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(linear(self.c_proj, self.gelu(linear(self.c_fc, x))))


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
            logits = linear(self.lm_head, x)
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
