"""Pretraining on labelled sentences of another dataset: it never reads a held-out text, every
layer of the classifier carries into the Trainer's model, and the pipeline wires it as asked."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest

from models import features, pretraining, transfer, warm_start
from models import model as model_lib
from tests.test_pretraining import write_csv, write_split

MODEL = {"embedding_dim": 8, "cell": "lstm", "rnn_units": 4, "attention_units": 4, "dense_units": 4,
         "ensemble_size": 2, "rating_head": False}
SETTINGS = pretraining.PretrainingSettings(vocab_size=40, max_len=12, epochs=1, batch_size=8, validation_share=0.2)
TRAINING = {"learning_rate": 1e-2, "clipnorm": 1.0, "weight_averaging": 0.9}
HELD_OUT = "A held-out sentence nobody may learn from."
REVIEWS = [("A great film. The cast is superb!<br /><br />I loved every minute.", 1),
           ("Dull and slow. The plot makes no sense? Skip it.", 0),
           (f"Fine acting here. {HELD_OUT.upper()} The end is bad.", 0)] * 4


def test_reviews_are_cut_into_sentences_that_keep_their_label():
    assert transfer.sentences("A great film. Ok. The cast is superb!<br />I loved it.") == [
        "A great film.", "The cast is superb!", "I loved it."]  # sentences under 3 words are left out
    corpus = transfer.build_sentence_corpus({"imdb": REVIEWS[:2]}, [])
    assert corpus.texts == ["A great film.", "The cast is superb!", "I loved every minute.", "Dull and slow.",
                            "The plot makes no sense?"]
    assert corpus.labels.tolist() == [1, 1, 1, 0, 0]


def test_a_sentence_equal_to_a_held_out_text_is_dropped_in_any_spelling():
    corpus = transfer.build_sentence_corpus({"imdb": REVIEWS}, [HELD_OUT])
    assert pretraining.dedup_key(HELD_OUT) not in {pretraining.dedup_key(t) for t in corpus.texts}
    assert corpus.counts == {"held_out_texts": 1, "imdb_read": 12, "imdb_sentences_kept": 28,
                             "imdb_sentences_dropped_held_out": 4, "texts": 28}
    assert len(corpus.labels) == len(corpus.texts)


def test_labelled_sources_must_have_text_and_binary_labels(tmp_path):
    good = write_csv(tmp_path / "good.csv.gz", [["a text", "1"], ["another", "0"]], header=("text", "label"))
    assert list(transfer.read_labelled(good)) == [("a text", 1), ("another", 0)]
    unlabelled = write_csv(tmp_path / "unlabelled.csv.gz", [["a text"]])
    with pytest.raises(ValueError, match="'text' and 'label' columns"):
        list(transfer.read_labelled(unlabelled))
    stars = write_csv(tmp_path / "stars.csv.gz", [["a text", "1"], ["another", "7"]], header=("text", "label"))
    with pytest.raises(ValueError, match="line 3: label '7' is not 0 or 1"):
        list(transfer.read_labelled(stars))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    directory = tmp_path_factory.mktemp("transfer")
    corpus = transfer.build_sentence_corpus({"imdb": REVIEWS}, [HELD_OUT])
    lines = []
    report = transfer.pretrain_classifier(corpus, MODEL, SETTINGS, TRAINING, str(directory), progress=lines.append)
    return directory, {**report, "progress": lines}


def test_every_layer_of_the_classifier_carries_into_the_trainers_model_by_token(pretrained):
    directory, report = pretrained
    assert report["objective"] == "labelled_sentences" and report["corpus"]["texts"] == 28
    assert len(report["val_accuracy"]) == 1
    assert report["progress"][0].startswith("labelled corpus: 28 sentences")
    assert any(re.fullmatch(r"\d+% of epoch 1/1, loss \d\.\d{4}", line) for line in report["progress"])
    arrays, old_rows = warm_start.load(str(directory / warm_start.STATE_DIR))
    vocabulary = ["plot", "unseen", "great"]  # the Trainer's own vocabulary: another order, a new token
    rows = warm_start.token_rows(vocabulary)
    model = model_lib.build_model(vocab_size=len(vocabulary) + 2, **MODEL)
    before = {path: layer.get_weights()[0].copy() for path, layer in warm_start.layer_paths(model)
              if path.endswith("/embedding")}
    carried = warm_start.restore(model, str(directory / warm_start.STATE_DIR), rows)
    assert carried["layers_fresh"] == []
    layers = dict(warm_start.layer_paths(model))
    for member in ("member_0", "member_1"):
        matrix = layers[f"{member}/embedding"].get_weights()[0]
        for token in ("plot", "great", warm_start.OOV):
            np.testing.assert_array_equal(matrix[rows[token]], arrays[f"{member}/embedding:0"][old_rows[token]])
        np.testing.assert_array_equal(matrix[rows["unseen"]], before[f"{member}/embedding"][rows["unseen"]])
        for name in ("bilstm_0", "pooling", "dense", "logit_dense"):
            for index, weight in enumerate(layers[f"{member}/{name}"].get_weights()):
                np.testing.assert_array_equal(weight, arrays[f"{member}/{name}:{index}"], err_msg=name)


def test_the_component_reads_only_the_labelled_sources_and_records_them(tmp_path):
    from tfx.types import standard_artifacts

    from components.reader_pretrainer import ReaderPretrainer
    from tests.helpers import make_artifact

    examples = make_artifact(standard_artifacts.Examples, tmp_path / "examples")
    examples.split_names = json.dumps(["train", "eval", "test"])
    write_split(tmp_path / "examples" / "Split-train", ["A training text the transfer never reads."])
    write_split(tmp_path / "examples" / "Split-eval", ["An eval text."])
    write_split(tmp_path / "examples" / "Split-test", [HELD_OUT])
    labelled = write_csv(tmp_path / "reviews.csv.gz", [[t, str(y)] for t, y in REVIEWS], header=("text", "label"))
    model = make_artifact(standard_artifacts.Model, tmp_path / "model")
    executor = ReaderPretrainer.EXECUTOR_SPEC.executor_class()
    executor.Do({"examples": [examples]}, {"model": [model]}, {
        "unlabeled_sources": "[]", "labelled_sources": json.dumps([labelled]), "objective": "labelled_sentences",
        "reader": json.dumps(MODEL), "settings": json.dumps({**dataclasses.asdict(SETTINGS), **TRAINING}),
        "text_feature": features.TEXT})

    assert model.get_string_custom_property("objective") == "labelled_sentences"
    from pipeline import local_runner
    assert re.fullmatch(r"classifier pretrained on 28 labelled sentences \(\d+ tokens\), val_accuracy [01]\.\d{4}",
                        local_runner._reader_figure(model.mlmd_artifact, {}))
    assert model.get_string_custom_property("splits_read") == ""
    assert json.loads(model.get_string_custom_property("labelled_sources")) == [labelled]
    assert json.loads(model.get_string_custom_property("corpus"))["reviews.csv.gz_sentences_dropped_held_out"] == 4
    digests = pretraining.corpus_digests(model.uri)
    assert pretraining.dedup_key(HELD_OUT) not in digests
    assert pretraining.dedup_key("A training text the transfer never reads.") not in digests
    assert digests == {pretraining.dedup_key(s) for t, _ in REVIEWS[:3] for s in transfer.sentences(t)} - {
        pretraining.dedup_key(HELD_OUT)}


def run_pretrainer(root, execution: int, eval_texts: list[str], test_texts: list[str], labelled: str):
    """One execution of the component, laid out as the local orchestrator lays out its outputs."""
    from tfx.types import standard_artifacts

    from components.reader_pretrainer import ReaderPretrainer
    from tests.helpers import make_artifact

    examples = make_artifact(standard_artifacts.Examples, root / f"examples-{execution}")
    examples.split_names = json.dumps(["train", "eval", "test"])
    for split, texts in (("train", ["A training text."]), ("eval", eval_texts), ("test", test_texts)):
        write_split(root / f"examples-{execution}" / f"Split-{split}", texts)
    model = make_artifact(standard_artifacts.Model, root / "ReaderPretrainer" / "model" / str(execution))
    ReaderPretrainer.EXECUTOR_SPEC.executor_class().Do({"examples": [examples]}, {"model": [model]}, {
        "unlabeled_sources": "[]", "labelled_sources": json.dumps([labelled]), "objective": "labelled_sentences",
        "reader": json.dumps(MODEL), "settings": json.dumps({**dataclasses.asdict(SETTINGS), **TRAINING}),
        "text_feature": features.TEXT, "code_fingerprint": "code-1", "reuse_earlier": 1})
    return model


def file_digests(directory) -> dict[str, str]:
    import hashlib
    from pathlib import Path

    return {str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(Path(directory).rglob("*")) if path.is_file() and path.name != "pretraining.json"}


def test_a_new_spans_run_copies_the_pretraining_only_when_it_would_learn_the_same(tmp_path):
    labelled = write_csv(tmp_path / "reviews.csv.gz", [[t, str(y)] for t, y in REVIEWS], header=("text", "label"))
    first = run_pretrainer(tmp_path, 1, ["An eval text."], [HELD_OUT], labelled)
    assert "reused_from" not in first.mlmd_artifact.custom_properties

    # New held-out texts, none of them in the corpus: the same texts learnt from, so copied.
    second = run_pretrainer(tmp_path, 2, ["Another eval text.", "One more."], [HELD_OUT], labelled)
    assert second.get_string_custom_property("reused_from") == first.uri
    assert file_digests(second.uri) == file_digests(first.uri)
    assert pretraining.corpus_digests(second.uri) == pretraining.corpus_digests(first.uri)
    report = json.loads((tmp_path / "ReaderPretrainer" / "model" / "2" / "pretraining.json").read_text())
    assert report["corpus"]["held_out_texts"] == 3 and report["reused_from"] == report["learnt_in"] == first.uri
    from pipeline import local_runner
    assert local_runner._reader_figure(second.mlmd_artifact, {}).endswith(
        "; copied from an earlier run (the same texts, settings and code)")

    # A sentence the earlier runs learnt from is now a test text: learnt anew, without it.
    third = run_pretrainer(tmp_path, 3, ["An eval text."], [HELD_OUT, "The cast is superb!"], labelled)
    assert "reused_from" not in third.mlmd_artifact.custom_properties
    assert pretraining.dedup_key("The cast is superb!") in pretraining.corpus_digests(first.uri)
    assert pretraining.dedup_key("The cast is superb!") not in pretraining.corpus_digests(third.uri)

    # A copy of the copy still names where it was learnt.
    copied_again = run_pretrainer(tmp_path, 5, ["Yet another eval text."], [HELD_OUT], labelled)
    report = json.loads((tmp_path / "ReaderPretrainer" / "model" / "5" / "pretraining.json").read_text())
    assert report["reused_from"] == second.uri and report["learnt_in"] == first.uri
    assert copied_again.get_string_custom_property("reused_from") == second.uri

    # A copy interrupted before its key is written is never reused; nor is another key's result.
    # (--no-cache passes reuse_earlier=0: test_the_pipeline_passes_the_classifier_and_its_sources.)
    (tmp_path / "ReaderPretrainer" / "model" / "5" / pretraining.REUSE_KEY_FILE).unlink()
    key = (tmp_path / "ReaderPretrainer" / "model" / "1" / pretraining.REUSE_KEY_FILE).read_text().strip()
    assert pretraining.find_reusable(str(tmp_path / "ReaderPretrainer" / "model" / "7"), key) == second.uri
    assert pretraining.find_reusable(str(tmp_path / "ReaderPretrainer" / "model" / "7"), "another") is None


def test_the_pipeline_passes_the_classifier_and_its_sources(tmp_path, monkeypatch):
    from pipeline import configs, data_sources
    from pipeline.pipeline import create_pipeline

    (tmp_path / "data" / "imdb").mkdir(parents=True)
    labelled = write_csv(tmp_path / "data" / "imdb" / "train.csv.gz", [["a text", "1"]], header=("text", "label"))
    monkeypatch.setenv(data_sources.DATA_DIR_ENV, str(tmp_path / "data"))
    dataset = configs.with_overrides(configs.POLARITY, {
        "pretraining.enabled": "true", "pretraining.objective": "labelled_sentences",
        "pretraining.labelled_sources": "imdb/train.csv.gz"})
    built = create_pipeline(configs.PipelineConfig(dataset=dataset, input_path=tmp_path / "p.csv.gz",
                                                   output_dir=tmp_path))
    by_id = {c.id: c for c in built.components}
    assert by_id["Trainer"].inputs["base_model"].producer_component_id == "ReaderPretrainer"
    properties = by_id["ReaderPretrainer"].exec_properties
    assert properties["objective"] == "labelled_sentences"
    assert json.loads(properties["labelled_sources"]) == [labelled]
    assert json.loads(properties["unlabeled_sources"]) == []
    reader = json.loads(properties["reader"])
    assert reader["ensemble_size"] == dataset.model.ensemble_size and reader["rating_head"] is False
    settings = json.loads(properties["settings"])
    assert settings["weight_averaging"] == dataset.training.weight_averaging and settings["max_len"] == dataset.max_len
    assert properties["code_fingerprint"] == configs.pretraining_fingerprint("labelled_sentences")
    assert properties["code_fingerprint"] != configs.pretraining_fingerprint()
    assert properties["reuse_earlier"] == 1
    no_cache = create_pipeline(configs.PipelineConfig(dataset=dataset, input_path=tmp_path / "p.csv.gz",
                                                      output_dir=tmp_path, enable_cache=False))
    assert {c.id: c for c in no_cache.components}["ReaderPretrainer"].exec_properties["reuse_earlier"] == 0
    missing = configs.with_overrides(dataset, {"pretraining.labelled_sources": "imdb/missing.csv.gz"})
    with pytest.raises(data_sources.DataNotFoundError, match=r"labelled text imdb/missing.csv.gz not found .*"
                       r"add the file, or run without the pretraining \(--set pretraining.enabled=false\)"):
        create_pipeline(configs.PipelineConfig(dataset=missing, input_path=tmp_path / "p.csv.gz", output_dir=tmp_path))
    with pytest.raises(ValueError, match="objective=labelled_sentences needs pretraining.labelled_sources"):
        configs.with_overrides(configs.IMDB, {"pretraining.enabled": "true",
                                              "pretraining.objective": "labelled_sentences"})
    with pytest.raises(ValueError, match="pretraining.objective must be one of"):
        configs.with_overrides(configs.POLARITY, {"pretraining.objective": "autoencoder"})


def test_the_command_line_reads_the_labelled_sources_from_its_data_directory(tmp_path):
    from pipeline.__main__ import build_config, make_parser

    (tmp_path / "polarity").mkdir()
    write_csv(tmp_path / "polarity" / "rt-polarity.csv.gz", [["a good film", "1"]], header=("text", "label"))
    (tmp_path / "imdb").mkdir()  # no unsup.csv.gz: only the objective's own sources are needed
    labelled = write_csv(tmp_path / "imdb" / "train.csv.gz", [["a text", "1"]], header=("text", "label"))
    args = make_parser().parse_args(["run", "--dataset", "polarity", "--data-dir", str(tmp_path),
                                     "--output-dir", str(tmp_path / "out"), "--set", "model.pretrained_embeddings=",
                                     "--set", "pretrained_vocabulary=0"])
    pretraining = build_config(args).dataset.pretraining
    assert pretraining.objective == "labelled_sentences" and pretraining.labelled_sources == (labelled,)
