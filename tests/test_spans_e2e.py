"""Two small spans through the real pipeline: the newest span is read, the rolling
window trains on both, the second run starts warm from the first blessed model, the
newest span's test split is evaluated, and a drifted third span is stopped at the gate.

The spans are consecutive slices of the real polarity data (600 rows each).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import configs, local_runner, run_summary
from pipeline.__main__ import build_config, make_parser
from tests.helpers import SMALL_MODEL, real_polarity_lines, write_gz_lines

pytestmark = pytest.mark.e2e

ROWS = 600
SETTINGS = {**SMALL_MODEL, "model.ensemble_size": "1", "training.epochs": "2", "evaluation.min_accuracy": "0",
            "evaluation.max_accuracy_drop": "1", "training.spans": "2", "training.warm_start": "true"}


def _config(input_dir: Path, output_dir: Path, *extra: str) -> configs.PipelineConfig:
    argv = ["run", "--dataset", "polarity", "--input", str(input_dir), "--output-dir", str(output_dir), *extra]
    for key, value in SETTINGS.items():
        argv += ["--set", f"{key}={value}"]
    return build_config(make_parser().parse_args(argv))


def _summary(config) -> dict:
    return json.loads((config.pipeline_root / run_summary.SUMMARY_FILE).read_text())


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    root = tmp_path_factory.mktemp("spans")
    lines = real_polarity_lines(3 * ROWS)
    header, rows = lines[0], lines[1:]
    write_gz_lines(root / "in" / "span-1" / "reviews.csv.gz", [header] + rows[:ROWS])
    out = root / "out"
    first = _config(root / "in", out)
    local_runner.run(first)
    after_first = _summary(first)
    # Span 2 lands; the run takes the newest span without being told.
    write_gz_lines(root / "in" / "span-2" / "reviews.csv.gz", [header] + rows[ROWS:2 * ROWS])
    second = _config(root / "in", out)
    local_runner.run(second)
    after_second = _summary(second)
    # The same span again: its validated data and vocabulary are reused.
    local_runner.run(_config(root / "in", out))
    return root, second, after_first, after_second, _summary(second)


def test_the_first_run_reads_span_1_alone_and_starts_cold(replay):
    _, _, first, _, _ = replay
    assert first["span"] == 1 and first["training_spans"] == [1]
    assert first["warm_start"] is None
    assert first["drift"]["compared"] is False
    assert first["blessed"] is True and first["pushed"] is True


def test_the_second_run_reads_the_newest_span_and_trains_on_the_window(replay):
    _, config, _, second, _ = replay
    assert config.span is None  # not told: the driver picked the newest
    assert second["span"] == 2
    assert second["training_spans"] == [1, 2]
    # Evaluated on span 2's test split only.
    store = run_summary.open_store(config.metadata_path)
    examples = {a.properties["span"].int_value: a for a in store.get_artifacts_by_type("Examples")
                if "/ExampleGen/" in a.uri}
    assert sorted(examples) == [1, 2]
    test_count = json.loads((Path(examples[2].uri) / "ingestion_report.json").read_text())["examples_per_split"]["test"]
    assert second["metrics"]["example_count"] == test_count
    # A span folder may hold several files: the Evaluator slices by source file.
    from pipeline import report

    slices = report.load_slices(second["evaluation_uri"])
    assert {name: m["example_count"] for name, m in slices.items() if name.startswith("source=")} == {
        "source=reviews.csv.gz": test_count}


def test_the_second_run_starts_warm_from_the_first_blessed_model(replay):
    _, _, first, second, _ = replay
    carried = second["warm_start"]
    assert carried is not None and carried["layers_fresh"] == []
    assert carried["tokens_carried"] > 1000 and carried["tokens_new"] > 0
    assert second["pushed"] and second["pushed_path"] != first["pushed_path"]


def test_the_second_span_is_compared_with_the_first(replay):
    _, _, _, second, _ = replay
    drift = second["drift"]
    assert drift["compared"] is True and drift["previous_span"] == 1 and drift["span"] == 2
    # Consecutive slices of one shuffled dataset: well inside the bounds.
    assert drift["label_linf"] < configs.DriftConfig.label_linf
    assert drift["num_chars_jsd"] < configs.DriftConfig.num_chars_jsd


def test_a_rerun_of_the_same_span_reuses_the_validated_data(replay):
    _, _, _, second, rerun = replay
    states = {c["component"]: c["state"] for c in rerun["components"]}
    assert states["DataValidationGate"] == states["Transform"] == "CACHED", states
    # (With warm start the Trainer runs again: its base, the newest blessed model, is now span 2's.)
    # The drift check runs again and still compares with span 1, not with span 2's own earlier run.
    assert rerun["drift"]["previous_span"] == 1
    assert rerun["drift"]["label_linf"] == pytest.approx(second["drift"]["label_linf"])


def test_a_span_with_another_label_balance_is_stopped_before_training(replay):
    root, config, _, _, _ = replay
    lines = real_polarity_lines(3 * ROWS)
    header, rows = lines[0], lines[1 + 2 * ROWS:]
    positives = [row for row in rows if row.rstrip().endswith(",1")]
    negatives = [row for row in rows if row.rstrip().endswith(",0")]
    skewed = positives + negatives[: len(positives) // 6]  # about 86 % positive
    write_gz_lines(root / "in" / "span-3" / "reviews.csv.gz", [header] + skewed)
    third = _config(root / "in", config.output_dir)
    drifted = r"span 3 drifted from span 2(.|\n)*label: COMPARATOR_L_INFTY_HIGH"
    with pytest.raises(local_runner.PipelineFailed, match=drifted):
        local_runner.run(third)
    # Nothing after the gate ran, so the served model and the summary are span 2's.
    assert _summary(third)["span"] == 2
    store = run_summary.open_store(third.metadata_path)
    spans = [a.properties["span"].int_value for a in store.get_artifacts_by_type("Examples")
             if "/DataValidationGate/" in a.uri]
    assert sorted(spans) == [1, 2]  # the drifted span never became training data
