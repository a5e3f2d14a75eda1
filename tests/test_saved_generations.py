"""Saved generations: ``generate store=true``, ``piano-gpt generations list|show|export``, the
prompt-practice dashboard saving what it generates and the saved-generations page (SQLite, and
PostgreSQL where ``$PIANO_GPT_TEST_POSTGRES_URL`` gives one: fixture ``db_url`` in conftest.py)."""

import io
import wave
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("sqlalchemy")
from hydra import compose, initialize_config_dir  # noqa: E402

from piano_gpt import audio  # noqa: E402
from piano_gpt.commands import cli  # noqa: E402
from piano_gpt.commands.generate import run as run_generate  # noqa: E402
from piano_gpt.configs import CONFIG_DIR  # noqa: E402
from piano_gpt.midi import make_notes, read_metadata, read_notes, write_notes  # noqa: E402
from piano_gpt.model import GPT, GPTConfig  # noqa: E402
from piano_gpt.store import GenerationStore, ModelInfo, PromptInfo, StoredGeneration  # noqa: E402
from piano_gpt.store.generations import generation_piece  # noqa: E402
from piano_gpt.tokenizers import ExponentialTimeTokenizer  # noqa: E402
from piano_gpt.train.checkpoint import save_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROMPT = make_notes(
    [60, 64, 67, 72, 55], [70, 80, 90, 100, 60], [0.0, 0.4, 0.8, 1.2, 1.6], [0.4, 0.8, 1.2, 1.6, 2.4]
)


def tiny_checkpoint(path: Path) -> Path:
    tokenizer = ExponentialTimeTokenizer()
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=64, vocab_size=tokenizer.vocab_size, n_layer=2, n_head=2, n_embd=32))
    return save_checkpoint(path, model, tokenizer)


def generate_config(**overrides):
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("generate", overrides=[f"{k}={v}" for k, v in overrides.items() if k != "database_url"])
    cfg.database_url = overrides.get("database_url")
    return cfg


