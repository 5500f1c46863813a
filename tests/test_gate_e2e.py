"""The model gate, end to end, on the first rows of the real polarity data.

Three runs share one output directory (ExampleGen ... Transform run once and are
cached after):
1. a baseline model: blessed by the Evaluator and the InfraValidator, pushed;
2. a deliberately broken candidate (trained on shuffled labels): the Evaluator
   does not bless it, nothing is pushed, and the baseline stays the served version;
3. a better candidate (trained longer): blessed against the baseline, pushed, and
   now the highest (served) version.
The third gate test, a candidate whose signature crashes on an empty string,
is in tests/test_infra_validator.py (it needs no training).
"""

import gzip
import json
import os
from pathlib import Path

import pytest
import tensorflow as tf

from components import infra_validator, versioned_pusher
from models import features
from pipeline import configs, data_sources, local_runner, model_card, run_summary

pytestmark = pytest.mark.e2e

ROWS = 2000
COMMON = {
    # Random 16-d embeddings and no pretraining: these runs test the pipeline, not the vectors.
    "pretraining.enabled": "false",
    "pretrained_vocabulary": "0",
    "model.pretrained_embeddings": "",
    "training.batch_size": "32",
    "model.embedding_dim": "16",
    "model.rnn_units": "16",
    "model.attention_units": "16",
    "model.dense_units": "16",
    "training.early_stopping_patience": "3",
    # Two short epochs are too few steps for a weight average to move far from the start.
    "training.weight_averaging": "0",
    # The gate's thresholds were set with this model; word dropout and the ensemble are tested on their own.
    "model.token_dropout": "0",
    "model.ensemble_size": "1",
    # A real absolute gate for this much data, and the change gate against the last blessed model.
    "evaluation.min_accuracy": "0.56",
    "evaluation.max_accuracy_drop": "0.01",
}
BASELINE = {**COMMON, "training.epochs": "2"}
BROKEN = {**COMMON, "training.epochs": "2", "training.shuffle_labels": "true"}
BETTER = {**COMMON, "training.epochs": "6"}


def _small_polarity(tmp_path_factory) -> Path:
    try:
        data_dir = Path(os.environ.get(data_sources.DATA_DIR_ENV) or data_sources.SHARED_DATA_DIR)
        with gzip.open(data_dir / "polarity" / "rt-polarity.csv.gz", "rt", encoding="utf-8") as f:
            lines = [next(f) for _ in range(ROWS + 1)]
    except OSError as error:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"real data not available: {error}")
    path = tmp_path_factory.mktemp("gate-data") / "rt-polarity.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(lines)
    return path


def _config(data: Path, output_dir: Path, overrides: dict) -> configs.PipelineConfig:
    dataset = configs.with_overrides(configs.POLARITY, overrides)
    return configs.PipelineConfig(dataset=dataset, input_path=data, output_dir=output_dir)


def _versions(output_dir: Path) -> list[str]:
    serving = output_dir / "serving" / "sentiment-polarity"
    return sorted((p.name for p in serving.iterdir() if p.name.isdigit()), key=int)


@pytest.fixture(scope="module")
def gate_runs(tmp_path_factory):
    data = _small_polarity(tmp_path_factory)
    output_dir = tmp_path_factory.mktemp("gate-outputs")
    runs = {}
    for name, overrides in (("baseline", BASELINE), ("broken", BROKEN), ("better", BETTER)):
        runs[name] = local_runner.run(_config(data, output_dir, overrides))
        runs[name + "_versions"] = _versions(output_dir)
        runs[name + "_listing"] = sorted(p.name for p in (output_dir / "serving" / "sentiment-polarity").iterdir()
                                         if p.name not in (versioned_pusher.LOCK_FILE, model_card.CARDS_DIR))
        print(f"{name}: blessed={runs[name].blessed} pushed={runs[name].pushed_path} "
              f"accuracy={runs[name].metrics.get('binary_accuracy')}", flush=True)
    runs["output_dir"] = output_dir
    return runs


def _infra_blessed(summary: run_summary.RunSummary, output_dir: Path) -> bool:
    store = run_summary.open_store(output_dir / "metadata" / "sentiment-polarity.sqlite")
    run = store.get_context_by_type_and_name("pipeline_run", summary.run_id)
    for execution in store.get_executions_by_context(run.id):
        for artifact in run_summary._output_artifacts(store, execution.id):
            if run_summary._artifact_type(store, artifact) == "InfraBlessing":
                return artifact.custom_properties["blessed"].int_value == 1
    raise AssertionError("no InfraBlessing in the run")


def test_baseline_is_blessed_by_both_validators_and_pushed(gate_runs):
    baseline, output_dir = gate_runs["baseline"], gate_runs["output_dir"]
    assert baseline.blessed is True
    assert _infra_blessed(baseline, output_dir)
    assert baseline.pushed is True
    assert gate_runs["baseline_versions"] == [Path(baseline.pushed_path).name]
    # No temporary directory is left behind by the atomic push.
    assert gate_runs["baseline_listing"] == [Path(baseline.pushed_path).name]


