"""The main job on the embedded demo corpus, offline, on a CPU in a few minutes:

build the token shards -> train a small GPT -> generate a continuation of a validation piece -> write
MIDI -> print where everything is and how the validation loss fell.

    python -m piano_gpt.demo [key=value ...]   # any training override, e.g. optimizer.max_iters=200
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser
from omegaconf import OmegaConf

from piano_gpt.commands.base import quote_plain_values
from piano_gpt.configs import CONFIG_DIR
from piano_gpt.data.demo import load_demo_records
from piano_gpt.data.records import record_to_notes
from piano_gpt.evaluation.continuation import continuation_prompts, evaluate_continuations, format_markdown
from piano_gpt.generation import generate
from piano_gpt.midi import write_notes
from piano_gpt.train.checkpoint import find_checkpoint, load_checkpoint
from piano_gpt.train.config import command_line_problem
from piano_gpt.train.loop import summarize_log, train

# Sized for 2 CPU cores and ~5 minutes of training: a 4-layer model, short context.
DEMO_OVERRIDES = [
    "dataset=demo",
    "model=piano_demo",  # rotary, RMSNorm, SwiGLU, QK-norm: val loss 1.50 vs gpt2_demo 2.21, same budget (RESULTS)
    "optimizer.name=muon",
    "data.batch_size=16",
    "data.context_size=256",
    "optimizer.max_iters=600",
    "eval_interval=100",
    "eval_iters=8",
    "lr.learning_rate=2e-3",
    "lr.min_lr=2e-4",
    "lr.warmup_iters=50",
    "out_dir=tmp/demo",
    "run_name=demo",
    "logging.wandb_log=false",
]


CONTINUATION_SECONDS = 10.0


def run(argv: list[str]) -> int:
    started = time.time()
    cfg = demo_config(argv)
    run_dir = train(cfg)
    summary = summarize_log(run_dir)
    checkpoint = find_checkpoint(run_dir)  # its -best (its -last when no evaluation improved)

    model, tokenizer, _ = load_checkpoint(checkpoint)
    pieces = [(f"validation {i}", record_to_notes(r)) for i, r in enumerate(load_demo_records("validation"))]
    prompts = continuation_prompts(pieces, n_prompts=6, prompt_notes=48, seconds=CONTINUATION_SECONDS)
    plausibility = evaluate_continuations(
        model,
        tokenizer,
        prompts,
        CONTINUATION_SECONDS,
        temperature=1.0,
        top_k=40,
        seed=0,
        max_new_tokens=2048,
    )
    prompt = pieces[0][1].iloc[:48].reset_index(drop=True)
    (continuation,) = generate(
        model, tokenizer, prompt, max_new_tokens=512, temperature=1.0, top_k=40, seed=0
    )
    out_dir = Path(cfg.out_dir) / "generated"
    prompt_path = write_notes(prompt, out_dir / "prompt.mid")
    both = pd.concat([prompt, continuation], ignore_index=True)
    generated_path = write_notes(both, out_dir / "prompt+continuation.mid", {"seed": 0, "top_k": 40})

    first, last = summary["first_val_loss"], summary["last_val_loss"]
    print()
    print(f"validation loss: {first:.3f} -> {last:.3f} (per token, {len(summary['val'])} evaluations)")
    for it, loss in summary["val"]:
        print(f"  iter {it:5d}  val_loss {loss:.3f}")
    print(f"checkpoint:      {checkpoint}")
    print(f"training log:    {run_dir / 'log.jsonl'}")
    print(f"prompt:          {prompt_path} ({len(prompt)} notes)")
    print(f"generation:      {generated_path} ({len(continuation)} new notes)")
    print()
    print(
        f"continuations of {len(prompts)} validation prompts ({CONTINUATION_SECONDS:.0f} s each) beside the real ones:"
    )
    print(format_markdown(plausibility))
    failed = [name for name, ok in plausibility["checks"].items() if not ok]
    print(f"plausibility checks: {'all passed' if not failed else 'failed: ' + ', '.join(failed)}")
    print(f"total time:      {time.time() - started:.0f} s")
    if not last < first - 0.5:
        print("validation loss did not drop clearly", file=sys.stderr)
        return 1
    return 0


def demo_config(argv: list[str]):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name="gpt2_pretraining", overrides=DEMO_OVERRIDES + argv)


def main() -> None:
    """Hydra's flags as far as a single fixed job has them: ``--cfg job`` prints the config, ``--help``."""
    argv = quote_plain_values(sys.argv[1:])
    problem = command_line_problem([*DEMO_OVERRIDES, *argv])
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    args = get_args_parser().parse_args(argv)
    if args.help:
        print(__doc__)
        return
    if args.cfg:
        print(OmegaConf.to_yaml(demo_config(args.overrides)))
        return
    if [a for a in argv if a.startswith("-")]:
        print(
            "error: the demo takes only --cfg job and key=value overrides; for -m, --info or --config-name "
            "use python -m piano_gpt.train dataset=demo ...",
            file=sys.stderr,
        )
        sys.exit(2)
    sys.exit(run(args.overrides))


if __name__ == "__main__":
    main()
