"""Generation speed: piano_gpt.generation vs HF transformers' GPT2LMHeadModel.generate, same run.

    python bench/generate.py [--repeats 3] [--threads N] [--bf16] [--long]
    python bench/generate.py --busy 1 --sweep --stream   # thread choice under load; streaming

``--busy N`` runs N busy processes of its own (``while True: pass``) for the whole measurement and
stops them at the end. ``--sweep``: for the compiled and the PyTorch step at batch 1 and 8, the
default thread choice (``generation/threads.py``) against each fixed thread count, interleaved.
``--stream``: batch 1 through ``generation.stream``: time to the first note, and the real-time
factor (seconds of music generated per second of wall time; the random-weight model's music, and
tokens/s over the ~52 tokens a second of MAESTRO music).

Model shape: gpt2_10M (12 layers, 8 heads, 256 wide; ``configs/model/gpt2_10M.yaml``), context 1024, vocab
1241, random weights. Workload per batch size (1 and 8): a 256-token prompt (the opening of a demo
corpus piece; the batch is n samples of that one prompt), 512 new tokens, sampling at temperature 1
with top-k 50 on both sides. Timings cover the whole call (prompt processing included); new tokens/s
= batch * 512 / seconds, median of ``--repeats`` interleaved runs after a warm-up. Ours is FastRunner
with its compiled step (``generation.native``); also timed: FastRunner's PyTorch step
(``PIANO_GPT_NATIVE=0``) and our reference path (``fast=False``: ``GPT.forward`` + ``model.KVCache``).
``--threads``: torch threads for both sides (default: torch's). ``--bf16``: extra rows with both
models in bfloat16 (ours: the compiled step reading bfloat16 matrices, float32 arithmetic); with
``--roofline`` and ``--stream``, our bfloat16 model is timed beside the float32 one.
``--long``: one 3-minute continuation (``max_duration=180``) with the same 1024-token model, sliding
past its context. ``--onnx``: one more peer, ONNX Runtime running our model's prefill and decode step
as ONNX graphs with an explicit KV cache (``bench/onnx_peer.py``; same weights, sampled in numpy with
the same top-k, without the note grammar, as HF), its logits checked against the model's before any
timing; its threads: ``--threads`` or torch's count, as HF's (not with ``--sweep``/``--stream``).
``--roofline``: only the bare decoding step at batch 1 (no sampling), ours and ONNX Runtime's (with
``--onnx``; also its float16 and int8-quantized graphs, the lower precisions ORT offers here), from
position 256 to 767, against what the machine can read from memory: the bytes a step must read (every
weight matrix, and the keys and values of every position so far) over its time, as a share of the
read bandwidth one ``torch.sum`` over 512 MB reaches with the same threads.
``--march x86-64-v3``: our compiled step built for AVX2 and FMA without AVX-512 (the many CPUs without
it), not for this CPU. ``--cuda-graphs``: only, on a CUDA device: our default GPU decoding (``GraphRunner``: each step replayed
from one captured CUDA graph) against the same fixed-shape step run eagerly and the eager reference path
(``GPT.forward`` + ``KVCache``), batch 1 and 8, with this machine's CPU (the compiled step) beside them;
without a CUDA device it says so and times nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np
import pandas as pd
import torch

from piano_gpt.data.demo import load_demo_records
from piano_gpt.generation import engine, generate_samples, native, sample_ids, stream
from piano_gpt.generation.runner import GraphRunner, ModelRunner, runner_for
from piano_gpt.midi import make_notes
from piano_gpt.model import GPT, GPTConfig
from piano_gpt.tokenizers import ExponentialTimeTokenizer
from piano_gpt.train.config import model_preset

PROMPT_TOKENS = 256
NEW_TOKENS = 512
TOP_K = 50


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def demo_prompt(tokenizer) -> tuple[list[int], object]:
    record = load_demo_records("validation")[0]["notes"]
    notes = make_notes(record["pitch"], record["velocity"], record["start"], record["end"])
    ids = tokenizer.encode(notes)
    return ids[:PROMPT_TOKENS], notes


def hf_model(vocab_size: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    preset = model_preset("gpt2_10M")
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=1024,
        n_embd=preset["n_embd"],
        n_layer=preset["n_layer"],
        n_head=preset["n_head"],
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=vocab_size - 1,  # an unused placeholder slot: never in the prompt
    )
    torch.manual_seed(0)
    return GPT2LMHeadModel(config).eval()


def time_hf(model, prompt: list[int], batch: int, new_tokens: int) -> float:
    ids = torch.tensor([prompt] * batch)
    with torch.inference_mode():
        start = time.perf_counter()
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            top_k=TOP_K,
            temperature=1.0,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            use_cache=True,
            pad_token_id=model.config.pad_token_id,
        )
        seconds = time.perf_counter() - start
    assert out.shape == (batch, len(prompt) + new_tokens), out.shape
    return seconds


def time_ours(
    model,
    tokenizer,
    prompt: list[int],
    batch: int,
    new_tokens: int,
    fast: bool = True,
    compiled: bool = True,
    grammar: bool = True,
    threads: int | None = None,
) -> float:
    """Seconds for one ``sample_ids`` call; ``compiled=False``: FastRunner's PyTorch step;
    ``grammar=False``: without the note grammar; ``threads``: fixed (None: the default choice)."""
    os.environ["PIANO_GPT_NATIVE"] = "1" if compiled else "0"
    try:
        start = time.perf_counter()
        samples = sample_ids(
            model,
            tokenizer,
            prompt,
            n_samples=batch,
            max_new_tokens=new_tokens,
            top_k=TOP_K,
            fast=fast,
            seed=0,
            grammar=grammar,
            threads=threads,
        )
        seconds = time.perf_counter() - start
    finally:
        os.environ.pop("PIANO_GPT_NATIVE")
    assert all(len(s.ids) == new_tokens for s in samples)
    return seconds


def time_onnx(peer, prompt: list[int], batch: int, new_tokens: int) -> float:
    start = time.perf_counter()
    out = peer.generate(prompt, batch, new_tokens, TOP_K)
    seconds = time.perf_counter() - start
    assert out.shape == (batch, new_tokens), out.shape
    return seconds


def time_batch(
    hf, ours, tokenizer, prompt, batch: int, repeats: int, kinds: tuple[str, ...], onnx=None, ours16=None
) -> tuple[dict, dict]:
    """Median and best new tokens/s of each kind of run, interleaved ``repeats`` times."""
    run = {
        "onnx": lambda: time_onnx(onnx, prompt, batch, NEW_TOKENS),
        "hf": lambda: time_hf(hf, prompt, batch, NEW_TOKENS),
        "ours": lambda: time_ours(ours, tokenizer, prompt, batch, NEW_TOKENS),
        "ours_torch": lambda: time_ours(ours, tokenizer, prompt, batch, NEW_TOKENS, compiled=False),
        "ours_reference": lambda: time_ours(ours, tokenizer, prompt, batch, NEW_TOKENS, fast=False),
        "ours_no_grammar": lambda: time_ours(ours, tokenizer, prompt, batch, NEW_TOKENS, grammar=False),
        "ours_bf16": lambda: time_ours(ours16, tokenizer, prompt, batch, NEW_TOKENS),
    }
    times = {kind: [] for kind in kinds}
    for _ in range(repeats):
        for kind in kinds:
            times[kind].append(run[kind]())
    rate = {k: batch * NEW_TOKENS / statistics.median(v) for k, v in times.items()}
    best = {k: batch * NEW_TOKENS / min(v) for k, v in times.items()}
    return rate, best


MAESTRO_TOKENS_PER_SECOND = 52  # tokens a second of MAESTRO music takes (~10 notes/s)


def start_busy(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def stop_busy(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.kill()
        process.wait()


def thread_sweep(ours, tokenizer, prompt, repeats: int) -> None:
    """Default thread choice vs each fixed count: compiled and PyTorch step, batch 1 and 8."""
    counts = list(range(1, os.cpu_count() + 1))
    print(
        "\n| step | batch | default | " + " | ".join(f"{n} thread(s)" for n in counts) + " | default / best |"
    )
    print("|---|---|---|" + "---|" * len(counts) + "---|")
    for compiled in (True, False):
        for batch in (1, 8):
            new = NEW_TOKENS if batch == 1 else NEW_TOKENS // 4
            settings = [None, *counts]
            times = {n: [] for n in settings}
            for _ in range(repeats):
                for n in settings:
                    times[n].append(
                        time_ours(ours, tokenizer, prompt, batch, new, compiled=compiled, threads=n)
                    )
            rate = {n: batch * new / statistics.median(v) for n, v in times.items()}
            best = max(rate[n] for n in counts)
            print(
                f"| {'compiled' if compiled else 'PyTorch'} | {batch} | {rate[None]:.0f} tok/s | "
                + " | ".join(f"{rate[n]:.0f}" for n in counts)
                + f" | {rate[None] / best:.2f} |",
                flush=True,
            )


def time_stream(ours, tokenizer, notes, repeats: int) -> None:
    """Time to the first note and real-time factor of a batch-1 stream (256-token prompt)."""
    offset = float(notes["start"].min())
    prompt_notes = notes.iloc[: len(tokenizer.decode(tokenizer.encode(notes)[:PROMPT_TOKENS]))]
    prompt_notes = prompt_notes.reset_index(drop=True)
    firsts, factors, rates, tokens_only, batch_call = [], [], [], [], []
    prompt_ids = tokenizer.encode(prompt_notes)
    options = dict(max_new_tokens=NEW_TOKENS, top_k=TOP_K, seed=0)
    for _ in range(repeats):
        # What the note stream costs the batch call (generate_samples runs it): the same ids either way.
        start = time.perf_counter()
        sample_ids(ours, tokenizer, prompt_ids, **options)
        tokens_only.append(time.perf_counter() - start)
        start = time.perf_counter()
        generate_samples(ours, tokenizer, prompt_notes, **options)
        batch_call.append(time.perf_counter() - start)
        start = time.perf_counter()
        first = None
        chunks = []
        for chunk in stream(ours, tokenizer, prompt_notes, **options):
            if first is None:
                first = time.perf_counter() - start
            chunks.append(chunk)
        seconds = time.perf_counter() - start
        generated = pd.concat(chunks)
        music = float(generated["end"].max() - prompt_notes["end"].max())
        firsts.append(first)
        factors.append(music / seconds)
        rates.append(NEW_TOKENS / seconds / MAESTRO_TOKENS_PER_SECOND)
    print(
        f"\nstream, batch 1, {len(tokenizer.encode(prompt_notes))}-token prompt (from {offset:.1f} s), "
        f"{NEW_TOKENS} new tokens: time to first note {statistics.median(firsts) * 1000:.0f} ms "
        f"(min {min(firsts) * 1000:.0f}); real-time factor {statistics.median(factors):.1f}x (random weights' "
        f"music), {statistics.median(rates):.1f}x at MAESTRO's {MAESTRO_TOKENS_PER_SECOND} tokens/s",
        flush=True,
    )
    print(
        f"batch call (generate_samples, notes through the stream) {statistics.median(batch_call):.3f} s vs "
        f"ids only (sample_ids) {statistics.median(tokens_only):.3f} s: "
        f"x{statistics.median(batch_call) / statistics.median(tokens_only):.3f}",
        flush=True,
    )


def bfloat16_copy(model: GPT) -> GPT:
    copy = GPT(model.config).eval()
    copy.load_state_dict(model.state_dict())
    return copy.to(torch.bfloat16)


def read_bandwidth(threads: int, megabytes: int = 512) -> float:
    """Bytes a second ``threads`` threads read from memory: a sum over an array far past the caches."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        data = torch.ones(megabytes * 2**20 // 4)
        data.sum()
        best = float("inf")
        for _ in range(7):
            start = time.perf_counter()
            data.sum()
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(saved)
    return data.numel() * 4 / best


