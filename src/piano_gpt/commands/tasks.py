"""``piano-gpt tasks [--set NAME] [--json]``: every PIANO task with its family and a one-line description.

The names are what ``generate mode=task task=NAME``, ``piano-eval`` and training's ``tasks=`` take;
beyond the registered ones, any ``{family}-x{param}`` of a masking family works.
"""

from __future__ import annotations

import argparse
import json

from piano_gpt.commands.base import CommandError


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", default=None, help="only the tasks of this task set (e.g. piano_default)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=tasks_command)


def task_rows(task_set: str | None = None) -> list[dict]:
    """name, family, kind, description of every registered task (or of one task set)."""
    from piano_gpt.tasks import TASK_SETS, TASKS, get_task

    if task_set is not None and task_set not in TASK_SETS:
        raise CommandError(f"--set {task_set}: no such task set; task sets: {', '.join(TASK_SETS)}")
    names = list(TASKS) if task_set is None else TASK_SETS[task_set]
    tasks = [get_task(name) for name in names]
    return [{"name": t.name, "family": t.group, "kind": t.kind, "description": t.description} for t in tasks]


def format_rows(rows: list[dict]) -> str:
    width = max([len(row["name"]) for row in rows] + [4])
    family_width = max([len(row["family"]) for row in rows] + [6])
    lines = [f"{'task':{width}}  {'family':{family_width}}  description"]
    lines += [f"{row['name']:{width}}  {row['family']:{family_width}}  {row['description']}" for row in rows]
    return "\n".join(lines)


def tasks_command(args: argparse.Namespace) -> int:
    from piano_gpt.tasks import MASKING_FAMILIES, TASK_SETS

    rows = task_rows(args.set)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print(f"task set {args.set} has no task (plain next-token training)")
        return 0
    print(format_rows(rows))
    families = ", ".join(
        f"{f.name} ({f.min_param}..{f.max_param}, alias {f.alias})" for f in MASKING_FAMILIES.values()
    )
    print(f"\n{len(rows)} tasks. Task sets: {', '.join(TASK_SETS)}.")
    print(f"Any {{family}}-x{{param}} works too; masking families (param range): {families}")
    return 0
