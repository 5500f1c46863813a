"""The model card: its fields hold the run's values, it is written beside (not inside) the pushed
version, an unpushed run's card says why, and the run report links it. No pipeline run: the card is
built from a ReportData as report.gather() would return it."""

import json
import re
from pathlib import Path

from pipeline import model_card, report

METRICS = {"example_count": 100.0, "binary_accuracy": 0.8125, "auc": 0.8875, "precision": 0.79, "recall": 0.82,
           "true_positives": 41.0, "false_positives": 11.0, "true_negatives": 39.0, "false_negatives": 9.0}
THRESHOLDS = {"binary_accuracy": {"lower_bound": 0.7, "max_drop": 0.01}, "auc": {"lower_bound": 0.5}}
BASELINE = {"model_uri": "/x/pipelines/sentiment-polarity/Trainer/model/9", "version": "1700000016",
            "metrics": {"binary_accuracy": 0.8, "auc": 0.88, "example_count": 100.0}}
SPLITS = {"train": 8530, "eval": 1066, "test": 1066}


def _data(serving_dir: Path | None, version: str = "1700000017", **summary) -> report.ReportData:
    stats = {split: {"num_examples": n, "features": {}} for split, n in SPLITS.items()}
    pushed = {"pushed": True, "pushed_path": str(serving_dir / version)} if serving_dir else {"pushed": False}
    return report.ReportData(
        pipeline_name="sentiment-polarity", run_id="2026-01-02T03:04:05.000001",
        summary={"blessed": True, "metrics": METRICS, "model_uri": "/x/Trainer/model/12",
                 "ingestion": {"rows_in": 10662, "examples_out": 10662}, **pushed, **summary},
        history={"loss": [0.6, 0.5]},
        slices={"Overall": METRICS, "length_bucket=0-63": {**METRICS, "binary_accuracy": 0.7, "example_count": 40.0},
                "length_bucket=64-127": {**METRICS, "binary_accuracy": 0.875, "example_count": 60.0}},
        statistics=stats, reviews=[], infra={"blessed": True, "failures": []},
        training={"dataset": "polarity", "max_len": 64, "vocab_size": 20000, "pretrained_vocabulary": 100000,
                  "model": {"embedding_dim": 50, "cell": "lstm", "rnn_units": 64, "rnn_layers": 1,
                            "bidirectional": True, "pooling": "attention", "dense_units": 64, "ensemble_size": 3,
                            "pretrained_embeddings": "/d/embeddings/glove.6B.50d.txt.gz"},
                  "training": {"batch_size": 64, "epochs": 15, "learning_rate": 0.001, "seed": 42,
                               "early_stopping_monitor": "val_auc", "naive_bayes_ngrams": 2}},
        gate={"thresholds": THRESHOLDS, "validation_ok": True, "failures": []},
        baseline=BASELINE,
        export={"serving_default": {"inputs": {"text": "string [?]"},
                                    "outputs": {"label": "int64 [?]", "probability": "float32 [?]"}}},
        serving_dir=str(serving_dir) if serving_dir else None,
        data_source={"input_base": "/data/polarity/rt-polarity.csv.gz", "eval_percent": 10.0, "test_percent": 10.0},
    )


def _fake_version(serving_dir: Path, version: str) -> Path:
    version_dir = serving_dir / version
    (version_dir / "variables").mkdir(parents=True)
    (version_dir / "saved_model.pb").write_bytes(b"model")
    (version_dir / "variables" / "variables.index").write_bytes(b"index")
    return version_dir


