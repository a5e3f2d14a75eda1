"""Quickstart, offline: load a model, continue a piece, complete a PIANO task, score, plot and listen.

    python examples/quickstart.py                  # trains a tiny task model first (about a minute on a CPU)
    python examples/quickstart.py tmp/demo/demo    # the checkpoint `python -m piano_gpt.demo` trained
    python examples/quickstart.py NAME_OR_HUB_ID   # anything piano_gpt.load takes

Writes into ``tmp/quickstart/`` (or ``--out DIR``): continuation.mid/.png/.wav and task.mid/.png/.wav.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import piano_gpt
from piano_gpt.audio import audio_backend, render_wav
from piano_gpt.data.demo import load_demo_records
from piano_gpt.data.records import record_to_notes
from piano_gpt.generation import GenerationError
from piano_gpt.midi import write_notes
from piano_gpt.plots import plot_comparison, save_figure

TASK = "above_median_prediction"  # the top voice from the rest; `piano-gpt tasks` lists them all


def train_tiny_model(out_dir: Path) -> Path:
    """A tiny model trained for a few steps on PIANO tasks over the embedded demo corpus (a run folder)."""
    from hydra import compose, initialize_config_dir

    from piano_gpt.configs import CONFIG_DIR
    from piano_gpt.train.loop import train

    overrides = [
        "dataset=demo", "model=gpt2_demo", "model.n_layer=1", "model.n_embd=64", "model.n_head=2",
        "data.context_size=256", "data.batch_size=4", "data.notes_per_record=32", "optimizer.max_iters=10",
        "eval_interval=10", "eval_iters=1", "lr.warmup_iters=2", "lr.learning_rate=1e-3",
        "logging.progress_bar=false", f"out_dir={out_dir}", "run_name=quickstart",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose(config_name="gpt2_piano", overrides=overrides)
    return train(cfg)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", help="checkpoint or run folder, registry name or hub id")
    parser.add_argument("--out", default="tmp/quickstart", help="where to write (default tmp/quickstart)")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="generation budget (default 512)")
    args = parser.parse_args(argv)
    out = Path(args.out)

    # 1. Load: a checkpoint folder, a run folder (its -best), a name `piano-gpt models` lists, a hub id.
    model = piano_gpt.load(args.checkpoint or train_tiny_model(out / "runs"), device="cpu")
    print(model)

    # 2. A prompt: the first 32 notes of a chorale of the embedded demo corpus (a note table).
    prompt = record_to_notes(load_demo_records("validation")[0]).iloc[:32].reset_index(drop=True)
    print(f"prompt: {len(prompt)} notes, {prompt.end.max():.1f} s; {model.score(prompt):.2f} bits per note")

    # 3. Continue it (same sampling options as piano_gpt.generation), then plot, save and listen.
    continuation = model.generate(
        prompt, max_duration=8.0, max_new_tokens=args.max_new_tokens, temperature=1.0, top_p=0.95, seed=0
    )
    print(f"continuation: {len(continuation)} notes")
    write_notes(continuation, out / "continuation.mid")
    save_figure(plot_comparison({"prompt": prompt, "continuation": continuation}), out / "continuation.png")
    render_wav(continuation, out / "continuation.wav")

    # 4. A PIANO task: the model writes the target the task takes out of the prompt.
    try:
        target = model.complete(prompt, TASK, max_new_tokens=args.max_new_tokens, seed=0)
    except GenerationError as error:  # a pretrained-only checkpoint (the demo's) knows no task tokens
        print(f"task {TASK}: skipped ({error})")
    else:
        print(f"task {TASK}: {len(target)} notes")
        write_notes(target, out / "task.mid")
        save_figure(
            plot_comparison({"prompt": prompt, "generated target": target}, title=TASK), out / "task.png"
        )
        render_wav(target, out / "task.wav")
    backend, why = audio_backend()
    print(f"wrote {out}/ (audio: {backend}, {why})")


if __name__ == "__main__":
    main()
