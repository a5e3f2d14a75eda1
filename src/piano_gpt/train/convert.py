"""The original Piano-GPT's ``.pt`` checkpoints, converted into checkpoint directories.

The original (Nospoko/piano-gpt, ``gpt2/train.py``) saves with ``torch.save`` a dict: ``model`` (the
state dict, with ``_orig_mod.`` before every name when the model was compiled), ``model_cfg`` and
``run_config`` (OmegaConf ``DictConfig`` objects), ``tokenizer_desc`` (midi-tokenizers'
``ExponentialTimeTokenizer.to_dict()``: ``name`` and ``parameters`` with ``lexicon`` or ``vocab``,
``step_sizes``, ``first_placeholder_id``, ``tokenizer_config``), ``optimizer``, ``run_stats``,
``train_loss``, ``val_loss``, ``run_name``.

It is read with ``torch.load(weights_only=True)`` only: tensors and plain data, plus exactly the
OmegaConf types a config needs (:data:`ORIGINAL_CONFIG_TYPES`, none of which runs code when
unpickled). Configs are turned into plain data without resolving interpolations (resolvers such as
``oc.env`` would read the environment). Anything else refuses the file, naming what it holds.

The mapping:

- weights: ``_orig_mod.`` dropped; ``transformer.wmte`` (music time) becomes ``transformer.wtime``; the
  attention mask buffers of its slow-attention path (``attn.bias``) are dropped. ``wte`` was built with
  ``padding_idx`` (which only freezes the ``<PAD>`` row while training): its weights load as they are.
  The sizes (vocabulary, width, context, layers, bias) are read from the weights, ``n_head`` from
  ``model_cfg``.
- music time: the original gives music tokens (notes, velocities, time shifts) the index ``1 + time``
  and every other token index 0; this model gives every token its running time. The table is shifted
  by one (``wtime[t] = wmte[t + 1]``), so a converted model computes the original's logits exactly on
  music tokens; special tokens (task, ``<GENAI>``, composer) see the embedding of their moment instead
  of the original's slot 0.
- tokenizer: ours with the same settings and the original's special tokens in its order; its
  vocabulary must be the original's id for id (unused placeholder slots count as equal), else the
  conversion stops at the first difference.

The optimizer state is not converted (the result holds weights only: it generates and evaluates, it
does not resume training).
"""

from __future__ import annotations

import os
import re
import typing
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.base import ContainerMetadata, Metadata
from omegaconf.nodes import AnyNode

from piano_gpt.model import GPT, GPTConfig
from piano_gpt.tokenizers import ExponentialTimeTokenizer
from piano_gpt.train.checkpoint import CheckpointError, save_checkpoint, sha256_file


def _resolver_cache_as_dict(default_factory=None) -> dict:
    """What a config's resolver cache (a ``defaultdict(dict)``, filled once Hydra's ``${now:...}`` was
    read) is read back as: a plain dict, since torch's weights-only unpickler fills plain dicts only.
    The factory is never called (these configs are never resolved here)."""
    return {}


# What a DictConfig / ListConfig pickles to (found by pickling Hydra-composed configs): the containers,
# their metadata, the untyped value node, and the types the metadata names. None of them runs code:
# dict/list/int build data, the OmegaConf classes restore their fields, the resolver cache (a
# collections.defaultdict) becomes a plain dict.
ORIGINAL_CONFIG_TYPES = (
    DictConfig,
    ListConfig,
    ContainerMetadata,
    Metadata,
    AnyNode,
    typing.Any,
    dict,
    list,
    int,
    (_resolver_cache_as_dict, "collections.defaultdict"),
)
COMPILED_PREFIX = "_orig_mod."
ORIGINAL_PLACEHOLDER = re.compile(r"<PLACEHOLDER_\d+>")


class ConversionError(CheckpointError):
    """An original checkpoint that cannot be converted (unsafe, unreadable, or not this model)."""


# --- reading ------------------------------------------------------------------------------------------


