"""Parsing rows and assigning splits, without Beam."""

import io

import pytest

from components import review_example_gen as gen
from components import review_sources as sources


def _table(data: bytes, name="reviews.csv"):
    return list(sources.read_table(name, stream=io.BytesIO(data)))


def test_csv_rows_become_reviews_with_traceable_ids_and_optional_rating():
    rows = _table(b'text,label,rating\n"Great, really",1,9\nmeh,0,\n')
    assert rows == [sources.Review("Great, really", 1, "reviews.csv:2", 9, None),
                    sources.Review("meh", 0, "reviews.csv:3", None, None)]


def test_tsv_and_official_split_from_the_file_name():
    [row] = _table(b"text\tlabel\na, b\t1\n", name="test.tsv")
    assert row == sources.Review("a, b", 1, "test.tsv:2", None, "test")


def test_a_quoted_field_may_span_lines_and_ids_point_at_the_first_line():
    rows = _table(b'text,label\n"two\nlines",1\nnext,0\n')
    assert [(r.text, r.id) for r in rows] == [("two\nlines", "reviews.csv:2"), ("next", "reviews.csv:4")]


@pytest.mark.parametrize("data, reason", [
    (b"text,label\na,b,1\n", "expected 2 columns, found 3"),
    (b"text,label\nfine,1.5\n", "label '1.5' is not an integer"),
    (b'text,label\n"x"y,1\n', "malformed CSV"),
])
def test_unparseable_rows_are_rejected_with_a_reason(data, reason):
    [row] = _table(data)
    assert isinstance(row, sources.Rejected) and row.id == "reviews.csv:2" and reason in row.reason


def test_every_physical_row_is_accounted_for():
    data = b'text,label\nok,1\n"open quote,1\nbad\xff,0\nfine,0\n,1\n'
    reviews, rejected = sources.count_rows(_table(data))
    assert (reviews, rejected) == (3, 2)


def test_split_bucket_is_stable_and_spreads_evenly():
    assert gen.split_bucket("a fine film") == gen.split_bucket("a fine film")
    counts = [0] * 10
    for i in range(5000):
        counts[gen.split_bucket(f"review number {i}", 10)] += 1
    assert min(counts) > 400 and max(counts) < 600


def test_official_splits_are_kept_and_eval_is_carved_from_train_only():
    texts = [f"review {i}" for i in range(3000)]
    official = [gen.assign_split(sources.Review(t, 1, "x", None, "train"), 10, 10) for t in texts]
    assert set(official) == {"train", "eval"}
    assert 0.07 < official.count("eval") / len(texts) < 0.13
    assert {gen.assign_split(sources.Review(t, 1, "x", None, "test"), 10, 10) for t in texts} == {"test"}
    unsplit = [gen.assign_split(sources.Review(t, 1, "x"), 10, 10) for t in texts]
    assert 0.07 < unsplit.count("test") / len(texts) < 0.13
    # The same text always lands in the same split, wherever it comes from.
    assert gen.assign_split(sources.Review("same", 1, "a"), 10, 10) == gen.assign_split(
        sources.Review("same", 0, "b"), 10, 10)


def test_custom_config_round_trips_through_the_component_properties():
    from google.protobuf import json_format
    config = gen.encode_custom_config({gen.EVAL_PERCENT: 10, gen.QUARANTINE: True})
    decoded = gen.decode_custom_config({"custom_config": json_format.MessageToJson(config)})
    assert decoded == {gen.EVAL_PERCENT: 10, gen.QUARANTINE: True}


def test_unknown_inputs_are_refused_by_name(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(sources.SourceFormatError, match="not a supported input"):
        sources.describe(str(tmp_path / "notes.txt"))
    with pytest.raises(sources.SourceFormatError, match="neither the aclImdb nor the rt-polaritydata"):
        sources.describe(str(tmp_path))
