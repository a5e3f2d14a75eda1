"""Converting the original Piano-GPT's .pt checkpoints (piano_gpt.train.convert, piano-gpt convert).

The checkpoints are built here as the original's gpt2/train.py saves them: a dict with the state dict
(its names: ``transformer.wmte``, ``_orig_mod.`` when compiled), OmegaConf ``DictConfig`` configs, a
midi-tokenizers ``tokenizer_desc`` with its special tokens, an AdamW state, run stats and losses.
"""

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.core.utils import setup_globals
from omegaconf import OmegaConf
from test_registry_hub import REPO_ID, offline_cache, publish_to_cache  # noqa: F401 (a fixture)

from piano_gpt.commands.cli import main as cli_main
from piano_gpt.commands.cli import run_command
from piano_gpt.midi import make_notes
from piano_gpt.train.checkpoint import load_checkpoint, read_checkpoint_config
from piano_gpt.train.convert import ConversionError, convert_original_checkpoint

N_LAYER, N_HEAD, N_EMBD, CONTEXT, N_TIME = 2, 4, 32, 48, 10_000
# The original adds its music tokens, then the task tokens, then <GENAI> <EOGENAI> (gpt2/setup/datasets.py).
ORIGINAL_SPECIALS = ["<COMPOSER_CHOPIN>", "<CLEAN_TIME>", "<GENAI>", "<EOGENAI>"]


def original_tokenizer_desc(n_special_ids=16, specials=ORIGINAL_SPECIALS) -> dict:
    """``ExponentialTimeTokenizer.to_dict()`` of midi-tokenizers, after ``add_special_tokens``."""
    note_tokens = [f"NOTE_{kind}_{pitch}" for pitch in range(21, 109) for kind in ("ON", "OFF")]
    velocity_tokens = [f"VELOCITY_{b}" for b in range(32)]
    step_sizes = [2**i for i in range(7)]  # 0.01 s .. 0.64 s
    time_tokens = [f"{s}T" for s in step_sizes]
    vocab = ["<PAD>", "<CLS>", *note_tokens, *velocity_tokens, *time_tokens]
    first_placeholder_id = len(vocab)
    vocab += [f"<PLACEHOLDER_{i}>" for i in range(n_special_ids)]
    for token in specials:  # its add_special_tokens fills the next placeholder and moves the pointer
        vocab[first_placeholder_id] = token
        first_placeholder_id += 1
    return {
        "name": "ExponentialTimeTokenizer",
        "parameters": {
            "lexicon": {
                "vocab": vocab,
                "note_tokens": note_tokens,
                "time_tokens": time_tokens,
                "velocity_tokens": velocity_tokens,
            },
            "step_sizes": sorted(step_sizes, reverse=True),
            "first_placeholder_id": first_placeholder_id,
            "tokenizer_config": {
                "time_unit": 0.01,
                "max_time_step": 1.0,
                "n_velocity_bins": 32,
                "n_special_ids": n_special_ids,
            },
        },
    }


def original_state_dict(vocab_size: int, seed: int = 0, older: bool = False) -> dict:
    """Random weights under the original's names (gpt2/model.py), ``wte`` tied to ``lm_head``.

    ``older``: the layout before the music time table, with biases (``bias: true``) and the causal
    mask buffers (``attn.bias``) its slow-attention path registers."""
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape):
        return torch.randn(*shape, generator=generator) * 0.2

    wte = normal(vocab_size, N_EMBD)
    state = {
        "transformer.wte.weight": wte,
        "transformer.wpe.weight": normal(CONTEXT, N_EMBD),
    }
    if not older:
        state["transformer.wmte.weight"] = normal(N_TIME, N_EMBD)
    for i in range(N_LAYER):
        prefix = f"transformer.h.{i}."
        state |= {
            prefix + "ln_1.weight": 1 + normal(N_EMBD),
            prefix + "attn.c_attn.weight": normal(3 * N_EMBD, N_EMBD),
            prefix + "attn.c_proj.weight": normal(N_EMBD, N_EMBD),
            prefix + "ln_2.weight": 1 + normal(N_EMBD),
            prefix + "mlp.c_fc.weight": normal(4 * N_EMBD, N_EMBD),
            prefix + "mlp.c_proj.weight": normal(N_EMBD, 4 * N_EMBD),
        }
        if older:
            state |= {prefix + "attn.bias": torch.ones(CONTEXT, CONTEXT).tril().view(1, 1, CONTEXT, CONTEXT)}
            for name in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"):
                state[prefix + name + ".bias"] = normal(state[prefix + name + ".weight"].shape[0])
    state |= {"transformer.ln_f.weight": 1 + normal(N_EMBD), "lm_head.weight": wte}
    if older:
        state["transformer.ln_f.bias"] = normal(N_EMBD)
    return state


