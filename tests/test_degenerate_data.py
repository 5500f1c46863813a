"""Data that would train a meaningless model stops the run, with one clear message.

A header-only input stops at ExampleGen (not in the Trainer minutes later);
a split missing a class, or with a class below min_label_share, is stopped by
the validation gate; and the Evaluator's gate never blesses on a test split
where AUC is 0 or undefined, whatever min_auc is set to.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import pytest
import tensorflow_data_validation as tfdv

from components import review_example_gen as gen
from components import validation_gate
from pipeline import configs
from pipeline import pipeline as pipeline_module
from pipeline.__main__ import main

POLARITY_SCHEMA = tfdv.load_schema_text(str(configs.POLARITY.schema_dir / "schema.pbtxt"))


def _csv(path: Path, rows: list[tuple[str, int]]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("text,label\n")
        f.writelines(f'"{text}",{label}\n' for text, label in rows)
    return path


def _run_cli(input_path: Path, output_dir: Path, *extra: str) -> int:
    return main(["run", "--dataset", "polarity", "--input", str(input_path), "--output-dir", str(output_dir),
                 "--set", "pretrained_vocabulary=0", "--set", "model.pretrained_embeddings=",
                 "--set", "pretraining.enabled=false", *extra])


def test_a_header_only_file_stops_at_ingestion_naming_the_empty_splits(tmp_path):
    source = _csv(tmp_path / "reviews.csv.gz", [])
    with pytest.raises(gen.EmptySplitError, match=r"reviews\.csv\.gz: no examples in the train and eval and "
                                                  r"test split\(s\) \(0 rows read"):
        gen.ingest(str(source), str(tmp_path / "examples"))


def test_one_empty_split_is_enough_to_stop(tmp_path):
    # Two rows cannot fill three splits.
    source = _csv(tmp_path / "reviews.csv.gz", [("a fine film", 1), ("a poor film", 0)])
    with pytest.raises(gen.EmptySplitError, match=r"no examples in the .*split\(s\) \(2 rows read"):
        gen.ingest(str(source), str(tmp_path / "examples"))


def test_header_only_input_ends_the_cli_run_with_one_clear_paragraph(tmp_path, capsys):
    assert _run_cli(_csv(tmp_path / "reviews.csv.gz", []), tmp_path / "out") == 1
    err = capsys.readouterr().err.strip()
    assert "no examples in the train and eval and test split(s)" in err
    assert "nothing was pushed" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "pipelines" / "sentiment-polarity" / "Transform").exists()


@pytest.mark.parametrize("counts, expected", [
    ({0: 50, 1: 50}, []),
    ({1: 100}, [("LABEL_CLASS_MISSING", 0)]),
    ({0: 5, 1: 95}, [("LABEL_SHARE_OUT_OF_BOUNDS", 5)]),
    ({0: 10, 1: 90}, []),  # exactly at the bound is allowed
])
def test_label_findings_name_the_missing_or_rare_class(counts, expected):
    findings = validation_gate.label_findings(counts, [0, 1], 0.1, "test", "label")
    assert [(f.anomaly, f.examples) for f in findings] == expected
    for finding in findings:
        assert finding.feature == "label" and finding.split == "test"
        assert "class 0" in finding.description


def test_label_counts_come_from_tfdv_statistics_and_classes_from_the_schema(tmp_path):
    source = _csv(tmp_path / "reviews.csv.gz", [(f"review {i}", 1) for i in range(30)])
    gen.ingest(str(source), str(tmp_path / "examples"), require_every_split=False)
    pattern = str(tmp_path / "examples" / "Split-train" / "*")
    with pytest.raises(ValueError, match="not categorical"):
        validation_gate.label_counts(tfdv.generate_statistics_from_tfrecord(pattern).datasets[0], "label")
    stats = tfdv.generate_statistics_from_tfrecord(pattern, stats_options=tfdv.StatsOptions(schema=POLARITY_SCHEMA))
    counts = validation_gate.label_counts(stats.datasets[0], "label")
    assert set(counts) == {1} and counts[1] > 15
    assert validation_gate.label_classes(POLARITY_SCHEMA, "label") == [0, 1]


def test_a_one_class_dataset_is_stopped_before_training(tmp_path, capsys):
    source = _csv(tmp_path / "reviews.csv.gz", [(f"a review of film number {i}", 1) for i in range(60)])
    assert _run_cli(source, tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "label: LABEL_CLASS_MISSING (0 example(s)) - no example of class 0" in err
    assert "[test] label: LABEL_CLASS_MISSING" in err and "[train] label: LABEL_CLASS_MISSING" in err
    assert not (tmp_path / "out" / "pipelines" / "sentiment-polarity" / "Trainer").exists()
    assert not (tmp_path / "out" / "serving").exists()


def _validate(eval_config, auc: float, accuracy: float = 1.0):
    from tensorflow_model_analysis.evaluators import metrics_validator
    from tensorflow_model_analysis.metrics import metric_specs

    thresholds = metric_specs.metric_thresholds_from_metrics_specs(eval_config.metrics_specs,
                                                                   eval_config=eval_config)
    metrics = {key: (auc if key.name == "auc" else accuracy) for key in thresholds if not key.is_diff}
    metrics.update({key: 0.0 for key in thresholds if key.is_diff})
    return metrics_validator.validate_metrics(((), metrics), eval_config)


@pytest.mark.parametrize("min_auc", [0.5, 0.0])
def test_the_evaluator_never_blesses_an_auc_of_zero_or_nan(min_auc):
    dataset = configs.with_overrides(configs.POLARITY, {"evaluation.min_auc": str(min_auc),
                                                        "evaluation.min_accuracy": "0"})
    eval_config = pipeline_module.make_eval_config(dataset)
    assert _validate(eval_config, auc=0.9).validation_ok
    for undefined in (0.0, math.nan):
        result = _validate(eval_config, auc=undefined)
        assert not result.validation_ok
        assert "auc" in str(result.metric_validations_per_slice)
