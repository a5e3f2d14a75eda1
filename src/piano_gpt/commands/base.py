"""What every command shares: the errors that are the user's to fix, and one wrapper that turns them
into a single ``error: ...`` line (exit status 2) around a Hydra main."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

import hydra
from omegaconf import DictConfig

from piano_gpt.configs import CONFIG_DIR
from piano_gpt.evaluation.piano_eval import EvaluationError
from piano_gpt.generation import GenerationError
from piano_gpt.generation.sampling import SAMPLING_RULES
from piano_gpt.hub import HubError
from piano_gpt.midi import MidiReadError
from piano_gpt.schema import check_values
from piano_gpt.train.checkpoint import CheckpointError
from piano_gpt.train.config import ConfigError


class CommandError(Exception):
    """A command that cannot run as asked; the message says what to change."""


USER_ERRORS = (
    CommandError,
    ConfigError,
    CheckpointError,
    GenerationError,
    EvaluationError,
    MidiReadError,
    HubError,
    FileNotFoundError,
)


def sampling_options(cfg: DictConfig) -> dict:
    """The sampling keys a generating command's config has (temperature, top_k, top_p, min_p), checked
    (``temperature=hot`` or ``nan``: a :class:`CommandError` in one line, before any work)."""
    keys = [key for key in SAMPLING_RULES if key in cfg]
    options = {key: cfg[key] for key in keys}
    try:
        check_values(options, {key: SAMPLING_RULES[key] for key in keys})
    except ValueError as error:
        raise CommandError(str(error)) from error
    return options


def hydra_command(config_name: str, also: tuple[type[BaseException], ...] = ()) -> Callable:
    """Decorate ``run(cfg)`` into a command's ``main()``: Hydra composes ``configs/<config_name>`` from
    the command line, and a user error (``USER_ERRORS`` and ``also``) prints one line, exit status 2."""

    def decorate(run: Callable[[DictConfig], None]) -> Callable[[], None]:
        @functools.wraps(run)  # Hydra names the job after run's module
        def task(cfg: DictConfig) -> None:
            try:
                run(cfg)
            except USER_ERRORS + also as error:
                print(f"error: {error}", file=sys.stderr)
                sys.exit(2)

        return hydra.main(config_path=str(CONFIG_DIR), config_name=config_name, version_base=None)(task)

    return decorate
