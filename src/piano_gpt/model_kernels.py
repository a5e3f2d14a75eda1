"""CPU training kernels of :mod:`piano_gpt.model`: the same functions as the plain PyTorch ops, faster.

While training on the CPU (gradients on, not under ``torch.compile``), and only there:

- :func:`linear`: fp32 matmuls (forward, input and weight gradients) through oneDNN, which PyTorch
  bundles on x86, instead of MKL: oneDNN uses AVX-512 where PyTorch's MKL call does not;
- :func:`causal_attention`: causal attention in query chunks, chunk ``[a, b)`` against keys ``[0, b)``
  only: PyTorch's CPU flash kernel computes whole 512-key blocks even under ``is_causal``, so in one
  call a context below 512 costs as much as full attention.

Both compute the same function in the same precision as the plain path, so results differ by rounding
only. Which kernels run is one :class:`CpuTrainingKernels` setting (:func:`use_cpu_training_kernels`);
``bench/train.py`` measures them (``bench/RESULTS.md``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F


@dataclass(frozen=True)
class CpuTrainingKernels:
    """Which CPU training kernels run (the default: both)."""

    onednn_linear: bool = True  # fp32 matmuls through oneDNN (False: torch's default, MKL)
    attention_chunk: int = 128  # query rows per chunk of causal attention (0: one SDPA call)


PLAIN = CpuTrainingKernels(onednn_linear=False, attention_chunk=0)  # PyTorch's default ops only

_kernels = CpuTrainingKernels()


def cpu_training_kernels() -> CpuTrainingKernels:
    """The setting in force."""
    return _kernels


@contextmanager
def use_cpu_training_kernels(kernels: CpuTrainingKernels) -> Iterator[CpuTrainingKernels]:
    """Run the block with ``kernels`` (e.g. :data:`PLAIN`); the previous setting is restored after."""
    global _kernels
    previous, _kernels = _kernels, kernels
    try:
        yield kernels
    finally:
        _kernels = previous


_MIN_ROWS = 64  # below this many rows a matmul stays on the default path


def _cpu_training(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and torch.is_grad_enabled() and not torch.compiler.is_compiling()


# --- linear layers through oneDNN --------------------------------------------------------------------

_onednn_linear = (
    getattr(torch.ops.mkldnn, "_linear_pointwise", None) if torch.backends.mkldnn.is_available() else None
)
HAS_ONEDNN = _onednn_linear is not None


def dnn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight.T (+ bias)`` by oneDNN (needs :data:`HAS_ONEDNN`), for 2-D ``x``; ``weight`` may be
    a transposed view."""
    return _onednn_linear(x, weight, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    """``F.linear`` in fp32 whose three matmuls (forward, input and weight gradients) run in oneDNN."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        y = dnn_linear(x.reshape(-1, x.shape[-1]), weight, bias)
        return y.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        x2 = x.reshape(-1, x.shape[-1])
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = dnn_linear(g, weight.t()).view(x.shape)  # g @ W
        if ctx.needs_input_grad[1]:
            # g.T @ x; oneDNN copies its first operand to contiguous: pass the narrower one first.
            if x2.shape[1] <= g.shape[1]:
                grad_w = dnn_linear(x2.t(), g.t()).t()
            else:
                grad_w = dnn_linear(g.t(), x2.t())
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(0)
        return grad_x, grad_w, grad_b


def linear(module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``; while training in fp32 on CPU, through oneDNN (``onednn_linear``)."""
    weight = module.weight
    if (
        _kernels.onednn_linear
        and HAS_ONEDNN
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


# --- causal attention in query chunks ----------------------------------------------------------------

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


def _chunked_attention_applies(q: torch.Tensor, dropout_p: float, chunk: int) -> bool:
    """CPU training, no dropout, more than one chunk of queries."""
    return bool(
        chunk
        and q.size(2) > chunk
        and dropout_p == 0.0
        and _flash_cpu_backward is not None
        and q.dtype in (torch.float32, torch.bfloat16, torch.float16)
        and _cpu_training(q)
    )


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0
) -> torch.Tensor:
    """``F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)`` for ``(B, nh, T,
    hs)`` inputs; while training on CPU, in query chunks (``attention_chunk``)."""
    chunk = _kernels.attention_chunk
    if _chunked_attention_applies(q, dropout_p, chunk):
        # In fp32 also in bf16 / fp16: more precise, and PyTorch's CPU kernel is no faster in bf16
        # (slower on short query chunks); the result is cast back.
        with torch.autocast(q.device.type, enabled=False):
            y = _ChunkedCausalAttention.apply(q.float(), k.float(), v.float(), chunk)
        return y.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
