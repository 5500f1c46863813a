"""Data in spans: which span is read, the checks on the options, and the drift check's measures."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tensorflow_data_validation as tfdv
from google.protobuf import json_format
from tfx.proto import example_gen_pb2, range_config_pb2

from components import drift_check, validation_gate
from components import review_example_gen as gen
from pipeline import configs, data_sources
from pipeline.__main__ import main

SCHEMA = tfdv.load_schema_text(str(configs.IMDB.schema_dir / "schema.pbtxt"))


def _span_folders(root, spans=(1, 2, 10)):
    for span in spans:
        folder = root / f"span-{span}"
        folder.mkdir(parents=True)
        (folder / "reviews.csv").write_text("text,label\n\"a fine film\",1\n")
    (root / "span-x").mkdir()  # not a span: ignored
    (root / "notes.txt").write_text("not a span either")
    return root


def _resolve(root, span=None):
    """What TFX's file-based driver (with this project's fingerprint) makes of the span pattern."""
    input_config = example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name=name, pattern=gen.SPAN_PATTERN)
                                                 for name in gen.SPLITS])
    exec_properties = {"input_base": str(root), "input_config": json_format.MessageToJson(input_config)}
    if span is not None:
        exec_properties["range_config"] = json_format.MessageToJson(range_config_pb2.RangeConfig(
            static_range=range_config_pb2.StaticRange(start_span_number=span, end_span_number=span)))
    driver = gen.Driver.__new__(gen.Driver)  # resolve_exec_properties reads nothing from the instance
    resolved = driver.resolve_exec_properties(exec_properties, None, None)
    patterns = json.loads(resolved["input_config"])["splits"]
    return resolved["span"], {split["pattern"] for split in patterns}, resolved["input_fingerprint"]


def test_span_numbers_lists_numbered_span_folders_only(tmp_path):
    assert data_sources.span_numbers(_span_folders(tmp_path)) == [1, 2, 10]
    assert data_sources.span_numbers(tmp_path / "span-1" / "reviews.csv") == []
    assert data_sources.span_numbers(tmp_path / "missing") == []


def test_the_newest_span_is_read_by_default(tmp_path):
    span, patterns, fingerprint = _resolve(_span_folders(tmp_path))
    assert span == 10  # numerically newest, not "span-2" > "span-10" as text
    assert patterns == {"span-10/*"}
    assert fingerprint.startswith("files:1,")


def test_a_given_span_is_read_and_fingerprinted_alone(tmp_path):
    root = _span_folders(tmp_path)
    span, patterns, fingerprint = _resolve(root, span=2)
    assert (span, patterns) == (2, {"span-2/*"})
    # Editing another span leaves this span's cache key alone; editing this one changes it.
    (root / "span-10" / "reviews.csv").write_text("text,label\n\"changed\",0\n")
    assert _resolve(root, span=2)[2] == fingerprint
    (root / "span-2" / "more.csv").write_text("text,label\n\"new\",0\n")
    assert _resolve(root, span=2)[2] != fingerprint


def test_a_span_that_does_not_exist_is_refused_before_anything_runs(tmp_path, capsys):
    root = _span_folders(tmp_path / "in")
    with pytest.raises(SystemExit, match=r"--span 3: .* has spans 1, 2, 10"):
        main(["run", "--dataset", "imdb", "--input", str(root), "--span", "3", "--output-dir", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match=r"--span 1: .* has no span-<N>/ folders"):
        main(["run", "--dataset", "imdb", "--input", str(root / "span-1" / "reviews.csv"), "--span", "1",
              "--output-dir", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


def test_a_training_window_needs_spans(tmp_path):
    with pytest.raises(SystemExit, match=r"training.spans=3 needs an input laid out as span-<N>/ folders"):
        main(["run", "--dataset", "imdb", "--input", str(_span_folders(tmp_path / "in") / "span-1" / "reviews.csv"),
              "--set", "training.spans=3", "--output-dir", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="training.spans must be >= 1"):
        configs.PipelineConfig(dataset=configs.with_overrides(configs.IMDB, {"training.spans": "0"}),
                               input_path=tmp_path, output_dir=tmp_path, input_spans=True)


def test_a_span_without_a_span_pattern_is_an_error():
    with pytest.raises(ValueError, match="has no {SPAN} pattern"):
        gen.ReviewExampleGen(input_base="/data", source="reviews.csv", eval_percent=10, test_percent=10, span=3)


# --- The drift check's measures, on statistics of synthetic spans ---

def _statistics(labels, num_chars):
    frame = pd.DataFrame({"label": labels, "num_chars": num_chars})
    return tfdv.generate_statistics_from_dataframe(frame, tfdv.StatsOptions(schema=SCHEMA))


def _drift(current, previous):
    schema = drift_check.drift_schema(SCHEMA, "label", "num_chars", label_linf=0.1, num_chars_jsd=0.1)
    return drift_check.drift_measurements(current, previous, schema)


@pytest.fixture(scope="module")
def previous_span():
    rng = np.random.default_rng(0)
    return _statistics(rng.integers(0, 2, 4000), rng.lognormal(7, 0.7, 4000).astype(int) + 10)


def test_a_span_like_the_previous_one_raises_nothing(previous_span):
    rng = np.random.default_rng(1)
    distances, findings = _drift(_statistics(rng.integers(0, 2, 4000), rng.lognormal(7, 0.7, 4000).astype(int) + 10),
                                 previous_span)
    assert findings == []
    assert distances["label"] < 0.03 and distances["num_chars"] < 0.05


def test_a_changed_label_balance_is_drift(previous_span):
    rng = np.random.default_rng(2)
    labels = (rng.random(4000) < 0.9).astype(int)
    distances, findings = _drift(_statistics(labels, rng.lognormal(7, 0.7, 4000).astype(int) + 10), previous_span)
    assert [(f.feature, f.anomaly) for f in findings] == [("label", "COMPARATOR_L_INFTY_HIGH")]
    assert distances["label"] == pytest.approx(0.4, abs=0.03)


def test_texts_of_another_length_are_drift(previous_span):
    rng = np.random.default_rng(3)
    distances, findings = _drift(_statistics(rng.integers(0, 2, 4000), rng.lognormal(4.7, 0.4, 4000).astype(int)),
                                 previous_span)
    assert [(f.feature, f.anomaly) for f in findings] == [("num_chars", "COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH")]
    assert distances["num_chars"] > 0.5


def test_oov_share_counts_the_tokens_the_vocabulary_lacks(tiny_transform):
    _, transform_output = tiny_transform
    assert drift_check.oov_share([b"good bad movie"], transform_output, "text") == 0.0
    assert drift_check.oov_share([b"good zyzzyva movie qwxp"], transform_output, "text") == pytest.approx(0.5)
    assert drift_check.oov_share([], transform_output, "text") == 0.0


def test_link_tree_publishes_the_same_files(tmp_path):
    source = tmp_path / "examples"
    (source / "Split-train").mkdir(parents=True)
    (source / "Split-train" / "data.gz").write_bytes(b"\x1f\x8bdata")
    (source / "ingestion_report.json").write_text("{}")
    validation_gate.link_tree(str(source), str(tmp_path / "validated"))
    copied = tmp_path / "validated" / "Split-train" / "data.gz"
    assert copied.read_bytes() == b"\x1f\x8bdata"
    assert copied.stat().st_ino == (source / "Split-train" / "data.gz").stat().st_ino  # a link, not a copy
    assert (tmp_path / "validated" / "ingestion_report.json").read_text() == "{}"


class _Artifact:
    def __init__(self, id, span):
        self.id, self.span = id, span


def test_the_previous_span_is_the_newest_older_validated_one():
    statistics = [_Artifact(1, 1), _Artifact(5, 2), _Artifact(9, 3), _Artifact(12, 2)]
    examples = [_Artifact(2, 1), _Artifact(6, 2), _Artifact(13, 2), _Artifact(10, 3)]
    chosen, its_examples = drift_check.previous_of(3, statistics, examples)
    assert (chosen.id, its_examples.id) == (12, 13)  # span 2, its newest validation
    # A re-run of span 3 still compares with span 2, not with its own earlier validation.
    assert drift_check.previous_of(3, statistics, examples)[0].span == 2
    assert drift_check.previous_of(1, statistics, examples) == (None, None)
    assert drift_check.previous_of(4, [], None) == (None, None)
