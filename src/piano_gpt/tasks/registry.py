"""The task registry, task sets and the name resolver.

``TASKS`` holds every split task and every masking task named in a task set; :func:`get_task` also
builds any other ``{family}-x{param}`` on demand (a family's short alias works too:
``top_line-x2`` is ``top_line_masking-x2``; a bare family name takes the reference's default
parameter).

The task tokens (:func:`all_task_tokens`) are a fixed list — one per split task, one per masking
family, and ``<PARAMETER_1..100>`` — independent of which tasks a run uses, so token ids stay the
same across runs. New tokens must be appended to the end of the list, never inserted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from piano_gpt.tasks.base import Task
from piano_gpt.tasks.masking import (
    MASKING_FAMILIES,
    MASKING_FAMILY_LIST,
    MAX_PARAMETER,
    MaskingTask,
    parameter_token,
)
from piano_gpt.tasks.split import SPLIT_TASK_LIST


def _names(family: str, params: Iterable[int]) -> list[str]:
    return [f"{family}-x{param}" for param in params]


SPLIT_TASK_NAMES = [task.name for task in SPLIT_TASK_LIST]

# The reference's sets: piano-gpt ``tasks/piano_default.yaml`` (masking) and ``tasks/all.yaml``
# (split tasks; we add performance_task); ``piano_dataset_default`` is piano-dataset's
# ``tasks-default.yaml``, which adds chord and random masking. ``subsequence`` is plain next-token
# training on note subsequences: no task.
TASK_SETS: dict[str, list[str]] = {
    "piano_default": [
        *_names("bottom_line_masking", [1, 2, 5]),
        *_names("top_line_masking", [1, 2, 3]),
        *_names("low_notes_masking", [3, 5, 10, 15, 20]),
        *_names("high_notes_masking", [3, 5, 10, 15, 20]),
        *_names("short_notes_masking", [3, 5, 10, 15, 20]),
        *_names("long_notes_masking", [3, 5, 10, 15, 20]),
        *_names("stride_notes_masking", [1, 2, 3, 5, 6, 8, 10, 15, 20]),
    ],
    "piano_legacy": list(SPLIT_TASK_NAMES),
    "piano_dataset_default": [
        "chord_masking-x3",
        *_names("bottom_line_masking", [1, 2, 5]),
        *_names("top_line_masking", [1, 2, 3]),
        *_names("low_notes_masking", [3, 5, 10, 15, 20]),
        *_names("high_notes_masking", [3, 5, 10, 15, 20]),
        *_names("short_notes_masking", [3, 5, 10, 15, 20]),
        *_names("long_notes_masking", [3, 5, 10, 15, 20]),
        *_names("stride_notes_masking", [1, 2, 3, 5, 6, 8, 10, 15, 20]),
        *_names("random_masking", [5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95]),
    ],
    "subsequence": [],
}

_ALIASES = {family.alias: family.name for family in MASKING_FAMILY_LIST if family.alias}
_MASKING_NAME = re.compile(r"^(?P<family>[a-z_]+)(?:-x(?P<param>-?\d+))?$")


def _build_masking_task(name: str) -> MaskingTask | None:
    match = _MASKING_NAME.match(name)
    if match is None:
        return None
    family_name = _ALIASES.get(match["family"], match["family"])
    family = MASKING_FAMILIES.get(family_name)
    if family is None:
        return None
    param = family.default if match["param"] is None else int(match["param"])
    return MaskingTask(family, param)


TASKS: dict[str, Task] = {task.name: task for task in SPLIT_TASK_LIST}
for _task_names in TASK_SETS.values():
    for _name in _task_names:
        if _name not in TASKS:
            TASKS[_name] = _build_masking_task(_name)


def get_task(name: str) -> Task:
    """The task called ``name``: a registered name, or any ``{family}-x{param}`` masking task."""
    name = str(name).strip()
    if name in TASKS:
        return TASKS[name]
    task = _build_masking_task(name)
    if task is None:
        families = sorted(MASKING_FAMILIES) + sorted(_ALIASES)
        raise KeyError(
            f"unknown task {name!r}; split tasks: {SPLIT_TASK_NAMES}; masking tasks are "
            f"'{{family}}-x{{param}}' with family in {families}"
        )
    return task


def list_tasks() -> list[str]:
    """Names of the registered tasks (split tasks, then the masking tasks of the task sets)."""
    return list(TASKS)


def all_task_tokens() -> list[str]:
    """Every token a task may put in a prefix, in a fixed order (for ``tokenizer.add_special_tokens``)."""
    tokens = [task.token for task in SPLIT_TASK_LIST]
    tokens += [family.token for family in MASKING_FAMILY_LIST]
    tokens += [parameter_token(param) for param in range(1, MAX_PARAMETER + 1)]
    return tokens


def resolve_tasks(spec: str | Iterable[str] | None) -> list[Task]:
    """Tasks named by ``spec``: a task set name, a single task name, or a list of either.

    Duplicates are dropped (first occurrence kept); None or ``"subsequence"`` give no task.
    """
    if spec is None:
        return []
    items = [spec] if isinstance(spec, str) else list(spec)
    tasks: dict[str, Task] = {}
    for item in items:
        item = str(item).strip()
        names = TASK_SETS[item] if item in TASK_SETS else [item]
        for name in names:
            task = get_task(name)
            tasks.setdefault(task.name, task)
    return list(tasks.values())
