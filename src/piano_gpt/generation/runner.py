"""Incremental decoding backends: a KV cache and the music time embedding advanced one token a step.

Both runners have the same interface:

- ``prefill(ids, time_steps, batch_size=None) -> logits``: empty the cache and run a whole window
  (``ids`` ``(B, T)``); returns the logits of the last position ``(B, V)``. With ``batch_size`` the one
  row given (``B == 1``) is the prompt of all ``batch_size`` samples: FastRunner computes and keeps
  its keys and values once; ModelRunner runs it for every row (``KVCache`` holds whole batches);
- ``step(tokens, time_steps) -> logits``: one new token per row (``(B,)`` each); logits ``(B, V)``;
- ``length`` (positions filled) and ``capacity`` (the model's ``block_size``).

:class:`ModelRunner` is the reference: ``GPT.forward`` with ``model.KVCache``. :class:`FastRunner`
computes the same function from the same weights with less work per token. On a CPU, decoding a
small model is bound by memory traffic (weights and cache) and per-op overhead, not by FLOPs, so it:

1. runs every linear layer of a step as ``W @ x.T`` on the weight as stored: for a few rows this GEMM
   streams ``W`` with every core, where ``F.linear``'s ``x @ W.T`` (a GEMV for one row) reaches about
   half the bandwidth; a single sample is padded to two rows to stay on the GEMM path;
2. keeps the keys and values of a prompt shared by the whole batch once, and attends to them with one
   ``(H, B, D) @ (H, D, P)`` product per layer, instead of reading B copies (n samples of one prompt:
   the usual case);
3. folds the attention scale ``1/sqrt(head_dim)`` into the query weights (or, with q/k norms, into
   the query norm's gain), takes rotary angles from one table computed once, and skips dropout and
   the module-call machinery;
4. on a CPU in float32, runs each step as one compiled C function (``generation.native``: the whole
   model for one token, in one OpenMP region, matrix-vector products streaming each weight once at
   memory speed, keys cached in tiles of 16 positions), where a C compiler is found; otherwise (or
   with ``FastRunner(..., native=False)`` or ``PIANO_GPT_NATIVE=0``) the PyTorch step below. The
   prompt goes through PyTorch either way, its matrix products through oneDNN in float32.

On a CUDA device, :class:`GraphRunner` decodes instead: a small model's step there is bound by kernel
launches, not by the GPU, so each step replays one captured CUDA graph (see the class).

The runners agree to float rounding (the tests hold the logits to 1e-4). FastRunner (and its native
step) compute both architecture families and every mix of their switches (``GPTConfig``: learned or
rotary positions, LayerNorm or RMSNorm, GELU or SwiGLU MLP, q/k norms, biases). Positions, as in
``GPT.forward``, count from the start of the window in the cache: a re-primed (slid) window starts
again at 0, rotary or learned.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch.nn import functional as F

from piano_gpt.generation import native as native_module
from piano_gpt.model import GPT, KVCache, apply_rotary, rotary_tables
from piano_gpt.model_kernels import HAS_ONEDNN, dnn_linear


class ModelRunner:
    """Decoding through ``GPT.forward`` and its ``KVCache`` (the reference path)."""

    def __init__(self, model: GPT, batch_size: int):
        self.model = model
        parameter = next(model.parameters())
        self.cache = KVCache(
            model.config, batch_size, model.config.block_size, parameter.device, parameter.dtype
        )
        self.batch_size = batch_size
        self.capacity = model.config.block_size

    @property
    def length(self) -> int:
        return self.cache.length

    def prefill(
        self, ids: torch.Tensor, time_steps: torch.Tensor, batch_size: int | None = None
    ) -> torch.Tensor:
        self.cache.reset()
        if batch_size is not None and batch_size != ids.size(0):
            # KVCache takes whole batches: the shared prompt is run for every row.
            ids, time_steps = ids.expand(batch_size, -1), time_steps.expand(batch_size, -1)
        logits, _ = self.model(ids, time_steps, cache=self.cache)
        return logits[:, -1]

    def step(self, tokens: torch.Tensor, time_steps: torch.Tensor) -> torch.Tensor:
        logits, _ = self.model(tokens[:, None], time_steps[:, None], cache=self.cache)
        return logits[:, -1]


class _Layer:
    __slots__ = (
        "ln1_w",
        "ln1_b",
        "qkv",
        "qkv_b",
        "proj",
        "proj_b",
        "ln2_w",
        "ln2_b",
        "fc",
        "fc_b",
        "fc2",
        "fc2_b",
        "q_norm_w",
        "k_norm_w",
        "qk_norm_w",
    )


def _weights(linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    bias = getattr(linear, "bias", None)  # RMSNorm has none
    return linear.weight.detach(), None if bias is None else bias.detach()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``model.apply_rotary`` on ``(..., D)``: the two halves of each head turned by the angles."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def _linear_t(weight: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``(x @ weight.T + bias).T`` as ``(out, B)`` for row-major ``x`` ``(B, in)``.

    ``weight @ x.T`` is the GEMM form that runs fastest here for a handful of rows (see FastRunner).
    """
    return torch.mm(weight, x.t()) if bias is None else torch.addmm(bias[:, None], weight, x.t())


