"""The whole pipeline on a few hundred rows of real polarity data, with ML
Metadata on a PostgreSQL server (tests/conftest.py: postgres_server), as a
shared deployment keeps it; the other end-to-end tests use the SQLite default.

Run 1 uses a gate any model clears: every component must leave its output in
ML Metadata, and the model must be blessed, pushed, and score raw strings.
Run 2 reuses the cached upstream work with an impossible gate: the model must
not be blessed, and the serving directory must keep only the first version.
Run 3 feeds data with out-of-domain labels through the command line: it must
stop before Transform, exit non-zero naming the anomaly, and push nothing.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from components import versioned_pusher
from models import features, trainer
from pipeline import configs, local_runner, model_card, run_summary
from pipeline.__main__ import main
from tests.helpers import SMALL_MODEL, real_polarity_lines, write_gz_lines

pytestmark = pytest.mark.e2e

ROWS = 400
EXPECTED_COMPONENTS = {
    "ExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator", "DataValidationGate", "Transform", "Trainer",
    "LatestBlessedModelResolver", "Evaluator", "InfraValidator", "Pusher",
}


def _real_polarity_lines(rows: int) -> list[str]:
    return real_polarity_lines(rows)


def _write(path: Path, lines: list[str]) -> Path:
    return write_gz_lines(path, lines)


def _served_entries(output_dir: Path) -> list[str]:
    """Everything in the serving directory but the Pusher's lock file and the model cards: versions, or leftovers."""
    serving = output_dir / "serving" / "sentiment-polarity"
    return sorted(p.name for p in serving.iterdir() if p.name not in (versioned_pusher.LOCK_FILE, model_card.CARDS_DIR))


@pytest.fixture(scope="module")
def small_polarity_csv(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("data") / "rt-polarity.csv.gz", _real_polarity_lines(ROWS))


def _config(input_path: Path, output_dir: Path, min_accuracy: float, metadata_uri: str) -> configs.PipelineConfig:
    dataset = configs.with_overrides(
        configs.POLARITY, {**SMALL_MODEL, "evaluation.min_accuracy": str(min_accuracy)})
    return configs.PipelineConfig(dataset=dataset, input_path=input_path, output_dir=output_dir,
                                  metadata_uri=metadata_uri)


@pytest.fixture(scope="module")
def metadata_uri(postgres_server):
    return f"{postgres_server}/mlmd_e2e"


@pytest.fixture(scope="module")
def runs(small_polarity_csv, tmp_path_factory, metadata_uri):
    output_dir = tmp_path_factory.mktemp("outputs")
    blessed_run = local_runner.run(_config(small_polarity_csv, output_dir, 0.0, metadata_uri))
    gated_run = local_runner.run(_config(small_polarity_csv, output_dir, 1.01, metadata_uri))
    return output_dir, blessed_run, gated_run


def test_the_runs_recorded_themselves_on_the_postgres_server_not_in_sqlite(runs, metadata_uri):
    output_dir, blessed_run, gated_run = runs
    assert blessed_run.metadata_uri == gated_run.metadata_uri == metadata_uri
    assert not list((output_dir / "metadata").glob("*.sqlite"))
    store = run_summary.open_store(metadata_uri)
    run_ids = {c.name for c in store.get_contexts_by_type("pipeline_run")}
    assert {blessed_run.run_id, gated_run.run_id} <= run_ids
    # Each summary describes its own run, read back from the server.
    assert run_summary.summarize_run(metadata_uri, "sentiment-polarity", blessed_run.run_id).pushed
    assert not run_summary.summarize_run(metadata_uri, "sentiment-polarity", gated_run.run_id).pushed
    assert json.loads((output_dir / "pipelines" / "sentiment-polarity" / run_summary.SUMMARY_FILE).read_text())[
        "metadata_uri"] == metadata_uri


