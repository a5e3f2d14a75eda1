"""``piano-gpt generations list|show|export``: the generations saved in the generation store.

    piano-gpt generations list [--model NAME] [--task T] [--search TEXT] [--limit 20] [--offset 0]
    piano-gpt generations show ID
    piano-gpt generations export ID OUT.mid|OUT.wav [--without-prompt]

They were saved by ``piano-gpt generate ... store=true`` and the prompt-practice dashboard. The
database is ``--database-url``, else ``$PIANO_GPT_DATABASE_URL``, else the SQLite file
tmp/piano_gpt.sqlite (``piano_gpt.store.engine``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator

from piano_gpt.commands.base import CommandError


@contextlib.contextmanager
def open_store(database_url: str | None) -> Iterator:
    """The generation store at ``database_url``; a URL that cannot be opened is a :class:`CommandError`."""
    try:
        from piano_gpt.store import StoreOpenError
        from piano_gpt.store import open_store as open_generation_store
    except ImportError as error:  # sqlalchemy/alembic: the optional store extra
        raise CommandError(
            f"the generation store needs the store extra: pip install 'piano-gpt[store]' ({error})"
        ) from error
    try:
        store = open_generation_store(database_url)
    except StoreOpenError as error:
        raise CommandError(str(error)) from error
    with store:
        yield store


def check_store(database_url: str | None) -> None:
    """Open (and migrate) the store once: a command checks it before it starts working."""
    with open_store(database_url):
        pass


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url", default=None, help="store URL (default: $PIANO_GPT_DATABASE_URL or SQLite)"
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="action")
    listing = actions.add_parser("list", help="saved generations, newest first")
    listing.add_argument("--model", default=None, help="only this model (checkpoint folder name)")
    listing.add_argument("--task", default=None, help="only this PIANO task")
    listing.add_argument("--search", default=None, help="text in the prompt's title or composer")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--offset", type=int, default=0)
    show = actions.add_parser("show", help="one generation: model, settings, prompt, notes, metrics")
    show.add_argument("id", type=int)
    export = actions.add_parser("export", help="write one generation as MIDI (.mid) or audio (.wav)")
    export.add_argument("id", type=int)
    export.add_argument("path", help="OUT.mid or OUT.wav")
    export.add_argument("--without-prompt", action="store_true", help="only the generated notes")
    parser.set_defaults(func=generations_command)


def format_rows(rows) -> str:
    header = f"{'id':>5}  {'created (UTC)':16}  {'model':28}  {'mode':12}  {'task':24}  {'notes':>5}  {'sec':>6}  prompt"
    lines = [header]
    for row in rows:
        lines.append(
            f"{row.id:>5}  {row.created_at:%Y-%m-%d %H:%M}  {row.model_name[:28]:28}  {(row.mode or '-')[:12]:12}  "
            f"{(row.task or '-')[:24]:24}  {row.note_count:>5}  {row.duration:>6.1f}  {row.title or '-'}"
        )
    return "\n".join(lines)


def format_generation(saved) -> str:
    prompt = saved.prompt
    prompt_notes = 0 if prompt is None or prompt.notes is None else len(prompt.notes)
    seconds = float(saved.notes["end"].max()) if len(saved.notes) else 0.0
    lines = [
        f"generation {saved.id}, saved {saved.created_at:%Y-%m-%d %H:%M:%S} UTC",
        f"model: {saved.model.name} ({saved.model.checkpoint_path or 'no checkpoint path'})",
        f"settings: {json.dumps(saved.settings, sort_keys=True)}",
        f"prompt: {prompt.title if prompt and prompt.title else '-'}, {prompt_notes} notes"
        + (f", source {json.dumps(prompt.source)}" if prompt and prompt.source else ""),
        f"generated: {len(saved.notes)} notes, {seconds:.1f} s",
        f"metrics: {json.dumps(saved.metrics, sort_keys=True) if saved.metrics else '-'}",
    ]
    return "\n".join(lines)


def generations_command(args: argparse.Namespace) -> int:
    from piano_gpt.store.generations import export_generation

    if args.action == "export" and not args.path.lower().endswith((".mid", ".midi", ".wav")):
        raise CommandError(f"export to {args.path}: give a .mid, .midi or .wav path")
    with open_store(args.database_url) as store:
        where = store.url.render_as_string(hide_password=True)
        if args.action == "list":
            if args.limit < 0 or args.offset < 0:
                raise CommandError("--limit and --offset must be >= 0")
            filters = {"model_name": args.model, "task": args.task, "search": args.search}
            rows = store.browse(**filters, limit=args.limit, offset=args.offset)
            if not rows:
                print(f"no saved generation in {where} (save some: piano-gpt generate ... store=true)")
                return 0
            print(format_rows(rows))
            print(f"{len(rows)} of {store.count(**filters)} in {where}")
            return 0
        try:
            saved = store.get_generation(args.id)
        except KeyError as error:
            raise CommandError(f"no generation with id {args.id} in {where}") from error
        if args.action == "show":
            print(format_generation(saved))
        else:
            print(export_generation(saved, args.path, with_prompt=not args.without_prompt))
    return 0