def test_card_fields_hold_the_runs_values(tmp_path):
    serving = tmp_path / "serving" / "sentiment-polarity"
    data = _data(serving)
    written = model_card.write_card(data, tmp_path / "report")
    card = json.loads(written.json.read_text())

    # Model Card Toolkit's sections, and this project's two.
    for key in ("model_details", "model_parameters", "quantitative_analysis", "considerations",
                "evaluation_gate", "deployment"):
        assert key in card, key
    details = card["model_details"]
    assert details["name"] == "sentiment-polarity"
    assert details["version"] == {"name": "1700000017", "date": "2026-01-02",
                                  "diff": "Compared with the latest blessed model (version 1700000016): "
                                          "test accuracy +0.0125."}
    assert details["path"] == str(serving / "1700000017")
    assert "bidirectional LSTM" in card["model_parameters"]["model_architecture"]
    assert "ensemble of 3" in card["model_parameters"]["model_architecture"]
    assert card["model_parameters"]["input_format_map"] == [{"key": "text", "value": "string [?]"}]

    # Split counts from the statistics.
    assert {d["name"]: d["num_examples"] for d in card["model_parameters"]["data"]} == SPLITS
    assert all(d["link"] == "/data/polarity/rt-polarity.csv.gz" for d in card["model_parameters"]["data"])

    # Every metric of the run, overall (the summary's metrics) and per slice.
    metrics = {(m["slice"], m["type"]): m["value"] for m in card["quantitative_analysis"]["performance_metrics"]}
    for name, value in data.summary["metrics"].items():
        assert metrics[("Overall", name)] == value, name
    assert metrics[("length_bucket=0-63", "binary_accuracy")] == 0.7
    assert metrics[("length_bucket=64-127", "example_count")] == 60.0
    assert ("length_bucket=0-63", "true_positives") not in metrics  # the confusion matrix is the overall slice's

    gate = card["evaluation_gate"]
    assert gate["thresholds"] == THRESHOLDS
    assert gate["baseline"] == BASELINE and gate["blessed"] is True
    assert card["deployment"] == {"pushed": True, "version": "1700000017", "version_dir": str(serving / "1700000017"),
                                  "serving_dir": str(serving), "not_pushed_reason": None,
                                  "run_id": "2026-01-02T03:04:05.000001", "model_uri": "/x/Trainer/model/12"}

    considerations = card["considerations"]
    assert any("English" in u["description"] for u in considerations["out_of_scope_uses"])
    assert any("Decisions about people" in u["description"] for u in considerations["out_of_scope_uses"])
    limitations = " ".join(item["description"] for item in considerations["limitations"])
    for topic in ("single sentences", "whole review", "English only", "vocabulary", "Sarcasm"):
        assert topic in limitations, topic
    assert all(item["name"] and item["mitigation_strategy"] for item in considerations["ethical_considerations"])

    # The Markdown holds the same figures.
    text = written.markdown.read_text()
    assert text.startswith("# Model card: sentiment-polarity, version 1700000017")
    assert "| Overall | 100 | 0.8125 | 0.8875 | 0.7900 | 0.8200 |" in text
    assert "| length_bucket=0-63 | 40 | 0.7000 |" in text
    assert "| train | 8530 |" in text and "| eval | 1066 |" in text and "| test | 1066 |" in text
    assert "- accuracy >= 0.7000" in text and "- accuracy at most 0.0100 below the baseline's" in text
    assert "- AUC >= 0.5000" in text
    assert "Baseline: the latest blessed model, version 1700000016" in text
    for section in ("## Intended use", "## Out-of-scope uses", "## Training data", "## Evaluation (TFMA, test split)",
                    "## The gate", "## Known limitations", "## Ethical considerations"):
        assert section in text, section


def test_the_review_level_model_warns_of_sentences_and_the_sentence_level_of_reviews(tmp_path):
    polarity = model_card.build_card(_data(None))
    imdb_data = _data(None)
    imdb_data.training = {**imdb_data.training, "dataset": "imdb", "max_len": 320}
    imdb = model_card.build_card(imdb_data)
    assert "sentence-level" in polarity["model_details"]["overview"]
    assert "review-level" in imdb["model_details"]["overview"]
    assert "Whole multi-paragraph reviews" in polarity["considerations"]["out_of_scope_uses"][-1]["description"]
    assert "Single sentences" in imdb["considerations"]["out_of_scope_uses"][-1]["description"]
    assert "reads at most 64 tokens" in polarity["considerations"]["limitations"][0]["description"]
    assert "past 320 tokens" in imdb["considerations"]["limitations"][0]["description"]


def test_card_is_written_beside_the_version_not_inside_it(tmp_path):
    from components import versioned_pusher

    serving = tmp_path / "serving" / "sentiment-polarity"
    version_dir = _fake_version(serving, "1700000017")
    before = versioned_pusher.tree_digest(str(version_dir))
    written = model_card.write_card(_data(serving), tmp_path / "report")

    assert written.markdown == serving / "model_cards" / "1700000017.md"
    assert written.json == serving / "model_cards" / "1700000017.json"
    assert written.markdown.exists() and written.json.exists()
    # The version directory is untouched (the Pusher's dedup hashes it), and the cards' directory is
    # not taken for a version by the Pusher or the server.
    assert versioned_pusher.tree_digest(str(version_dir)) == before
    assert sorted(p.name for p in version_dir.rglob("*")) == ["saved_model.pb", "variables", "variables.index"]
    assert versioned_pusher.list_versions(str(serving)) == [1700000017]
    assert not list((tmp_path / "report").glob("model_card*"))


