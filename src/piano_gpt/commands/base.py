"""What every command shares: the errors that are the user's to fix, and one wrapper that turns them
into a single ``error: ...`` line (exit status 2) around a Hydra main."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

import hydra
from omegaconf import DictConfig, OmegaConf

from piano_gpt.configs import CONFIG_DIR
from piano_gpt.evaluation.piano_eval import EvaluationError
from piano_gpt.generation import GenerationError
from piano_gpt.generation.sampling import SAMPLING_RULES
from piano_gpt.hub import HubError
from piano_gpt.midi import MidiReadError
from piano_gpt.schema import check_values
from piano_gpt.train.checkpoint import CheckpointError
from piano_gpt.train.config import ConfigError


def config_group_options(*groups: str) -> str:
    """``group: option, option, ...`` lines of ``configs/<group>/``, for a command's ``--help``."""
    lines = [f"{g}: {', '.join(sorted(p.stem for p in (CONFIG_DIR / g).glob('*.yaml')))}" for g in groups]
    return "\n".join(lines)


OmegaConf.register_new_resolver("piano_gpt_config_groups", config_group_options, replace=True)


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


def quote_plain_values(argv: list[str]) -> list[str]:
    """``key=Dvořák.mid`` -> ``key='Dvořák.mid'`` where Hydra's override grammar rejects the bare value
    (non-ASCII letters, some punctuation) and the quoted one parses: file names work as typed. Values
    with grammar of their own (lists, sweeps, quotes, interpolations) are left as they are."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()

    def parses(override: str) -> bool:
        try:
            parser.parse_override(override)
        except Exception:
            return False
        return True

    out = []
    for arg in argv:
        key, equals, value = arg.partition("=")
        if (
            equals
            and value
            and not arg.startswith("-")
            and not any(c in value for c in "'\"\\[]{}(),=$")
            and not parses(arg)
            and parses(f"{key}='{value}'")
        ):
            arg = f"{key}='{value}'"
        out.append(arg)
    return out


def hydra_command(config_name: str, also: tuple[type[BaseException], ...] = ()) -> Callable:
    """Decorate ``run(cfg)`` into a command's ``main()``: Hydra composes ``configs/<config_name>`` from
    the command line (Hydra's own flags work: ``--cfg job``, ``--info``, ``-m``, ``--help``), and a user
    error prints one line, exit status 2: a bad command line before Hydra starts, ``USER_ERRORS`` and
    ``also`` while the command runs."""
    from piano_gpt.train.config import command_line_problem

    def decorate(run: Callable[[DictConfig], None]) -> Callable[[], None]:
        @functools.wraps(run)  # Hydra names the job after run's module
        def task(cfg: DictConfig) -> None:
            try:
                run(cfg)
            except USER_ERRORS + also as error:
                print(f"error: {error}", file=sys.stderr)
                sys.exit(2)

        hydra_main = hydra.main(config_path=str(CONFIG_DIR), config_name=config_name, version_base=None)(task)

        @functools.wraps(run)
        def main() -> None:
            argv = quote_plain_values(sys.argv[1:])
            problem = command_line_problem(argv, config_name)
            if problem:
                print(f"error: {problem}", file=sys.stderr)
                sys.exit(2)
            sys.argv = [sys.argv[0], *argv]
            hydra_main()

        main.__wrapped__ = task  # as under Hydra's own wrapper: .__wrapped__.__wrapped__ is run
        return main

    return decorate
