"""python -m piano_gpt.generate checkpoint_path=DIR prompt_path=IN.mid output_path=OUT.mid [key=value ...]

MIDI in, MIDI out: continues the prompt (``mode=continuation``) or performs a PIANO task on it
(``mode=task task=NAME``) with a checkpoint, and writes prompt + generation as MIDI whose metadata
names the settings and the seed. Options: ``configs/generate.yaml``. Prints where each file is, its
number of notes and, when the checkpoint's training shards are present, how much of the generation is
copied from the training set. ``output_path=OUT.wav`` also renders it as audio (the MIDI is written
beside it as OUT.mid); ``store=true`` saves each generation in the generation store
(``database_url=``, default ``$PIANO_GPT_DATABASE_URL`` or the SQLite file tmp/piano_gpt.sqlite).
Ctrl-C in a continuation writes the notes generated so far and says so.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from piano_gpt.audio import write_wav
from piano_gpt.commands.base import hydra_command, sampling_options
from piano_gpt.commands.generations import check_store, open_store
from piano_gpt.common import pick_device
from piano_gpt.generation import (
    ContinuationStream,
    Generation,
    GenerationConfig,
    GenerationError,
    NgramIndex,
    find_training_shards,
    load_index,
    task_samples,
)
from piano_gpt.generation.engine import GENERATION_RULES
from piano_gpt.midi import read_notes, write_notes
from piano_gpt.train.checkpoint import CheckpointConfig, find_checkpoint, load_checkpoint


def output_paths(output_path: str, seeds: list[int]) -> list[Path]:
    path = Path(output_path)
    if len(seeds) == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{seed}{path.suffix or '.mid'}") for seed in seeds]


def memorisation_index(cfg: DictConfig, checkpoint_config: CheckpointConfig, tokenizer) -> NgramIndex | None:
    mode = str(cfg.memorisation).lower()
    if mode in ("false", "off", "none"):
        return None
    path = cfg.shards_path or find_training_shards(checkpoint_config, tokenizer, cfg.shards_dir)
    if path is None or not (Path(path) / "manifest.json").exists():
        if mode in ("true", "on", "required"):
            raise GenerationError(
                f"memorisation=true: no training shards found for this checkpoint under {cfg.shards_dir} "
                "(set shards_path=DIR to a split's shards)"
            )
        return None
    return load_index(str(path), tokenizer.time_unit)


def run(cfg: DictConfig) -> list[str]:
    if cfg.get("store"):  # a store that cannot be opened fails now, not after the generation
        check_store(cfg.get("database_url"))
    checkpoint = str(find_checkpoint(cfg.checkpoint_path))  # a run folder: its -best
    model, tokenizer, saved = load_checkpoint(checkpoint, device=pick_device(cfg.device))
    checkpoint_config = CheckpointConfig.from_json(saved)
    prompt = read_notes(cfg.prompt_path) if cfg.prompt_path else None
    if prompt is not None and cfg.prompt_notes:
        prompt = prompt.iloc[: int(cfg.prompt_notes)].reset_index(drop=True)
    config = GenerationConfig(
        n_samples=int(cfg.n_samples),
        seed=int(cfg.seed),
        **sampling_options(cfg),
        max_new_tokens=int(cfg.max_new_tokens),
        max_notes=None if cfg.max_notes is None else int(cfg.max_notes),
        max_duration=None if cfg.duration is None else float(cfg.duration),
        context_keep=float(cfg.context_keep),
        carry_held_notes=bool(cfg.get("carry_held_notes", True)),
        fast=bool(cfg.fast),
        grammar=bool(cfg.grammar),
        max_note_seconds=None if cfg.max_note_seconds is None else float(cfg.max_note_seconds),
        threads=None if cfg.get("threads") is None else int(cfg.threads),
    )
    interrupted = False
    if cfg.mode == "continuation":
        if cfg.n_notes is not None or cfg.time_span is not None:
            raise GenerationError(
                "n_notes and time_span condition task completion (mode=task); use max_notes/duration"
            )
        continuation = ContinuationStream(
            model, tokenizer, prompt, config, composer=cfg.composer, dataset=cfg.dataset
        )
        try:
            for _ in continuation:
                pass
        except KeyboardInterrupt:  # Ctrl-C: keep what was generated so far
            interrupted = True
        generations = continuation.generations()
    elif cfg.mode == "task":
        # A task's target is read only once complete: Ctrl-C there leaves nothing to write.
        if not cfg.task or prompt is None:
            raise GenerationError(
                "mode=task needs task=NAME and prompt_path=IN.mid (the notes the task splits)"
            )
        time_span = None if cfg.time_span is None else tuple(OmegaConf.to_container(cfg.time_span))
        generations = task_samples(
            model,
            tokenizer,
            prompt,
            cfg.task,
            config,
            task_seed=int(cfg.task_seed),
            n_notes=cfg.n_notes,
            time_span=time_span,
            composer=cfg.composer,
            dataset=cfg.dataset,
        )
    else:
        raise GenerationError(f"mode={cfg.mode}: use continuation or task")

    index = None if interrupted else memorisation_index(cfg, checkpoint_config, tokenizer)
    lines = []
    for generation, path in zip(generations, output_paths(cfg.output_path, config.seeds)):
        audio_path = path if path.suffix.lower() == ".wav" else None
        lines += write_generation(
            generation, path.with_suffix(".mid") if audio_path else path, index, checkpoint
        )
        if audio_path is not None:
            renderer = write_wav(generation.piece, audio_path, int(cfg.sample_rate))
            lines.append(f"wrote {audio_path}: audio at {int(cfg.sample_rate)} Hz, {renderer}")
    if interrupted:
        lines.append(
            f"interrupted (Ctrl-C): wrote the {sum(len(g.notes) for g in generations)} notes generated so far"
        )
    if cfg.get("store"):
        lines.append(store_generations(generations, checkpoint, cfg.prompt_path, cfg.get("database_url")))
    return lines


def store_generations(generations: list[Generation], checkpoint: str, prompt_path, database_url) -> str:
    from piano_gpt.store.generations import generation_items, save_generations

    source = {"path": str(prompt_path)} if prompt_path else None
    title = Path(prompt_path).stem if prompt_path else None
    with open_store(database_url) as store:
        ids = save_generations(store, checkpoint, generation_items(generations), title, source)
        where = store.url.render_as_string(hide_password=True)
    return f"saved generation(s) {', '.join(map(str, ids))} in {where}"


def write_generation(
    generation: Generation, path: Path, index: NgramIndex | None, checkpoint: str
) -> list[str]:
    metadata = {"checkpoint": str(checkpoint), **generation.metadata()}
    report = index.check(generation.notes) if index is not None else None
    if report is not None:
        metadata.update(
            memorised_longest_run=report.longest_run, memorised_fraction=round(report.copied_fraction, 4)
        )
    piece = generation.piece
    write_notes(piece, path, metadata={k: _text(v) for k, v in metadata.items()})
    seconds = float(piece["end"].max()) if len(piece) else 0.0
    lines = [
        f"wrote {path}: {len(piece)} notes ({len(generation.context)} prompt + {len(generation.notes)} generated), "
        f"{seconds:.1f} s, seed {generation.seed}, stopped: {generation.stop_reason}"
    ]
    if report is not None:
        lines.append(f"  memorisation: {report.summary()}")
    return lines


def check_options(cfg: DictConfig) -> None:
    """Every option of the command line checked by its rule before any work (the checkpoint is not
    loaded yet): ``temperature=nan``, ``seed=abc``, ``prompt_notes=0`` or ``-5`` (which silently used the
    whole prompt or dropped its last notes), ``output_path=<a folder>``: one line each."""
    from piano_gpt.schema import Rule, check_values

    sampling_options(cfg)
    rules = {("duration" if key == "max_duration" else key): rule for key, rule in GENERATION_RULES.items()}
    rules["prompt_notes"] = Rule("int", 1, optional=True, meaning="a number of notes (null: all)")
    try:
        check_values(cfg, rules)
    except ValueError as error:
        raise GenerationError(str(error)) from error
    if Path(str(cfg.output_path)).is_dir() or str(cfg.output_path).endswith(("/", "\\")):
        raise GenerationError(f"output_path={cfg.output_path}: is a folder; give a file name (e.g. out.mid)")


def _text(value) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, list | tuple) else str(value)


@hydra_command("generate")
def main(cfg: DictConfig) -> None:
    check_options(cfg)
    try:
        lines = run(cfg)
    except KeyboardInterrupt:  # before generation started, or in task mode
        print("interrupted (Ctrl-C): nothing written", file=sys.stderr)
        sys.exit(130)
    for line in lines:
        print(line)
    if lines and lines[-1].startswith("interrupted"):
        sys.exit(130)  # the shell's status for Ctrl-C: the files hold a partial generation


if __name__ == "__main__":
    main()
