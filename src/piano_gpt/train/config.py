"""Config checks (one clear line before any heavy work) and the objects a config names."""

from __future__ import annotations

import re
import time
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from piano_gpt.configs import CONFIG_DIR
from piano_gpt.schema import Rule, check_values
from piano_gpt.tokenizers import ExponentialTimeTokenizer, MidiTokenizer, load_tokenizer
from piano_gpt.tokenizers.awesome import (
    AwesomeMidiTokenizer,
    base_tokenizer_from_config,
    plain_dict,
    trained_tokenizer_path,
)


class ConfigError(ValueError):
    """A config value that cannot work; the message says what to change."""


def fail(message: str) -> None:
    raise ConfigError(message)


DATASET_TYPES = ("demo", "maestro", "hf")
OPTIMIZERS = ("auto", "adamw", "muon")  # built by piano_gpt.train.optimizers.build_optimizer


def optimizer_for(name: str, architecture: str, sharded: bool) -> str:
    """The optimizer ``optimizer.name`` picks: ``auto`` is Muon for the piano family (its measured recipe,
    bench/RESULTS.md) and AdamW for ``gpt2_*`` (the original recipe) and under FSDP (Muon does not shard)."""
    if name != "auto":
        return name
    return "muon" if architecture == "piano" and not sharded else "adamw"


MAX_CONTEXT = 32_768  # tokens: attention grows with the square; far above any piano model's context
TRAINING_RULES = {  # every plain training key: what it accepts (model and tokenizer keys: their own rules)
    "seed": Rule("int", 0, 2**32 - 1, meaning="a random seed"),
    "data.batch_size": Rule("int", 1, meaning="a positive number of sequences"),
    "data.context_size": Rule("int", 2, MAX_CONTEXT, meaning="at least 2 tokens"),
    "data.notes_per_record": Rule("int", 1, optional=True),
    "optimizer.max_iters": Rule("int", 0, meaning="the number of optimizer steps"),
    "optimizer.gradient_accumulation_steps": Rule(
        "int", 1, optional=True, meaning="the micro-batches per step (or null: one per process)"
    ),
    "optimizer.weight_decay": Rule("float", 0.0, meaning="a weight decay"),
    "optimizer.beta1": Rule("float", 0.0, 0.9999, meaning="an Adam beta"),
    "optimizer.beta2": Rule("float", 0.0, 0.9999, meaning="an Adam beta"),
    "optimizer.grad_clip": Rule("float", 0.0, optional=True, meaning="a gradient norm (0 or null: off)"),
    "optimizer.muon_weight_decay": Rule("float", 0.0, optional=True, meaning="a weight decay"),
    "lr.learning_rate": Rule("float", 0.0, low_open=True, meaning="a positive learning rate"),
    "lr.min_lr": Rule("float", 0.0, meaning="a learning rate >= 0"),
    "lr.warmup_iters": Rule("int", 0, meaning="a number of steps"),
    "lr.lr_decay_iters": Rule("int", 0, optional=True, meaning="a number of steps"),
    "lr.decay_lr": Rule("bool", optional=True),
    "eval_interval": Rule("int", 1, meaning="steps between evaluations"),
    "eval_iters": Rule("int", 1, meaning="validation batches per evaluation"),
    "log_interval": Rule("int", 1, meaning="steps between log lines"),
    "max_train_minutes": Rule("float", 0.0, low_open=True, optional=True, meaning="minutes"),
    "prompt_masking": Rule("bool", optional=True),
    "system.data_workers": Rule("int", 0, meaning="a number of loader processes"),
    "system.compile": Rule("bool"),
    "system.fsdp": Rule("bool", optional=True),
    "system.deterministic": Rule("bool", optional=True),
    "system.peak_flops": Rule("float", 0.0, low_open=True, optional=True, meaning="FLOP/s"),
    "logging.wandb_log": Rule("bool"),
    "logging.progress_bar": Rule("bool", optional=True),
}


