"""The ``piano-gpt`` command: every Piano-GPT command under one name.

    piano-gpt train|generate|eval|piano-eval|demo|prepare-tokenizer-dataset|train-tokenizer [key=value ...]
                                       # the Hydra commands, as ``python -m piano_gpt.<name>`` runs them
    piano-gpt models [--root tmp] [--json] [--verify] [--register]   # the local registry, newest first
    piano-gpt download <name> [--repo-id ORG/NAME] [--subfolder S] [--revision R] [--dest DIR]
    piano-gpt download --list [--repo-id ORG/NAME]                     # the checkpoints in the hub repo
    piano-gpt upload [PATH ...] [--repo-id ORG/NAME] [--with-training-state] [--private] [--dry-run]
    piano-gpt dashboard {prompt_practice,piano_dataset_review,saved_generations} [streamlit arguments ...]
    piano-gpt generations list|show ID|export ID OUT.mid|OUT.wav    # the saved generations (generate store=true)
    piano-gpt tasks [--set NAME] [--json]                             # the PIANO tasks, families, descriptions
    piano-gpt benchmark export|predict|score ...   # a frozen PIANO set; any system's predictions scored
    piano-gpt convert OLD.pt OUT_DIR    # an original Piano-GPT .pt checkpoint as a checkpoint folder
    piano-gpt play CHECKPOINT [--prompt IN.mid] [--to auto|midi|audio|file]  # live: MIDI, speakers or file

``scripts/download_model.py`` and ``scripts/upload_models.py`` are this command's ``download`` and
``upload``. The hub repo defaults to ``$PIANO_GPT_HUB_REPO`` (else epr-labs/piano-gpt); the token is
huggingface_hub's (``$HF_TOKEN`` or ``huggingface-cli login``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import signal
import subprocess
import sys
from pathlib import Path

from piano_gpt.commands import generations, tasks
from piano_gpt.commands.base import CommandError
from piano_gpt.commands.benchmark import add_benchmark_args
from piano_gpt.commands.convert import add_convert_args
from piano_gpt.commands.play import add_play_args

DASHBOARDS = ("prompt_practice", "piano_dataset_review", "saved_generations")
REPO_ROOT = Path(__file__).resolve().parents[3]


HYDRA_COMMANDS = {
    "train": ("train", "train a model (Hydra keys: model=, dataset=, optimizer.max_iters=, ...)"),
    "generate": ("generate", "continue a MIDI prompt or perform a PIANO task on it"),
    "eval": ("eval", "loss, bits per note and bits per second of a checkpoint on a split"),
    "piano-eval": ("piano_eval", "the PIANO benchmark of a checkpoint against two baselines"),
    "demo": ("demo", "the main job on the embedded demo corpus: train, generate, report"),
    "prepare-tokenizer-dataset": ("prepare_tokenizer_dataset", "dump the text the BPE tokenizer trains on"),
    "train-tokenizer": ("train_tokenizer", "train the BPE (awesome) tokenizer on that dump"),
}


# --- models ---------------------------------------------------------------------------------------------


def add_models_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        nargs="+",
        default=["tmp"],
        help="folders to search for checkpoints (default: tmp, i.e. tmp/runs and tmp/checkpoints/hub)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--verify", action="store_true", help="check every file's sha256 too")
    parser.add_argument(
        "--register",
        action="store_true",
        help="record every checkpoint listed as a model of the generation store",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="generation store URL (default: $PIANO_GPT_DATABASE_URL or SQLite)",
    )
    parser.set_defaults(func=models_command)


def models_command(args: argparse.Namespace) -> int:
    from piano_gpt.registry import format_table, list_checkpoints, register_checkpoint_in_store
    from piano_gpt.train.checkpoint import CheckpointError

    infos = list_checkpoints(args.root)
    status = 0
    problems = {}
    if args.verify:
        for info in infos:
            try:
                info.verify()
            except CheckpointError as error:
                problems[str(info.path)] = str(error)
                status = 1
    if args.json:
        rows = [
            dict(info.to_dict(), **({"verified": str(info.path) not in problems} if args.verify else {}))
            for info in infos
        ]
        print(json.dumps(rows, indent=1, default=str))
    elif infos:
        print(format_table(infos))
    else:
        roots = ", ".join(args.root)
        print(
            f"no checkpoint (a folder with manifest.json) under {roots}: train one "
            "(python -m piano_gpt.train ...) or download one (piano-gpt download <name>)"
        )
    for problem in problems.values():
        print(f"CORRUPT {problem}", file=sys.stderr)
    if args.register and infos:
        from piano_gpt.commands.generations import open_store

        with open_store(args.database_url) as store:
            for info in infos:
                if str(info.path) in problems:
                    continue
                model_id = register_checkpoint_in_store(store, info.path, verify=False)
                print(
                    f"registered {info.name} (model id {model_id}) in {store.url.render_as_string(hide_password=True)}"
                )
    return status


# --- download -------------------------------------------------------------------------------------------


def _add_hub_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repo-id", default=None, help="hub model repo (default: $PIANO_GPT_HUB_REPO or epr-labs/piano-gpt)"
    )
    parser.add_argument(
        "--subfolder",
        default=None,
        help="folder of the checkpoints in the repo (default: $PIANO_GPT_HUB_SUBFOLDER or checkpoints; '' for the root)",
    )


def add_download_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name",
        nargs="?",
        help="the checkpoint's name (its folder in the repo, e.g. gpt2_10M-maestro-20240101-120000-best)",
    )
    _add_hub_args(parser)
    parser.add_argument("--revision", default=None, help="branch, tag or commit of the repo (default: main)")
    parser.add_argument("--dest", default=None, help="where to put it (default: tmp/checkpoints/hub)")
    parser.add_argument("--list", action="store_true", help="list the checkpoints in the repo and exit")
    parser.set_defaults(func=download_command)


def download_command(args: argparse.Namespace) -> int:
    from huggingface_hub import constants

    from piano_gpt import hub

    if args.list or not constants.HF_HUB_OFFLINE:  # offline, a download comes from the cache
        hub.check_reachable()
    if args.list:
        repo_id = args.repo_id or hub.default_repo_id()
        names = hub.list_remote_checkpoints(repo_id, args.subfolder, args.revision)
        print("\n".join(names) if names else f"no checkpoint in {repo_id}")
        return 0
    if not args.name:
        raise CommandError("give the checkpoint's name (or --list to see the repo's checkpoints)")
    if args.name.endswith(".pt"):  # the original's checkpoints: download, then convert
        path = hub.download_original_checkpoint(
            args.name,
            repo_id=args.repo_id,
            subfolder=args.subfolder,
            dest_root=args.dest,
            revision=args.revision,
        )
        print(f"downloaded {args.name} and converted it into {path}")
        return 0
    path = hub.download_checkpoint(
        args.name, repo_id=args.repo_id, subfolder=args.subfolder, dest_root=args.dest, revision=args.revision
    )
    print(f"downloaded and verified {path}")
    print(f"  load it: piano_gpt.train.checkpoint.load_checkpoint({str(path)!r})")
    return 0


# --- upload ---------------------------------------------------------------------------------------------


def add_upload_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths", nargs="*", help="checkpoint folders (default: every *-best checkpoint under --runs-root)"
    )
    parser.add_argument(
        "--runs-root", default="tmp/runs", help="where to look by default (default: tmp/runs)"
    )
    _add_hub_args(parser)
    parser.add_argument(
        "--with-training-state",
        action="store_true",
        help="also send the optimizer and RNG state (to resume training); default: weights only",
    )
    parser.add_argument(
        "--private", action="store_true", help="create the repo as private if it does not exist"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="verify and show what would be sent, send nothing"
    )
    parser.set_defaults(func=upload_command)


def upload_command(args: argparse.Namespace) -> int:
    from piano_gpt import hub
    from piano_gpt.train.checkpoint import CheckpointError, verify_checkpoint

    paths = [Path(p) for p in args.paths] or hub.best_checkpoints(args.runs_root)
    if not paths:
        raise CommandError(
            f"no *-best checkpoint under {args.runs_root}: give checkpoint folders, or train one first"
        )
    repo_id = args.repo_id or hub.default_repo_id()
    for path in paths:  # check them all before sending any
        try:
            verify_checkpoint(path)
        except CheckpointError as error:
            raise CommandError(f"not uploading anything: {error}") from error
    if args.dry_run:
        for path in paths:
            where = hub.remote_path(Path(path).resolve().name, args.subfolder)
            print(f"would upload {path} -> {repo_id}/{where}")
        return 0
    hub.check_reachable()
    results = hub.upload_checkpoints(
        paths,
        repo_id=repo_id,
        subfolder=args.subfolder,
        training_state=args.with_training_state,
        private=True if args.private else None,
    )
    for path, result in zip(paths, results):
        print(
            f"uploaded {path} -> {result['repo_id']}/{result['path_in_repo']} ({len(result['files'])} files)"
        )
    return 0


# --- dashboard ------------------------------------------------------------------------------------------


def add_dashboard_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=DASHBOARDS, help="which dashboard")
    parser.add_argument(
        "streamlit_args",
        nargs=argparse.REMAINDER,
        help="passed on to streamlit run (e.g. --server.port 8502)",
    )
    parser.set_defaults(func=dashboard_command)


def dashboard_file(name: str) -> Path:
    """``dashboards/<name>.py`` of the checkout (found next to the package, else in the current folder)."""
    for base in (REPO_ROOT, Path.cwd()):
        path = base / "dashboards" / f"{name}.py"
        if path.is_file():
            return path
    raise CommandError(f"dashboards/{name}.py not found (looked in {REPO_ROOT} and {Path.cwd()})")


def dashboard_command(args: argparse.Namespace) -> int:
    path = dashboard_file(args.name)
    if importlib.util.find_spec("streamlit") is None:
        raise CommandError("the dashboards need streamlit: pip install 'piano-gpt[dashboards]'")
    extra = (
        [a for a in args.streamlit_args if a != "--"]
        if args.streamlit_args[:1] == ["--"]
        else args.streamlit_args
    )
    command = [sys.executable, "-m", "streamlit", "run", str(path), *extra]
    print(" ".join(command), flush=True)
    return run_forwarding_signals(command)


def run_forwarding_signals(command: list[str]) -> int:
    """Run ``command`` and wait for it; Ctrl-C, ``kill`` and a closed terminal (SIGINT, SIGTERM,
    SIGHUP) go on to it, so that stopping this process stops the child too. Returns its exit status
    (128 + the signal's number when a signal ended it, as a shell reports it)."""
    child = subprocess.Popen(command)

    def forward(signum, _frame) -> None:
        child.send_signal(signum)

    forwarded = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {signum: signal.signal(signum, forward) for signum in forwarded}
    try:
        status = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 128 - status if status < 0 else status


# --- the Hydra commands ------------------------------------------------------------------------------


def add_hydra_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs=argparse.REMAINDER, help="Hydra overrides, key=value ...")
    parser.set_defaults(func=hydra_command_line)


