"""The generation engine: incremental, batched sampling of token ids, and the note-level modes.

``sample_ids`` is the core: one prompt, ``n_samples`` rows (seeds ``seed, seed + 1, ...``), a KV cache
advanced one token a step, the music time embedding advanced from the token just sampled
(``tokenizer.token_time_units()``, restarting after ``<GENAI>`` as in training), and the stopping
rules. Continuations slide past the context window: when the cache is full, the conditioning prefix
and the most recent tokens (``context_keep`` of the window) are re-primed and music time restarts at
the new window's start, exactly as training windows restart it.

Stopping (per sample; the token that triggers a rule is not kept):

- ``<EOGENAI>`` (task completion: prompts ending with ``<GENAI>``);
- ``max_notes``: the next note would exceed the budget;
- ``max_duration``: the next time step would take the generated music past this many seconds;
- ``max_new_tokens`` (that token is kept); ``context``: a task completion filled the window.

Only ids that decode are ever drawn: ``<PAD>``, ``<CLS>`` and every special token are masked out of
the distribution, except ``<EOGENAI>`` where a task completion may end.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd
import torch

from piano_gpt.generation.conditioning import GenerationError, prefix_ids
from piano_gpt.generation.grammar import (
    DEFAULT_MAX_NOTE_SECONDS,
    NoteGrammar,
    grammar_support,
    held_note_tokens,
)
from piano_gpt.generation.runner import runner_for
from piano_gpt.generation.sampling import Sampler, SamplingConfig
from piano_gpt.generation.streaming import NoteStream, NoteTables, notes_table
from piano_gpt.generation.threads import ThreadChoice
from piano_gpt.midi import clip_same_pitch_overlaps, empty_notes, make_notes
from piano_gpt.model import GPT
from piano_gpt.schema import Rule, check_values
from piano_gpt.tokenizers import CLS_TOKEN, EOGENAI_TOKEN, GENAI_TOKEN, PAD_TOKEN, MidiTokenizer

STOP_EOGENAI = "eogenai"
STOP_MAX_NOTES = "max_notes"
STOP_MAX_DURATION = "max_duration"
STOP_MAX_NEW_TOKENS = "max_new_tokens"
STOP_CONTEXT = "context"
STOP_INTERRUPTED = "interrupted"  # a stream left before it finished (e.g. Ctrl-C)


GENERATION_RULES = {
    "n_samples": Rule("int", 1, 4096, meaning="a number of samples"),
    "seed": Rule("int", 0, 2**63 - 4097, meaning="a random seed"),
    "max_new_tokens": Rule("int", 1, meaning="a number of tokens"),
    "max_notes": Rule("int", 1, optional=True, meaning="a number of notes (or null)"),
    "max_duration": Rule("float", 0.0, low_open=True, optional=True, meaning="seconds (or null)"),
    "max_note_seconds": Rule("float", 0.0, low_open=True, optional=True, meaning="seconds (or null)"),
    "context_keep": Rule("float", 0.0, 0.999, low_open=True, meaning="a share of the window"),
    "fast": Rule("bool"),
    "grammar": Rule("bool"),
    "carry_held_notes": Rule("bool"),
    "threads": Rule("int", 1, 1024, optional=True, meaning="CPU threads (or null: chosen from the load)"),
}


@dataclass(frozen=True)
class GenerationConfig:
    """Every option of a generation call (also what output files record)."""

    n_samples: int = 1
    seed: int = 0  # sample i uses seed + i
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0
    min_p: float = 0.0
    max_new_tokens: int = 512
    max_notes: int | None = None
    max_duration: float | None = None  # seconds of generated music
    context_keep: float = 0.5  # share of the window kept when a continuation slides
    carry_held_notes: bool = True  # a slid window restates the notes still held (exponential tokenizer)
    fast: bool = True  # FastRunner; False: GPT.forward with model.KVCache (the reference path)
    grammar: bool = True  # keep the note grammar (generation/grammar.py); exact for the exponential tokenizer
    max_note_seconds: float | None = DEFAULT_MAX_NOTE_SECONDS  # longest note; None: no limit
    threads: int | None = None  # CPU threads; None: chosen from the load as it goes (generation/threads.py)

    def __post_init__(self):
        try:
            check_values(asdict(self), GENERATION_RULES)
        except ValueError as error:
            raise GenerationError(str(error)) from error
        self.sampling  # noqa: B018 (validates the sampling options)

    @property
    def sampling(self) -> SamplingConfig:
        try:
            return SamplingConfig(self.temperature, self.top_k, self.top_p, self.min_p)
        except ValueError as error:
            raise GenerationError(str(error)) from error

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.n_samples)]

    def to_dict(self) -> dict:
        return asdict(self)


def make_config(config: GenerationConfig | None = None, **options) -> GenerationConfig:
    unknown = set(options) - set(GenerationConfig.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown generation options: {sorted(unknown)}")
    return replace(config or GenerationConfig(), **options)


@dataclass
class TokenSample:
    """One sample's generated ids (prompt excluded, stop token excluded)."""

    ids: np.ndarray
    seed: int
    stop_reason: str