def read_original_checkpoint(path: str | os.PathLike) -> dict:
    """The dict an original ``.pt`` holds, with its configs as plain data; never unpickles code."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    try:
        with torch.serialization.safe_globals(list(ORIGINAL_CONFIG_TYPES)):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle.UnpicklingError, RuntimeError (not a zip), EOFError, ...
        # torch's message: advice, then what it met (a GLOBAL, or a line after "WeightsUnpickler error:")
        message = str(error).strip()
        met = message.split("WeightsUnpickler error:", 1)[-1].strip().split("\n")[0].strip()
        unsafe = re.search(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)", message)
        if unsafe or re.search(r"GLOBAL|function|class|Can only", met):
            raise ConversionError(
                f"{path}: refused, it holds {unsafe.group(1) if unsafe else met}, which is not plain data "
                "(unpickling it could run code); only tensors, plain values and OmegaConf configs are read"
            ) from error
        raise ConversionError(
            f"{path}: not a readable torch checkpoint ({met or type(error).__name__})"
        ) from error
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ConversionError(f"{path}: not an original Piano-GPT checkpoint (no 'model' state dict)")
    return {key: plain(value) if key != "model" else value for key, value in data.items()}


def plain(value):
    """OmegaConf containers (anywhere inside) as dicts and lists, interpolations left unresolved."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=False)
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(plain(item) for item in value)
    return value


# --- tokenizer ----------------------------------------------------------------------------------------


def original_tokenizer(desc: dict) -> ExponentialTimeTokenizer:
    """Our tokenizer for the original's ``tokenizer_desc``, checked to be its vocabulary id for id."""
    if not isinstance(desc, dict) or not isinstance(desc.get("parameters"), dict):
        raise ConversionError("tokenizer_desc: missing or has no 'parameters'")
    name = desc.get("name")
    if name != "ExponentialTimeTokenizer":
        raise ConversionError(f"tokenizer_desc: {name!r} cannot be converted; only ExponentialTimeTokenizer")
    parameters = desc["parameters"]
    if isinstance(parameters.get("lexicon"), dict):
        vocab = parameters["lexicon"].get("vocab")
    else:
        vocab = parameters.get("vocab")
    config = parameters.get("tokenizer_config") or {}
    missing = [key for key in ("time_unit", "n_velocity_bins", "n_special_ids") if key not in config]
    if not isinstance(vocab, list) or missing:
        raise ConversionError(f"tokenizer_desc: no vocab or no {', '.join(missing)} in tokenizer_config")
    n_bins = int(config["n_velocity_bins"])
    if 128 % n_bins:
        # The original bins with integer edges (np.linspace(0, 128).astype(int)), ours with equal widths:
        # the same only when the bins divide 128.
        raise ConversionError(f"tokenizer_desc: n_velocity_bins={n_bins} does not divide 128 (bins differ)")
    ours = ExponentialTimeTokenizer(
        time_unit=config["time_unit"],
        max_time_step=config.get("max_time_step", 1.0),
        n_velocity_bins=n_bins,
        n_special_ids=config["n_special_ids"],
    )
    region = vocab[ours.first_special_id :]
    specials = [token for token in region if not ORIGINAL_PLACEHOLDER.fullmatch(token)]
    ours.set_special_tokens(specials)
    if len(vocab) != ours.vocab_size:
        raise ConversionError(
            f"tokenizer_desc: the original vocabulary has {len(vocab)} tokens, ours {ours.vocab_size}"
        )
    for index, (theirs, mine) in enumerate(zip(vocab, ours.vocab)):
        # An unused slot of the original may hold one of our special tokens: the id was never trained.
        unused = index >= ours.first_special_id and bool(ORIGINAL_PLACEHOLDER.fullmatch(theirs))
        if theirs != mine and not unused:
            raise ConversionError(
                f"tokenizer_desc: the vocabularies differ first at id {index}: original {theirs!r}, ours {mine!r}"
            )
    return ours


# --- model --------------------------------------------------------------------------------------------


def _strip_prefixes(state: dict) -> dict:
    names = {}
    for name, tensor in state.items():
        for prefix in (COMPILED_PREFIX, "module."):
            if name.startswith(prefix):
                name = name[len(prefix) :]
        names[name] = tensor
    return names


