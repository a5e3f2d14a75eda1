"""The piano architecture family beside gpt2: gpt2 unchanged, RoPE with the KV cache, training with
AdamW and Muon, checkpoints that say their architecture, generation through FastRunner."""

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from safetensors.torch import load_file

from piano_gpt.generation import native
from piano_gpt.generation.runner import FastRunner, ModelRunner, runner_for
from piano_gpt.model import GPT, GPTConfig, KVCache, swiglu_hidden
from piano_gpt.tokenizers import ExponentialTimeTokenizer
from piano_gpt.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, verify_checkpoint
from piano_gpt.train.config import ConfigError, model_preset, optimizer_for, validate_config
from piano_gpt.train.loop import train
from piano_gpt.train.optimizers import MuonAdamW, build_optimizer, muon_parameters

CONFIGS = str(Path(__file__).resolve().parents[1] / "src" / "piano_gpt" / "configs")
PIANO = dict(architecture="piano", rotary=True, norm="rmsnorm", mlp="swiglu", qk_norm=True)
SMALL = dict(vocab_size=97, n_layer=2, n_head=2, n_embd=32, max_music_time=200)


def inputs(batch: int, length: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 97, (batch, length), generator=generator)
    times = torch.randint(0, 200, (batch, length), generator=generator).sort(dim=1).values
    return ids, times


def test_gpt2_default_is_the_original_model():
    config = GPTConfig(block_size=64, **SMALL)
    assert (config.architecture, config.rotary, config.norm, config.mlp, config.qk_norm) == (
        "gpt2", False, "layernorm", "gelu", False,
    )  # fmt: skip
    assert config.is_gpt2
    shapes = {name: tuple(p.shape) for name, p in GPT(config).named_parameters()}
    expected = {"transformer.wte.weight": (97, 32), "transformer.wpe.weight": (64, 32)}
    for i in range(2):
        expected.update({
            f"transformer.h.{i}.ln_1.weight": (32,), f"transformer.h.{i}.attn.c_attn.weight": (96, 32),
            f"transformer.h.{i}.attn.c_proj.weight": (32, 32), f"transformer.h.{i}.ln_2.weight": (32,),
            f"transformer.h.{i}.mlp.c_fc.weight": (128, 32), f"transformer.h.{i}.mlp.c_proj.weight": (32, 128),
        })  # fmt: skip
    expected.update({"transformer.ln_f.weight": (32,), "transformer.wtime.weight": (200, 32)})
    assert shapes == expected
    assert list(shapes) == list(expected)  # same order: the same state dict as before


def test_piano_family_shapes_and_presets():
    model = GPT(GPTConfig(block_size=64, **SMALL, **PIANO))
    names = {name for name, _ in model.named_parameters()}
    assert "transformer.wpe.weight" not in names  # rotary positions: no learned table
    assert "transformer.h.0.attn.q_norm.weight" in names
    assert isinstance(model.transformer.ln_f, torch.nn.RMSNorm)
    assert swiglu_hidden(256) == 704 and swiglu_hidden(128) == 320
    for gpt2, piano in (("gpt2_10M", "piano_10M"), ("gpt2_demo", "piano_demo")):
        a, b = model_preset(gpt2), model_preset(piano)
        assert [a[k] for k in ("n_layer", "n_head", "n_embd")] == [
            b[k] for k in ("n_layer", "n_head", "n_embd")
        ]
        assert GPTConfig(**b).architecture == "piano" and not GPTConfig(**b).is_gpt2
        n_a = GPT(GPTConfig(block_size=256, **a)).num_parameters()
        n_b = GPT(GPTConfig(block_size=256, **b)).num_parameters()
        assert abs(n_a - n_b) / n_a < 0.1
    with pytest.raises(ValueError, match="norm='batchnorm'"):
        GPTConfig(norm="batchnorm")


@torch.no_grad()
def test_piano_cached_logits_equal_uncached():
    torch.manual_seed(0)
    config = GPTConfig(block_size=64, **SMALL, **PIANO)
    model = GPT(config).eval()
    ids, times = inputs(2, 40)
    full, _ = model(ids, times, all_logits=True)
    cache = KVCache(config, 2, 64, "cpu", torch.float32)
    pieces = [model(ids[:, :25], times[:, :25], cache=cache, all_logits=True)[0]]
    for t in range(25, 31):  # one token at a time: the rotation offset is the cached length
        pieces.append(model(ids[:, t : t + 1], times[:, t : t + 1], cache=cache)[0])
    pieces.append(
        model(ids[:, 31:], times[:, 31:], cache=cache, all_logits=True)[0]
    )  # a chunk after the cache
    assert cache.length == 40
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-4, rtol=0)
    # ModelRunner (the reference generation path) agrees too.
    runner = ModelRunner(model, 2)
    logits = runner.prefill(ids[:, :30], times[:, :30])
    torch.testing.assert_close(logits, full[:, 29], atol=1e-4, rtol=0)
    torch.testing.assert_close(runner.step(ids[:, 30], times[:, 30]), full[:, 30], atol=1e-4, rtol=0)


def test_generation_runs_the_fast_runner_on_both_families():
    piano = GPT(GPTConfig(block_size=64, **SMALL, **PIANO))
    gpt2 = GPT(GPTConfig(block_size=64, **SMALL))
    assert FastRunner.supports(piano) and FastRunner.supports(gpt2)
    assert native.model_unsupported(piano.config) is None and native.model_unsupported(gpt2.config) is None
    assert isinstance(runner_for(gpt2, 2, fast=True), FastRunner)
    assert isinstance(runner_for(piano, 2, fast=True), FastRunner)
    assert isinstance(runner_for(piano, 2, fast=False), ModelRunner)
    # One switch alone is enough to leave the GPT-2 layout.
    assert not GPTConfig(rotary=True).is_gpt2 and not GPTConfig(qk_norm=True).is_gpt2