@dataclass
class Generation:
    """One generated sample, with what it goes with.

    ``notes``: the generated notes only (a continuation, or a task's target), on the clock of
    ``context`` (the prompt, or the task's source). ``piece``: context and notes together (for a task
    whose target replaces its source, such as denoising, only the notes).
    """

    notes: pd.DataFrame
    context: pd.DataFrame
    ids: np.ndarray
    seed: int
    stop_reason: str
    settings: dict = field(default_factory=dict)
    combine: bool = True
    reference: pd.DataFrame | None = None  # task completion: the true target, when known

    @property
    def piece(self) -> pd.DataFrame:
        if not self.combine:
            return self.notes
        return playable(pd.concat([self.context, self.notes], ignore_index=True))

    @property
    def n_tokens(self) -> int:
        return len(self.ids)

    def metadata(self) -> dict:
        """``key=value`` pairs for ``write_notes(..., metadata=...)``: settings, seed, how it stopped."""
        meta = {"generator": "piano_gpt.generation"}
        meta.update(
            {k: v for k, v in self.settings.items() if v is not None and k not in ("seed", "n_samples")}
        )
        meta.update(
            seed=self.seed,
            stop_reason=self.stop_reason,
            generated_tokens=self.n_tokens,
            generated_notes=len(self.notes),
        )
        return meta


# --- vocabulary tables ------------------------------------------------------------------------------


@dataclass
class TokenTables:
    """Per-id facts the decoding loop needs, as tensors on the model's device."""

    time_units: torch.Tensor  # how far each id advances the clock
    note_counts: torch.Tensor  # how many notes each id starts
    music: torch.Tensor  # ids that may be drawn in a continuation
    genai_id: int | None
    eogenai_id: int | None


def token_tables(tokenizer: MidiTokenizer, device: torch.device | str = "cpu") -> TokenTables:
    size = tokenizer.vocab_size
    music = np.ones(size, bool)
    music[np.asarray(tokenizer.special_token_ids(), dtype=np.int64)] = False
    for token in (PAD_TOKEN, CLS_TOKEN, GENAI_TOKEN, EOGENAI_TOKEN):
        if token in tokenizer.token_to_id:
            music[tokenizer.token_to_id[token]] = False
    return TokenTables(
        time_units=torch.as_tensor(np.asarray(tokenizer.token_time_units(), np.int64), device=device),
        note_counts=torch.as_tensor(tokenizer.note_on_counts(), device=device),
        music=torch.as_tensor(music, device=device),
        genai_id=tokenizer.token_to_id.get(GENAI_TOKEN),
        eogenai_id=tokenizer.token_to_id.get(EOGENAI_TOKEN),
    )


def window_time(ids: torch.Tensor, time_units: torch.Tensor, reset_id: int | None) -> torch.Tensor:
    """``tokenizer.music_time`` of a window ``(B, T)``, unclamped: running time, restarted after ``reset_id``."""
    time = time_units[ids].cumsum(dim=-1)
    if reset_id is not None:
        is_reset = ids == reset_id
        if bool(is_reset.any()):
            time = time - torch.where(is_reset, time, torch.zeros_like(time)).cummax(dim=-1).values
    return time