class FastRunner:
    """The model's decoding function with a lean per-token path (see the module docstring).

    A step keeps the residual stream row-major ``(rows, C)``; linear layers give ``(out, rows)``
    (``W @ x.T``), read back through a transposed view. Spare rows (when the batch is smaller than
    ``MIN_ROWS``) carry zeros through the MLPs and are never attended to nor returned.

    ``native``: ``None`` takes the compiled step where it can (float32 on the CPU, a compiler found),
    ``True`` requires it (``RuntimeError`` otherwise), ``False`` keeps the PyTorch step.
    """

    MIN_ROWS = 2

    # The switches of GPTConfig whose every value FastRunner computes (the rest: rotary, qk_norm and
    # bias are on/off, both computed; dropout is off at inference).
    SWITCHES = {"norm": ("layernorm", "rmsnorm"), "mlp": ("gelu", "swiglu")}

    @classmethod
    def supports(cls, model: GPT) -> bool:
        """Whether FastRunner computes ``model``: both families, gpt2 and piano, and any mix of their
        switches (learned or rotary positions, LayerNorm or RMSNorm, GELU or SwiGLU, q/k norms, biases)."""
        return all(getattr(model.config, key) in values for key, values in cls.SWITCHES.items())

    def __init__(self, model: GPT, batch_size: int, native: bool | None = None):
        config = model.config
        if not self.supports(model):
            raise ValueError(
                f"FastRunner cannot compute norm={config.norm!r}, mlp={config.mlp!r}: use ModelRunner"
            )
        transformer = model.transformer
        parameter = next(model.parameters())
        self.device = parameter.device
        self.head_dim = config.n_embd // config.n_head
        norms = [transformer.ln_f, *(n for block in transformer.h for n in (block.ln_1, block.ln_2))]
        if config.qk_norm:
            norms += [n for block in transformer.h for n in (block.attn.q_norm, block.attn.k_norm)]
        self.eps = transformer.ln_f.eps
        self.qk_eps = transformer.h[0].attn.q_norm.eps if config.qk_norm else self.eps
        library = None
        if native is None or native:
            suitable = (
                self.device.type == "cpu"
                and parameter.dtype in (torch.float32, torch.bfloat16)
                and self.head_dim <= 256
                and all(n.eps == self.eps for n in norms)
                and native_module.model_unsupported(config) is None
            )
            library = native_module.library() if suitable else None
            if native and library is None:
                reason = (
                    native_module.unavailable_reason()
                    if suitable
                    else "the model is not float32 or bfloat16 on the CPU"
                )
                raise RuntimeError(f"no native step: {reason}")
        # A bfloat16 model on the compiled step keeps its matrices in bfloat16 (half the bytes a step
        # reads from memory) and computes in float32: its other tensors are widened once, here.
        self.bf16_matrices = library is not None and parameter.dtype == torch.bfloat16
        self.dtype = torch.float32 if self.bf16_matrices else parameter.dtype  # the arithmetic's

        def vector(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.detach().to(self.dtype)

        def matrix(weight: torch.Tensor, row_scale: torch.Tensor | None = None) -> torch.Tensor:
            """A weight matrix in its own dtype; ``row_scale`` applied in the arithmetic's dtype first."""
            weight = weight.detach()
            if row_scale is None:
                return weight
            return (weight.to(self.dtype) * row_scale[:, None]).to(weight.dtype)

        def linear(module) -> tuple[torch.Tensor, torch.Tensor | None]:
            weight, bias = _weights(module)
            return matrix(weight), vector(bias)

        self.n_embd, self.n_head = config.n_embd, config.n_head
        self.capacity = config.block_size
        self.config = config
        self.max_time = config.max_music_time
        self.batch_size = batch_size
        self.rows = max(batch_size, self.MIN_ROWS)
        self.wte = vector(transformer.wte.weight)
        self.wpe = None if config.rotary else vector(transformer.wpe.weight)
        self.wtime = vector(transformer.wtime.weight) if config.music_time_embedding else None
        self.rmsnorm, self.swiglu, self.qk_norm = (
            config.norm == "rmsnorm",
            config.mlp == "swiglu",
            config.qk_norm,
        )
        # Rotary angles of every position the cache holds, as GPT.forward computes them.
        self.rope = None
        if config.rotary:  # in the arithmetic's dtype, as apply_rotary uses them
            self.rope = tuple(
                t.to(self.dtype) for t in rotary_tables(config, 0, config.block_size, self.device)
            )
        self.lnf_w, self.lnf_b = map(vector, _weights(transformer.ln_f))
        self.head = matrix(model.lm_head.weight)
        # The attention scale 1/sqrt(head_dim) is folded into the queries: into their norm's gain where
        # there is one (a norm undoes any scale before it), else into the query weights.
        query_scale = 1.0 / math.sqrt(self.head_dim)
        scale = torch.ones(3 * config.n_embd, device=self.device, dtype=self.dtype)
        if not config.qk_norm:
            scale[: config.n_embd] = query_scale
        self.layers = []
        for block in transformer.h:
            layer = _Layer()
            layer.ln1_w, layer.ln1_b = map(vector, _weights(block.ln_1))
            layer.ln2_w, layer.ln2_b = map(vector, _weights(block.ln_2))
            qkv, qkv_b = _weights(block.attn.c_attn)
            layer.qkv = matrix(qkv, scale)
            layer.qkv_b = None if qkv_b is None else vector(qkv_b) * scale
            layer.proj, layer.proj_b = linear(block.attn.c_proj)
            layer.fc, layer.fc_b = linear(block.mlp.c_fc)
            layer.fc2, layer.fc2_b = linear(block.mlp.c_proj)
            layer.q_norm_w = vector(block.attn.q_norm.weight) * query_scale if config.qk_norm else None
            layer.k_norm_w = vector(block.attn.k_norm.weight) if config.qk_norm else None
            layer.qk_norm_w = torch.stack([layer.q_norm_w, layer.k_norm_w]) if config.qk_norm else None
            self.layers.append(layer)
        # The native step keeps keys in tiles of 16 positions (native.tile_keys); values as here.
        self.tiled = library is not None
        T, H, D = config.block_size, config.n_head, self.head_dim
        key_shape = (
            (native_module.tiled_length(T) // native_module.TILE, D, native_module.TILE)
            if self.tiled
            else (T, D)
        )
        options = dict(device=self.device, dtype=self.dtype)
        # Uninitialised: only the positions filled are ever read.
        self.keys = torch.empty(config.n_layer, batch_size, H, *key_shape, **options)
        self.values = torch.empty(config.n_layer, batch_size, H, T, D, **options)
        # Keys and values of a prompt every row shares (after ``prefill(..., batch_size=...)``).
        self.shared_keys = torch.empty(config.n_layer, H, *key_shape, **options)
        self.shared_values = torch.empty(config.n_layer, H, T, D, **options)
        self.length = 0  # positions filled
        self.shared = 0  # of which the first ``shared`` are in the shared cache
        self.native = native_module.NativeStep(self, library) if self.tiled else None
        # oneDNN float32 matmuls for the prompt: faster than MKL's (see piano_gpt.model_kernels).
        self.onednn = HAS_ONEDNN and self.device.type == "cpu" and self.dtype == torch.float32

    def _linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        weight = weight.to(x.dtype)  # bfloat16 matrices, widened for the prompt's float32 arithmetic
        return dnn_linear(x, weight, bias) if self.onednn else F.linear(x, weight, bias)

    def _norm(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        C = self.n_embd
        if self.rmsnorm:
            return F.rms_norm(x, (C,), weight, self.eps)
        return F.layer_norm(x, (C,), weight, bias, self.eps)

    def _queries_keys(self, layer: _Layer, qk: torch.Tensor, start: int, length: int) -> torch.Tensor:
        """q/k norms and rotary positions of queries and keys stacked ``(2, ..., D)``: positions
        ``start .. start+length-1`` along the dimension before ``D`` when ``length > 1``, else the
        one position ``start`` for all. Both at once: half the small ops of a step."""
        D = self.head_dim
        if self.qk_norm:
            gains = layer.qk_norm_w.view(2, *[1] * (qk.dim() - 2), D)
            qk = F.rms_norm(qk, (D,), None, self.qk_eps) * gains
        if self.rope is not None:
            cos, sin = (table[start : start + length] for table in self.rope)
            if length == 1:
                cos, sin = cos[0], sin[0]
            qk = _rotate(qk, cos, sin)
        return qk

    def _mlp(self, layer: _Layer, h: torch.Tensor) -> torch.Tensor:
        """The MLP of row-major ``h`` ``(N, C)`` (the prompt's path)."""
        f = self._linear(h, layer.fc, layer.fc_b)
        if self.swiglu:
            gate, up = f.chunk(2, dim=-1)
            f = F.silu(gate) * up
        else:
            f = F.gelu(f)
        return self._linear(f, layer.fc2, layer.fc2_b)

    def _embed(self, ids: torch.Tensor, positions: torch.Tensor, time_steps: torch.Tensor) -> torch.Tensor:
        x = F.embedding(ids, self.wte)
        if self.wpe is not None:
            x = x + F.embedding(positions, self.wpe)
        if self.wtime is not None:
            x = x + F.embedding(time_steps.clamp(0, self.max_time - 1), self.wtime)
        return x

    def prefill(
        self, ids: torch.Tensor, time_steps: torch.Tensor, batch_size: int | None = None
    ) -> torch.Tensor:
        B, T = ids.shape
        if T > self.capacity:
            raise ValueError(f"sequence of {T} tokens exceeds block_size {self.capacity}")
        shared = batch_size is not None and batch_size != B
        if shared and B != 1:
            raise ValueError(f"a shared prompt is one row, got {B}")
        C, H, D = self.n_embd, self.n_head, self.head_dim
        positions = torch.arange(T, device=ids.device)
        x = self._embed(ids, positions, time_steps).view(B * T, C)
        for index, layer in enumerate(self.layers):
            h = self._norm(x, layer.ln1_w, layer.ln1_b)
            qkv = self._linear(h, layer.qkv, layer.qkv_b).view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]  # (B, H, T, D)
            if self.qk_norm or self.rope is not None:
                q, k = self._queries_keys(layer, qkv[:2], 0, T)
            keys = native_module.tile_keys(k) if self.tiled else k
            if shared:
                self.shared_keys[index, :, : keys.size(2)] = keys[0]
                self.shared_values[index, :, :T] = v[0]
            else:
                self.keys[index, :B, :, : keys.size(2)] = keys
                self.values[index, :B, :, :T] = v
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0)
            x = x + self._linear(y.transpose(1, 2).reshape(B * T, C), layer.proj, layer.proj_b)
            x = x + self._mlp(layer, self._norm(x, layer.ln2_w, layer.ln2_b))
        self.length = T
        self.shared = T if shared else 0
        last = self._norm(x.view(B, T, C)[:, -1], self.lnf_w, self.lnf_b)
        logits = F.linear(last, self.head.to(last.dtype))
        return logits.expand(batch_size, -1) if shared else logits

    def _attend(self, index: int, qkv_t: torch.Tensor, position: int, B: int) -> torch.Tensor:
        """Attention of one new token per row; ``qkv_t`` is ``(3C, rows)``; returns ``(B, C)``."""
        C, H, D, P = self.n_embd, self.n_head, self.head_dim, self.shared
        own = position - P  # this token's slot in its row's own cache
        if self.qk_norm or self.rope is not None:
            qk = qkv_t[: 2 * C, :B].view(2, H, D, B).transpose(2, 3)  # queries and keys (2, H, B, D)
            qk = self._queries_keys(self.layers[index], qk, position, 1)
            q_heads, new_keys = qk[0], qk[1].transpose(0, 1)
        else:
            q_heads = qkv_t[:C, :B].view(H, D, B).transpose(1, 2)  # (H, B, D)
            new_keys = qkv_t[C : 2 * C, :B].view(H, D, B).permute(2, 0, 1)  # (B, H, D)
        keys, values = self.keys[index, :B], self.values[index, :B]
        keys[:, :, own] = new_keys
        values[:, :, own] = qkv_t[2 * C :, :B].view(H, D, B).permute(2, 0, 1)
        q = q_heads.transpose(0, 1).unsqueeze(2).contiguous()  # (B, H, 1, D); contiguous: flash kernel
        if P == 0:
            y = F.scaled_dot_product_attention(q, keys[:, :, : own + 1], values[:, :, : own + 1], scale=1.0)
            return y.view(B, C)
        own_scores = torch.matmul(q, keys[:, :, : own + 1].transpose(-1, -2))  # (B, H, 1, G)
        # The shared prompt is read once for the whole batch: (H, B, D) @ (H, D, P).
        shared_scores = torch.matmul(q_heads, self.shared_keys[index, :, :P].transpose(-1, -2))  # (H, B, P)
        scores = torch.cat([shared_scores.transpose(0, 1), own_scores.squeeze(2)], dim=-1)  # (B, H, P + G)
        probs = torch.softmax(scores, dim=-1)
        y = torch.matmul(probs[..., P:].unsqueeze(2), values[:, :, : own + 1]).squeeze(2)  # (B, H, D)
        shared_y = torch.matmul(probs[..., :P].transpose(0, 1), self.shared_values[index, :, :P])  # (H, B, D)
        return y.add_(shared_y.transpose(0, 1)).view(B, C)

    def step(self, tokens: torch.Tensor, time_steps: torch.Tensor) -> torch.Tensor:
        position = self.length
        if position >= self.capacity:
            raise ValueError(f"the cache is full ({self.capacity} tokens): re-prime it first")
        if self.native is not None:
            logits = self.native(tokens, time_steps, position, self.shared)
            self.length = position + 1
            return logits
        B, C = tokens.size(0), self.n_embd
        x = F.embedding(tokens, self.wte)
        if self.wpe is not None:
            x = x + self.wpe[position]
        if self.wtime is not None:
            x = x + F.embedding(time_steps.clamp(0, self.max_time - 1), self.wtime)
        padded = B < self.rows
        if padded:  # spare rows: zeros, carried through the MLPs and never read
            x = torch.cat([x, x.new_zeros(self.rows - B, C)])
            y = x.new_zeros(self.rows, C)
        for index, layer in enumerate(self.layers):
            h = self._norm(x, layer.ln1_w, layer.ln1_b)
            attended = self._attend(index, _linear_t(layer.qkv, h, layer.qkv_b), position, B)
            if padded:
                y[:B] = attended
                attended = y
            x.add_(_linear_t(layer.proj, attended, layer.proj_b).t())
            h = self._norm(x, layer.ln2_w, layer.ln2_b)
            f = _linear_t(layer.fc, h, layer.fc_b)  # (F or 2F, rows)
            if self.swiglu:
                gate, up = f.chunk(2, dim=0)
                g = (F.silu(gate) * up).t().contiguous()
            else:
                g = F.gelu(f.t().contiguous())
            x.add_(_linear_t(layer.fc2, g, layer.fc2_b).t())
        self.length = position + 1
        h = self._norm(x, self.lnf_w, self.lnf_b)
        return torch.mm(self.head, h.t()).t()[:B].contiguous()


class GraphRunner(ModelRunner):
    """Decoding on a CUDA device, each step replayed from one captured CUDA graph.

    A small model's step on a GPU launches a hundred-odd kernels that each finish before the next is
    queued: the step is bound by launches, not by the GPU. A graph replays them all with one launch, but
    only fixed shapes at fixed addresses. So the step here reads its tokens, time steps and position from
    fixed device buffers, writes its keys and values at that position (``index_copy_``) and attends over
    the whole cache behind a mask of the positions filled. The prompt runs eagerly through
    ``GPT.forward`` into the same cache (``ModelRunner.prefill``), so a re-primed window needs no new graph.

    ``capture``: ``None`` captures on a CUDA device; ``False`` runs the same fixed-shape step eagerly (how
    it is tested without a GPU). Where capture fails, the step runs eagerly, with one warning.
    """

    def __init__(self, model: GPT, batch_size: int, capture: bool | None = None):
        super().__init__(model, batch_size)
        config, device = model.config, self.cache.keys.device
        self.capture = device.type == "cuda" if capture is None else capture
        self.tokens = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.time_steps = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.position = torch.zeros(1, dtype=torch.long, device=device)
        self.slots = torch.arange(config.block_size, device=device)
        self.rope = rotary_tables(config, 0, config.block_size, device) if config.rotary else None
        self.graph = None
        self.logits = None  # the graph's output buffer

    def _fixed_step(self) -> torch.Tensor:
        """GPT.forward of one token per row at ``self.position``, with shapes independent of it."""
        model, config = self.model, self.model.config
        transformer, position = model.transformer, self.position
        B, C, H = self.batch_size, config.n_embd, config.n_head
        x = transformer.wte(self.tokens[:, None])  # (B, 1, C)
        rope = None
        if self.rope is None:
            x = x + transformer.wpe(position)
        else:
            rope = tuple(table.index_select(0, position) for table in self.rope)
        if config.music_time_embedding:
            x = x + transformer.wtime(self.time_steps.clamp(0, config.max_music_time - 1))[:, None]
        visible = (self.slots <= position)[None]  # (1, T): the positions filled, this one included
        for index, block in enumerate(transformer.h):
            attention = block.attn
            qkv = attention.c_attn(block.ln_1(x)).view(B, 1, 3, H, C // H).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]  # (B, H, 1, D)
            if config.qk_norm:
                q, k = attention.q_norm(q), attention.k_norm(k)
            if rope is not None:
                q, k = apply_rotary(q, rope), apply_rotary(k, rope)
            keys, values = self.cache.keys[index], self.cache.values[index]
            keys.index_copy_(2, position, k)
            values.index_copy_(2, position, v)
            y = F.scaled_dot_product_attention(q, keys, values, attn_mask=visible)
            x = x + attention.c_proj(y.transpose(1, 2).reshape(B, 1, C))
            x = x + block.mlp(block.ln_2(x))
        return model.lm_head(transformer.ln_f(x))[:, 0]

    def _capture(self) -> None:
        try:
            # Warm-up on a side stream (lazy initialisation, allocator pools), as torch.cuda.graph asks.
            # It writes this step's keys and values, which the replay then writes again.
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    self._fixed_step()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.logits = self._fixed_step()
            self.graph = graph
        except RuntimeError as error:
            warnings.warn(f"CUDA graph capture failed, decoding eagerly: {error}", stacklevel=3)
            self.capture = False

    def step(self, tokens: torch.Tensor, time_steps: torch.Tensor) -> torch.Tensor:
        position = self.cache.length
        if position >= self.capacity:
            raise ValueError(f"the cache is full ({self.capacity} tokens): re-prime it first")
        self.tokens.copy_(tokens)
        self.time_steps.copy_(time_steps)
        self.position.fill_(position)
        if self.capture and self.graph is None:
            self._capture()
        if self.graph is not None and self.capture:
            self.graph.replay()
            logits = self.logits.clone()  # the next replay overwrites the buffer
        else:
            logits = self._fixed_step()
        self.cache.length = position + 1
        return logits


RUNNERS = {"fast": FastRunner, "model": ModelRunner, "graph": GraphRunner}


def runner_for(model: GPT, batch_size: int, fast: bool = True) -> FastRunner | ModelRunner | GraphRunner:
    """With ``fast``: GraphRunner on a CUDA device, else FastRunner where it computes this model;
    otherwise (or where neither applies) ModelRunner, the reference."""
    if fast and next(model.parameters()).device.type == "cuda":
        return GraphRunner(model, batch_size)
    return RUNNERS["fast" if fast and FastRunner.supports(model) else "model"](model, batch_size)