def test_the_report_links_the_card_of_the_pushed_version(tmp_path):
    serving = tmp_path / "serving" / "sentiment-polarity"
    _fake_version(serving, "1700000017")
    report_dir = tmp_path / "pipelines" / "sentiment-polarity" / "report"
    # A card an earlier unpushed run left in the report directory goes once a run pushes.
    report_dir.mkdir(parents=True)
    (report_dir / "model_card.md").write_text("stale")
    page = report.publish(_data(serving), report_dir)
    text = page.read_text()
    links = dict(re.findall(r'<a id="(model-card(?:-json)?)" href="([^"]+)"', text))
    assert (report_dir / links["model-card"]).resolve() == (serving / "model_cards" / "1700000017.md").resolve()
    assert (report_dir / links["model-card-json"]).resolve() == (serving / "model_cards" / "1700000017.json").resolve()
    assert "Written beside the pushed version 1700000017" in text
    assert not (report_dir / "model_card.md").exists()


def test_an_unpushed_run_writes_its_card_under_the_report_dir_saying_why(tmp_path):
    failure = "binary_accuracy = 0.6200: Metric value 0.62 is below the lower bound 0.7"
    data = _data(None, blessed=False)
    data.gate = {**data.gate, "validation_ok": False, "failures": [failure]}
    report_dir = tmp_path / "report"
    page = report.publish(data, report_dir)

    card = json.loads((report_dir / "model_card.json").read_text())
    assert card["deployment"]["pushed"] is False and card["deployment"]["version"] is None
    assert "did not bless" in card["deployment"]["not_pushed_reason"]
    assert failure in card["deployment"]["not_pushed_reason"]
    assert card["model_details"]["version"]["name"] == "not pushed"
    markdown = (report_dir / "model_card.md").read_text()
    assert markdown.startswith("# Model card: sentiment-polarity, version not pushed\n\n**Not pushed**: ")
    assert failure in markdown

    text = page.read_text()
    assert '<a id="model-card" href="model_card.md">' in text
    assert "Not pushed</span>: the Evaluator did not bless it" in text
    assert not (tmp_path / "serving").exists()


def test_the_reasons_for_not_pushing():
    assert model_card.not_pushed_reason(_data(None, already_served_version=1700000016)).startswith(
        "the same model is already served as version 1700000016")
    infra_failed = _data(None)
    infra_failed.infra = {"blessed": False, "failures": ["canary 3 took 2500 ms"]}
    assert model_card.not_pushed_reason(infra_failed) == "infra validation failed: canary 3 took 2500 ms"
    no_model = _data(None, model_uri=None, blessed=None)
    no_model.history, no_model.slices = {}, {}
    assert model_card.not_pushed_reason(no_model) == "no model was trained in this run"
    assert model_card.not_pushed_reason(_data(Path("/s"))) is None


def test_a_card_that_cannot_be_written_is_named_on_the_page(tmp_path):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the serving directory should be")
    page = report.publish(_data(blocked / "serving"), tmp_path / "report")
    assert "The model card could not be written: " in page.read_text()


def test_gate_thresholds_are_read_from_the_evaluators_eval_config():
    # As ML Metadata holds the Evaluator's eval_config property (bounds as plain numbers) ...
    recorded = {"metrics_specs": [{"metrics": [
        {"class_name": "ExampleCount"},
        {"class_name": "BinaryAccuracy", "per_slice_thresholds": [{"slicing_specs": [{}], "threshold": {
            "change_threshold": {"absolute": -0.01, "direction": "HIGHER_IS_BETTER"},
            "value_threshold": {"lower_bound": 0.8}}}]},
        {"class_name": "AUC", "per_slice_thresholds": [{"slicing_specs": [{}], "threshold": {
            "value_threshold": {"lower_bound": 0.5}}}]},
        {"class_name": "Precision"}]}]}
    assert report.gate_thresholds(recorded) == {"binary_accuracy": {"lower_bound": 0.8, "max_drop": 0.01},
                                                "auc": {"lower_bound": 0.5}}
    # ... and as wrapper messages ({"value": x}).
    wrapped = {"metrics_specs": [{"metrics": [{"class_name": "BinaryAccuracy", "threshold": {
        "value_threshold": {"lower_bound": {"value": 0.85}, "upper_bound": {"value": 1.0}}}}]}]}
    assert report.gate_thresholds(wrapped) == {"binary_accuracy": {"lower_bound": 0.85, "upper_bound": 1.0}}
    assert report.gate_thresholds({}) == {}


