"""ONNX Runtime peer for ``bench/generate.py``: our model exported with its KV cache, sampled from numpy.

What a speed-minded user would deploy: the decode step of the same ``GPT`` (same weights) as an ONNX
graph whose KV cache is explicit, run by ONNX Runtime on the CPU, with the sampling loop in numpy.

Two graphs, exported from the same module (``torch.onnx.export``):

- ``prefill``: ``ids, time_ids`` ``(B, T)`` -> logits of the last position ``(B, V)``, and the keys
  and values of every layer ``(B, H, T, D)`` (causal attention, no past);
- ``decode``: ``ids, time_ids`` ``(B, 1)`` and ``past_key_i, past_value_i`` ``(B, H, P, D)`` for each
  layer -> logits ``(B, V)`` and ``present_key_i, present_value_i`` ``(B, H, P + 1, D)``.

The position of the new token is the past length (read from the cache's shape in the graph); the time
id is the running music time (``tokenizer.token_time_units`` summed), clamped as the engine does. The
cache grows by concatenation: ONNX has no in-place update of a graph input, so a fixed-capacity buffer
updated with ``ScatterND`` is copied whole every step (ORT cannot reuse a buffer the caller owns) and
its attention runs over the whole capacity behind a mask; a concatenated cache copies only what is
filled and attends to exactly that. ``python bench/onnx_peer.py [--threads N]`` checks both layouts'
logits and times them against each other (interleaved, batch 1, 512 new tokens).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
from torch import nn

from piano_gpt.generation.engine import token_tables, window_time
from piano_gpt.model import GPT


class ExportedStep(nn.Module):
    """The model's forward with an explicit per-layer cache, in ops every ONNX exporter maps directly.

    ``mode``: ``prefill`` (no past, causal), ``decode`` (concatenated past), ``fixed`` (one new token
    written into fixed-capacity buffers at ``position``, attention masked to the filled part).
    """

    def __init__(self, model: GPT, mode: str):
        super().__init__()
        self.model, self.mode = model, mode
        config = model.config
        self.n_head, self.head_dim = config.n_head, config.n_embd // config.n_head
        self.max_time = config.max_music_time

    def forward(self, ids, time_ids, *cache):
        transformer = self.model.transformer
        B, T = ids.shape
        H, D = self.n_head, self.head_dim
        layers = len(transformer.h)
        pasts = cache[:layers], cache[layers : 2 * layers]
        if self.mode == "prefill":
            positions = torch.arange(T, device=ids.device)
        elif self.mode == "decode":
            positions = torch.arange(T, device=ids.device) + pasts[0][0].shape[2]
        else:  # fixed: the last input is the position (a 1-element int64 tensor)
            position = cache[-1]
            positions = position
            capacity = pasts[0][0].shape[2]
            visible = torch.arange(capacity, device=ids.device) <= position  # (capacity,)
            scatter_at = position.view(1, 1, 1, 1).expand(B, H, 1, D)
        x = transformer.wte(ids) + transformer.wpe(positions)
        if self.model.config.music_time_embedding:
            x = x + transformer.wtime(time_ids.clamp(0, self.max_time - 1))
        keys_out, values_out = [], []
        for index, block in enumerate(transformer.h):
            attn = block.attn
            q, k, v = attn.c_attn(block.ln_1(x)).split(attn.n_embd, dim=2)
            q = q.view(B, T, H, D).transpose(1, 2)
            k = k.view(B, T, H, D).transpose(1, 2)
            v = v.view(B, T, H, D).transpose(1, 2)
            if self.mode == "decode":
                k = torch.cat([pasts[0][index], k], dim=2)
                v = torch.cat([pasts[1][index], v], dim=2)
            elif self.mode == "fixed":
                k = pasts[0][index].scatter(2, scatter_at, k)
                v = pasts[1][index].scatter(2, scatter_at, v)
            keys_out.append(k)
            values_out.append(v)
            scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(D))
            if self.mode == "prefill":
                causal = torch.ones(T, T, dtype=torch.bool, device=ids.device).tril()
                scores = scores.masked_fill(~causal, float("-inf"))
            elif self.mode == "fixed":
                scores = scores.masked_fill(~visible, float("-inf"))
            y = torch.matmul(torch.softmax(scores, dim=-1), v)
            y = y.transpose(1, 2).reshape(B, T, H * D)
            x = x + attn.c_proj(y)
            x = x + block.mlp(block.ln_2(x))
        logits = self.model.lm_head(transformer.ln_f(x[:, -1]))
        return (logits, *keys_out, *values_out)


def cache_names(layers: int, prefix: str) -> list[str]:
    return [f"{prefix}_key_{i}" for i in range(layers)] + [f"{prefix}_value_{i}" for i in range(layers)]


def export(model: GPT, mode: str, path: str) -> None:
    """Write ``mode``'s graph (see :class:`ExportedStep`) to ``path``, batch and lengths dynamic."""
    config = model.config
    L, H, D = config.n_layer, config.n_head, config.n_embd // config.n_head
    B, T = 2, (5 if mode == "prefill" else 1)
    ids = torch.zeros(B, T, dtype=torch.long)
    inputs = [ids, ids.clone()]
    names = ["ids", "time_ids"]
    axes = {"ids": {0: "batch", 1: "length"}, "time_ids": {0: "batch", 1: "length"}, "logits": {0: "batch"}}
    outputs = ["logits", *cache_names(L, "present")]
    if mode == "decode":
        inputs += [torch.zeros(B, H, 3, D) for _ in range(2 * L)]
        names += cache_names(L, "past")
        axes.update({name: {0: "batch", 2: "past"} for name in cache_names(L, "past")})
        axes.update({name: {0: "batch", 2: "total"} for name in outputs[1:]})
    elif mode == "fixed":
        inputs += [torch.zeros(B, H, config.block_size, D) for _ in range(2 * L)]
        inputs.append(torch.tensor([2]))
        names += [*cache_names(L, "past"), "position"]
        axes.update({name: {0: "batch"} for name in [*cache_names(L, "past"), *outputs[1:]]})
    else:
        axes.update({name: {0: "batch", 2: "length"} for name in outputs[1:]})
    with torch.no_grad():
        torch.onnx.export(
            ExportedStep(model, mode).eval(),
            tuple(inputs),
            path,
            input_names=names,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


class OnnxPeer:
    """ORT sessions for the prefill and decode graphs of ``model``, and a numpy sampling loop."""

    def __init__(self, model: GPT, tokenizer, threads: int, cache: str = "concat"):
        import onnxruntime as ort

        self.config = model.config
        self.layers = model.config.n_layer
        self.cache = cache
        tables = token_tables(tokenizer)
        self.time_units = tables.time_units.numpy()
        self.music = tables.music.numpy()
        self.max_time = model.config.max_music_time
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sessions = {}
        with tempfile.TemporaryDirectory() as folder:
            for mode in ("prefill", "decode" if cache == "concat" else "fixed"):
                path = os.path.join(folder, f"{mode}.onnx")
                start = time.perf_counter()
                export(model, mode, path)
                self.export_seconds = time.perf_counter() - start
                self.sessions[mode] = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def prefill(self, ids: np.ndarray, time_ids: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        logits, *cache = self.sessions["prefill"].run(None, {"ids": ids, "time_ids": time_ids})
        if self.cache == "fixed":  # copy into buffers of the whole capacity
            B, H, T, D = cache[0].shape
            buffers = []
            for part in cache:
                buffer = np.zeros((B, H, self.config.block_size, D), np.float32)
                buffer[:, :, :T] = part
                buffers.append(buffer)
            cache = buffers
        return logits, cache

    def step(self, tokens: np.ndarray, time_ids: np.ndarray, cache: list[np.ndarray], position: int):
        feed = {"ids": tokens[:, None], "time_ids": time_ids[:, None]}
        feed.update(zip(cache_names(self.layers, "past"), cache))
        if self.cache == "fixed":
            feed["position"] = np.array([position], np.int64)
            logits, *cache = self.sessions["fixed"].run(None, feed)
        else:
            logits, *cache = self.sessions["decode"].run(None, feed)
        return logits, cache

    def prompt_inputs(self, prompt: list[int], batch: int) -> tuple[np.ndarray, np.ndarray]:
        ids = torch.as_tensor(np.asarray(prompt, np.int64))[None]
        time = window_time(ids, torch.as_tensor(self.time_units), None)
        ids, time = ids.numpy(), time.numpy()
        return np.repeat(ids, batch, 0), np.repeat(time, batch, 0)

    def generate(
        self, prompt: list[int], batch: int, new_tokens: int, top_k: int, seed: int = 0
    ) -> np.ndarray:
        """``new_tokens`` ids per row: temperature 1, top-k, music ids only (as ours, without the grammar)."""
        rng = np.random.default_rng(seed)
        ids, time = self.prompt_inputs(prompt, batch)
        time_now = time[:, -1].copy()
        logits, cache = self.prefill(ids, np.minimum(time, self.max_time - 1))
        position = ids.shape[1]
        out = np.empty((batch, new_tokens), np.int64)
        rows = np.arange(batch)
        for step in range(new_tokens):
            logits = np.where(self.music, logits, -np.inf)
            top = np.argpartition(logits, -top_k, axis=1)[:, -top_k:]
            chosen = logits[rows[:, None], top]
            probs = np.exp(chosen - chosen.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
            draws = (probs.cumsum(axis=1) < rng.random((batch, 1))).sum(axis=1).clip(max=top_k - 1)
            token = top[rows, draws]
            out[:, step] = token
            if step == new_tokens - 1:
                break
            time_now += self.time_units[token]
            logits, cache = self.step(token, np.minimum(time_now, self.max_time - 1), cache, position)
            position += 1
        return out


def check_logits(peer: OnnxPeer, model: GPT, prompt: list[int], steps: int = 4, batch: int = 2) -> float:
    """Largest |ORT - ours| over the prompt's logits and ``steps`` decode steps (``GPT.forward``, no cache)."""
    ids, time = peer.prompt_inputs(prompt, batch)
    ids[1:, -1] = (ids[1:, -1] + 7) % model.config.vocab_size  # the rows differ
    time = window_time(torch.as_tensor(ids), torch.as_tensor(peer.time_units), None).numpy()
    logits, cache = peer.prefill(ids, np.minimum(time, peer.max_time - 1))
    worst = 0.0
    rng = np.random.default_rng(0)
    for step in range(steps + 1):
        with torch.no_grad():
            expected, _ = model(torch.as_tensor(ids), torch.as_tensor(time).clamp(max=peer.max_time - 1))
        worst = max(worst, float(np.abs(logits - expected[:, -1].numpy()).max()))
        if not np.allclose(logits, expected[:, -1].numpy(), atol=1e-4, rtol=1e-4):
            raise AssertionError(f"ONNX logits differ from the model's at step {step}: max diff {worst:.2e}")
        if step == steps:
            break
        token = rng.integers(0, model.config.vocab_size, batch)
        time_next = time[:, -1] + peer.time_units[token]
        logits, cache = peer.step(token, np.minimum(time_next, peer.max_time - 1), cache, ids.shape[1])
        ids = np.concatenate([ids, token[:, None]], axis=1)
        time = np.concatenate([time, time_next[:, None]], axis=1)
    return worst


def main() -> None:
    """The two cache layouts, same weights, same run: logits checked, batch-1 new tokens/s."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from generate import NEW_TOKENS, TOP_K, demo_prompt

    from piano_gpt.model import GPTConfig
    from piano_gpt.tokenizers import ExponentialTimeTokenizer
    from piano_gpt.train.config import model_preset

    tokenizer = ExponentialTimeTokenizer()
    torch.manual_seed(0)
    config = GPTConfig(block_size=1024, vocab_size=tokenizer.vocab_size, **model_preset("gpt2_10M"))
    model = GPT(config).eval()
    prompt, _ = demo_prompt(tokenizer)
    peers = {cache: OnnxPeer(model, tokenizer, args.threads, cache) for cache in ("concat", "fixed")}
    times = {cache: [] for cache in peers}
    for cache, peer in peers.items():
        print(f"{cache}: logits max |diff| {check_logits(peer, model, prompt):.1e}")
        peer.generate(prompt, 1, 16, TOP_K)
    load = os.getloadavg()[0]
    for _ in range(args.repeats):
        for cache, peer in peers.items():
            start = time.perf_counter()
            peer.generate(prompt, 1, NEW_TOKENS, TOP_K)
            times[cache].append(time.perf_counter() - start)
    rates = {cache: NEW_TOKENS / statistics.median(t) for cache, t in times.items()}
    print(
        f"{args.threads} thread(s), load average {load:.2f} / {os.getloadavg()[0]:.2f}: "
        + ", ".join(f"{cache} {rate:.0f} tok/s" for cache, rate in rates.items())
        + f"; concat / fixed x{rates['concat'] / rates['fixed']:.2f}"
    )


if __name__ == "__main__":
    main()