def test_broken_candidate_is_not_pushed_and_the_previous_version_stays_served(gate_runs):
    baseline, broken = gate_runs["baseline"], gate_runs["broken"]
    states = {c.component: c.state for c in broken.components}
    assert states["Trainer"] == "COMPLETE"  # really a new model, not the cached one
    assert broken.model_uri != baseline.model_uri
    # It loads and answers (infra-blessed): it is the model gate that stops it.
    assert _infra_blessed(broken, gate_runs["output_dir"])
    assert broken.metrics["binary_accuracy"] < baseline.metrics["binary_accuracy"] - 0.01
    assert broken.blessed is False
    assert broken.pushed is False and broken.pushed_path is None
    assert gate_runs["broken_versions"] == gate_runs["baseline_versions"]


def test_better_candidate_is_pushed_and_becomes_the_served_version(gate_runs):
    baseline, better = gate_runs["baseline"], gate_runs["better"]
    assert better.metrics["binary_accuracy"] >= baseline.metrics["binary_accuracy"] - 0.01
    assert better.blessed is True
    assert better.pushed is True
    versions = gate_runs["better_versions"]
    assert versions == [Path(baseline.pushed_path).name, Path(better.pushed_path).name]
    assert gate_runs["better_listing"] == versions  # no temporary directory left behind
    assert int(versions[-1]) > int(versions[0])
    served = tf.saved_model.load(better.pushed_path).signatures[features.SERVING_SIGNATURE]
    out = served(text=tf.constant(["a gorgeous, witty, moving film", ""]))
    assert out[features.PROBABILITY].shape == (2,)


def test_infra_validation_result_lists_every_canary(gate_runs):
    output_dir = gate_runs["output_dir"]
    results = list((output_dir / "pipelines" / "sentiment-polarity" / "InfraValidator").rglob(
        infra_validator.RESULT_FILE))
    assert results
    result = json.loads(results[0].read_text())
    assert result["blessed"] is True, result["failures"]
    assert set(result["checks"]) == set(infra_validator.CANARIES)
    assert result["checks"]["empty"]["length"] == 0
    assert result["checks"]["20k_chars"]["length"] > 0


def test_sliced_metrics_by_length_bucket_and_no_source_slice_for_one_file(gate_runs):
    import tensorflow_model_analysis as tfma

    better = gate_runs["better"]
    slices = {}
    for sliced in tfma.load_metrics(better.evaluation_uri):
        key = tuple((k.column, k.bytes_value.decode() if k.HasField("bytes_value") else None)
                    for k in sliced.slice_key.single_slice_keys)
        counts = [item.value.double_value.value for item in sliced.metric_keys_and_values
                  if item.key.name == "example_count" and item.key.model_name in ("", "candidate")]
        slices[key] = counts[0]
    overall = slices[()]
    by_length = {v: n for k, n in slices.items() for c, v in k if c == "length_bucket"}
    by_source = {v: n for k, n in slices.items() for c, v in k if c == "source"}
    # One input file: every example has the same source, whose slice would repeat the overall one.
    assert by_source == {}
    assert set(by_length) <= {"0-63", "64-127", "128-255", "256-1023"} and len(by_length) >= 2
    assert sum(by_length.values()) == overall


def test_every_run_writes_a_report_that_renders(gate_runs):
    from pipeline import report

    better = gate_runs["better"]
    page = Path(better.report_path)
    assert page.name == report.REPORT_FILE and page.exists()
    text = page.read_text(encoding="utf-8")
    assert "length_bucket=" in text and "source=rt-polarity.csv.gz" not in text  # one input file
    pngs = sorted(page.parent.glob("*.png"))
    assert {"training_curves.png", "confusion_matrix.png", "slices.png", "text_length.png",
            "trajectory_0.png"} <= {p.name for p in pngs}
    for png in pngs:
        assert not report.image_is_blank(png), png
    if Path(report.CHROMIUM).exists():
        shot = report.screenshot(page, page.parent.parent / "report_screenshot.png")
        assert not report.image_is_blank(shot)


def test_each_pushed_version_has_a_model_card_with_its_run_metrics_and_gate(gate_runs):
    cards = gate_runs["output_dir"] / "serving" / "sentiment-polarity" / model_card.CARDS_DIR
    baseline, better = gate_runs["baseline"], gate_runs["better"]
    for run in (baseline, better):
        version = Path(run.pushed_path).name
        card = json.loads((cards / f"{version}.json").read_text())
        assert card["model_details"]["version"]["name"] == version
        overall = {m["type"]: m["value"] for m in card["quantitative_analysis"]["performance_metrics"]
                   if m["slice"] == "Overall"}
        for metric in ("binary_accuracy", "auc", "example_count"):
            assert overall[metric] == pytest.approx(run.metrics[metric], abs=1e-9), metric
        gate = card["evaluation_gate"]
        assert gate["blessed"] is True and gate["infra_blessed"] is True
        min_accuracy = float(COMMON["evaluation.min_accuracy"])
        assert gate["thresholds"]["binary_accuracy"]["lower_bound"] == pytest.approx(min_accuracy)
        assert f"# Model card: sentiment-polarity, version {version}" in (cards / f"{version}.md").read_text()
    # The first model had no baseline; the second was compared with the first.
    assert json.loads((cards / f"{Path(baseline.pushed_path).name}.json").read_text())["evaluation_gate"][
        "baseline"] is None
    compared = json.loads((cards / f"{Path(better.pushed_path).name}.json").read_text())["evaluation_gate"]["baseline"]
    assert Path(baseline.pushed_path).name in json.dumps(compared)
