"""Typed overrides: values parsed to the field's type, typos rejected; the typed configs the Trainer
rebuilds from custom_config; the command line's dispatch and shared options."""

import dataclasses
import importlib
import json

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
    ("pretraining", "x", "cannot be set from the command line"),
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


def test_the_trainer_warns_about_thread_settings_only_when_they_did_not_apply(monkeypatch, caplog):
    import tensorflow as tf

    from models import trainer

    tf.constant(1.0) + 1.0  # the runtime is up: the pools can no longer be resized
    training = configs.TrainingConfig(intra_op_threads=1, inter_op_threads=2)
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "1")  # as the local runner sets them before TensorFlow starts
    monkeypatch.setenv("TF_NUM_INTEROP_THREADS", "2")
    with caplog.at_level("WARNING"):
        trainer.apply_thread_settings(training)
    assert "already running" not in caplog.text
    monkeypatch.delenv("TF_NUM_INTEROP_THREADS")
    with caplog.at_level("WARNING"):
        trainer.apply_thread_settings(training)
    assert "inter-op threads" in caplog.text and "set TF_NUM_INTEROP_THREADS before TensorFlow starts" in caplog.text
    assert "intra-op" not in caplog.text


def test_pretrained_vocabulary_needs_pretrained_vectors():
    with pytest.raises(ValueError, match="polarity: pretrained_vocabulary=1000 needs model.pretrained_embeddings"):
        configs.with_overrides(configs.POLARITY, {"model.pretrained_embeddings": "", "pretrained_vocabulary": "1000"})
    with pytest.raises(ValueError, match="pretrained_vocabulary=100000 needs model.pretrained_embeddings"):
        dataclasses.replace(configs.POLARITY,
                            model=dataclasses.replace(configs.POLARITY.model, pretrained_embeddings=""))
    with pytest.raises(ValueError, match="pretrained_vocabulary=5 needs model.pretrained_embeddings"):
        configs.TrainerConfig.from_custom_config({"pretrained_vocabulary": 5, "vocab_size": 100})


def test_naive_bayes_stacking_and_platt_scaling_are_not_combined():
    assert configs.IMDB.training.naive_bayes_ngrams  # the default stacks n-gram scores
    message = r"training.naive_bayes_ngrams=\d already fits the logit's scale .* turn calibrate_logit off"
    # Checked by TrainingConfig.__post_init__, so every way of building one is checked.
    with pytest.raises(ValueError, match=message):
        configs.with_overrides(configs.IMDB, {"training.calibrate_logit": "true"})
    with pytest.raises(ValueError, match=message):
        configs.TrainingConfig(naive_bayes_ngrams=2, calibrate_logit=True)
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(configs.IMDB.training, calibrate_logit=True)
    with pytest.raises(ValueError, match=message):
        configs.TrainerConfig.from_custom_config({"training": {"naive_bayes_ngrams": 2, "calibrate_logit": True}})
    # The overrides are judged together, whatever their order.
    for overrides in ({"training.calibrate_logit": "true", "training.naive_bayes_ngrams": "0",
                       "training.naive_bayes_logistic": "false"},
                      {"training.naive_bayes_ngrams": "0", "training.naive_bayes_logistic": "false",
                       "training.calibrate_logit": "true"}):
        platt_only = configs.with_overrides(configs.IMDB, overrides)
        assert configs.trainer_hyperparameters(platt_only)["training"]["calibrate_logit"] is True


