"""FastRunner (its PyTorch step and its compiled step) computes the piano family and every switch of
GPTConfig alone: the same logits as ModelRunner (GPT.forward with its KV cache) and as the uncached
model, for a prompt, many steps, a shared prompt and a slid (re-primed) window."""

import functools

import numpy as np
import pytest
import torch

from piano_gpt.generation import engine, native, sample_ids
from piano_gpt.generation.runner import FastRunner, ModelRunner, runner_for
from piano_gpt.midi import make_notes
from piano_gpt.model import GPT, GPTConfig
from piano_gpt.tokenizers import ExponentialTimeTokenizer

LOGITS_ATOL = 1e-4
SWITCHES = {
    "gpt2": {},
    "rotary": dict(rotary=True, rope_base=500.0),
    "rmsnorm": dict(norm="rmsnorm"),
    "swiglu": dict(mlp="swiglu"),
    "qk_norm": dict(qk_norm=True),
    "bias": dict(bias=True),
    "piano": dict(architecture="piano", rotary=True, norm="rmsnorm", mlp="swiglu", qk_norm=True),
    "piano_bias": dict(architecture="custom", rotary=True, norm="rmsnorm", mlp="swiglu", qk_norm=True, bias=True),
}  # fmt: skip
VOCAB, MAX_TIME, BLOCK = 97, 300, 48

needs_native = pytest.mark.skipif(
    native.library() is None, reason=f"no native step here: {native.unavailable_reason()}"
)
STEPS = [
    pytest.param(False, id="torch_step"),
    pytest.param(True, id="native_step", marks=needs_native),
]