def step_bytes(model: GPT, positions: range, matrix_bytes: int | None = None) -> float:
    """Bytes the decoding steps at ``positions`` must read at least: every weight but the position and
    music-time tables (a row each; the token table is read whole as the tied output head), plus the
    keys and values (float32) of every position already cached; the weights in the model's dtype, or
    matrices at ``matrix_bytes`` a weight."""
    config = model.config
    weights = sum(
        p.numel() * (matrix_bytes if matrix_bytes and p.dim() == 2 else p.element_size())
        for name, p in model.named_parameters()
        if not name.endswith(("wpe.weight", "wtime.weight"))
    )
    cached = sum(positions) * 2 * config.n_layer * config.n_embd * 4
    return weights * len(positions) + cached


def roofline(ours, tokenizer, prompt, repeats: int, onnx=None, ours16=None) -> None:
    """Seconds a bare batch-1 decoding step takes, ours and ORT's, against the memory roofline."""
    threads = torch.get_num_threads()
    positions = range(len(prompt), len(prompt) + NEW_TOKENS)
    bandwidth = read_bandwidth(threads)
    need = {"ours": step_bytes(ours, positions), "ONNX Runtime": step_bytes(ours, positions)}
    ids = torch.tensor([prompt])
    times = torch.zeros_like(ids)
    token, time_step = torch.tensor([int(prompt[-1])]), torch.zeros(1, dtype=torch.long)

    def time_ours_steps(model=ours) -> float:
        os.environ["PIANO_GPT_NATIVE"] = "1"
        try:
            runner = runner_for(model, 1)
            with torch.inference_mode():
                runner.prefill(ids, times)
                start = time.perf_counter()
                for _ in positions:
                    runner.step(token, time_step)
                return time.perf_counter() - start
        finally:
            os.environ.pop("PIANO_GPT_NATIVE")

    def time_onnx_steps(onnx=onnx) -> float:
        prompt_ids, prompt_time = onnx.prompt_inputs(prompt, 1)
        _, cache = onnx.prefill(prompt_ids, np.zeros_like(prompt_time))
        tokens, zeros = np.array([int(prompt[-1])]), np.zeros(1, np.int64)
        start = time.perf_counter()
        for position in positions:
            _, cache = onnx.step(tokens, zeros, cache, position)
        return time.perf_counter() - start

    kinds = {"ours": time_ours_steps}
    if onnx is not None:
        kinds["ONNX Runtime"] = time_onnx_steps
        # ORT's lower precisions on this CPU, for the bfloat16 row's sake (not the same weights).
        for precision, size in (("float16", 2), ("int8", 1)):
            name = f"ONNX Runtime, {precision} weights"
            lower, worst = onnx_peer(ours, tokenizer, prompt, precision)
            kinds[name] = lambda lower=lower: time_onnx_steps(lower)
            need[name] = step_bytes(ours, positions, size)
            print(f"# {name}: logits vs GPT.forward max |diff| {worst:.1e}")
    if ours16 is not None:
        kinds["ours, bfloat16 model"] = lambda: time_ours_steps(ours16)
        need["ours, bfloat16 model"] = step_bytes(ours16, positions)
    spent = {name: [] for name in kinds}
    for _ in range(repeats):
        for name, timed in kinds.items():
            spent[name].append(timed())
    print(
        f"\nroofline, batch 1, {threads} thread(s), positions {positions.start}-{positions.stop - 1}: "
        f"memory read bandwidth {bandwidth / 1e9:.1f} GB/s (torch.sum over 512 MB)"
    )
    print("| step | ms a step (median) | MB a step must read | GB/s read | share of the bandwidth |")
    print("|---|---|---|---|---|")
    for name, values in spent.items():
        seconds = statistics.median(values)
        print(
            f"| {name} | {seconds / len(positions) * 1e3:.3f} | {need[name] / len(positions) / 1e6:.1f} | "
            f"{need[name] / seconds / 1e9:.1f} | {need[name] / seconds / bandwidth:.0%} |"
        )
    for name in spent:
        if name != "ONNX Runtime" and "ONNX Runtime" in spent:
            ratio = statistics.median(spent["ONNX Runtime"]) / statistics.median(spent[name])
            print(f"{name} / ONNX Runtime, bare steps: x{ratio:.2f}")