def original_model_config(state: dict, model_cfg: dict) -> GPTConfig:
    """Our model config for the original's weights (sizes from the weights, ``n_head`` from its config)."""
    try:
        vocab_size, n_embd = state["transformer.wte.weight"].shape
        block_size = state["transformer.wpe.weight"].shape[0]
    except KeyError as error:
        raise ConversionError(f"model: no {error.args[0]} in the state dict") from error
    layers = {int(m.group(1)) for name in state if (m := re.match(r"transformer\.h\.(\d+)\.", name))}
    n_head = (model_cfg or {}).get("n_head")
    if not isinstance(n_head, int) or n_head <= 0 or n_embd % n_head:
        raise ConversionError(f"model_cfg: n_head={n_head!r} does not divide n_embd={n_embd}")
    wmte = state.get("transformer.wmte.weight")
    dropout = (model_cfg or {}).get("dropout", 0.0)
    return GPTConfig(
        block_size=int(block_size),
        vocab_size=int(vocab_size),
        n_layer=len(layers),
        n_head=n_head,
        n_embd=int(n_embd),
        dropout=float(dropout) if isinstance(dropout, int | float) else 0.0,
        bias="transformer.ln_f.bias" in state,
        music_time_embedding=wmte is not None,
        max_music_time=int(wmte.shape[0]) if wmte is not None else GPTConfig.max_music_time,
    )


def original_weights(state: dict) -> dict:
    """The original's state dict under our names (see the module docstring)."""
    weights = {}
    for name, tensor in state.items():
        if re.fullmatch(r"transformer\.h\.\d+\.attn\.bias", name):
            continue  # the causal mask buffer of the original's slow-attention path
        if name == "transformer.wmte.weight":
            # Original index 1 + t for music at time t (clipped to the table); ours t: shift by one.
            name, tensor = "transformer.wtime.weight", torch.cat([tensor[1:], tensor[-1:]])
        weights[name] = tensor
    return weights


def original_model(data: dict) -> GPT:
    """Our model holding the weights of an original checkpoint's dict (from :func:`read_original_checkpoint`)."""
    state = _strip_prefixes(data["model"])
    config = original_model_config(state, data.get("model_cfg") or {})
    model = GPT(config)
    weights = original_weights(state)
    try:
        result = model.load_state_dict(weights, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise ConversionError(
            f"model: the weights do not fit ({str(error).splitlines()[-1].strip()})"
        ) from error
    if result.missing_keys or result.unexpected_keys:
        raise ConversionError(
            f"model: names that do not map (missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})"
        )
    return model.eval()


# --- the conversion -----------------------------------------------------------------------------------


def convert_original_checkpoint(path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Convert an original ``.pt`` into the checkpoint directory ``out_dir``; returns its path.

    Refuses (:class:`ConversionError`) an unsafe or unreadable file, weights or a vocabulary that do not
    map, and an ``out_dir`` that already exists (a conversion never overwrites a checkpoint)."""
    path, out_dir = Path(path), Path(out_dir)
    if out_dir.exists():
        raise ConversionError(f"{out_dir}: already exists; give a new folder (nothing is overwritten)")
    data = read_original_checkpoint(path)
    try:
        tokenizer = original_tokenizer(data.get("tokenizer_desc"))
        model = original_model(data)
    except ConversionError as error:
        raise ConversionError(f"{path}: {error}") from error
    if model.config.vocab_size != tokenizer.vocab_size:
        raise ConversionError(
            f"{path}: the model has {model.config.vocab_size} token ids, its tokenizer {tokenizer.vocab_size}"
        )
    stats = data.get("run_stats") if isinstance(data.get("run_stats"), dict) else {}
    metrics = {
        "val_loss": data.get("val_loss"),
        "train_loss": data.get("train_loss"),
        "best_val_loss": stats.get("best_val_loss"),
    }
    training = {"iter_num": stats.get("iter"), "tokens_seen": stats.get("total_tokens")}
    converted_from = {
        "file": path.name,
        "sha256": sha256_file(path),
        "run_name": data.get("run_name"),
        "run_config": data.get("run_config"),
        "model_cfg": data.get("model_cfg"),
    }
    return save_checkpoint(
        out_dir,
        model,
        tokenizer,
        run_config={"converted_from": converted_from},
        metrics={key: value for key, value in metrics.items() if isinstance(value, int | float)},
        training={key: value for key, value in training.items() if isinstance(value, int)},
    )
