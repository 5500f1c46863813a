"""Reader pretraining: it never learns from a held-out text, and its reader carries into the classifier."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json

import numpy as np
import pytest
import tensorflow as tf

from models import features, preprocessing, pretraining, warm_start
from models import model as model_lib

SHAPE = pretraining.ReaderShape(embedding_dim=8, cell="gru", rnn_units=4)
SETTINGS = pretraining.PretrainingSettings(vocab_size=40, max_len=12, epochs=1, batch_size=8, num_sampled=4,
                                           validation_share=0.2)
TRAIN = ["A good movie with a good cast.", "Bad acting, bad plot.", "The ending was great.", "Dull and slow."]
TEST_TEXT = "This film's secret ending is the twist nobody saw coming."


def write_csv(path, rows, header=("text",)):
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def test_corpus_drops_held_out_texts_in_any_spelling_and_repeats():
    unlabeled = {"unsup": [
        "THIS film's secret   ending is the twist<br />nobody saw coming.",  # the test text, respelt
        "A good movie with a good cast.",  # repeats a training text
        "Another review entirely.",
        "another REVIEW entirely.",  # repeats the one before
    ]}
    corpus = pretraining.build_corpus(TRAIN + [TEST_TEXT], unlabeled, [TEST_TEXT])
    assert corpus.texts == TRAIN + ["Another review entirely."]
    assert corpus.counts == {"held_out_texts": 1, "train_read": 5, "train_kept": 4, "train_dropped_held_out": 1,
                             "unsup_read": 4, "unsup_kept": 1, "unsup_dropped_held_out": 1,
                             "unsup_dropped_repeat": 2, "texts": 5}


def test_dedup_key_normalizes_as_the_transform_does():
    a = "Bad movie.<br /><br />Really BAD\tacting."
    normalized = preprocessing.normalize(tf.constant([a])).numpy()[0].decode()
    assert pretraining.dedup_key(a) == pretraining.dedup_key(normalized)
    assert pretraining.dedup_key(a) != pretraining.dedup_key("Bad movie. Really good acting.")


def test_unlabeled_csv_reads_the_text_column_and_refuses_a_file_without_one(tmp_path):
    path = write_csv(tmp_path / "u.csv.gz", [["first, with a comma", "1"], ["  ", "0"], ['a "quoted" one', "0"]],
                     header=("text", "label"))
    assert list(pretraining.read_unlabeled(path)) == ["first, with a comma", 'a "quoted" one']
    bad = write_csv(tmp_path / "bad.csv.gz", [["x"]], header=("review",))
    with pytest.raises(ValueError, match="'text' column.*review"):
        list(pretraining.read_unlabeled(bad))


def test_ids_follow_the_transform_conventions_and_its_head_and_tail_cut():
    tokens = pretraining.tokenize_corpus(["b a a c", " ".join(f"w{i}" for i in range(20))], "word")
    vocabulary = pretraining.learn_vocabulary(tokens, 3)
    assert vocabulary == ["a", "b", "c"]  # by count, then by token
    ids, lengths = pretraining.to_ids(tokens, vocabulary, max_len=8)
    assert ids[0].tolist() == [2, 1, 1, 3, 0, 0, 0, 0] and lengths.tolist() == [4, 8]
    oov = len(vocabulary) + features.NUM_OOV_BUCKETS
    assert ids[1].tolist() == [oov] * 8
    kept = preprocessing.truncate_list([f"w{i}" for i in range(20)], 8)
    assert kept == ["w0", "w1", "w14", "w15", "w16", "w17", "w18", "w19"]


def test_tokenize_corpus_keeps_each_text_its_own_tokens_across_batches_and_empty_texts():
    texts = ["", "Good <br />film!", "   ", "x", "it's naïve, bad"] * 3
    tokens = pretraining.tokenize_corpus(texts, "word", batch=4)  # batches end inside the list
    expected = [[t.decode() for t in preprocessing.tokenize(tf.constant([text])).to_list()[0]] for text in texts]
    assert [[t.decode() for t in row] for row in tokens] == expected
    assert expected[1] == ["good", "film", "!"] and expected[0] == [] and expected[4] == ["it's", "naïve", ",", "bad"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    directory = tmp_path_factory.mktemp("reader")
    texts = [f"the {a} movie had a {b} plot and {c} acting" for a in ("good", "bad", "long", "short")
             for b in ("thin", "clever", "silly") for c in ("fine", "poor", "great")]
    corpus = pretraining.build_corpus(texts, {}, [])
    report = pretraining.pretrain(corpus, SHAPE, SETTINGS, str(directory), progress=lambda line: None)
    return directory, report


def test_pretraining_writes_the_reader_its_vocabulary_and_digests(pretrained):
    directory, report = pretrained
    vocabulary = (directory / pretraining.VOCABULARY_FILE).read_text().split()
    assert report["vocabulary"] == len(vocabulary) == 17 and vocabulary[:2] == ["a", "acting"]  # ties by token
    assert report["corpus"]["texts"] == 36 and len(report["loss"]) == 1 and np.isfinite(report["loss"][0])
    assert report["tokens"] == 36 * 10
    assert len(pretraining.corpus_digests(str(directory))) == 36
    arrays, rows = warm_start.load(str(directory / warm_start.STATE_DIR))
    assert {key.split(":")[0] for key in arrays} == {"embedding", "bigru_0", *pretraining.SOFTMAX}
    assert rows["a"] == 1 and rows[warm_start.OOV] == 18


def test_the_classifier_starts_from_the_reader_by_layer_path_and_by_token(pretrained):
    directory, _ = pretrained
    arrays, old_rows = warm_start.load(str(directory / warm_start.STATE_DIR))
    vocabulary = ["acting", "plot", "unseen", "good"]  # another order, and a token the reader never read
    rows = warm_start.token_rows(vocabulary)
    classifier = model_lib.build_model(vocab_size=len(vocabulary) + 2, embedding_dim=8, cell="gru", rnn_units=4,
                                       attention_units=4, dense_units=4)
    before = dict(warm_start.layer_paths(classifier))["embedding"].get_weights()[0].copy()
    report = warm_start.restore(classifier, str(directory / warm_start.STATE_DIR), rows)
    layers = dict(warm_start.layer_paths(classifier))
    matrix = layers["embedding"].get_weights()[0]
    for token in ("acting", "plot", "good", warm_start.OOV):
        np.testing.assert_array_equal(matrix[rows[token]], arrays["embedding:0"][old_rows[token]], err_msg=token)
    np.testing.assert_array_equal(matrix[rows["unseen"]], before[rows["unseen"]])
    for index, weight in enumerate(layers["bigru_0"].get_weights()):
        np.testing.assert_array_equal(weight, arrays[f"bigru_0:{index}"])
    assert report["tokens_carried"] == 5 and report["layers_reused"] == 2


def test_every_ensemble_member_starts_from_the_single_reader(pretrained):
    directory, _ = pretrained
    arrays, _ = warm_start.load(str(directory / warm_start.STATE_DIR))
    ensemble = model_lib.build_model(vocab_size=6, embedding_dim=8, cell="gru", rnn_units=4, attention_units=4,
                                     dense_units=4, ensemble_size=2)
    warm_start.restore(ensemble, str(directory / warm_start.STATE_DIR), warm_start.token_rows(["a", "b", "c", "d"]))
    layers = dict(warm_start.layer_paths(ensemble))
    for member in (0, 1):
        np.testing.assert_array_equal(layers[f"member_{member}/bigru_0"].get_weights()[0], arrays["bigru_0:0"])


def test_a_reader_of_another_shape_is_reported_not_loaded(pretrained):
    directory, _ = pretrained
    classifier = model_lib.build_model(vocab_size=6, embedding_dim=8, cell="gru", rnn_units=6, attention_units=4,
                                       dense_units=4)
    report = warm_start.restore(classifier, str(directory / warm_start.STATE_DIR),
                                warm_start.token_rows(["a", "b", "c", "d"]))
    assert any(entry.startswith("bigru_0: shapes") for entry in report["layers_fresh"])


def write_split(directory, texts):
    directory.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(directory / "data.gz"), options="GZIP") as writer:
        for text in texts:
            example = tf.train.Example(features=tf.train.Features(feature={
                features.TEXT: tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode()]))}))
            writer.write(example.SerializeToString())


def test_the_component_never_learns_from_a_test_text_and_records_what_it_read(tmp_path):
    from tfx.types import standard_artifacts

    from components.reader_pretrainer import ReaderPretrainer
    from tests.helpers import make_artifact

    examples = make_artifact(standard_artifacts.Examples, tmp_path / "examples")
    examples.split_names = json.dumps(["train", "eval", "test"])
    write_split(tmp_path / "examples" / "Split-train", TRAIN * 3)
    write_split(tmp_path / "examples" / "Split-eval", ["Held out for early stopping."])
    write_split(tmp_path / "examples" / "Split-test", [TEST_TEXT, "Another test review."])
    planted = TEST_TEXT.upper().replace(" ", "  ")  # the test text, as an unlabeled review
    unlabeled = write_csv(tmp_path / "unsup.csv.gz", [[planted], ["An unlabeled review about a movie."],
                                                     ["held out FOR early stopping."]])
    model = make_artifact(standard_artifacts.Model, tmp_path / "model")
    executor = ReaderPretrainer.EXECUTOR_SPEC.executor_class()
    executor.Do({"examples": [examples]}, {"model": [model]}, {
        "unlabeled_sources": json.dumps([unlabeled]), "reader": json.dumps(dataclasses.asdict(SHAPE)),
        "settings": json.dumps(dataclasses.asdict(SETTINGS)), "text_feature": features.TEXT})

    assert model.get_string_custom_property("splits_read") == "train"
    assert model.get_string_custom_property("held_out_splits") == "eval,test"
    counts = json.loads(model.get_string_custom_property("corpus"))
    assert counts["unsup.csv.gz_dropped_held_out"] == 2 and counts["unsup.csv.gz_kept"] == 1
    assert counts["train_kept"] == 4 and counts["train_dropped_repeat"] == 8
    assert model.get_int_custom_property("texts") == 5
    digests = pretraining.corpus_digests(model.uri)
    assert pretraining.dedup_key(TEST_TEXT) not in digests
    assert pretraining.dedup_key("Held out for early stopping.") not in digests
    assert digests == {pretraining.dedup_key(t) for t in TRAIN + ["An unlabeled review about a movie."]}
    # Where the Trainer's base_model looks (<uri>/Format-Serving -> <uri>/warm_start).
    state = warm_start.state_dir_of(f"{model.uri}/Format-Serving")
    assert (tmp_path / "model" / "warm_start" / warm_start.WEIGHTS_FILE).is_file() and state.endswith("warm_start")


def build_pipeline(tmp_path, sources, **overrides):
    from pipeline import configs
    from pipeline.pipeline import create_pipeline

    dataset = configs.with_overrides(configs.IMDB, overrides)
    dataset = configs.with_unlabeled_sources(dataset, sources)
    return create_pipeline(configs.PipelineConfig(dataset=dataset, input_path=tmp_path / "imdb" / "x.csv.gz",
                                                  output_dir=tmp_path))


def test_the_trainer_starts_from_the_pretrainer_only_when_pretraining_is_on(tmp_path):
    unlabeled = write_csv(tmp_path / "unsup.csv.gz", [["an unlabeled review"]])
    on = build_pipeline(tmp_path, [unlabeled], **{"pretraining.enabled": "true"})
    by_id = {c.id: c for c in on.components}
    assert by_id["Trainer"].inputs["base_model"].producer_component_id == "ReaderPretrainer"
    pretrainer = by_id["ReaderPretrainer"]
    assert pretrainer.inputs["examples"].producer_component_id == "DataValidationGate"
    settings = json.loads(pretrainer.exec_properties["settings"])
    assert settings["max_len"] == 320 and settings["vocab_size"] == 30_000 and settings["seed"] == 42
    assert json.loads(pretrainer.exec_properties["reader"])["cell"] == "gru"
    assert json.loads(by_id["Trainer"].exec_properties["custom_config"])["pretrained_reader"] is True

    off = build_pipeline(tmp_path, [unlabeled])
    assert "ReaderPretrainer" not in {c.id for c in off.components}
    assert "base_model" not in {c.id: c for c in off.components}["Trainer"].inputs


def test_the_pretrainer_cache_key_follows_the_unlabeled_files_content(tmp_path):
    unlabeled = write_csv(tmp_path / "unsup.csv.gz", [["an unlabeled review"]])

    def fingerprint():
        components = build_pipeline(tmp_path, [unlabeled], **{"pretraining.enabled": "true"}).components
        return {c.id: c for c in components}["ReaderPretrainer"].exec_properties["source_fingerprint"]

    before = fingerprint()
    assert fingerprint() == before
    write_csv(tmp_path / "unsup.csv.gz", [["an unlabeled review"], ["one more"]])
    assert fingerprint() != before


def test_clear_errors_for_settings_that_cannot_pretrain(tmp_path):
    from pipeline import configs

    with pytest.raises(ValueError, match="warm_start and pretraining.enabled"):
        configs.with_overrides(configs.IMDB, {"pretraining.enabled": "true", "training.warm_start": "true"})
    with pytest.raises(ValueError, match="bidirectional reader of one recurrent layer"):
        configs.with_overrides(configs.IMDB, {"pretraining.enabled": "true", "model.bidirectional": "false"})
    with pytest.raises(ValueError, match="bidirectional reader of one recurrent layer"):
        configs.with_overrides(configs.IMDB, {"pretraining.enabled": "true", "model.rnn_layers": "2"})
    with pytest.raises(ValueError, match="one recurrent layer"):
        pretraining.BidirectionalLanguageModel(10, dataclasses.replace(SHAPE, rnn_layers=2), 4, 0.0)
    with pytest.raises(ValueError, match="pretraining.epochs must be >= 1"):
        configs.with_overrides(configs.IMDB, {"pretraining.epochs": "0"})
    with pytest.raises(ValueError, match="needs pretraining.unlabeled_sources"):
        build_pipeline(tmp_path, [], **{"pretraining.enabled": "true"})


def test_unlabeled_sources_resolve_against_the_data_directory(tmp_path, monkeypatch):
    from pipeline import data_sources

    (tmp_path / "data" / "imdb").mkdir(parents=True)
    path = write_csv(tmp_path / "data" / "imdb" / "unsup.csv.gz", [["an unlabeled review"]])
    monkeypatch.setenv(data_sources.DATA_DIR_ENV, str(tmp_path / "data"))
    built = build_pipeline(tmp_path, ["imdb/unsup.csv.gz"], **{"pretraining.enabled": "true"})
    pretrainer = {c.id: c for c in built.components}["ReaderPretrainer"]
    assert json.loads(pretrainer.exec_properties["unlabeled_sources"]) == [path]
    with pytest.raises(data_sources.DataNotFoundError, match="unlabeled text imdb/missing.csv.gz not found"):
        build_pipeline(tmp_path, ["imdb/missing.csv.gz"], **{"pretraining.enabled": "true"})


def test_unlabeled_sources_can_be_set_as_a_comma_separated_list():
    from pipeline import configs

    dataset = configs.with_overrides(configs.IMDB, {"pretraining.unlabeled_sources": "a.csv.gz, b/c.csv"})
    assert dataset.pretraining.unlabeled_sources == ("a.csv.gz", "b/c.csv")