def _number(cfg: DictConfig, key: str, minimum: float, meaning: str) -> float:
    value = OmegaConf.select(cfg, key)
    problem = Rule("float", minimum, meaning=meaning).problem(value)
    if problem:
        fail(f"{key}={value}: must be {problem}")
    return value


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or name.endswith(".parquet")


def checkpoint_block_size(path: str) -> tuple[Path, int]:
    """(directory, model block_size) of a checkpoint, read from its config.json (cheap: no hashing)."""
    from piano_gpt.train.checkpoint import CheckpointError, find_checkpoint, read_checkpoint_config

    try:
        directory = find_checkpoint(path)
        return directory, read_checkpoint_config(directory).block_size
    except CheckpointError as error:
        fail(str(error))
    except (OSError, ValueError, KeyError, TypeError) as error:
        fail(f"checkpoint {path}: unreadable config.json ({error})")


def model_checkpoint(cfg: DictConfig, resume_from: str | None = None) -> str | None:
    """The checkpoint training starts its weights from, if any: the one a resumed run continues, else
    ``checkpoint_path`` for task training, else ``init_from`` (unless ``scratch``). ``train()`` and
    :func:`validate_config` both ask here."""
    from piano_gpt.train.checkpoint import find_checkpoint

    if resume_from:
        return resume_from
    if cfg.task == "piano_tasks" and cfg.get("checkpoint_path"):
        return str(find_checkpoint(cfg.checkpoint_path))  # a run folder: its -best
    if cfg.get("init_from") not in (None, "scratch"):
        return str(find_checkpoint(cfg.init_from))
    return None


def validate_config(cfg: DictConfig, resume_from: str | None = None) -> None:
    """Fail with one line saying what to change, before any heavy work (no data, no model yet).

    ``resume_from``: the checkpoint a resumed run continues (its saved config is ``cfg``).
    """
    try:
        check_values(cfg, TRAINING_RULES)
    except ValueError as error:
        fail(str(error))
    _check_model_fields(cfg)
    _check_tokenizer_fields(cfg)
    data, opt = cfg.data, cfg.optimizer
    micro = cfg.training.get("microbatch_size")
    if micro is not None and (not isinstance(micro, int) or micro <= 0 or data.batch_size % micro):
        fail(
            f"training.microbatch_size={micro}: must be positive and divide data.batch_size={data.batch_size}"
        )
    world = int(__import__("os").environ.get("WORLD_SIZE", 1))
    opt.gradient_accumulation_steps = gradient_accumulation(opt.get("gradient_accumulation_steps"), world)
    name = opt.get("name", "auto")
    if name not in OPTIMIZERS:
        fail(f"optimizer.name={name}: use one of {', '.join(OPTIMIZERS)}")
    if name in ("muon", "auto"):
        _number(cfg, "optimizer.muon_lr", 1e-12, "a positive learning rate")
    if name == "muon":
        if cfg.system.get("fsdp", False):
            fail("optimizer.name=muon does not shard: use system.fsdp=false (DDP) or optimizer.name=adamw")
    if cfg.system.dtype not in ("auto", "float32", "bfloat16", "float16"):
        fail(f"system.dtype={cfg.system.dtype}: use float32, bfloat16, float16 or auto")
    device = str(cfg.system.device)
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            fail(f"system.device={device}: no CUDA GPU is visible here; use system.device=cpu (or auto)")
    elif device not in ("auto", "cpu", "mps"):
        fail(f"system.device={device}: use auto, cpu, cuda, cuda:N or mps")
    if cfg.task not in ("next_token_prediction", "next_token_prediction_with_composer", "piano_tasks"):
        fail(
            f"task={cfg.task}: use next_token_prediction, next_token_prediction_with_composer or piano_tasks"
        )
    if cfg.dataset.type not in DATASET_TYPES:
        fail(f"dataset.type={cfg.dataset.type}: use one of {', '.join(DATASET_TYPES)}")
    if cfg.dataset.type == "maestro" and not Path(str(cfg.dataset.path)).expanduser().is_dir():
        fail(f"dataset.path={cfg.dataset.path}: no such folder (point it at a MAESTRO-layout folder)")
    for key in ("base_datasets", "extra_datasets"):
        for name in cfg.dataset.get(key) or []:
            if _looks_like_path(str(name)) and not Path(str(name)).expanduser().exists():
                fail(f"dataset.{key}: {name}: no such file or folder (a local dataset path must exist)")
    for init in (cfg.get("init_from"), cfg.get("checkpoint_path")):
        if init not in (None, "scratch"):
            checkpoint_block_size(init)  # fails when there is no such checkpoint
    start = model_checkpoint(cfg, resume_from)
    if start:
        directory, block_size = checkpoint_block_size(start)
        if data.context_size > block_size:
            fail(
                f"data.context_size={data.context_size} is longer than the {block_size} tokens the model in "
                f"{directory} was built for: use data.context_size={block_size} or less"
            )
    if cfg.run_name is None:
        cfg.run_name = f"{cfg.model.name}-{cfg.dataset.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        suffix = cfg.logging.get("wandb_run_name_suffix")
        if suffix:
            cfg.run_name += f"-{suffix}"


