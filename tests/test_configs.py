"""Typed overrides: values parsed to the field's type, typos rejected."""

import pytest

from pipeline import configs
from pipeline.__main__ import make_parser


def test_overrides_parse_to_field_types_and_leave_the_original_alone():
    changed = configs.with_overrides(configs.IMDB, {
        "training.epochs": "2", "model.bidirectional": "false", "max_len": "128",
        "training.learning_rate": "0.01", "evaluation.min_accuracy": "0.5",
    })
    assert changed.training.epochs == 2
    assert changed.model.bidirectional is False
    assert changed.max_len == 128
    assert changed.training.learning_rate == 0.01
    assert changed.evaluation.min_accuracy == 0.5
    assert configs.IMDB.training.epochs != 2 or configs.IMDB.max_len != 128


@pytest.mark.parametrize("key, value, message", [
    ("training.epoch", "2", "unknown config field 'training.epoch'"),
    ("training.epochs", "two", "training.epochs='two' is not a valid int"),
    ("model.bidirectional", "maybe", "is not a valid bool"),
    ("splits", "x", "cannot be set from the command line"),
    ("max_len.x", "1", "has no fields"),
])
def test_bad_overrides_fail_with_a_clear_message(key, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        configs.with_overrides(configs.POLARITY, {key: value})


def test_pipeline_names_are_valid_kubeflow_names_and_paths_derive_from_output_dir(tmp_path):
    config = configs.PipelineConfig(dataset=configs.IMDB, data_dir=tmp_path / "data", output_dir=tmp_path)
    assert config.pipeline_name == "sentiment-imdb"
    assert config.pipeline_root == tmp_path / "pipelines" / "sentiment-imdb"
    assert config.metadata_path.parent == tmp_path / "metadata"
    assert config.serving_dir == tmp_path / "serving" / "sentiment-imdb"


def test_split_bucket_ranges_partition_every_dataset():
    for dataset in configs.DATASETS.values():
        by_source = {}
        for split in dataset.splits:
            by_source.setdefault(split.source, []).append(split.buckets)
        for ranges in by_source.values():
            covered = sorted(b for lo, hi in ranges for b in range(lo, hi))
            assert covered == list(range(configs.NUM_SPLIT_BUCKETS)), dataset.name
        assert {dataset.train_split, dataset.eval_split, dataset.test_split} == {s.name for s in dataset.splits}
        assert (dataset.schema_dir / "schema.pbtxt").exists()


def test_cli_defaults_to_polarity_and_rejects_unknown_datasets(capsys):
    assert make_parser().parse_args(["run"]).dataset == "polarity"
    with pytest.raises(SystemExit):
        make_parser().parse_args(["run", "--dataset", "yelp"])
    assert "invalid choice: 'yelp'" in capsys.readouterr().err