def test_every_component_ran_and_recorded_its_outputs(runs, metadata_uri):
    output_dir, blessed_run, _ = runs
    assert {c.component for c in blessed_run.components} == EXPECTED_COMPONENTS
    assert all(c.state == "COMPLETE" for c in blessed_run.components), blessed_run.components
    store = run_summary.open_store(metadata_uri)
    types = {store.get_artifact_types_by_id([a.type_id])[0].name for a in store.get_artifacts()}
    assert {"Examples", "ExampleStatistics", "Schema", "ExampleAnomalies", "TransformGraph", "Model",
            "ModelRun", "ModelEvaluation", "ModelBlessing", "InfraBlessing", "PushedModel"} <= types
    for artifact in store.get_artifacts():
        assert Path(artifact.uri).exists(), artifact.uri
    # The raw data's statistics and anomalies come from StatisticsGen and ExampleValidator only:
    # Transform computes none of its own, and the summary points at the validator's anomalies.
    pipelines = output_dir / "pipelines"
    producers: dict[str, set[str]] = {}
    for artifact in store.get_artifacts():
        if Path(artifact.uri).is_relative_to(pipelines):  # <pipeline>/<component id>/<output>/<id>
            producers.setdefault(store.get_artifact_types_by_id([artifact.type_id])[0].name, set()).add(
                Path(artifact.uri).relative_to(pipelines).parts[1])
    assert {kind for kind, components in producers.items() if "Transform" in components} == {
        "TransformGraph", "Examples", "TransformCache"}
    assert "StatisticsGen" in producers["ExampleStatistics"]
    assert producers["ExampleAnomalies"] == {"ExampleValidator"}
    assert Path(blessed_run.anomalies_uri).relative_to(pipelines).parts[1] == "ExampleValidator"
    # Transform writes what the Trainer reads (train, eval); the Evaluator scores raw test examples.
    for transformed in (pipelines / "sentiment-polarity" / "Transform" / "transformed_examples").iterdir():
        assert sorted(p.name for p in transformed.iterdir()) == ["Split-eval", "Split-train"]


def test_the_trainer_trained_the_default_ensemble_member_by_member(runs, metadata_uri):
    output_dir, _, _ = runs
    assert configs.POLARITY.model.ensemble_size > 1  # what these runs keep from the default model
    store = run_summary.open_store(metadata_uri)
    [model_run] = [a for a in store.get_artifacts()
                   if store.get_artifact_types_by_id([a.type_id])[0].name == "ModelRun"]
    history = json.loads((Path(model_run.uri) / trainer.HISTORY_FILE).read_text())
    assert len(history["member_loss"]) == len(history["val_accuracy"]) == int(SMALL_MODEL["training.epochs"])
    assert "val_member_loss" not in history
    # After the members were trained, Naive Bayes scores were counted on train and weighted on validation.
    network, naive_bayes, _ = history["naive_bayes_stacking"]
    assert network > 0 and naive_bayes > 0


def test_splits_are_disjoint_and_cover_every_row(runs):
    output_dir, _, _ = runs
    examples_root = output_dir / "pipelines" / "sentiment-polarity" / "ExampleGen" / "examples"
    [execution_dir] = list(examples_root.iterdir())
    ids = {}
    for split in ("train", "eval", "test"):
        files = [str(p) for p in (execution_dir / f"Split-{split}").glob("*.gz")]
        records = tf.data.TFRecordDataset(files, compression_type="GZIP")
        ids[split] = [tf.train.Example.FromString(r.numpy()).features.feature[features.ID].bytes_list.value[0]
                      for r in records]
    all_ids = ids["train"] + ids["eval"] + ids["test"]
    assert len(all_ids) == len(set(all_ids)) == ROWS
    # About 80/10/10.
    assert 0.7 * ROWS < len(ids["train"]) < 0.9 * ROWS