def _check_tokenizer_fields(cfg: DictConfig) -> None:
    """The exponential tokenizer's fields (the awesome one's base): types and ranges, by its own rules."""
    from piano_gpt.tokenizers.exponential import TOKENIZER_RULES

    name = cfg.tokenizer.get("name")
    section, prefix = (
        (cfg.tokenizer, "tokenizer.") if name != "awesome" else (cfg.tokenizer.get("base"), "tokenizer.base.")
    )
    if section is None:
        return
    try:
        check_values(section, {k: r for k, r in TOKENIZER_RULES.items() if k != "special_tokens"}, prefix)
    except ValueError as error:
        fail(str(error))


def gradient_accumulation(requested: int | None, world: int) -> int:
    """Micro-batches per optimizer step over all ``world`` processes (each does its share): the
    requested number when it divides among them, else :class:`ConfigError`; none requested (null, the
    default): one per process, so that any torchrun works as written."""
    key = "optimizer.gradient_accumulation_steps"
    if requested is None:
        return world
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
        fail(f"{key}={requested}: must be the micro-batches per step (an integer >= 1, or null)")
    if requested % world:
        fail(
            f"{key}={requested} must be a multiple of the {world} processes (it is the global number of "
            f"micro-batches per step); leave it out for one per process"
        )
    return requested


def _check_model_fields(cfg: DictConfig) -> None:
    from piano_gpt.model import GPTConfig

    fields = {k: v for k, v in OmegaConf.to_container(cfg.model).items() if k != "name"}
    try:
        GPTConfig(block_size=cfg.data.context_size, **fields)
    except TypeError as error:
        fail(f"model: {error} (the keys of GPTConfig are the model config's)")
    except ValueError as error:
        fail(str(error))