# --- the decoding loop ------------------------------------------------------------------------------


def carried_window(history: torch.Tensor, n_prefix: int, keep: int, tokenizer: MidiTokenizer) -> torch.Tensor:
    """The ``keep`` ids a continuation slides to: the conditioning prefix, the ``VELOCITY NOTE_ON``
    pairs of the notes held across the cut (at the new window's time zero), then the latest ids.

    Without the restated pairs the model cannot see that those keys are down, and holds them until the
    note limit. The cut is placed so that the pairs and the latest ids fill ``keep`` exactly; at most
    half of the room goes to held notes (the most recent ones)."""
    ids = history.cpu().numpy()
    room = keep - n_prefix
    cut = len(ids) - room
    held = np.zeros(0, np.int64)
    for _ in range(4):  # the held notes depend on the cut and the cut on their number: settle both
        held = held_note_tokens(tokenizer, ids[n_prefix:cut])[-2 * (room // 4) :]
        settled = len(ids) - (room - len(held))
        if settled == cut:
            break
        cut = settled
    window = np.concatenate([ids[:n_prefix], held, ids[len(ids) - (room - len(held)) :]])
    return torch.as_tensor(window, device=history.device)


def sample_ids(
    model: GPT,
    tokenizer: MidiTokenizer,
    prompt_ids,
    config: GenerationConfig | None = None,
    n_prefix: int = 0,
    **options,
) -> list[TokenSample]:
    """Sample ``config.n_samples`` continuations of ``prompt_ids`` (one sequence of ids).

    ``n_prefix``: how many leading prompt ids are conditioning tokens, kept when the window slides.
    A prompt holding ``<GENAI>`` is a task completion: ``<EOGENAI>`` may end it, and it stops
    (``context``) rather than slide when the window is full.
    """
    steps = sample_steps(model, tokenizer, prompt_ids, make_config(config, **options), n_prefix)
    while True:
        try:
            next(steps)
        except StopIteration as finished:
            return finished.value


@torch.inference_mode()  # on a generator function: around each resume, not while it waits
def sample_steps(
    model: GPT,
    tokenizer: MidiTokenizer,
    prompt_ids,
    config: GenerationConfig,
    n_prefix: int = 0,
) -> Generator[np.ndarray, None, list[TokenSample]]:
    """:func:`sample_ids` one step at a time: yields the ids each row keeps this step (``(B,)``, -1
    where a row keeps none: it has stopped), and returns the TokenSamples when every row is done."""
    parameter = next(model.parameters())
    device = parameter.device
    block, max_time = model.config.block_size, model.config.max_music_time
    if tokenizer.vocab_size != model.config.vocab_size:
        raise GenerationError(
            f"the tokenizer has {tokenizer.vocab_size} ids and the model {model.config.vocab_size}: "
            "use the tokenizer saved with the checkpoint"
        )
    tables = token_tables(tokenizer, device)
    prompt = torch.as_tensor(np.asarray(prompt_ids, dtype=np.int64).reshape(-1), device=device)
    if len(prompt) == 0:
        raise GenerationError("empty prompt: give prompt notes or a conditioning token (composer, dataset)")
    if int(prompt.min()) < 0 or int(prompt.max()) >= tokenizer.vocab_size:
        raise GenerationError(f"prompt ids must lie in 0..{tokenizer.vocab_size - 1}")
    is_task = tables.genai_id is not None and bool((prompt == tables.genai_id).any())
    keep = max(int(block * config.context_keep), n_prefix + 1)
    if n_prefix >= keep or (is_task and len(prompt) >= block):
        raise GenerationError(
            f"the prompt ({len(prompt)} tokens, {n_prefix} of them conditioning) leaves no room in the "
            f"model's {block}-token context"
        )

    B = config.n_samples
    allowed = tables.music.clone()
    if is_task and tables.eogenai_id is not None:
        allowed[tables.eogenai_id] = True
    sampler = Sampler(config.sampling, config.seeds, allowed)
    grammar = None
    if config.grammar and grammar_support(tokenizer) is None:
        grammar = NoteGrammar(tokenizer, B, allowed, config.max_note_seconds)
        grammar.start(prompt.cpu().numpy())
    runner = runner_for(model, B, config.fast)

    carry = config.carry_held_notes and grammar_support(tokenizer) is None

    def window_of(history: torch.Tensor) -> torch.Tensor:
        if history.size(1) < block:
            return history
        if not carry:
            return torch.cat(
                [history[:, :n_prefix], history[:, history.size(1) - (keep - n_prefix) :]], dim=1
            )
        return torch.stack([carried_window(row, n_prefix, keep, tokenizer) for row in history])

    def prime(window: torch.Tensor, batch_size: int | None) -> tuple[torch.Tensor, np.ndarray]:
        time = window_time(window, tables.time_units, tables.genai_id)
        with threads.for_prompt():
            logits = runner.prefill(window, time.clamp(max=max_time - 1), batch_size)
        return logits, np.broadcast_to(time[:, -1].cpu().numpy(), B).copy()

    # The loop's own bookkeeping (clock, counters, stops) is numpy on the host: a step's tokens are
    # read there anyway (grammar, stream), and a torch op per counter costs more than the counting.
    time_units = tables.time_units.cpu().numpy()
    note_counts = tables.note_counts.cpu().numpy()
    # CPU threads by the load (a GPU generation keeps torch's count for its few host ops).
    # Timed (see threads.py) only on the compiled step, whose results no thread count changes.
    compiled = getattr(runner, "native", None) is not None
    threads = ThreadChoice(
        config.threads if device.type == "cpu" else torch.get_num_threads(), timed=compiled
    )
    try:
        logits, time_now = prime(window_of(prompt[None]), B if B > 1 else None)

        out = np.zeros((B, config.max_new_tokens), np.int64)
        lengths = [config.max_new_tokens] * B
        reasons = [STOP_MAX_NEW_TOKENS] * B
        check_eogenai = is_task and tables.eogenai_id is not None
        notes = np.zeros(B, np.int64) if config.max_notes is not None else None
        elapsed = np.zeros(B, np.int64) if config.max_duration is not None else None
        max_units = math.floor(config.max_duration / tokenizer.time_unit + 1e-6) if elapsed is not None else 0
        steps = config.max_new_tokens
        running = np.ones(B, bool)  # rows still generating
        for step in range(steps):
            drawn = sampler(logits, grammar.allowed() if grammar is not None else None)
            out[:, step] = drawn
            if grammar is not None:
                grammar.advance(drawn)
            if check_eogenai or notes is not None or elapsed is not None:
                hits = {}
                if check_eogenai:
                    hits[STOP_EOGENAI] = drawn == tables.eogenai_id
                if notes is not None:
                    notes += note_counts[drawn]
                    hits[STOP_MAX_NOTES] = notes > config.max_notes
                if elapsed is not None:
                    elapsed += time_units[drawn]
                    hits[STOP_MAX_DURATION] = elapsed > max_units
                stopped = np.any(list(hits.values()), axis=0) & running
                for row in np.flatnonzero(stopped).tolist():
                    lengths[row] = step
                    reasons[row] = next(name for name, hit in hits.items() if hit[row])
                    running[row] = False
            yield np.where(running, drawn, -1)
            if not running.any():
                break
            if step == steps - 1:
                break
            if runner.length >= block:
                if is_task:
                    for row in np.flatnonzero(running).tolist():
                        lengths[row], reasons[row] = step + 1, STOP_CONTEXT
                    break
                so_far = torch.as_tensor(out[:, : step + 1], device=device)
                history = torch.cat([prompt[None].expand(B, -1), so_far], dim=1)
                logits, time_now = prime(window_of(history), None)
                threads.not_a_step()
            else:
                time_now += time_units[drawn]
                threads.current()  # re-chosen from the load every CHECK_SECONDS
                logits = runner.step(
                    torch.as_tensor(drawn, device=device),
                    torch.as_tensor(np.minimum(time_now, max_time - 1), device=device),
                )
    finally:
        threads.restore()

    return [
        TokenSample(out[row, : lengths[row]].copy(), seed, reasons[row])
        for row, seed in enumerate(config.seeds)
    ]


# --- continuation -------------------------------------------------------------------------------------


def playable(notes: pd.DataFrame, max_note_seconds: float | None = None) -> pd.DataFrame:
    """A canonical note table a piano (and a MIDI file) can hold: a pitch struck twice at one time is
    one note (the loudest), a note ends when its key is struck again, and none lasts longer than
    ``max_note_seconds`` (the grammar's limit, applied here too for tokenizers it cannot keep exactly)."""
    notes = clip_same_pitch_overlaps(notes)
    end = notes["end"]
    if max_note_seconds is not None:
        end = np.minimum(end, notes["start"] + max_note_seconds)
    return make_notes(notes["pitch"], notes["velocity"], notes["start"], end)


def as_notes(notes) -> pd.DataFrame:
    if notes is None:
        return empty_notes()
    if not isinstance(notes, pd.DataFrame):
        notes = pd.DataFrame(dict(notes))
    return make_notes(notes["pitch"], notes["velocity"], notes["start"], notes["end"])


def _shift(notes: pd.DataFrame, seconds: float) -> pd.DataFrame:
    if seconds == 0 or len(notes) == 0:
        return notes
    return notes.assign(start=notes["start"] + seconds, end=notes["end"] + seconds)


@dataclass
class StreamedNotes:
    """Notes of one sample that have just become final."""

    sample: int  # row: the sample of seed ``config.seed + sample``
    rows: list[tuple]  # (pitch, velocity, start, end) of each

    @property
    def notes(self) -> pd.DataFrame:
        """These notes as a note table on the prompt's clock (built on demand: ~0.2 ms)."""
        return notes_table(self.rows)


class ContinuationStream:
    """A continuation generated step by step; iterate to get each sample's notes as soon as they are
    final (:class:`StreamedNotes`: note off decoded, or the longest note reached); then
    :meth:`generations` gives what :func:`generate_samples` returns (the same notes, same seed).

    Left early (an exception in the loop, ``break``, Ctrl-C), :meth:`generations` still gives every
    sample's notes so far (notes still held end at the last time), stopped ``interrupted``.
    """

    def __init__(
        self,
        model: GPT,
        tokenizer: MidiTokenizer,
        prompt_notes=None,
        config: GenerationConfig | None = None,
        *,
        composer: str | None = None,
        dataset: str | None = None,
        **options,
    ):
        self.config = config = make_config(config, **options)
        self.prompt = as_notes(prompt_notes)
        offset = float(self.prompt["start"].min()) if len(self.prompt) else 0.0
        prompt_ids = list(tokenizer.encode(_shift(self.prompt, -offset)))
        conditioning = prefix_ids(tokenizer, composer=composer, dataset=dataset)
        self.settings = {"mode": "continuation", **config.to_dict(), "composer": composer, "dataset": dataset}
        tables = NoteTables(tokenizer)
        self.rows = [NoteStream(tables, prompt_ids, offset, config.max_note_seconds) for _ in config.seeds]
        self.steps = sample_steps(model, tokenizer, conditioning + prompt_ids, config, len(conditioning))
        self.samples: list[TokenSample] | None = None  # once finished

    def __iter__(self) -> Iterator[StreamedNotes]:
        rows = self.rows
        while True:
            try:
                kept = next(self.steps)
            except StopIteration as finished:
                self.samples = finished.value
                break
            for index, token in enumerate(kept.tolist()):
                if token >= 0:
                    row = rows[index]
                    before = len(row.done)
                    row.feed(token)
                    if len(row.done) > before:
                        yield StreamedNotes(index, row.done[before:])
        for index, row in enumerate(rows):
            before = len(row.done)
            row.close()
            if len(row.done) > before:
                yield StreamedNotes(index, row.done[before:])

    def generations(self) -> list[Generation]:
        """One Generation per sample: finished, or interrupted with the notes so far."""
        finished = self.samples is not None
        if not finished:
            self.steps.close()  # no more steps: the thread count goes back now, not when collected
        generations = []
        for index, (row, seed) in enumerate(zip(self.rows, self.config.seeds)):
            if finished:
                sample = self.samples[index]
                ids, reason = sample.ids, sample.stop_reason
            else:
                row.close()
                ids, reason = np.asarray(row.ids, np.int64), STOP_INTERRUPTED
            notes = notes_table(row.done)
            generations.append(Generation(notes, self.prompt, ids, seed, reason, self.settings))
        return generations


def stream(
    model: GPT, tokenizer: MidiTokenizer, prompt_notes=None, config: GenerationConfig | None = None, **options
) -> Iterator[pd.DataFrame]:
    """Continue ``prompt_notes`` (one sample) and yield its notes as soon as each is final: note
    tables on the prompt's clock, that together are :func:`generate`'s result for the same options
    (``composer`` / ``dataset`` too). :class:`ContinuationStream` gives several samples, and what was
    generated when the loop is left early."""
    continuation = ContinuationStream(model, tokenizer, prompt_notes, config, **options)
    if continuation.config.n_samples != 1:
        raise GenerationError("stream() is one sample: use ContinuationStream for n_samples > 1")
    for streamed in continuation:
        yield streamed.notes


def generate_samples(
    model: GPT,
    tokenizer: MidiTokenizer,
    prompt_notes=None,
    config: GenerationConfig | None = None,
    *,
    composer: str | None = None,
    dataset: str | None = None,
    **options,
) -> list[Generation]:
    """Continue ``prompt_notes`` (a note table); ``n_samples`` Generations, notes on the prompt's clock.

    The prompt is encoded from its first note (its absolute offset is restored on the output);
    ``composer`` / ``dataset`` put their conditioning tokens first (kept when the window slides).
    This is :class:`ContinuationStream` run to the end.
    """
    continuation = ContinuationStream(
        model, tokenizer, prompt_notes, config, composer=composer, dataset=dataset, **options
    )
    for _ in continuation:
        pass
    return continuation.generations()


def generate(
    model: GPT,
    tokenizer: MidiTokenizer,
    prompt_notes=None,
    config: GenerationConfig | None = None,
    **options,
) -> list[pd.DataFrame]:
    """The continuations of ``prompt_notes`` (generated notes only, on the prompt's clock); options as
    :class:`GenerationConfig` plus ``composer`` and ``dataset``."""
    return [g.notes for g in generate_samples(model, tokenizer, prompt_notes, config, **options)]


# --- task completion ----------------------------------------------------------------------------------


def complete_samples(
    model: GPT,
    tokenizer: MidiTokenizer,
    prompt_ids,
    config: GenerationConfig | None = None,
    context: pd.DataFrame | None = None,
    **options,
) -> list[Generation]:
    """Complete a prompt that ends with ``<GENAI>``: generate until ``<EOGENAI>`` (or a budget) and
    decode what follows ``<GENAI>`` (music time restarts there, so these notes are on the clock the
    target was encoded with: the source's, in the task layout)."""
    config = make_config(config, **options)
    prompt_ids = np.asarray(prompt_ids, dtype=np.int64).reshape(-1)
    genai_id = tokenizer.token_to_id.get(GENAI_TOKEN)
    if genai_id is None or len(prompt_ids) == 0 or prompt_ids[-1] != genai_id:
        raise GenerationError(f"a task completion prompt ends with {GENAI_TOKEN}")
    samples = sample_ids(model, tokenizer, prompt_ids, config)
    settings = {"mode": "completion", **config.to_dict()}
    context = empty_notes() if context is None else context
    return [
        Generation(
            playable(tokenizer.decode(s.ids), config.max_note_seconds),
            context,
            s.ids,
            s.seed,
            s.stop_reason,
            settings,
        )
        for s in samples
    ]


def complete(
    model: GPT, tokenizer: MidiTokenizer, prompt_ids, config: GenerationConfig | None = None, **options
) -> list[pd.DataFrame]:
    """The notes generated after ``<GENAI>`` for each sample (see :func:`complete_samples`)."""
    return [g.notes for g in complete_samples(model, tokenizer, prompt_ids, config, **options)]
