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
    ("sources", "x", "cannot be set from the command line"),
    ("max_len.x", "1", "has no fields"),
])
def test_bad_overrides_fail_with_a_clear_message(key, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        configs.with_overrides(configs.POLARITY, {key: value})


def test_pipeline_names_are_valid_kubeflow_names_and_paths_derive_from_output_dir(tmp_path):
    config = configs.PipelineConfig(dataset=configs.IMDB, input_path=tmp_path / "data.csv", output_dir=tmp_path)
    assert config.pipeline_name == "sentiment-imdb"
    assert config.pipeline_root == tmp_path / "pipelines" / "sentiment-imdb"
    assert config.metadata_path.parent == tmp_path / "metadata"
    assert config.serving_dir == tmp_path / "serving" / "sentiment-imdb"


def test_every_dataset_has_a_schema_and_sensible_split_percentages():
    for dataset in configs.DATASETS.values():
        assert (dataset.schema_dir / "schema.pbtxt").exists()
        assert 0 < dataset.eval_percent and 0 < dataset.test_percent
        assert dataset.eval_percent + dataset.test_percent < 50


def test_cli_defaults_to_polarity_and_rejects_unknown_datasets(capsys):
    assert make_parser().parse_args(["run"]).dataset == "polarity"
    with pytest.raises(SystemExit):
        make_parser().parse_args(["run", "--dataset", "yelp"])
    assert "invalid choice: 'yelp'" in capsys.readouterr().err


def test_models_fingerprint_follows_the_transform_and_trainer_code(tmp_path, monkeypatch):
    (tmp_path / "trainer.py").write_text("EPOCHS = 1\n")
    monkeypatch.setattr(configs, "MODELS_ROOT", tmp_path)
    before = configs.models_fingerprint()
    assert configs.models_fingerprint() == before
    (tmp_path / "trainer.py").write_text("EPOCHS = 2\n")
    changed = configs.models_fingerprint()
    assert changed != before
    assert configs.transform_custom_config(configs.POLARITY)["models_fingerprint"] == changed
    assert configs.trainer_hyperparameters(configs.POLARITY)["models_fingerprint"] == changed


def test_thread_settings_become_tensorflow_environment_variables():
    assert configs.tf_thread_environment(configs.TrainingConfig()) == {}
    env = configs.tf_thread_environment(configs.TrainingConfig(intra_op_threads=1, inter_op_threads=2))
    assert env == {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "2"}


def test_pretrained_vocabulary_needs_pretrained_vectors():
    broken = configs.with_overrides(configs.POLARITY, {"model.pretrained_embeddings": "",
                                                       "pretrained_vocabulary": "1000"})
    with pytest.raises(ValueError, match="pretrained_vocabulary needs model.pretrained_embeddings"):
        configs.transform_custom_config(broken)


def test_naive_bayes_stacking_and_platt_scaling_are_not_combined():
    both = configs.with_overrides(configs.IMDB, {"training.calibrate_logit": "true"})
    assert configs.IMDB.training.naive_bayes_ngrams  # the default stacks n-gram scores
    with pytest.raises(ValueError, match="imdb: training.naive_bayes_ngrams .* turn training.calibrate_logit off"):
        configs.trainer_hyperparameters(both)
    platt_only = configs.with_overrides(both, {"training.naive_bayes_ngrams": "0"})
    assert configs.trainer_hyperparameters(platt_only)["training"]["calibrate_logit"] is True


def test_example_gen_fingerprint_follows_the_parsing_code(tmp_path, monkeypatch):
    for name in ("review_example_gen.py", "review_sources.py"):
        (tmp_path / name).write_text("# v1\n")
    monkeypatch.setattr(configs, "COMPONENTS_ROOT", tmp_path)
    before = configs.example_gen_fingerprint()
    assert configs.example_gen_fingerprint() == before
    (tmp_path / "review_sources.py").write_text("# v2: a parser fix\n")
    assert configs.example_gen_fingerprint() != before