def test_low_gate_blesses_and_pushes_a_model_that_scores_raw_strings(runs):
    output_dir, blessed_run, _ = runs
    assert blessed_run.blessed is True
    assert blessed_run.ingestion == {"rows_in": ROWS, "examples_out": ROWS, "rows_quarantined": 0,
                                     "test_texts_in_training": 0}
    assert blessed_run.pushed is True
    assert blessed_run.metrics["example_count"] > 0
    assert 0.0 <= blessed_run.metrics["binary_accuracy"] <= 1.0
    pushed = Path(blessed_run.pushed_path)
    assert pushed.parent == output_dir / "serving" / "sentiment-polarity"
    assert (pushed / "saved_model.pb").exists()

    serve = tf.saved_model.load(str(pushed)).signatures[features.SERVING_SIGNATURE]
    out = serve(text=tf.constant(["a gorgeous, witty, moving film", "dull and lifeless", ""]))
    probability = out[features.PROBABILITY].numpy()
    assert probability.shape == (3,)
    assert np.all((probability > 0) & (probability < 1))

    summary_file = output_dir / "pipelines" / "sentiment-polarity" / run_summary.SUMMARY_FILE
    assert json.loads(summary_file.read_text())["run_id"]


def test_impossible_gate_blocks_the_push_and_keeps_the_served_version(runs):
    output_dir, blessed_run, gated_run = runs
    assert gated_run.run_id != blessed_run.run_id
    assert gated_run.blessed is False
    assert gated_run.pushed is False
    assert gated_run.pushed_path is None
    states = {c.component: c.state for c in gated_run.components}
    # Upstream work is reused from run 1; only the gate and the push ran again.
    assert states["Trainer"] == "CACHED"
    assert states["Evaluator"] == "COMPLETE"
    assert _served_entries(output_dir) == [Path(blessed_run.pushed_path).name]


def test_bad_labels_stop_the_run_before_transform_and_push_nothing(runs, tmp_path, capsys, metadata_uri):
    output_dir, blessed_run, _ = runs
    lines = _real_polarity_lines(ROWS) + ["a label out of its domain,2\n"] * 3
    bad_csv = _write(tmp_path / "rt-polarity.csv.gz", lines)
    args = ["run", "--dataset", "polarity", "--input", str(bad_csv), "--output-dir", str(output_dir),
            "--metadata", metadata_uri]
    for key, value in SMALL_MODEL.items():
        args += ["--set", f"{key}={value}"]

    assert main(args) == 1
    message = capsys.readouterr().err
    assert "Data validation failed" in message
    assert "label: INT_TYPE_BIG_INT (3 example(s))" in message
    assert "Anomalies artifact: " + str(output_dir) in message
    assert "nothing was pushed" in message

    store = run_summary.open_store(metadata_uri)
    run_id = run_summary.latest_run_id(store, "sentiment-polarity")
    ran = {c.component for c in run_summary.summarize_run(
        metadata_uri, "sentiment-polarity", run_id).components}
    assert "ExampleValidator" in ran and "Transform" not in ran and "Trainer" not in ran
    assert _served_entries(output_dir) == [Path(blessed_run.pushed_path).name]