def random_model(switches: dict, seed: int = 0, n_embd: int = 128) -> GPT:
    """piano_demo's shape (4 layers, 4 heads of 32) with weights large enough that logits are a few
    units and every part of the network moves them."""
    torch.manual_seed(seed)
    config = GPTConfig(
        block_size=BLOCK, vocab_size=VOCAB, n_layer=4, n_head=4, n_embd=n_embd, max_music_time=MAX_TIME,
        **switches,
    )  # fmt: skip
    model = GPT(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() == 2:
                parameter.normal_(0.0, 1.0 / parameter.size(1) ** 0.5)
            elif name.endswith("weight"):  # norm gains near 1 (not exactly: a wrong gain shows)
                parameter.normal_(1.0, 0.2)
            else:
                parameter.normal_(0.0, 0.2)
    return model


def inputs(batch: int, length: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (batch, length), generator=generator)
    times = torch.randint(0, 12, (batch, length), generator=generator).cumsum(dim=1)
    return ids, times


def decode(runner, ids, times, prompt_length, shared_batch=None, slide_keep=20) -> list[torch.Tensor]:
    """Logits of a prompt, steps until the cache is full, a re-primed window of the last
    ``slide_keep`` tokens (music time restarted at its first token, positions at 0), and more steps:
    what the generation engine does."""
    rows = slice(0, 1) if shared_batch else slice(None)
    logits = [runner.prefill(ids[rows, :prompt_length], times[rows, :prompt_length], shared_batch)]
    i = prompt_length
    while runner.length < runner.capacity:
        logits.append(runner.step(ids[:, i], times[:, i]))
        i += 1
    window = slice(i - slide_keep, i)
    logits.append(runner.prefill(ids[:, window], times[:, window] - times[:, window][:, :1]))
    for j in range(i, ids.size(1)):
        logits.append(runner.step(ids[:, j], times[:, j] - times[:, i - slide_keep]))
    return logits


@pytest.mark.parametrize("use_native", STEPS)
@pytest.mark.parametrize("batch, shared", [(1, False), (3, False), (3, True)])
@pytest.mark.parametrize("switches", SWITCHES.values(), ids=SWITCHES.keys())
def test_fast_runner_equals_model_runner(switches, batch, shared, use_native, n_embd=128):
    model = random_model(switches, n_embd=n_embd)
    ids, times = inputs(batch, BLOCK + 16, seed=batch)
    prompt_length = 21  # off a key tile boundary of the native cache
    if shared:
        ids[:, :prompt_length], times[:, :prompt_length] = ids[0, :prompt_length], times[0, :prompt_length]
    with torch.inference_mode():
        fast_runner = FastRunner(model, batch, native=use_native)
        assert (fast_runner.native is not None) == use_native
        fast = decode(fast_runner, ids, times, prompt_length, batch if shared else None)
        reference = decode(ModelRunner(model, batch), ids, times, prompt_length, batch if shared else None)
        # and the uncached model over the first window
        full, _ = model(ids[:, :BLOCK], times[:, :BLOCK], all_logits=True)
    assert len(fast) == len(reference) == 16 + 2 + BLOCK - prompt_length
    assert full.abs().max() > 2.0  # logits of a few units: a wrong term would show
    for step, (a, b) in enumerate(zip(fast, reference, strict=True)):
        torch.testing.assert_close(
            a, b, atol=LOGITS_ATOL, rtol=0, msg=lambda m, step=step: f"call {step}: {m}"
        )
    first_window = torch.stack(fast[: BLOCK - prompt_length + 1], dim=1)
    torch.testing.assert_close(first_window, full[:, prompt_length - 1 :], atol=LOGITS_ATOL, rtol=0)


@pytest.mark.parametrize("use_native", STEPS)
@pytest.mark.parametrize("batch", [1, 3])
def test_piano_at_a_width_off_the_vector_paths(batch, use_native):
    """Rows of 40 floats, heads of 10, SwiGLU hidden 128: the native step's plain loops."""
    test_fast_runner_equals_model_runner(SWITCHES["piano"], batch, False, use_native, n_embd=40)


def test_positions_restart_with_the_window():
    """After a re-prime the step's rotary angle is that of its place in the new window: the logits
    of a slid window equal the uncached model's over that window alone."""
    model = random_model(SWITCHES["piano"])
    ids, times = inputs(1, 40, seed=5)
    runner = FastRunner(model, 1, native=False)
    with torch.inference_mode():
        runner.prefill(ids[:, :30], times[:, :30])
        window_ids, window_times = ids[:, 10:40], times[:, 10:40] - times[:, 10:11]
        logits = [runner.prefill(window_ids[:, :25], window_times[:, :25])]
        logits += [runner.step(window_ids[:, t], window_times[:, t]) for t in range(25, 30)]
        full, _ = model(window_ids, window_times, all_logits=True)
    torch.testing.assert_close(torch.stack(logits[:-1], dim=1), full[:, 24:29], atol=LOGITS_ATOL, rtol=0)


def test_runner_for_picks_the_fast_runner_for_both_families():
    for switches in SWITCHES.values():
        model = random_model(switches)
        assert FastRunner.supports(model)
        assert isinstance(runner_for(model, 2), FastRunner)
        assert isinstance(runner_for(model, 2, fast=False), ModelRunner)


def piano_model_and_prompt() -> tuple[GPT, ExponentialTimeTokenizer, list[int]]:
    """A 2-layer piano model on the real vocabulary (logits of a few units) and a 20-token prompt."""
    tokenizer = ExponentialTimeTokenizer()
    torch.manual_seed(0)
    config = GPTConfig(
        block_size=BLOCK, vocab_size=tokenizer.vocab_size, n_layer=2, n_head=4, n_embd=128,
        **SWITCHES["piano"],
    )  # fmt: skip
    model = GPT(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0.0, 1.0 / parameter.size(1) ** 0.5)
    start = np.arange(8) * 0.25 + 1.0
    notes = make_notes(
        [60, 64, 67, 72, 48, 55, 62, 65], [70, 80, 90, 100, 60, 70, 80, 90], start, start + 0.3
    )
    return model, tokenizer, tokenizer.encode(notes)[:20]


@pytest.mark.parametrize("use_native", STEPS)
def test_piano_sampling_through_window_slides_equals_the_reference(use_native, monkeypatch):
    """The engine with FastRunner gives the reference path's tokens for the piano family, greedy
    and sampled, over a continuation that slides its 48-token window several times."""
    model, tokenizer, prompt = piano_model_and_prompt()
    if not use_native:
        monkeypatch.setenv("PIANO_GPT_NATIVE", "0")
    used = []
    monkeypatch.setattr(engine, "runner_for", lambda *a: used.append(runner_for(*a)) or used[-1])
    for options in (dict(temperature=0), dict(temperature=1.0, n_samples=3, seed=4)):
        fast = sample_ids(model, tokenizer, prompt, max_new_tokens=120, fast=True, **options)
        reference = sample_ids(model, tokenizer, prompt, max_new_tokens=120, fast=False, **options)
        assert [type(r) for r in used[-2:]] == [FastRunner, ModelRunner]
        assert (used[-2].native is not None) == use_native
        assert [s.ids.tolist() for s in fast] == [s.ids.tolist() for s in reference]
        assert all(len(s.ids) == 120 for s in fast)  # past the 48-token window: it slid


def bfloat16_and_rounded(model: GPT) -> tuple[GPT, GPT]:
    """``model`` in bfloat16, and a float32 copy holding the same bfloat16-rounded weights."""
    low = GPT(model.config).eval()
    low.load_state_dict(model.state_dict())
    low = low.to(torch.bfloat16)
    rounded = GPT(model.config).eval()
    rounded.load_state_dict({name: value.float() for name, value in low.state_dict().items()})
    return low, rounded


@needs_native
@pytest.mark.parametrize("batch, shared", [(1, False), (3, True)])
@pytest.mark.parametrize("switches", SWITCHES.values(), ids=SWITCHES.keys())
def test_a_bfloat16_model_steps_as_float32_on_its_rounded_weights(switches, batch, shared):
    """The compiled step reads a bfloat16 model's matrices as they are (half the bytes) and computes
    in float32: the logits of the float32 step on the same rounded weights. Without q/k norms the
    attention scale is folded into the query weights before they are rounded, hence a looser bound."""
    low, rounded = bfloat16_and_rounded(random_model(switches))
    ids, times = inputs(batch, BLOCK + 16, seed=batch)
    prompt_length = 21
    if shared:
        ids[:, :prompt_length], times[:, :prompt_length] = ids[0, :prompt_length], times[0, :prompt_length]
    with torch.inference_mode():
        runner = FastRunner(low, batch, native=True)
        assert runner.bf16_matrices and runner.layers[0].qkv.dtype == torch.bfloat16
        ours = decode(runner, ids, times, prompt_length, batch if shared else None)
        expected = decode(
            FastRunner(rounded, batch, native=True), ids, times, prompt_length, batch if shared else None
        )
        plain = decode(
            FastRunner(low, batch, native=False), ids, times, prompt_length, batch if shared else None
        )
    atol = LOGITS_ATOL if switches.get("qk_norm") else 2e-2
    for step, (a, b) in enumerate(zip(ours, expected, strict=True)):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, atol=atol, rtol=0, msg=lambda m, step=step: f"call {step}: {m}")
    worst = max((a - b.float()).abs().max().item() for a, b in zip(ours, plain))
    assert 1e-3 < worst < 0.5  # bfloat16 arithmetic (the PyTorch step) differs more, yet is the same model


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as file:
            return next(
                (set(line.split(":", 1)[1].split()) for line in file if line.startswith("flags")), set()
            )
    except OSError:
        return set()


