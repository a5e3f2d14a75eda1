"""Finding things: ``piano-gpt tasks`` and composer names as people type them (both tokenizers)."""

import json

import numpy as np
import pytest
import torch

from piano_gpt.commands import cli
from piano_gpt.data.datasets import composer_token
from piano_gpt.generation import GenerationError, generate_samples, prefix_ids
from piano_gpt.generation.conditioning import match_composer
from piano_gpt.midi import make_notes
from piano_gpt.model import GPT, GPTConfig
from piano_gpt.tasks import TASK_SETS, get_task, list_tasks
from piano_gpt.tokenizers import AwesomeMidiTokenizer, ExponentialTimeTokenizer, tokenizer_from_dict

COMPOSERS = ["Frédéric Chopin", "Johann Sebastian Bach", "Carl Philipp Emanuel Bach", "Franz Liszt",
             "Sergei Rachmaninoff", "Claude Debussy"]  # fmt: skip


def with_composers(tokenizer):
    tokenizer.add_special_tokens(["<COMPOSER_UNKNOWN>", *(composer_token(name) for name in COMPOSERS)])
    return tokenizer


# --- piano-gpt tasks ---------------------------------------------------------------------------------


def test_tasks_lists_every_task_with_family_and_description(capsys):
    assert cli.main(["tasks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["task", "family", "description"]
    rows = {line.split()[0]: " ".join(line.split()) for line in lines[1 : 1 + len(list_tasks())]}
    assert list(rows) == list_tasks()
    assert rows["above_median_prediction"].split(None, 1)[1] == (
        "pitch split target: the notes with pitch at or above the fragment's median; source: the rest"
    )
    assert (
        rows["very_soft_prediction"]
        .split(None, 1)[1]
        .startswith("velocity split target: the notes with velocity below the fragment's lower quartile")
    )
    assert (
        "denoising source: the notes with Gaussian velocity, pitch, onset, duration noise"
        in rows["comprehensive_denoising"]
    )
    assert rows["top_line_masking-x2"].split()[1] == "top_line_masking"
    assert "target: the top 2 line(s)" in rows["top_line_masking-x2"]
    assert "target: 30% of the notes, at random" in rows["random_masking-x30"]
    assert "chord_masking (2..100, alias chord)" in lines[-1]

    assert cli.main(["tasks", "--set", "piano_legacy", "--json"]) == 0
    legacy = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in legacy] == TASK_SETS["piano_legacy"]
    assert all(row["description"] and row["kind"] == "split" for row in legacy)
    assert {row["family"] for row in legacy} == {"pitch split", "velocity split", "denoising", "performance"}
    assert cli.main(["tasks", "--set", "nope"]) == 1
    assert "no such task set" in capsys.readouterr().err


def test_task_descriptions_say_what_the_target_is():
    notes = make_notes(
        [40, 50, 60, 70, 80], [10, 30, 50, 70, 90], np.arange(5) * 0.3, np.arange(5) * 0.3 + 0.2
    )
    above = get_task("above_median_prediction").prepare(notes, seed=0)
    assert sorted(above.target["pitch"]) == [60, 70, 80]  # "at or above the median"
    soft = get_task("very_soft_prediction").prepare(notes, seed=0)
    assert soft.target["velocity"].tolist() == [10]  # "below the lower quartile" (30)
    high = get_task("high_notes_masking-x2")
    assert high.description == "target: the 2 highest notes; source: the rest"
    assert sorted(high.prepare(notes, seed=0).target["pitch"]) == [70, 80]


# --- composer names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed, token",
    [
        ("Chopin", "<COMPOSER_FRÉDÉRIC_CHOPIN>"),
        ("chopin", "<COMPOSER_FRÉDÉRIC_CHOPIN>"),
        ("Frederic Chopin", "<COMPOSER_FRÉDÉRIC_CHOPIN>"),
        ("FRÉDÉRIC CHOPIN", "<COMPOSER_FRÉDÉRIC_CHOPIN>"),
        ("J.S. Bach", "<COMPOSER_JOHANN_SEBASTIAN_BACH>"),
        ("johann sebastian bach", "<COMPOSER_JOHANN_SEBASTIAN_BACH>"),
        ("C. P. E. Bach", "<COMPOSER_CARL_PHILIPP_EMANUEL_BACH>"),
        ("Rachmanin", "<COMPOSER_SERGEI_RACHMANINOFF>"),  # the start of a name
        ("debussy", "<COMPOSER_CLAUDE_DEBUSSY>"),
        ("unknown", "<COMPOSER_UNKNOWN>"),
        ("<COMPOSER_FRANZ_LISZT>", "<COMPOSER_FRANZ_LISZT>"),
    ],
)
def test_composer_names_match_as_people_type_them(typed, token):
    tokenizer = with_composers(ExponentialTimeTokenizer())
    assert match_composer(tokenizer, typed) == token
    assert prefix_ids(tokenizer, composer=typed) == [tokenizer.token_to_id[token]]


def test_ambiguous_and_unknown_composers_say_which_there_are():
    tokenizer = with_composers(ExponentialTimeTokenizer())
    with pytest.raises(GenerationError) as ambiguous:
        match_composer(tokenizer, "Bach")
    assert "names 2 composers" in str(ambiguous.value)
    assert "CARL_PHILIPP_EMANUEL_BACH, JOHANN_SEBASTIAN_BACH" in str(ambiguous.value)
    assert "\n" not in str(ambiguous.value)
    with pytest.raises(GenerationError) as unknown:
        match_composer(tokenizer, "Mozart")
    assert "known composers: CARL_PHILIPP_EMANUEL_BACH, CLAUDE_DEBUSSY, FRANZ_LISZT, FRÉDÉRIC_CHOPIN" in str(
        unknown.value
    )
    with pytest.raises(GenerationError, match="known composers: none"):
        match_composer(ExponentialTimeTokenizer(), "Chopin")


def test_composers_on_a_bpe_tokenizer():
    """A BPE model's composer tokens live in its base tokenizer: they are found, matched and listed."""
    rng = np.random.default_rng(0)
    corpus = []
    for _ in range(6):
        start = np.sort(rng.random(120) * 20)
        corpus.append(make_notes(rng.integers(48, 72, 120), rng.integers(40, 90, 120), start, start + 0.3))
    trained = AwesomeMidiTokenizer.train(ExponentialTimeTokenizer(n_special_ids=32), corpus, vocab_size=400)
    with_composers(trained)
    tokenizer = tokenizer_from_dict(trained.to_dict())  # as a checkpoint loads it
    assert isinstance(tokenizer, AwesomeMidiTokenizer)

    chopin = tokenizer.token_to_id["<COMPOSER_FRÉDÉRIC_CHOPIN>"]
    assert prefix_ids(tokenizer, composer="chopin") == [chopin]
    assert match_composer(tokenizer, "J S Bach") == "<COMPOSER_JOHANN_SEBASTIAN_BACH>"
    with pytest.raises(GenerationError, match="CARL_PHILIPP_EMANUEL_BACH, JOHANN_SEBASTIAN_BACH"):
        match_composer(tokenizer, "Bach")
    with pytest.raises(GenerationError, match="known composers: CARL_PHILIPP_EMANUEL_BACH, CLAUDE_DEBUSSY"):
        match_composer(tokenizer, "Mozart")

    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=64, vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, n_embd=16))
    (generation,) = generate_samples(model.eval(), tokenizer, None, composer="Chopin", max_new_tokens=6)
    assert generation.n_tokens == 6 and generation.settings["composer"] == "Chopin"