def original_time_steps(vocab: list[str], ids: list[int], restart_tokens=("<GENAI>",)) -> list[int]:
    """midi-tokenizers' token_ids_to_time_steps: 1 + running time on music tokens, 0 elsewhere."""
    music = {t for t in vocab if t.startswith(("NOTE_", "VELOCITY_")) or t.endswith("T")}
    time_step, steps = 1, []
    for token in (vocab[i] for i in ids):
        if token.endswith("T") and token[:-1].isdigit():
            time_step += int(token[:-1])
        elif token in restart_tokens:
            time_step = 1
        steps.append(time_step if token in music else 0)
    return steps


def original_logits(state: dict, ids: list[int], time_steps: list[int]) -> torch.Tensor:
    """The original GPT.forward (gpt2/model.py) on its own state dict, every position's logits."""
    idx = torch.tensor([ids])
    t = idx.shape[1]
    x = state["transformer.wte.weight"][idx] + state["transformer.wpe.weight"][:t]
    if "transformer.wmte.weight" in state:
        x = x + state["transformer.wmte.weight"][torch.tensor([time_steps]).clip(0, N_TIME - 1)]

    def norm(x, name):
        return F.layer_norm(x, (N_EMBD,), state[name + ".weight"], state.get(name + ".bias"), 1e-5)

    def linear(x, name):
        return F.linear(x, state[name + ".weight"], state.get(name + ".bias"))

    for i in range(N_LAYER):
        p = f"transformer.h.{i}."
        q, k, v = linear(norm(x, p + "ln_1"), p + "attn.c_attn").split(N_EMBD, dim=2)
        q, k, v = (z.view(1, t, N_HEAD, N_EMBD // N_HEAD).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(1, t, N_EMBD)
        x = x + linear(y, p + "attn.c_proj")
        x = x + linear(F.gelu(linear(norm(x, p + "ln_2"), p + "mlp.c_fc")), p + "mlp.c_proj")
    return F.linear(norm(x, "transformer.ln_f"), state["lm_head.weight"])[0]


def original_checkpoint(path, compiled: bool, desc: dict | None = None, run_stats=None, older=False) -> dict:
    """Save a checkpoint as gpt2/train.py does; returns the state dict (original names, no prefix)."""
    desc = desc or original_tokenizer_desc()
    vocab = desc["parameters"]["lexicon"]["vocab"]
    state = original_state_dict(len(vocab), older=older)
    run_config = OmegaConf.create(
        {
            "model": {
                "n_layer": N_LAYER,
                "n_head": N_HEAD,
                "n_embd": N_EMBD,
                "dropout": 0.0,
                "bias": False,
                "context_size": "${training.context_size}",
            },
            "training": {"context_size": CONTEXT, "batch_size": 64, "microbatch_size": 8},
            "tasks": {"list": ["clean_time"]},
            "run_name_suffix": "pretraining-${now:%Y-%m-%d-%H-%M}",
            "logging": {"wandb_log": False, "log_interval": 20},
        }
    )
    OmegaConf.set_struct(run_config, True)  # as Hydra hands it over
    setup_globals()  # Hydra's resolvers (now, hydra, python_version), as under @hydra.main
    run_name = f"midi-gpt2-tiny-{run_config.run_name_suffix}"  # gpt2/train.py: fills the resolver cache
    assert run_config._metadata.resolver_cache["now"]
    parameters = [torch.nn.Parameter(t.clone()) for t in state.values()]
    optimizer = torch.optim.AdamW(parameters, lr=1e-3, betas=(0.9, 0.95))
    sum(p.sum() for p in parameters).backward()
    optimizer.step()
    saved_state = {("_orig_mod." if compiled else "") + name: tensor for name, tensor in state.items()}
    checkpoint = {
        "run_config": run_config,
        "model": saved_state,
        "run_name": run_name,
        "model_cfg": run_config.model,
        "train_loss": 2.5,
        "val_loss": 2.75,
        "run_stats": run_stats
        or {"iter": 101, "total_tokens": 123_456, "running_mfu": 0.1, "best_val_loss": 2.75},
        "optimizer": optimizer.state_dict(),
        "tokenizer_desc": desc,
    }
    torch.save(checkpoint, path)
    return state


def music_ids(tokenizer) -> list[int]:
    rng = np.random.default_rng(0)
    starts = np.cumsum(rng.uniform(0.0, 0.7, 8))
    notes = make_notes(
        rng.integers(40, 90, 8), rng.integers(20, 120, 8), starts, starts + rng.uniform(0.05, 1.5, 8)
    )
    return tokenizer.encode(notes)[: CONTEXT - 1]


@pytest.mark.parametrize("compiled, older", [(False, False), (True, False), (False, True)])
def test_converted_model_gives_the_original_logits(tmp_path, compiled, older):
    state = original_checkpoint(tmp_path / "old.pt", compiled, older=older)
    out = convert_original_checkpoint(tmp_path / "old.pt", tmp_path / "converted")

    model, tokenizer, _ = load_checkpoint(out)  # verifies every file: a normal checkpoint directory
    vocab = original_tokenizer_desc()["parameters"]["lexicon"]["vocab"]
    ids = music_ids(tokenizer)
    assert len(ids) > 30 and all(not vocab[i].startswith("<") for i in ids)
    expected = original_logits(state, ids, original_time_steps(vocab, ids))
    with torch.no_grad():
        logits, _ = model(
            torch.tensor([ids]), torch.as_tensor(tokenizer.music_time(ids))[None], all_logits=True
        )
    torch.testing.assert_close(logits[0], expected, rtol=1e-4, atol=1e-4)
    assert (model.config.music_time_embedding, model.config.bias) == (not older, older)

    # The original's special tokens keep their ids; the figures and the original's config come along.
    assert [tokenizer.token_to_id[t] for t in ORIGINAL_SPECIALS] == [
        vocab.index(t) for t in ORIGINAL_SPECIALS
    ]
    config = read_checkpoint_config(out, verify=True)
    assert (config.val_loss, config.best_val_loss, config.iter_num, config.tokens_seen) == (
        2.75,
        2.75,
        101,
        123_456,
    )
    assert config.model["block_size"] == CONTEXT and config.model["n_head"] == N_HEAD
    original = config.run["converted_from"]
    assert original["run_config"]["model"]["context_size"] == "${training.context_size}"  # never resolved
    assert original["run_name"].startswith("midi-gpt2-tiny")


def test_convert_command_and_refusing_to_overwrite(tmp_path, capsys):
    original_checkpoint(tmp_path / "old.pt", compiled=True)
    assert cli_main(["convert", str(tmp_path / "old.pt"), str(tmp_path / "new")]) == 0
    assert "converted" in capsys.readouterr().out
    assert (tmp_path / "new" / "manifest.json").is_file()
    assert cli_main(["convert", str(tmp_path / "old.pt"), str(tmp_path / "new")]) == 1
    err = capsys.readouterr().err.strip()
    assert "already exists" in err and len(err.splitlines()) == 1


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo ran > ran.txt",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    original_checkpoint(tmp_path / "evil.pt", compiled=False, run_stats=RunsCode())

    with pytest.raises(ConversionError, match=r"evil\.pt: refused, it holds (posix|os|nt)\.system"):
        convert_original_checkpoint(tmp_path / "evil.pt", tmp_path / "out")
    assert cli_main(["convert", "evil.pt", "out"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "system" in err
    assert not (tmp_path / "ran.txt").exists() and not (tmp_path / "out").exists()
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConversionError, match=r"garbage\.pt: not a readable torch checkpoint"):
        convert_original_checkpoint(tmp_path / "garbage.pt", tmp_path / "out")


def test_a_vocabulary_that_is_not_ours_is_refused_at_its_first_difference(tmp_path):
    desc = original_tokenizer_desc()
    vocab = desc["parameters"]["lexicon"]["vocab"]
    vocab[5], vocab[6] = vocab[6], vocab[5]  # NOTE_OFF_22 and NOTE_ON_23 swapped
    original_checkpoint(tmp_path / "old.pt", compiled=False, desc=desc)
    with pytest.raises(
        ConversionError,
        match=r"old\.pt: tokenizer_desc: the vocabularies differ first at id 5: original 'NOTE_ON_23', ours 'NOTE_OFF_22'",
    ):
        convert_original_checkpoint(tmp_path / "old.pt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_music_time_table_is_shifted_and_specials_keep_the_original_order(tmp_path):
    # <GENAI> is not first here, unlike our own default order: ids must still match the original's.
    desc = original_tokenizer_desc(specials=["<A>", "<B>", "<GENAI>", "<EOGENAI>", "<C>"])
    state = original_checkpoint(tmp_path / "old.pt", compiled=False, desc=desc)
    model, tokenizer, _ = load_checkpoint(convert_original_checkpoint(tmp_path / "old.pt", tmp_path / "c"))
    first = tokenizer.first_special_id
    assert tokenizer.vocab[first : first + 5] == ["<A>", "<B>", "<GENAI>", "<EOGENAI>", "<C>"]
    wmte, wtime = state["transformer.wmte.weight"], model.transformer.wtime.weight.detach()
    assert (
        torch.equal(wtime[0], wmte[1])
        and torch.equal(wtime[-1], wmte[-1])
        and torch.equal(wtime[-2], wmte[-1])
    )
    assert math.isclose(float((wtime[:-1] - wmte[1:]).abs().max()), 0.0)


def test_download_model_script_downloads_and_converts_an_original_file(tmp_path, offline_cache, monkeypatch):  # noqa: F811
    """``scripts/download_model.py NAME.pt`` (the download command): from the hub cache, offline."""
    state = original_checkpoint(tmp_path / "midi-gpt2-tiny.pt", compiled=True)
    publish_to_cache(
        offline_cache,
        REPO_ID,
        {"checkpoints/midi-gpt2-tiny.pt": (tmp_path / "midi-gpt2-tiny.pt").read_bytes()},
    )
    monkeypatch.chdir(tmp_path)
    assert run_command("download", ["midi-gpt2-tiny.pt", "--repo-id", REPO_ID], prog="download_model.py") == 0
    model, _, _ = load_checkpoint(tmp_path / "tmp" / "checkpoints" / "hub" / "midi-gpt2-tiny")
    assert torch.equal(model.transformer.wpe.weight.detach(), state["transformer.wpe.weight"])