def piano_gpt(capsys, *argv) -> tuple[int, str, str]:
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_generate_saves_and_generations_lists_shows_exports(db_url, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(audio.SOUNDFONT_ENV, "none")
    tiny_checkpoint(tmp_path / "tiny-ckpt")
    write_notes(PROMPT, tmp_path / "prelude.mid")
    prompt = read_notes(tmp_path / "prelude.mid")
    cfg = generate_config(
        checkpoint_path="tiny-ckpt",
        prompt_path="prelude.mid",
        output_path="out/gen.mid",
        n_samples=2,
        seed=11,
        temperature=0.8,
        top_k=30,
        max_new_tokens=40,
        store="true",
        database_url=db_url,
    )
    lines = run_generate(cfg)
    assert lines[-1].startswith("saved generation(s) 1, 2 in ")

    with GenerationStore(db_url) as store:
        assert store.count() == 2
        for generation_id, seed in ((1, 11), (2, 12)):
            saved = store.get_generation(generation_id)
            assert saved.model.name == "tiny-ckpt"
            assert saved.model.checkpoint_path == str((tmp_path / "tiny-ckpt").resolve())
            assert saved.model.parameter_count and saved.model.config
            settings = saved.settings
            assert (settings["seed"], settings["temperature"], settings["top_k"]) == (seed, 0.8, 30)
            assert settings["mode"] == "continuation" and settings["max_new_tokens"] == 40
            assert saved.prompt.title == "prelude" and saved.prompt.source == {"path": "prelude.mid"}
            pd.testing.assert_frame_equal(saved.prompt.notes, prompt, check_exact=True)
            assert (
                saved.metrics["stop_reason"] == "max_new_tokens" and saved.metrics["generated_tokens"] == 40
            )
            # The saved piece is the one written as MIDI (up to the file's tick rounding).
            written = read_notes(tmp_path / "out" / f"gen-{seed}.mid")
            piece = generation_piece(saved)
            assert len(saved.notes) > 0 and len(piece) == len(written) == len(prompt) + len(saved.notes)
            np.testing.assert_allclose(piece["start"], written["start"], atol=2e-3)
            assert piece["pitch"].tolist() == written["pitch"].tolist()

    status, out, _ = piano_gpt(capsys, "generations", "--database-url", db_url, "list")
    assert status == 0
    listed = out.splitlines()
    assert listed[0].split()[:2] == ["id", "created"]
    assert [line.split()[0] for line in listed[1:3]] == ["2", "1"]  # newest first
    assert "tiny-ckpt" in listed[1] and "prelude" in listed[1] and listed[-1].startswith("2 of 2 in ")

    status, out, _ = piano_gpt(capsys, "generations", "--database-url", db_url, "show", "2")
    assert status == 0 and out.startswith("generation 2, saved ")
    assert "model: tiny-ckpt (" in out and '"seed": 12' in out and "prompt: prelude, 5 notes" in out

    status, out, _ = piano_gpt(capsys, "generations", "--database-url", db_url, "export", "1", "x/one.mid")
    assert status == 0 and out.startswith("wrote x/one.mid: ")
    exported = read_notes(tmp_path / "x" / "one.mid")
    pd.testing.assert_frame_equal(exported, read_notes(tmp_path / "out" / "gen-11.mid"))
    assert read_metadata(tmp_path / "x" / "one.mid")["seed"] == "11"
    status, out, _ = piano_gpt(
        capsys, "generations", "--database-url", db_url, "export", "1", "only.mid", "--without-prompt"
    )
    assert status == 0 and len(read_notes(tmp_path / "only.mid")) == len(exported) - len(prompt)

    status, out, _ = piano_gpt(capsys, "generations", "--database-url", db_url, "export", "1", "one.wav")
    assert status == 0 and "built-in numpy piano synthesizer" in out
    with wave.open(io.BytesIO((tmp_path / "one.wav").read_bytes())) as handle:
        seconds = handle.getnframes() / handle.getframerate()
    assert seconds == pytest.approx(float(exported["end"].max()) + audio.RELEASE_SECONDS + 0.05, abs=0.02)

    status, _, err = piano_gpt(capsys, "generations", "--database-url", db_url, "show", "99")
    assert status == 1 and "no generation with id 99" in err
    status, _, err = piano_gpt(capsys, "generations", "--database-url", db_url, "export", "1", "one.txt")
    assert status == 1 and "one.txt" in err and ".wav" in err


def test_generations_on_an_empty_or_unopenable_store(tmp_path, capsys):
    status, out, _ = piano_gpt(
        capsys, "generations", "--database-url", f"sqlite:///{tmp_path / 'e.db'}", "list"
    )
    assert status == 0 and out.startswith("no saved generation in sqlite:///")
    status, _, err = piano_gpt(capsys, "generations", "--database-url", "nosuchdb://x", "list")
    assert status == 1 and "cannot open the generation store" in err


def stored(settings: dict) -> StoredGeneration:
    model = ModelInfo(1, "m", None, None, None, None, pd.Timestamp("2026-01-01", tz="UTC"))
    prompt = PromptInfo(1, "p", None, None, None, PROMPT)
    notes = make_notes([50, 52], [60, 60], [3.0, 3.5], [3.5, 4.0])
    return StoredGeneration(1, model.created_at, model, settings, prompt, notes, None)


def test_the_piece_of_a_saved_generation():
    assert len(generation_piece(stored({"mode": "continuation"}))) == len(PROMPT) + 2
    assert len(generation_piece(stored({"mode": "continuation"}), with_prompt=False)) == 2
    # A task whose output replaces its source (denoising) plays the output alone.
    assert len(generation_piece(stored({"task": "pitch_denoising", "combine": False}))) == 2


# --- dashboards ------------------------------------------------------------------------------------------

streamlit_testing = pytest.importorskip("streamlit.testing.v1")
TIMEOUT = 180


def test_prompt_practice_saves_what_it_generates(tmp_path, monkeypatch):
    from piano_gpt import dashboard_logic as dl

    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    monkeypatch.setenv("PIANO_GPT_DATABASE_URL", url)
    monkeypatch.setenv(dl.RUNS_ENV, str(tmp_path / "runs"))
    monkeypatch.setenv(audio.SOUNDFONT_ENV, "none")
    tiny_checkpoint(tmp_path / "runs" / "tiny-last")
    at = streamlit_testing.AppTest.from_file(
        str(REPO / "dashboards" / "prompt_practice.py"), default_timeout=TIMEOUT
    )
    at.run()
    at.radio(key="prompt_source").set_value("upload a MIDI file").run()
    at.file_uploader(key="upload").set_value(("étude.mid", audio.midi_bytes(PROMPT), "audio/midi")).run()
    at.text_input(key="seeds").set_value("4, 5").run()
    at.number_input(key="budget").set_value(16)
    at.button(key="generate").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(c.value.startswith("saved as generation 1, 2 in sqlite:///") for c in at.caption)
    results = at.session_state["results"]["results"]
    with GenerationStore(url) as store:
        rows = store.browse()
        assert [row.id for row in rows] == [2, 1] and {row.model_name for row in rows} == {"tiny-last"}
        for generation_id, result in zip((1, 2), results):
            saved = store.get_generation(generation_id)
            assert saved.settings["seed"] == result.seed and saved.settings["max_new_tokens"] == 16
            assert saved.prompt.title == "étude.mid" and saved.prompt.source == {
                "dashboard": "prompt_practice"
            }
            pd.testing.assert_frame_equal(saved.notes, result.notes, check_exact=True)
            pd.testing.assert_frame_equal(saved.prompt.notes, result.prompt, check_exact=True)


def test_saved_generations_page_browses_and_replays(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    monkeypatch.setenv("PIANO_GPT_DATABASE_URL", url)
    monkeypatch.setenv(audio.SOUNDFONT_ENV, "none")
    page = str(REPO / "dashboards" / "saved_generations.py")

    at = streamlit_testing.AppTest.from_file(page, default_timeout=TIMEOUT).run()
    assert not at.exception and not at.error
    assert any("No saved generation here yet" in i.value for i in at.info)

    with GenerationStore(url) as store:
        for k, (model, title) in enumerate([("alpha", "Ballade"), ("beta", "Nocturne"), ("alpha", "Waltz")]):
            notes = make_notes([60 + k, 62 + k], [70, 80], [2.5, 3.0], [3.0, 3.5 + k])
            store.save_generation(
                model=model, settings={"mode": "continuation", "seed": k}, notes=notes,
                prompt={"title": title, "notes": PROMPT},
            )  # fmt: skip

    at = streamlit_testing.AppTest.from_file(page, default_timeout=TIMEOUT).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.dataframe[0].value["id"].tolist() == [3, 2, 1]
    options = at.selectbox(key="generation").options
    assert options[0] == "3: alpha, Waltz, 2 notes"
    at.selectbox(key="generation").set_value(options[1]).run()
    assert at.header[0].value == "Generation 2"
    assert len(at.get("vega_lite_chart")) == 1 and len(at.get("audio")) == 1
    assert {b.label for b in at.get("download_button")} == {"Prompt + generation MIDI", "Generation MIDI"}
    at.selectbox(key="model").set_value("alpha").run()
    assert at.dataframe[0].value["id"].tolist() == [3, 1]
    at.text_input(key="search").set_value("ball").run()
    assert at.dataframe[0].value["id"].tolist() == [1]
    assert at.header[0].value == "Generation 1"

    at.sidebar.text_input(key="database_url").set_value("nosuchdb://x").run()
    assert not at.exception and any("cannot open the generation store" in e.value for e in at.error)


def test_generate_checks_the_store_before_generating(tmp_path, monkeypatch):
    from piano_gpt.commands.base import CommandError

    monkeypatch.chdir(tmp_path)
    tiny_checkpoint(tmp_path / "ckpt")
    write_notes(PROMPT, tmp_path / "in.mid")
    cfg = generate_config(
        checkpoint_path="ckpt",
        prompt_path="in.mid",
        output_path="out.mid",
        store="true",
        database_url="nosuchdb://x",
    )
    with pytest.raises(CommandError, match="cannot open the generation store nosuchdb://x"):
        run_generate(cfg)
    assert not (tmp_path / "out.mid").exists()