def _fake_store(path: Path, baseline_pushed_as: str = "1700000016"):
    """An ML Metadata store holding what gather_run_context reads: one run (Trainer, Evaluator with a
    baseline, Pusher, ExampleGen) and an earlier run's Pusher that pushed the baseline model."""
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2 as pb

    config = pb.ConnectionConfig()
    config.sqlite.filename_uri = str(path)
    config.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    store = metadata_store.MetadataStore(config)
    run_type, node_type = (store.put_context_type(pb.ContextType(name=n)) for n in ("pipeline_run", "node"))
    model_type, pushed_type = (store.put_artifact_type(pb.ArtifactType(name=n)) for n in ("Model", "PushedModel"))

    def context(type_id, name):
        return store.get_contexts_by_id(store.put_contexts([pb.Context(type_id=type_id, name=name)]))[0]

    def artifact(type_id, uri, **custom):
        item = pb.Artifact(type_id=type_id, uri=uri, state=pb.Artifact.LIVE)
        for key, value in custom.items():
            setattr(item.custom_properties[key], "int_value" if isinstance(value, int) else "string_value", value)
        return item

    def event(kind, key):
        item = pb.Event(type=kind)
        item.path.steps.add().key = key
        item.path.steps.add().index = 0
        return item

    def execution(component, run, inputs=(), outputs=(), **custom):
        type_id = store.put_execution_type(pb.ExecutionType(name=f"tfx.{component}"))
        item = pb.Execution(type_id=type_id, last_known_state=pb.Execution.COMPLETE)
        for key, value in custom.items():
            item.custom_properties[key].string_value = value
        pairs = ([(a, event(pb.Event.INPUT, k)) for k, a in inputs]
                 + [(a, event(pb.Event.OUTPUT, k)) for k, a in outputs])
        node = context(node_type, f"sentiment-polarity.{component}.{run.name}")
        _, artifact_ids, _ = store.put_execution(item, pairs, [run, node])
        return artifact_ids

    old_run, new_run = context(run_type, "run-1"), context(run_type, "run-2")
    baseline_id = execution("Trainer", old_run, outputs=[("model", artifact(model_type, "/p/Trainer/model/9"))])[0]
    baseline = store.get_artifacts_by_id([baseline_id])[0]
    if baseline_pushed_as:
        execution("Pusher", old_run, inputs=[("model", baseline)],
                  outputs=[("pushed_model", artifact(pushed_type, "/p/Pusher/pushed_model/11", pushed=1,
                                                     pushed_version=baseline_pushed_as))])
    execution("ExampleGen", new_run, input_base="/data/polarity",
              custom_config=json.dumps({"custom_config": {"value": {"eval_percent": 10.0, "test_percent": 10.0}}}))
    execution("Trainer", new_run, custom_config=json.dumps({"dataset": "polarity", "max_len": 64}),
              outputs=[("model", artifact(model_type, "/p/Trainer/model/12"))])
    execution("Evaluator", new_run, inputs=[("baseline_model", baseline)],
              eval_config=json.dumps({"metrics_specs": [{"metrics": [{"class_name": "AUC", "threshold": {
                  "value_threshold": {"lower_bound": 0.5}}}]}]}))
    execution("Pusher", new_run,
              push_destination=json.dumps({"filesystem": {"base_directory": "/s/sentiment-polarity"}}))


def test_the_card_settings_are_read_from_ml_metadata(tmp_path):
    _fake_store(tmp_path / "store.sqlite")
    found = report.gather_run_context(tmp_path / "store.sqlite", "run-2")
    assert found == {
        "training": {"dataset": "polarity", "max_len": 64},
        "gate": {"thresholds": {"auc": {"lower_bound": 0.5}}},
        "baseline": {"model_uri": "/p/Trainer/model/9", "version": "1700000016"},
        "serving_dir": "/s/sentiment-polarity",
        "data_source": {"input_base": "/data/polarity", "eval_percent": 10.0, "test_percent": 10.0},
    }
    # A baseline that was blessed but never pushed has no version.
    _fake_store(tmp_path / "unpushed.sqlite", baseline_pushed_as="")
    assert report.gather_run_context(tmp_path / "unpushed.sqlite", "run-2")["baseline"] == {
        "model_uri": "/p/Trainer/model/9", "version": None}