def hydra_command_line(args: argparse.Namespace) -> int:
    """Run ``piano_gpt.commands.<module>.main`` as ``python -m piano_gpt.<module>`` would."""
    module = importlib.import_module(f"piano_gpt.commands.{HYDRA_COMMANDS[args.command][0]}")
    sys.argv = [f"piano-gpt {args.command}", *args.overrides]
    module.main()
    return 0


# --- entry points ---------------------------------------------------------------------------------------

COMMANDS = {
    "models": (add_models_args, "list the local checkpoints (runs and hub downloads)"),
    "download": (add_download_args, "download a checkpoint from the hub into tmp/checkpoints/hub"),
    "upload": (add_upload_args, "upload checkpoints to the hub"),
    "dashboard": (add_dashboard_args, "run a Streamlit dashboard"),
    "generations": (generations.add_args, "list, show or export the saved generations (generate store=true)"),
    "tasks": (tasks.add_args, "list the PIANO tasks: name, family, one-line description"),
    "benchmark": (
        add_benchmark_args,
        "export a frozen PIANO benchmark set, predict for it, score predictions",
    ),
    "convert": (add_convert_args, "convert an original Piano-GPT .pt checkpoint into a checkpoint folder"),
    "play": (
        add_play_args,
        "continue a prompt and play it as it is generated (MIDI output, else the sound device, else a file)",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="piano-gpt",
        description="Piano-GPT: training, generation, evaluation, checkpoints (local and on the hub), dashboards.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, (_module, help_text) in HYDRA_COMMANDS.items():
        add_hydra_args(commands.add_parser(name, help=help_text, description=help_text, add_help=False))
    for name, (add_args, help_text) in COMMANDS.items():
        add_args(commands.add_parser(name, help=help_text, description=help_text))
    return parser


def _run(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CommandError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        if not _is_user_error(error):
            raise
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1


def _is_user_error(error: Exception) -> bool:
    """Errors with a message meant for the user (bad checkpoint, hub not reachable, not found, auth)."""
    from piano_gpt.hub import HubError
    from piano_gpt.train.checkpoint import CheckpointError

    if isinstance(error, HubError | CheckpointError):
        return True
    try:
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return False
    return isinstance(error, HfHubHTTPError | LocalEntryNotFoundError | OfflineModeIsEnabled)


def run_command(name: str, argv: list[str] | None = None, prog: str | None = None) -> int:
    """One subcommand as a program of its own (what the scripts in ``scripts/`` run)."""
    add_args, help_text = COMMANDS[name]
    parser = argparse.ArgumentParser(prog=prog, description=help_text)
    add_args(parser)
    return _run(parser, argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in HYDRA_COMMANDS:  # Hydra parses the rest (its own flags too)
        return hydra_command_line(argparse.Namespace(command=argv[0], overrides=argv[1:]))
    return _run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