def command_line_problem(argv: list[str], config_name: str = "gpt2_pretraining") -> str | None:
    """One line on what is wrong with a Hydra command line (unknown key, unknown option of a config
    group, bad override syntax, bad flag), or None; for a command to print before Hydra's several-line
    report. The line is read by Hydra's own argument parser, so its flags (``--cfg job``, ``--info``,
    ``-m`` sweeps, ``--config-name``) mean what they mean to Hydra. Values are checked later (for
    training by :func:`validate_config`)."""
    import argparse

    from hydra import compose, initialize_config_dir
    from hydra._internal.utils import get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if GlobalHydra.instance().is_initialized() or "--version" in argv:
        return None
    parser = get_args_parser()

    def refuse(message: str):
        raise argparse.ArgumentError(None, message)

    parser.error = refuse  # argparse would print its usage and exit
    try:
        args = parser.parse_args(argv)
    except argparse.ArgumentError as error:
        return f"{error.message} (--help lists the flags)"
    if args.help or args.hydra_help or args.shell_completion:
        return None
    if args.config_path or args.config_dir or args.experimental_rerun:
        return None  # another config tree: leave it to Hydra
    try:
        overrides = OverridesParser.create().parse_overrides(args.overrides)
    except Exception as error:
        return _one_line(error)
    fixed, sweeps = [], []
    for override in overrides:
        if override.get_key_element().lstrip("+~").startswith("hydra"):
            continue
        if args.multirun and override.is_discrete_sweep():
            sweeps.append((override.get_key_element(), list(override.sweep_string_iterator())))
        elif not (args.multirun and override.is_sweep_override()):  # an interval: a sweeper plugin's
            fixed.append(override.input_line)
    # -m: every value of each sweep, the other sweeps at their first value.
    variants = [[f"{key}={values[0]}" for key, values in sweeps]]
    for i, (key, values) in enumerate(sweeps):
        for value in values[1:]:
            variants.append([*variants[0][:i], f"{key}={value}", *variants[0][i + 1 :]])
    try:
        with initialize_config_dir(str(CONFIG_DIR), version_base=None):
            for variant in variants:
                compose(args.config_name or config_name, overrides=fixed + variant)
    except Exception as error:
        return _one_line(error)
    return None


def _one_line(error: BaseException) -> str:
    import re

    causes = [error]
    while causes[-1].__cause__ is not None:
        causes.append(causes[-1].__cause__)
    first = str(error).splitlines()[0].strip() if str(error).strip() else type(error).__name__
    for cause in causes:
        missing = re.search(r"Key '([^']+)' is not in struct", str(cause))
        override = re.search(r"Could not override '([^']+)'", str(error))
        if missing and override:
            key = override.group(1)
            return (
                f"unknown config key {key}: check its spelling "
                f"(--cfg job lists the keys; +{key}=... adds a new one)"
            )
    text = str(error)
    options = re.search(r"Available options in '([^']+)':\s*(.*?)(?:\nConfig search path|$)", text, re.S)
    if options:
        choices = ", ".join(options.group(2).split())
        return f"{first.removeprefix('In ').split(': ', 1)[-1]}: use one of {choices}"
    text = text.split("\nConfig search path")[0]
    lines = [
        line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("See http")
    ]
    message = ": ".join(lines[:2]) or first
    if type(error).__name__ == "OverrideParseException" and "override" not in message:
        message = f"cannot parse the command line: {message}"
    if "LexerNoViableAltException" in message:
        message += (
            " (unquoted values take only ASCII letters, digits and _-+./: quote the value inside the "
            "argument, e.g. \"prompt_path='Dvořák.mid'\")"
        )
    cause = str(causes[-1]).splitlines()[0] if causes[-1] is not error and str(causes[-1]).strip() else ""
    return f"{message} ({cause})" if cause and cause not in message else message


def task_names(cfg: DictConfig) -> list[str] | str | None:
    """``cfg.tasks.names`` as plain Python (a set name, a task name or a list; [] for none)."""
    tasks_cfg = cfg.get("tasks")
    names = tasks_cfg.get("names") if tasks_cfg is not None else None
    if isinstance(names, DictConfig | ListConfig):
        names = OmegaConf.to_container(names, resolve=True)
    return names


def model_preset(name: str) -> dict:
    """The GPTConfig fields of ``configs/model/<name>.yaml`` (the one home of the model shapes)."""
    path = CONFIG_DIR / "model" / f"{name}.yaml"
    if not path.exists():
        names = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))
        fail(f"model={name}: no such model config; use one of {', '.join(names)}")
    fields = OmegaConf.to_container(OmegaConf.load(path))
    fields.pop("name", None)
    return fields


def build_tokenizer(cfg: DictConfig) -> MidiTokenizer:
    tok = OmegaConf.to_container(cfg.tokenizer, resolve=True)
    name = tok.pop("name")
    if name == "exponential":
        return ExponentialTimeTokenizer(**tok)
    if name == "awesome":
        return find_trained_tokenizer(cfg)
    fail(f"tokenizer={name}: use exponential or awesome")


