"""ONNX Runtime peer for ``bench/generate.py``: our model's decode step with its KV cache, sampled in numpy.

What a speed-minded user would deploy: the same ``GPT`` (same weights) as ONNX graphs whose KV cache
is explicit, run by ONNX Runtime on the CPU (graph optimizations on), the sampling loop in numpy. Two
graphs per layout: ``prefill`` (``ids, positions, time_ids`` ``(B, T)`` -> logits of the last position
``(B, V)`` and ``present_key_i, present_value_i`` ``(B, H, T, D)`` for each layer) and ``step`` (the
same with ``(B, 1)`` inputs and ``past_key_i, past_value_i`` ``(B, H, P, D)``; presents ``P + 1`` long).
The time ids are the running music time (``tokenizer.token_time_units`` summed), clamped as the
engine clamps them; the positions count from 0.

Three layouts (``python bench/onnx_peer.py`` checks each one's logits and times them, same run):

- ``fused`` (the peer): built node by node with ORT's fused ``com.microsoft`` ops:
  ``MultiHeadAttention`` taking the past keys and values and returning them grown by one, ``Gelu``
  (141 kernels a step after ORT's optimizer). Fastest, by ~10% a step: one kernel per attention
  instead of Concat, Transpose, MatMul, Softmax, MatMul. (``SkipLayerNormalization`` in place of the
  residual Add + LayerNormalization was tried: no faster);
- ``exported``: ``torch.onnx.export`` of :class:`ExportedStep` (ours, with the past concatenated);
- ``fixed``: the same export with fixed-capacity buffers written with ``ScatterElements``. Slowest:
  ONNX has no in-place update of a graph input, so ORT copies every buffer whole each step (it cannot
  reuse memory the caller owns), and attention runs over the whole capacity behind a mask.
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

    def forward(self, ids, positions, time_ids, *cache):
        transformer = self.model.transformer
        B, T = ids.shape
        H, D = self.n_head, self.head_dim
        layers = len(transformer.h)
        pasts = cache[:layers], cache[layers : 2 * layers]
        if self.mode == "fixed":  # (B, 1) positions: the slot the new token's keys go to
            capacity = pasts[0][0].shape[2]
            visible = (
                torch.arange(capacity, device=ids.device) <= positions[:, :, None, None]
            )  # (B, 1, 1, cap)
            scatter_at = positions.view(B, 1, 1, 1).expand(B, H, 1, D)
        x = transformer.wte(ids) + transformer.wpe(positions) + transformer.wtime(time_ids)
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
    inputs = [ids, ids + 3, ids.clone()]
    names = ["ids", "positions", "time_ids"]
    axes = {name: {0: "batch", 1: "length"} for name in names} | {"logits": {0: "batch"}}
    outputs = ["logits", *cache_names(L, "present")]
    if mode == "decode":
        inputs += [torch.zeros(B, H, 3, D) for _ in range(2 * L)]
        names += cache_names(L, "past")
        axes.update({name: {0: "batch", 2: "past"} for name in cache_names(L, "past")})
        axes.update({name: {0: "batch", 2: "total"} for name in outputs[1:]})
    elif mode == "fixed":
        inputs += [torch.zeros(B, H, config.block_size, D) for _ in range(2 * L)]
        names += cache_names(L, "past")
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


def fused_graph(model: GPT, with_past: bool):
    """The model as an ONNX graph of ORT's fused ops (the ``fused`` layout): ``prefill`` or ``step``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    config, transformer = model.config, model.transformer
    L, H, C = config.n_layer, config.n_head, config.n_embd
    if not config.is_gpt2 or config.bias or not config.music_time_embedding:
        raise ValueError("the fused graph computes the gpt2 layout without biases, with music time")
    weights, nodes = [], []

    def weight(name: str, tensor: torch.Tensor) -> str:
        name = f"weight.{name}"  # apart from the activations' names
        weights.append(numpy_helper.from_array(tensor.detach().float().contiguous().numpy(), name))
        return name

    def node(op: str, inputs: list[str], output: str | list[str], **attributes) -> str:
        outputs = [output] if isinstance(output, str) else output
        domain = "com.microsoft" if op in ("MultiHeadAttention", "Gelu") else ""
        nodes.append(helper.make_node(op, inputs, outputs, domain=domain, **attributes))
        return outputs[0]

    def layer_norm(x: str, norm: nn.Module, name: str) -> str:
        return node("LayerNormalization", [x, weight(name, norm.weight)], name, epsilon=norm.eps)

    embedded = node(
        "Add",
        [
            node("Gather", [weight("wte", transformer.wte.weight), "ids"], "token"),
            node("Gather", [weight("wpe", transformer.wpe.weight), "positions"], "position"),
        ],
        "token+position",
    )
    x = node(
        "Add",
        [embedded, node("Gather", [weight("wtime", transformer.wtime.weight), "time_ids"], "time")],
        "x0",
    )
    for i, block in enumerate(transformer.h):
        qkv = node(
            "MatMul",
            [layer_norm(x, block.ln_1, f"ln1_{i}"), weight(f"qkv_{i}", block.attn.c_attn.weight.t())],
            f"qkv_{i}",
        )
        q, k, v = (
            node("Split", [qkv], [f"q_{i}", f"k_{i}", f"v_{i}"], axis=-1, num_outputs=3),
            f"k_{i}",
            f"v_{i}",
        )
        past = [f"past_key_{i}", f"past_value_{i}"] if with_past else ["", ""]
        y = node(
            "MultiHeadAttention",
            [q, k, v, "", "", "", *past],
            [f"y_{i}", f"present_key_{i}", f"present_value_{i}"],
            num_heads=H,
            unidirectional=1,  # causal over past + new positions
        )
        attended = node("MatMul", [y, weight(f"proj_{i}", block.attn.c_proj.weight.t())], f"attended_{i}")
        x = node("Add", [x, attended], f"x{i}a")
        hidden = node(
            "MatMul",
            [layer_norm(x, block.ln_2, f"ln2_{i}"), weight(f"fc_{i}", block.mlp.c_fc.weight.t())],
            f"fc_{i}",
        )
        mlp = node(
            "MatMul",
            [node("Gelu", [hidden], f"gelu_{i}"), weight(f"fc2_{i}", block.mlp.c_proj.weight.t())],
            f"mlp_{i}",
        )
        x = node("Add", [x, mlp], f"x{i + 1}")
    weights.append(numpy_helper.from_array(np.array([-1], np.int64), "last"))
    weights.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    last = layer_norm(node("Gather", [x, "last"], "x_last", axis=1), transformer.ln_f, "ln_f")
    logits = node("MatMul", [last, weight("head", model.lm_head.weight.t())], "logits_1")
    node("Squeeze", [logits, "axis1"], "logits")
    D = C // H
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "length"])
        for n in ("ids", "positions", "time_ids")
    ]
    if with_past:
        inputs += [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", H, "past", D])
            for n in cache_names(L, "past")
        ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", config.vocab_size])]
    outputs += [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", H, "total", D])
        for n in cache_names(L, "present")
    ]
    graph = helper.make_graph(nodes, "step" if with_past else "prefill", inputs, outputs, weights)
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    result = helper.make_model(graph, opset_imports=opsets, ir_version=9)
    onnx.checker.check_model(result)
    return result


LAYOUTS = ("fused", "exported", "fixed")


PRECISIONS = ("float32", "float16", "int8")


def lower_precision(path: str, precision: str) -> None:
    """Rewrite the graph at ``path`` with its weights in ``precision``: ``float16`` (ORT's converter;
    inputs, outputs and the cache stay float32) or ``int8`` (ORT's dynamic quantization of the matrix
    products' weights: not our model's weights any more, the nearest int8 ones)."""
    import onnx

    if precision == "float16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        onnx.save(convert_float_to_float16(onnx.load(path), keep_io_types=True), path)
    elif precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        source = path + ".float32.onnx"
        os.replace(path, source)
        # The fused ops (com.microsoft) defeat its shape inference: it is told their tensors' type.
        quantize_dynamic(
            source,
            path,
            weight_type=QuantType.QInt8,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    else:
        raise ValueError(f"precision {precision!r}: one of {PRECISIONS}")


class OnnxPeer:
    """ORT sessions for the prefill and step graphs of ``model`` (``layout``), and a numpy sampling loop."""

    def __init__(
        self, model: GPT, tokenizer, threads: int, layout: str = "fused", precision: str = "float32"
    ):
        import onnxruntime as ort

        self.precision = precision
        self.config = model.config
        self.layers = model.config.n_layer
        self.layout = layout
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
            for name, with_past in (("prefill", False), ("step", True)):
                path = os.path.join(folder, f"{name}.onnx")
                if layout == "fused":
                    with open(path, "wb") as file:
                        file.write(fused_graph(model, with_past).SerializeToString())
                else:
                    export(
                        model,
                        "prefill" if not with_past else "decode" if layout == "exported" else "fixed",
                        path,
                    )
                if precision != "float32":
                    lower_precision(path, precision)
                self.sessions[name] = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def prefill(self, ids: np.ndarray, time_ids: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        positions = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)
        logits, *cache = self.sessions["prefill"].run(
            None, {"ids": ids, "positions": positions, "time_ids": time_ids}
        )
        if self.layout == "fixed":  # copied into buffers of the whole capacity
            B, H, T, D = cache[0].shape
            buffers = []
            for part in cache:
                buffer = np.zeros((B, H, self.config.block_size, D), np.float32)
                buffer[:, :, :T] = part
                buffers.append(buffer)
            cache = buffers
        return logits, cache

    def step(self, tokens: np.ndarray, time_ids: np.ndarray, cache: list[np.ndarray], position: int):
        feed = {
            "ids": tokens[:, None],
            "positions": np.full((len(tokens), 1), position),
            "time_ids": time_ids[:, None],
        }
        feed.update(zip(cache_names(self.layers, "past"), cache))
        logits, *cache = self.sessions["step"].run(None, feed)
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


def check_logits(
    peer: OnnxPeer, model: GPT, prompt: list[int], steps: int = 4, batch: int = 2, atol: float | None = 1e-4
) -> float:
    """Largest |ORT - ours| over the prompt's logits and ``steps`` decode steps (``GPT.forward``, no
    cache); over ``atol`` (and ``rtol`` as much) it raises. ``atol=None``: measured only."""
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
        if atol is not None and not np.allclose(logits, expected[:, -1].numpy(), atol=atol, rtol=atol):
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
    """The three layouts, same weights, same run: logits checked, batch-1 new tokens/s."""
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
    peers = {layout: OnnxPeer(model, tokenizer, args.threads, layout) for layout in LAYOUTS}
    times = {layout: [] for layout in peers}
    for layout, peer in peers.items():
        print(f"{layout}: logits max |diff| {check_logits(peer, model, prompt):.1e}")
        peer.generate(prompt, 1, 16, TOP_K)
    load = os.getloadavg()[0]
    for _ in range(args.repeats):
        for layout, peer in peers.items():
            start = time.perf_counter()
            peer.generate(prompt, 1, NEW_TOKENS, TOP_K)
            times[layout].append(time.perf_counter() - start)
    rates = {layout: NEW_TOKENS / statistics.median(t) for layout, t in times.items()}
    print(
        f"{args.threads} thread(s), load average {load:.2f} / {os.getloadavg()[0]:.2f}: "
        + ", ".join(f"{layout} {rate:.0f} tok/s" for layout, rate in rates.items())
        + f"; fused / exported x{rates['fused'] / rates['exported']:.2f}, fused / fixed x{rates['fused'] / rates['fixed']:.2f}"
    )


if __name__ == "__main__":
    main()