@pytest.mark.parametrize("name", ["adamw", "muon"])
def test_piano_loss_falls_on_a_repeated_batch(name):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, **SMALL, **PIANO))
    optimizer = build_optimizer(model, name, 3e-3, 0.1, (0.9, 0.95), "cpu", muon_lr=0.02)
    if name == "muon":
        assert isinstance(optimizer, MuonAdamW)
        muon = {id(p) for p in muon_parameters(model)}
        assert id(model.lm_head.weight) not in muon and id(model.transformer.wtime.weight) not in muon
        assert all(p.dim() == 2 for p in muon_parameters(model))
    ids, times = inputs(4, 33)
    losses = []
    for _ in range(30):
        for group in optimizer.param_groups:
            group["lr"] = 3e-3 * group.get("lr_scale", 1.0)
        _, loss = model(ids[:, :-1], times[:, :-1], ids[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0, losses


def test_piano_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    tokenizer = ExponentialTimeTokenizer()
    model = GPT(
        GPTConfig(block_size=32, vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, n_embd=32, **PIANO)
    )
    save_checkpoint(tmp_path / "ckpt", model.eval(), tokenizer)
    assert verify_checkpoint(tmp_path / "ckpt")["model"]["architecture"] == "piano"
    loaded, _, _ = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config == model.config
    ids, times = inputs(2, 20)
    ids = ids % tokenizer.vocab_size
    with torch.no_grad():
        assert torch.equal(loaded(ids, times, all_logits=True)[0], model(ids, times, all_logits=True)[0])


def test_old_config_without_architecture_loads_as_gpt2(tmp_path):
    tokenizer = ExponentialTimeTokenizer()
    model = GPT(GPTConfig(block_size=32, vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, n_embd=16))
    path = save_checkpoint(tmp_path / "old", model, tokenizer)
    config = json.loads((path / "config.json").read_text())
    for key in ("architecture", "rotary", "rope_base", "norm", "mlp", "qk_norm"):
        del config["model"][key]  # as written before the piano family existed
    (path / "config.json").write_text(json.dumps(config))
    loaded, _, _ = load_checkpoint(path, verify=False)
    assert loaded.config.architecture == "gpt2" and loaded.config.is_gpt2
    config["model"]["attention"] = "linear"  # a key this code does not know: refused, not dropped
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="unknown model config keys attention"):
        load_checkpoint(path, verify=False)


TINY = [
    "dataset=demo", "model=piano_demo", "model.n_layer=2", "model.n_embd=64", "model.n_head=2",
    "data.batch_size=4", "data.context_size=32", "eval_iters=1", "logging.progress_bar=false",
    "log_interval=1", "optimizer.name=muon", "lr.warmup_iters=1",
]  # fmt: skip


def config(tmp_path, *overrides):
    with initialize_config_dir(config_dir=CONFIGS, version_base=None):
        return compose(config_name="gpt2_pretraining", overrides=[*TINY, f"out_dir={tmp_path}", *overrides])


def test_optimizer_name_is_validated(tmp_path):
    with pytest.raises(ConfigError, match="optimizer.name=sgd: use one of auto, adamw, muon"):
        validate_config(config(tmp_path, "optimizer.name=sgd", "run_name=x"))
    with pytest.raises(ConfigError, match="model mlp='relu'"):
        validate_config(config(tmp_path, "model.mlp=relu", "run_name=x"))


def test_new_runs_default_to_the_piano_recipe_and_gpt2_keeps_the_original(tmp_path):
    with initialize_config_dir(config_dir=CONFIGS, version_base=None):
        default = compose(config_name="gpt2_pretraining")
    assert default.model.architecture == "piano" and default.optimizer.name == "auto"
    assert optimizer_for("auto", "piano", sharded=False) == "muon"
    assert optimizer_for("auto", "gpt2", sharded=False) == "adamw"  # model=gpt2_* is the original recipe
    assert optimizer_for("auto", "piano", sharded=True) == "adamw"  # Muon does not shard under FSDP
    assert optimizer_for("adamw", "piano", sharded=False) == "adamw"


def test_train_piano_demo_with_muon_resumes_exactly(tmp_path):
    full = train(config(tmp_path, "optimizer.max_iters=4", "eval_interval=2", "run_name=full"))
    half = train(config(tmp_path, "optimizer.max_iters=2", "eval_interval=2", "run_name=half"))
    checkpoint = half / "half-last"
    saved = OmegaConf.create(verify_checkpoint(checkpoint)["run"])
    assert saved.optimizer.name == "muon" and saved.model.architecture == "piano"
    saved.optimizer.max_iters = 4
    train(saved, resume_from=str(checkpoint))  # as --config-name=resume_training does

    def rows(run_dir):
        lines = (run_dir / "log.jsonl").read_text().splitlines()
        keep = ("iter", "train_loss", "val_loss", "lr")
        return [{k: v for k, v in json.loads(line).items() if k in keep} for line in lines]

    assert rows(half) == rows(full)  # bit-identical losses at every step
    a, b = load_file(full / "full-last" / "model.safetensors"), load_file(checkpoint / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    model, _, info = load_checkpoint(checkpoint)
    assert info["model"]["architecture"] == "piano" and "wpe" not in dict(model.transformer.named_children())
