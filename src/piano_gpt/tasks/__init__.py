"""PIANO tasks: turn a note table into (task tokens, source notes, target notes).

>>> task = get_task("above_median_prediction")
>>> sample = task.prepare(notes, seed=0)            # TaskSample(prefix_tokens, source, target)
>>> ids, loss_mask = build_task_sequence(tokenizer, sample, composer_token="<CHOPIN>")

Two generations of tasks (see ``split.py`` and ``masking.py`` for the exact semantics):

- split tasks (``TASK_SETS["piano_legacy"]``): pitch and velocity quantile splits, denoising,
  performance; names as in the reference (``above_median_prediction``, ``loud_prediction``,
  ``velocity_denoising``, ``performance_task``, ...).
- masking tasks ``{family}-x{param}`` (``TASK_SETS["piano_default"]``): ``top_line_masking-x2``,
  ``high_notes_masking-x10``, ``stride_notes_masking-x5``, ``chord_masking-x3``,
  ``random_masking-x50``, ...; the short aliases (``top_line-x2``, ``stride-x5``) work too.

Tokens: one per split task (``<ABOVE_MEDIAN_PREDICTION>``), one per masking family
(``<TOP_LINE_MASKING>``) followed by ``<PARAMETER_n>``. Add ``task_special_tokens()`` (task tokens +
layout tokens, under 400 of the 1024 placeholder slots) to a tokenizer before building sequences.
"""

from piano_gpt.tasks.base import MASKING, SPLIT, SelectionTask, Task, TaskSample, as_note_table, task_token
from piano_gpt.tasks.masking import (
    MASKING_FAMILIES,
    MAX_PARAMETER,
    MaskingFamily,
    MaskingTask,
    chord_groups,
    parameter_token,
)
from piano_gpt.tasks.registry import (
    SPLIT_TASK_NAMES,
    TASK_SETS,
    TASKS,
    all_task_tokens,
    get_task,
    list_tasks,
    resolve_tasks,
)
from piano_gpt.tasks.sequence import (
    add_task_tokens,
    build_task_prompt,
    build_task_sequence,
    layout_special_tokens,
    music_time_token,
    n_notes_token,
    split_generated,
    task_special_tokens,
)
from piano_gpt.tasks.split import Denoising, PerformanceTask, QuantileSplit

__all__ = [
    "MASKING",
    "MASKING_FAMILIES",
    "MAX_PARAMETER",
    "SPLIT",
    "SPLIT_TASK_NAMES",
    "TASKS",
    "TASK_SETS",
    "Denoising",
    "MaskingFamily",
    "MaskingTask",
    "PerformanceTask",
    "QuantileSplit",
    "SelectionTask",
    "Task",
    "TaskSample",
    "add_task_tokens",
    "all_task_tokens",
    "as_note_table",
    "build_task_prompt",
    "build_task_sequence",
    "chord_groups",
    "get_task",
    "layout_special_tokens",
    "list_tasks",
    "music_time_token",
    "n_notes_token",
    "parameter_token",
    "resolve_tasks",
    "split_generated",
    "task_special_tokens",
    "task_token",
]