def _lineage(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(["lineage", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_lineage_follows_the_served_version_back_to_its_run_gate_training_and_data(
        runs, metadata_uri, small_polarity_csv, capsys):
    from components import review_example_gen

    output_dir, blessed_run, gated_run = runs
    args = ["--dataset", "polarity", "--output-dir", str(output_dir), "--metadata", metadata_uri]
    code, out, err = _lineage(args + ["--json"], capsys)
    assert code == 0, err
    lineage = json.loads(out)
    version = int(Path(blessed_run.pushed_path).name)
    assert lineage["version"] == version and lineage["metadata_uri"] == metadata_uri
    # The run that pushed it, not the later gated run that reused its Trainer from the cache.
    assert lineage["run_id"] == blessed_run.run_id != gated_run.run_id
    assert lineage["pusher"]["pushed_model"]["destination"] == blessed_run.pushed_path
    assert lineage["pusher"]["execution"]["state"] == "COMPLETE"
    assert lineage["infra_validator"]["blessing"]["blessed"] is True

    evaluator = lineage["evaluator"]
    assert evaluator["blessing"]["blessed"] is True
    assert evaluator["metrics"] == blessed_run.metrics
    accuracy = next(t for t in evaluator["thresholds"] if t["metric"] == "binary_accuracy")
    assert accuracy["value"] == {"lower_bound": 0.0} and accuracy["slices"] == ["overall"]
    assert accuracy["change"] == {"direction": "HIGHER_IS_BETTER",
                                  "absolute": -configs.POLARITY.evaluation.max_accuracy_drop}
    assert evaluator["baseline_model"] is None  # the first blessed model had nothing to be compared with

    trainer_ = lineage["trainer"]
    assert trainer_["execution"]["run_id"] == blessed_run.run_id and trainer_["execution"]["state"] == "COMPLETE"
    assert trainer_["models_fingerprint"] == configs.models_fingerprint()
    assert trainer_["model"]["uri"] == blessed_run.model_uri
    hyper = trainer_["hyperparameters"]
    assert (hyper["epochs"], hyper["batch_size"]) == (int(SMALL_MODEL["training.epochs"]),
                                                      int(SMALL_MODEL["training.batch_size"]))
    assert hyper["model"]["embedding_dim"] == int(SMALL_MODEL["model.embedding_dim"])
    assert hyper["model"]["rnn_units"] == int(SMALL_MODEL["model.rnn_units"])
    assert trainer_["model_run"]["epochs_run"] == blessed_run.epochs_run
    assert lineage["transform"]["transform_graph"]["vocabulary_size"] > 0

    [examples] = lineage["examples"]
    assert examples["execution"]["component"] == "ExampleGen"
    assert set(examples["split_names"]) == set(examples["split_counts"]) == {"train", "eval", "test"}
    assert sum(examples["split_counts"].values()) == examples["ingestion"]["rows_in"] == ROWS
    assert examples["ingestion"] == blessed_run.ingestion
    assert examples["input_fingerprint"] == review_example_gen.source_fingerprint([str(small_polarity_csv)])
    assert Path(examples["ingestion_report"]).is_file()

    code, text, err = _lineage(args, capsys)
    assert code == 0, err
    counts = examples["split_counts"]
    for expected in (f"Served version {version}", f"pipeline run: {blessed_run.run_id}",
                     f"ModelBlessing {evaluator['blessing']['id']}: blessed",
                     f"binary_accuracy={blessed_run.metrics['binary_accuracy']:.4f}",
                     "threshold: binary_accuracy [overall]: >= 0, change from baseline absolute -",
                     f"models fingerprint: {configs.models_fingerprint()}",
                     f"splits: train={counts['train']}, eval={counts['eval']}, test={counts['test']}",
                     f"rows_in={ROWS}", f"input fingerprint: {examples['input_fingerprint']}"):
        assert expected in text, (expected, text)
    assert len(text.splitlines()) < 60


def test_lineage_of_an_unknown_version_exits_2_naming_the_served_ones(runs, metadata_uri, capsys):
    output_dir, blessed_run, _ = runs
    code, out, err = _lineage(["--dataset", "polarity", "--output-dir", str(output_dir), "--metadata", metadata_uri,
                               "--version", "99"], capsys)
    assert code == 2 and not out
    assert "no version 99 under" in err and Path(blessed_run.pushed_path).name in err
    assert "Traceback" not in err


def test_lineage_from_a_store_that_never_saw_the_push_exits_2_naming_the_store(runs, tmp_path, capsys):
    from pipeline import metadata_store

    output_dir, blessed_run, _ = runs
    other = tmp_path / "other.sqlite"
    metadata_store.connect(other)  # an empty store
    version = Path(blessed_run.pushed_path).name
    code, out, err = _lineage(["--dataset", "polarity", "--output-dir", str(output_dir), "--metadata", str(other),
                               "--version", version], capsys)
    assert code == 2 and not out
    assert f"no push of {blessed_run.pushed_path} is recorded" in err and str(other) in err
    assert "Traceback" not in err
