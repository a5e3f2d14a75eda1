"""The CPU training kernels of piano_gpt.model compute what the plain path computes (to rounding)."""

import pytest
import torch

from piano_gpt.model import GPT, GPTConfig
from piano_gpt.model_kernels import PLAIN, CpuTrainingKernels, use_cpu_training_kernels

FAST = CpuTrainingKernels(onednn_linear=True, attention_chunk=128)


def step(config, fast, dtype=None, seed=0, T=None):
    with use_cpu_training_kernels(FAST if fast else PLAIN):
        torch.manual_seed(seed)
        model = GPT(config).train()
        g = torch.Generator().manual_seed(seed)
        T = T or config.block_size
        ids = torch.randint(0, config.vocab_size, (2, T + 1), generator=g)
        times = torch.randint(0, 3, (2, T), generator=g).cumsum(1)
        ctx = torch.autocast("cpu", dtype=dtype) if dtype else torch.autocast("cpu", enabled=False)
        with ctx:
            logits, loss = model(ids[:, :-1], times, ids[:, 1:])
        loss.backward()
        return logits.float(), loss, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("T", [64, 65, 100, 128, 200])
@pytest.mark.parametrize("bias", [False, True])
def test_fast_paths_match_plain_fp32(T, bias):
    config = GPTConfig(block_size=200, vocab_size=97, n_layer=2, n_head=2, n_embd=32, bias=bias)
    fast, plain = step(config, True, T=T), step(config, False, T=T)
    torch.testing.assert_close(fast[0], plain[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast[1], plain[1], rtol=1e-5, atol=1e-6)
    for name in plain[2]:
        torch.testing.assert_close(fast[2][name], plain[2][name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fast_paths_under_autocast_stay_close(dtype):
    config = GPTConfig(block_size=160, vocab_size=97, n_layer=2, n_head=2, n_embd=32)
    fast, plain = step(config, True, dtype), step(config, False, dtype)
    exact = step(config, False)
    # Attention runs in fp32 on the fast path: at least as close to fp32 as the plain path.
    assert (fast[1] - exact[1]).abs() <= 2 * (plain[1] - exact[1]).abs() + 1e-3


def test_fast_paths_off_without_grad():
    config = GPTConfig(block_size=128, vocab_size=97, n_layer=1, n_head=2, n_embd=32)
    torch.manual_seed(0)
    model = GPT(config).eval()
    ids = torch.randint(0, 97, (2, 128))
    times = torch.zeros_like(ids)
    with torch.no_grad():
        a, _ = model(ids, times, all_logits=True)
        with use_cpu_training_kernels(PLAIN):
            b, _ = model(ids, times, all_logits=True)
    assert torch.equal(a, b)


def test_fast_paths_in_a_bf16_model_without_autocast():
    config = GPTConfig(block_size=160, vocab_size=97, n_layer=1, n_head=2, n_embd=32)
    torch.manual_seed(0)
    model = GPT(config).to(torch.bfloat16).train()
    ids = torch.randint(0, 97, (2, 161))
    logits, loss = model(ids[:, :-1], torch.zeros(2, 160, dtype=torch.long), ids[:, 1:])
    loss.backward()
    assert logits.dtype == torch.bfloat16 and torch.isfinite(loss)