def onnx_peer(ours, tokenizer, prompt, precision: str = "float32"):
    """The ONNX Runtime peer (export, sessions), its logits checked against ours, warmed up. In a lower
    ``precision``: (the peer, its largest logit difference), unchecked."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from onnx_peer import OnnxPeer, check_logits

    threads = torch.get_num_threads()
    start = time.perf_counter()
    peer = OnnxPeer(ours, tokenizer, threads, precision=precision)
    built = time.perf_counter() - start
    if precision != "float32":
        worst = check_logits(peer, ours, prompt, atol=None)
        time_onnx(peer, prompt, 1, 16)
        return peer, worst
    worst = check_logits(peer, ours, prompt)
    import onnxruntime

    print(
        f"# ONNX Runtime {onnxruntime.__version__}, {threads} intra-op thread(s): prefill + step graphs ({peer.layout} layout) "
        f"exported and loaded in {built:.1f} s; logits vs GPT.forward: max |diff| {worst:.1e} (checked)"
    )
    time_onnx(peer, prompt, 1, 16)
    return peer


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--bf16", action="store_true", help="also time both models in bfloat16")
    parser.add_argument("--long", action="store_true", help="also time a 3-minute continuation")
    parser.add_argument("--busy", type=int, default=0, help="busy processes running meanwhile")
    parser.add_argument("--new-tokens", type=int, default=NEW_TOKENS, help="new tokens per call")
    parser.add_argument("--sweep", action="store_true", help="only: default threads vs each fixed count")
    parser.add_argument("--stream", action="store_true", help="only: time to first note, real-time factor")
    parser.add_argument("--onnx", action="store_true", help="also time ONNX Runtime (bench/onnx_peer.py)")
    parser.add_argument("--roofline", action="store_true", help="only: bare steps against memory bandwidth")
    parser.add_argument(
        "--cuda-graphs", action="store_true", help="only: CUDA-graph steps vs eager, on a GPU"
    )
    parser.add_argument(
        "--march",
        default=None,
        help="build our compiled step for this -march instead of native (x86-64-v3: AVX2 and FMA, no AVX-512)",
    )
    args = parser.parse_args()
    if args.march:
        native.FLAGS = [f"-march={args.march}" if flag == "-march=native" else flag for flag in native.FLAGS]
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    globals()["NEW_TOKENS"] = args.new_tokens
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # killed: still stop the busy processes
    busy = start_busy(args.busy)
    try:
        run(args)
    finally:
        stop_busy(busy)


@contextlib.contextmanager
def runners(make):
    """The generation engine decodes with ``make(model, batch_size, fast)`` meanwhile."""
    original = engine.runner_for
    engine.runner_for = make
    try:
        yield
    finally:
        engine.runner_for = original


def cuda_graph_leg(ours: GPT, tokenizer, prompt, batches: list[int], repeats: int) -> None:
    """Our GPU decoding (GraphRunner) against eager steps on the same GPU, with the CPU beside them."""
    if not torch.cuda.is_available():
        print("# no CUDA device here: the CUDA-graphs leg times nothing")
        return
    gpu = GPT(ours.config).eval().cuda()
    gpu.load_state_dict(ours.state_dict())
    print(f"# {torch.cuda.get_device_name()}, CUDA {torch.version.cuda}")
    eager_fixed = lambda model, batch_size, fast=True: GraphRunner(model, batch_size, capture=False)  # noqa: E731
    eager_reference = lambda model, batch_size, fast=True: ModelRunner(model, batch_size)  # noqa: E731

    def timed(model, batch: int, make=None) -> float:
        with runners(make) if make else contextlib.nullcontext():
            seconds = time_ours(model, tokenizer, prompt, batch, NEW_TOKENS)
        torch.cuda.synchronize()
        return seconds

    kinds = {
        "CUDA graph (default on a GPU)": lambda batch: timed(gpu, batch),
        "fixed-shape step, eager": lambda batch: timed(gpu, batch, eager_fixed),
        "reference path, eager": lambda batch: timed(gpu, batch, eager_reference),
        f"CPU, {torch.get_num_threads()} threads, compiled step": lambda batch: timed(ours, batch),
    }
    print("\n| batch | " + " | ".join(kinds) + " | graph / eager reference |")
    print("|---|" + "---|" * (len(kinds) + 1))
    for batch in batches:
        for run_kind in kinds.values():
            run_kind(batch)  # warm-up: capture, allocator, kernels' first calls
        times = {kind: [] for kind in kinds}
        for _ in range(repeats):
            for kind, run_kind in kinds.items():
                times[kind].append(run_kind(batch))
        rate = {kind: batch * NEW_TOKENS / statistics.median(seconds) for kind, seconds in times.items()}
        graph, reference = rate["CUDA graph (default on a GPU)"], rate["reference path, eager"]
        cells = " | ".join(f"{value:.0f} tok/s" for value in rate.values())
        print(f"| {batch} | {cells} | **{graph / reference:.2f}x** |", flush=True)


def run(args) -> None:

    tokenizer = ExponentialTimeTokenizer()
    torch.manual_seed(0)
    ours = GPT(GPTConfig(block_size=1024, vocab_size=tokenizer.vocab_size, **model_preset("gpt2_10M"))).eval()
    hf = hf_model(tokenizer.vocab_size)
    prompt, notes = demo_prompt(tokenizer)
    start = time.perf_counter()
    compiled = native.library() is not None
    build = time.perf_counter() - start
    load_before = os.getloadavg()
    print(
        f"# {datetime.datetime.now().isoformat(timespec='minutes')}, {cpu_name()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"load average before {load_before[0]:.2f}"
    )
    print(f"# ours: {ours.num_parameters() / 1e6:.1f}M parameters; HF: {hf.num_parameters() / 1e6:.1f}M")
    print(
        f"# compiled step: {'loaded' if compiled else 'UNAVAILABLE: ' + str(native.unavailable_reason())} "
        f"({build:.2f} s to build or load; {' '.join(f for f in native.FLAGS if f.startswith('-march'))}, "
        f"{native.library().pg_vector_lanes() if compiled else 0} float32 lanes)"
    )
    print(f"# {args.busy} busy process(es) of this benchmark running meanwhile")
    # Warm-up (allocations, kernels' first calls).
    time_hf(hf, prompt, 1, 16)
    for batch in (1, 2):
        time_ours(ours, tokenizer, prompt, batch, 16)
        time_ours(ours, tokenizer, prompt, batch, 16, compiled=False)
    ours16 = bfloat16_copy(ours) if args.bf16 else None
    if args.cuda_graphs:
        cuda_graph_leg(ours, tokenizer, prompt, args.batches, args.repeats)
        return
    if args.roofline:
        onnx = onnx_peer(ours, tokenizer, prompt) if args.onnx else None
        roofline(ours, tokenizer, prompt, args.repeats, onnx, ours16)
        return
    if args.sweep or args.stream:
        if args.sweep:
            thread_sweep(ours, tokenizer, prompt, args.repeats)
        if args.stream:
            time_stream(ours, tokenizer, notes, args.repeats)
            if ours16 is not None:
                print("\nthe same model in bfloat16 (the compiled step on its bfloat16 matrices):")
                time_stream(ours16, tokenizer, notes, args.repeats)
        load_after = os.getloadavg()
        print(f"\nload average before/after: {load_before[0]:.2f} / {load_after[0]:.2f}")
        return

    kinds = ("hf", "ours", "ours_no_grammar", "ours_torch", "ours_reference")
    onnx = onnx_peer(ours, tokenizer, prompt) if args.onnx else None
    if onnx is not None:
        kinds = ("onnx", *kinds, *(("ours_bf16",) if ours16 is not None else ()))
        if ours16 is not None:
            time_ours(ours16, tokenizer, prompt, 1, 16)
    rows = []
    for batch in args.batches:
        rate, best = time_batch(hf, ours, tokenizer, prompt, batch, args.repeats, kinds, onnx, ours16)
        rows.append(("float32", batch, rate, best))
        if onnx is not None:
            print(
                f"float32 batch {batch}: ONNX Runtime {rate['onnx']:.0f} tok/s, ours x{rate['ours'] / rate['onnx']:.2f} "
                f"(grammar off x{rate['ours_no_grammar'] / rate['onnx']:.2f})",
                flush=True,
            )
            if "ours_bf16" in rate:
                print(
                    f"batch {batch}: ours with the model in bfloat16 {rate['ours_bf16']:.0f} tok/s, "
                    f"x{rate['ours_bf16'] / rate['onnx']:.2f} ONNX Runtime (float32), same run",
                    flush=True,
                )
        print(
            f"float32 batch {batch}: HF {rate['hf']:.0f} tok/s, ours {rate['ours']:.0f} tok/s "
            f"(x{rate['ours'] / rate['hf']:.2f}), PyTorch step {rate['ours_torch']:.0f} tok/s, "
            f"reference path {rate['ours_reference']:.0f} tok/s; grammar off {rate['ours_no_grammar']:.0f} tok/s "
            f"(the grammar costs {1 - rate['ours'] / rate['ours_no_grammar']:.1%})",
            flush=True,
        )
    if args.bf16:
        hf16 = hf_model(tokenizer.vocab_size).to(torch.bfloat16)
        time_hf(hf16, prompt, 1, 16)
        time_ours(ours16, tokenizer, prompt, 1, 16)
        for batch in args.batches:
            rate, best = time_batch(hf16, ours16, tokenizer, prompt, batch, args.repeats, ("hf", "ours"))
            rows.append(("bfloat16", batch, rate, best))
            print(
                f"bfloat16 batch {batch}: HF {rate['hf']:.0f} tok/s, ours {rate['ours']:.0f} tok/s "
                f"(x{rate['ours'] / rate['hf']:.2f})",
                flush=True,
            )
    load_after = os.getloadavg()

    print()
    print(
        "| dtype | batch | HF GPT2LMHeadModel.generate | piano_gpt.generation | ratio "
        "| PyTorch step (`PIANO_GPT_NATIVE=0`) | reference path (fast=False) |"
    )
    print("|---|---|---|---|---|---|---|")
    for dtype, batch, rate, best in rows:
        extra = [f"{rate[k]:.0f} tok/s" if k in rate else "-" for k in ("ours_torch", "ours_reference")]
        print(
            f"| {dtype} | {batch} | {rate['hf']:.0f} tok/s (best {best['hf']:.0f}) | {rate['ours']:.0f} tok/s "
            f"(best {best['ours']:.0f}) | **{rate['ours'] / rate['hf']:.2f}x** | {extra[0]} | {extra[1]} |"
        )
    if onnx is not None:
        print(
            "\n| batch | ONNX Runtime | piano_gpt.generation | ratio | grammar off | ratio | HF | ours / HF |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for _, batch, rate, best in (row for row in rows if row[0] == "float32"):
            print(
                f"| {batch} | {rate['onnx']:.0f} tok/s (best {best['onnx']:.0f}) | {rate['ours']:.0f} tok/s | "
                f"**{rate['ours'] / rate['onnx']:.2f}x** | {rate['ours_no_grammar']:.0f} tok/s | "
                f"{rate['ours_no_grammar'] / rate['onnx']:.2f}x | {rate['hf']:.0f} tok/s | {rate['ours'] / rate['hf']:.2f}x |"
            )
    print(f"\nload average before/after: {load_before[0]:.2f} / {load_after[0]:.2f}")

    if args.long:
        offset = float(notes["start"].min())
        prompt_notes = notes[notes["start"] < offset + 10].reset_index(drop=True)
        start = time.perf_counter()
        (g,) = generate_samples(
            ours, tokenizer, prompt_notes, max_new_tokens=200_000, max_duration=180.0, top_k=TOP_K, seed=0
        )
        seconds = time.perf_counter() - start
        music = float(g.notes["end"].max() - prompt_notes["end"].max()) if len(g.notes) else 0.0
        windows = int(np.ceil(max(0, len(g.ids) - 1024) / 512))
        print(
            f"\n3-minute continuation (random weights, block 1024): {len(g.ids)} tokens, {len(g.notes)} notes, "
            f"{music:.1f} s of music, ~{windows} window slides, stopped: {g.stop_reason}, {seconds:.1f} s wall "
            f"({len(g.ids) / seconds:.0f} tok/s)"
        )


if __name__ == "__main__":
    main()
