import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from piano_gpt.data.demo import DEMO_CORPUS_PATH, DEMO_SPLITS, PROVENANCE, load_demo_records


@pytest.fixture(scope="module")
def records_by_split() -> dict[str, list[dict]]:
    return {split: load_demo_records(split) for split in DEMO_SPLITS}


def test_parquet_is_in_the_epr_labs_schema_and_small():
    assert DEMO_CORPUS_PATH.stat().st_size < 3_000_000
    table = pq.read_table(DEMO_CORPUS_PATH)
    assert table.column_names == ["notes", "source"]
    fields = [table.schema.field("notes").type.field(i).name for i in range(5)]
    assert fields == ["pitch", "velocity", "start", "end", "duration"]
    assert table.num_rows > 300


def test_every_split_is_present_and_proportioned(records_by_split):
    sizes = {split: len(records) for split, records in records_by_split.items()}
    total = sum(sizes.values())
    assert all(size > 0 for size in sizes.values()), sizes
    assert sizes["train"] / total > 0.8
    assert sizes["validation"] < sizes["train"] and sizes["test"] < sizes["train"]
    assert total == pq.read_metadata(DEMO_CORPUS_PATH).num_rows


def test_records_are_playable_note_tables(records_by_split):
    for records in records_by_split.values():
        for record in records:
            notes = {key: np.asarray(value) for key, value in record["notes"].items()}
            assert len(notes["pitch"]) > 20
            assert len({len(column) for column in notes.values()}) == 1
            assert notes["pitch"].min() >= 21 and notes["pitch"].max() <= 108
            assert notes["velocity"].min() >= 1 and notes["velocity"].max() <= 127
            assert (notes["end"] > notes["start"]).all()
            assert notes["start"].min() >= 0
            assert np.allclose(notes["duration"], notes["end"] - notes["start"], atol=1e-3)
            assert (np.diff(notes["start"]) >= 0).all(), "notes must be sorted by start"


def test_sources_are_json_with_composer_title_and_split(records_by_split):
    titles = {}
    for split, records in records_by_split.items():
        for record in records:
            source = json.loads(record["source"])
            assert source["composer"] == "Johann Sebastian Bach"
            assert source["title"].startswith("BWV ")
            assert source["split"] == split
            assert source["dataset"] == "demo-bach-chorales"
            assert source["year"] is None and source["midi_filename"] is None
            titles[source["title"]] = split
    assert len(titles) == sum(len(r) for r in records_by_split.values()), "titles are unique"


def test_a_hymn_tune_never_straddles_splits(records_by_split):
    split_of_hymn = {}
    for split, records in records_by_split.items():
        for record in records:
            title = json.loads(record["source"])["title"]
            if ": " in title:
                hymn = title.split(": ", 1)[1]
                assert split_of_hymn.setdefault(hymn, split) == split, hymn


def test_provenance_names_source_licence_and_synthetic_rendering():
    for word in ("music21", "public domain", "BSD", "synthetic", "deterministic"):
        assert word in PROVENANCE


def test_unknown_split_is_refused():
    with pytest.raises(ValueError, match="split"):
        load_demo_records("dev")
