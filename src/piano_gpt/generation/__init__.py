"""Generation: incremental, batched sampling from a Piano-GPT model, and a memorisation check.

>>> from piano_gpt.generation import generate
>>> continuations = generate(model, tokenizer, prompt_notes, n_samples=4, seed=0, max_duration=30.0,
...                          temperature=1.0, top_p=0.95, composer="Chopin")   # list of note tables

- :func:`generate` / :func:`generate_samples`: continue a prompt (notes in; notes, or Generations
  with settings, seed and stop reason, out); slides past the context window for long pieces.
- :func:`complete` / :func:`complete_samples`: complete a prompt of ids ending with ``<GENAI>``
  until ``<EOGENAI>`` or a budget; :func:`task_samples`: a PIANO task on notes (``piano_gpt.tasks``).
- :func:`stream` / :class:`ContinuationStream`: the same continuation, each note given out as soon as
  it is final (``generate_samples`` runs the stream to its end); :func:`sample_steps`: ids per step.
- :func:`sample_ids`: the engine itself, on token ids.
- :class:`NgramIndex`: how much of a generation is copied from the training set.

Options (:class:`GenerationConfig`): ``n_samples``, ``seed`` (sample i uses ``seed + i``),
``temperature`` (0: greedy), ``top_k``, ``top_p``, ``min_p``, ``max_new_tokens``, ``max_notes``,
``max_duration`` (seconds), ``context_keep``, ``fast``, ``grammar``, ``max_note_seconds``, ``threads``
(None: every core only while the rest of the machine is idle, ``generation/threads.py``).

On a CPU in float32 each decoding step runs as one compiled C function (``generation.native``,
built on first use with the system C compiler and cached; ``PIANO_GPT_NATIVE=0`` turns it off, and
without a compiler the PyTorch step is used).
"""

from piano_gpt.generation.conditioning import GenerationError, dataset_tokens, prefix_ids
from piano_gpt.generation.engine import (
    STOP_CONTEXT,
    STOP_EOGENAI,
    STOP_INTERRUPTED,
    STOP_MAX_DURATION,
    STOP_MAX_NEW_TOKENS,
    STOP_MAX_NOTES,
    ContinuationStream,
    Generation,
    GenerationConfig,
    TokenSample,
    complete,
    complete_samples,
    generate,
    generate_samples,
    make_config,
    sample_ids,
    sample_steps,
    stream,
    token_tables,
)
from piano_gpt.generation.memorisation import (
    MemorisationReport,
    NgramIndex,
    find_training_shards,
    load_index,
)
from piano_gpt.generation.runner import FastRunner, GraphRunner, ModelRunner
from piano_gpt.generation.sampling import Sampler, SamplingConfig
from piano_gpt.generation.tasks import task_prompt, task_samples

__all__ = [
    "STOP_CONTEXT",
    "STOP_EOGENAI",
    "STOP_MAX_DURATION",
    "STOP_MAX_NEW_TOKENS",
    "STOP_INTERRUPTED",
    "STOP_MAX_NOTES",
    "ContinuationStream",
    "FastRunner",
    "Generation",
    "GenerationConfig",
    "GenerationError",
    "GraphRunner",
    "MemorisationReport",
    "ModelRunner",
    "NgramIndex",
    "Sampler",
    "SamplingConfig",
    "TokenSample",
    "complete",
    "complete_samples",
    "dataset_tokens",
    "find_training_shards",
    "generate",
    "generate_samples",
    "load_index",
    "make_config",
    "prefix_ids",
    "sample_ids",
    "sample_steps",
    "stream",
    "task_prompt",
    "task_samples",
    "token_tables",
]