@functools.cache
def avx2_build():
    """The compiled step built for AVX2 and FMA only (``-march=x86-64-v3``): the vector path of the many
    CPUs without AVX-512, compiled and run here too where this CPU has AVX2 (else None)."""
    if not {"avx2", "fma"} <= cpu_flags() or native.library() is None:
        return None
    flags = ["-march=x86-64-v3" if flag == "-march=native" else flag for flag in native.FLAGS]
    saved = native.FLAGS
    native.FLAGS = flags
    try:
        return native._build()
    except RuntimeError:  # a compiler without -march=x86-64-v3
        return None
    finally:
        native.FLAGS = saved


@pytest.mark.parametrize("batch, shared", [(1, False), (3, True)])
@pytest.mark.parametrize("switches", ["gpt2", "piano", "piano_bias"])
def test_the_avx2_build_computes_the_same_step(switches, batch, shared, monkeypatch):
    """Its float32 step gives ModelRunner's logits; a bfloat16 model's, the float32 step's on the
    rounded weights (both through the 8-lane intrinsics, not the plain loops)."""
    library = avx2_build()
    if library is None:
        pytest.skip("no AVX2 and FMA on this CPU, or no compiler for -march=x86-64-v3")
    monkeypatch.setattr(native, "_library", library)
    assert library.pg_vector_lanes() == 8
    test_fast_runner_equals_model_runner(SWITCHES[switches], batch, shared, True)
    test_a_bfloat16_model_steps_as_float32_on_its_rounded_weights(SWITCHES[switches], batch, shared)


@needs_native
def test_the_native_build_uses_the_widest_vectors_this_cpu_has():
    flags = cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo to read this CPU's vector extensions from")
    lanes = 16 if "avx512f" in flags else 8 if {"avx2", "fma"} <= flags else 1
    assert native.library().pg_vector_lanes() == lanes
