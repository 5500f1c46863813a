"""ExampleGen parsing and the deterministic hash split."""

import pytest

from components import review_example_gen as gen


def test_csv_rows_become_text_label_and_traceable_id():
    lines = ["text,label\n", '"Great, really",1\n', "meh,0\n"]
    assert list(gen.read_labelled_csv(lines, "reviews.csv")) == [
        ("Great, really", 1, "reviews.csv:2"), ("meh", 0, "reviews.csv:3")]


@pytest.mark.parametrize("lines, message", [
    ([], "reviews.csv: file is empty"),
    (["review,label\n", "x,1\n"], r"reviews.csv:1: header .* lacks column\(s\) \['text'\]"),
    (["text,label\n", "fine,1\n", "bad,pos\n"], "reviews.csv:3: label 'pos' is not an integer"),
    (["text,label\n", "a,b,1\n"], "reviews.csv:2: expected 2 columns, found 3"),
])
def test_unparseable_rows_fail_naming_file_and_line(lines, message):
    with pytest.raises(gen.DataFormatError, match=message):
        list(gen.read_labelled_csv(lines, "reviews.csv"))


def test_split_bucket_is_stable_and_spreads_evenly():
    assert gen.split_bucket("a fine film", 100) == gen.split_bucket("a fine film", 100)
    counts = [0] * 10
    for i in range(5000):
        counts[gen.split_bucket(f"review number {i}", 10)] += 1
    assert min(counts) > 400 and max(counts) < 600


def test_custom_config_round_trips_through_the_component_properties():
    config = gen.encode_custom_config({gen.NUM_BUCKETS_KEY: 100, gen.BUCKETS_KEY: {"train": [0, 90]}})
    from google.protobuf import json_format
    decoded = gen.decode_custom_config({"custom_config": json_format.MessageToJson(config)})
    assert decoded == {gen.NUM_BUCKETS_KEY: 100, gen.BUCKETS_KEY: {"train": [0, 90]}}