@pytest.mark.parametrize("make, message", [
    (lambda: configs.TrainingConfig(early_stopping_monitor="auc"), r"training.early_stopping_monitor 'auc' is not"),
    (lambda: configs.TrainingConfig(lr_schedule="cosine"), r"training.lr_schedule 'cosine' is not"),
    (lambda: configs.TrainingConfig(spans=0), r"training.spans must be >= 1, got 0"),
    (lambda: configs.TrainingConfig(length_multiple=0), r"training.length_multiple must be >= 1, got 0"),
    (lambda: configs.ModelConfig(ensemble_size=0), r"model.ensemble_size must be >= 1, got 0"),
    (lambda: configs.TrainerConfig.from_custom_config({"training": {"epoch": 2}}),
     r"unknown TrainingConfig field\(s\) 'epoch'"),
])
def test_inconsistent_configs_are_rejected_when_built(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("name", sorted(configs.DATASETS))
def test_the_trainers_custom_config_round_trips_to_the_typed_config(name):
    dataset = configs.DATASETS[name]
    custom_config = configs.trainer_hyperparameters(dataset)
    # The shape TFX's cache key and the lineage command read: unchanged.
    assert list(custom_config) == ["dataset", "max_len", "vocab_size", "pretrained_vocabulary", "models_fingerprint",
                                   "model", "training"] + (["pretrained_reader"] if dataset.pretraining.enabled else [])
    assert custom_config["training"] == dataclasses.asdict(dataset.training)
    # What the Trainer gets back is JSON (TFX serializes custom_config).
    typed = configs.TrainerConfig.from_custom_config(json.loads(json.dumps(custom_config)))
    assert typed == configs.TrainerConfig.of(dataset)
    assert (typed.model, typed.training) == (dataset.model, dataset.training)
    assert (typed.vocab_size, typed.pretrained_vocabulary, typed.max_len) == (
        dataset.vocab_size, dataset.pretrained_vocabulary, dataset.max_len)
    assert typed.to_custom_config() == custom_config
    assert configs.ModelConfig.from_dict(dataclasses.asdict(dataset.model)) == dataset.model


def test_a_partial_custom_config_takes_the_config_defaults_once():
    typed = configs.TrainerConfig.from_custom_config({"training": {"early_stopping_patience": 5, "clipnorm": 2}})
    assert typed.training == configs.TrainingConfig(early_stopping_patience=5, clipnorm=2.0)
    assert isinstance(typed.training.clipnorm, float)  # an int in JSON is still a float field
    assert typed.model == configs.ModelConfig()
    assert configs.TrainerConfig.from_custom_config({}) == configs.TrainerConfig()


# Every subcommand with the fewest arguments it parses with, and the function that runs it.
COMMAND_LINES = {
    "run": (["run"], "pipeline.__main__.run_command"),
    "compile": (["compile", "--target", "kubeflow", "--image", "i:1", "--pipeline-root", "gs://b/p",
                 "--data-root", "gs://b/d", "--serving-root", "gs://b/s"],
                "pipeline.kubeflow_v2_runner.compile_command"),
    "predict": (["predict", "a text"], "pipeline.predict.predict_command"),
    "serve": (["serve"], "pipeline.serve.serve_command"),
    "monitor": (["monitor"], "pipeline.monitor.monitor_command"),
    "make-spans": (["make-spans", "--spans", "2", "--out", "o"], "pipeline.spans.make_spans_command"),
    "score": (["score", "--input", "i.csv", "--out", "o"], "pipeline.bulk_inference.score_command"),
    "lineage": (["lineage"], "pipeline.lineage.lineage_command"),
}


def test_every_subcommand_dispatches_to_its_function():
    parser = make_parser()
    (commands,) = [action for action in parser._actions if action.choices and action.dest == "command"]
    assert set(commands.choices) == set(COMMAND_LINES)
    for name, (argv, func) in COMMAND_LINES.items():
        args = parser.parse_args(argv)
        assert args.command == name
        module, _, function = func.rpartition(".")
        assert args.func is getattr(importlib.import_module(module), function), name


@pytest.mark.parametrize("command", ["run", "predict", "serve"])
def test_commands_share_the_overrides_option(command):
    argv = COMMAND_LINES[command][0] + ["--set", "training.epochs=2", "--set", "serving.max_instances=8"]
    args = make_parser().parse_args(argv)
    assert args.set == ["training.epochs=2", "serving.max_instances=8"]
    dataset = configs.dataset_of(args)
    assert (dataset.training.epochs, dataset.serving.max_instances) == (2, 8)


def test_predict_and_serve_find_the_serving_directory_the_pipeline_pushes_to(tmp_path, monkeypatch, capsys):
    from pipeline import predict, serve

    out = tmp_path / "out"
    argv = ["--dataset", "imdb", "--output-dir", str(out), "--set", "training.epochs=2"]
    pushed_to = configs.PipelineConfig(dataset=configs.with_overrides(configs.IMDB, {"training.epochs": "2"}),
                                       input_path=tmp_path / "data.csv", output_dir=out).serving_dir
    assert pushed_to == out / "serving" / "sentiment-imdb"
    assert configs.serving_dir_of(make_parser().parse_args(["predict", "x", *argv])) == pushed_to

    # predict: no version pushed there yet, and it says where it looked.
    assert predict.predict_command(make_parser().parse_args(["predict", "a text", *argv])) == 1
    assert f"no SavedModel and no pushed version under {pushed_to}" in capsys.readouterr().err
    # A bad override is an error, not a default directory.
    assert predict.predict_command(make_parser().parse_args(["predict", "a text", "--set", "training.epoch=2"])) == 2
    assert "unknown config field 'training.epoch'" in capsys.readouterr().err

    class Opened(Exception):
        pass

    opened = []

    def repository(base, poll_seconds):
        opened.append((base, poll_seconds))
        raise Opened

    monkeypatch.setattr(serve, "ModelRepository", repository)
    with pytest.raises(Opened):
        serve.serve_command(make_parser().parse_args(["serve", *argv, "--set", "serving.poll_seconds=7"]))
    assert opened[-1] == (pushed_to, 7.0)
    # --model-base-dir still wins.
    with pytest.raises(Opened):
        serve.serve_command(make_parser().parse_args(["serve", *argv, "--model-base-dir", str(tmp_path / "elsewhere")]))
    assert opened[-1][0] == tmp_path / "elsewhere"
    assert serve.serve_command(make_parser().parse_args(["serve", "--set", "serving.poll_second=1"])) == 2
    assert "unknown config field 'serving.poll_second'" in capsys.readouterr().err


def test_example_gen_fingerprint_follows_the_parsing_code(tmp_path, monkeypatch):
    for name in ("review_example_gen.py", "review_sources.py"):
        (tmp_path / name).write_text("# v1\n")
    monkeypatch.setattr(configs, "COMPONENTS_ROOT", tmp_path)
    before = configs.example_gen_fingerprint()
    assert configs.example_gen_fingerprint() == before
    (tmp_path / "review_sources.py").write_text("# v2: a parser fix\n")
    assert configs.example_gen_fingerprint() != before