# --- the awesome tokenizer a training config names ----------------------------------------------------

TRAINING_DEFAULTS = {"dataset": "demo", "tokenizer": "awesome"}  # the groups of configs/tokenizer_training


def _hydra_choices() -> dict:
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return dict(HydraConfig.get().runtime.choices)
    except Exception:  # no Hydra run: fall back to the config names
        pass
    return {}


def _leaves(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


_BARE = re.compile(r"[A-Za-z0-9_./~][A-Za-z0-9_./~:+-]*")


def override_value(value) -> str:
    """A value as Hydra's override grammar reads it back."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{override_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    try:
        float(text)
        number_like = True
    except ValueError:
        number_like = False
    if _BARE.fullmatch(text) and not number_like and text.lower() not in ("true", "false", "null"):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def tokenizer_training_overrides(cfg) -> list[str]:
    """The overrides of ``configs/tokenizer_training`` that give ``cfg``'s dataset and tokenizer sections
    (unquoted; see :func:`tokenizer_training_commands` for shell-ready lines)."""
    choices = _hydra_choices()
    overrides = []
    for group, default in TRAINING_DEFAULTS.items():
        section = plain_dict(cfg[group])
        # The section's own name first: Hydra's recorded choices may be another (earlier) run's.
        choice = str(section.get("name"))
        if not (CONFIG_DIR / group / f"{choice}.yaml").exists():
            choice = choices.get(group)
            if not choice or not (CONFIG_DIR / group / f"{choice}.yaml").exists():
                choice = default
        if choice != default:
            overrides.append(f"{group}={choice}")
        base = _leaves(plain_dict(OmegaConf.load(CONFIG_DIR / group / f"{choice}.yaml")))
        have = _leaves(section)
        for key, value in have.items():
            if key not in base:
                overrides.append(f"+{group}.{key}={override_value(value)}")
            elif base[key] != value or type(base[key]) is not type(value):
                overrides.append(f"{group}.{key}={override_value(value)}")
        overrides += [f"~{group}.{key}" for key in base if key not in have]
    return overrides


def tokenizer_training_commands(cfg) -> list[str]:
    """The two commands that train the awesome tokenizer ``cfg`` (a training config) asks for."""
    import shlex

    tail = "".join(f" {shlex.quote(o)}" for o in tokenizer_training_overrides(cfg))
    return [
        f"python -m piano_gpt.{script}{tail}" for script in ("prepare_tokenizer_dataset", "train_tokenizer")
    ]


def find_trained_tokenizer(cfg) -> AwesomeMidiTokenizer:
    """The awesome tokenizer trained for ``cfg.dataset`` + ``cfg.tokenizer`` (found by their hash).

    Raises :class:`ConfigError` naming the two commands to run when there is
    none, or when the file there is not a matching awesome tokenizer."""

    def problem(what: str) -> ConfigError:
        commands = "\n".join(f"  {line}" for line in tokenizer_training_commands(cfg))
        return ConfigError(f"tokenizer=awesome: {what}. Train it first:\n{commands}")

    path = trained_tokenizer_path(cfg.dataset, cfg.tokenizer)
    if not path.exists():
        raise problem(f"no tokenizer trained for this dataset and tokenizer config ({path} does not exist)")
    try:
        tokenizer = load_tokenizer(path)
    except ValueError as error:
        raise problem(f"{error}; delete it") from error
    if not isinstance(tokenizer, AwesomeMidiTokenizer):
        raise problem(f"{path} holds a {tokenizer.name} tokenizer, not an awesome one; delete it")
    want = base_tokenizer_from_config(cfg.tokenizer).to_dict()
    have = tokenizer.base.to_dict()
    want.pop("special_tokens", None)
    have.pop("special_tokens", None)
    if have != want:
        raise problem(f"{path} was trained over another base tokenizer ({have}); delete it")
    return tokenizer
