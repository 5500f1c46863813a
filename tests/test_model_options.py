"""Every configurable reader: masking holds, the trajectory ends at the prediction,
and pretrained vectors land on the right rows."""

import gzip

import numpy as np
import pytest
import tensorflow as tf

from models import embeddings, features
from models import model as model_lib

VOCAB = 40
SHORT = [3, 4, 5, 6]
LONG = list(range(1, VOCAB)) * 3


@pytest.mark.parametrize("cell, bidirectional, layers, pooling", [
    ("lstm", True, 2, "attention"),
    ("gru", False, 1, "max"),
    ("simple", True, 1, "last"),
    ("lstm", False, 3, "last"),
    ("gru", True, 1, "attention_max"),
])
def test_each_reader_ignores_padding_and_its_trajectory_ends_at_the_prediction(cell, bidirectional, layers,
                                                                              pooling):
    tf.keras.utils.set_random_seed(1)
    model = model_lib.build_model(VOCAB, embedding_dim=8, cell=cell, rnn_units=6, rnn_layers=layers,
                                  bidirectional=bidirectional, pooling=pooling, attention_units=5,
                                  attention_depth=2, dense_units=4, rnn_dropout=0.2)
    alone = model(tf.constant([SHORT], tf.int64), training=False)
    batch = model(tf.constant([SHORT + [0] * (len(LONG) - len(SHORT)), LONG], tf.int64), training=False)
    np.testing.assert_allclose(batch[model_lib.LOGIT][0], alone[model_lib.LOGIT][0], atol=1e-5)
    np.testing.assert_allclose(batch[features.ATTENTION][0, :4], alone[features.ATTENTION][0], atol=1e-5)
    np.testing.assert_allclose(batch[features.TRAJECTORY][0, :4], alone[features.TRAJECTORY][0], atol=1e-5)
    # After the last real token, the trajectory is the prediction itself.
    np.testing.assert_allclose(alone[features.TRAJECTORY][0, -1], alone[model_lib.LOGIT][0], atol=1e-5)
    np.testing.assert_allclose(batch[features.TRAJECTORY][1, -1], batch[model_lib.LOGIT][1], atol=1e-5)
    weights = batch[features.ATTENTION].numpy()
    np.testing.assert_allclose(weights.sum(axis=1), [1.0, 1.0], rtol=1e-5)
    assert np.all(weights[0, 4:] == 0)


def test_training_view_shares_weights_and_outputs_only_the_logit():
    model = model_lib.build_model(VOCAB, embedding_dim=4, rnn_units=4, attention_units=4, dense_units=4)
    view = model_lib.training_view(model)
    assert list(view.output.keys()) == [model_lib.LOGIT]
    ids = tf.constant([SHORT], tf.int64)
    np.testing.assert_allclose(view(ids)[model_lib.LOGIT], model(ids)[model_lib.LOGIT])
    assert {id(w) for w in view.weights} == {id(w) for w in model.weights}


@pytest.mark.parametrize("option, value, message", [
    ("cell", "transformer", "cell 'transformer' is not one of"),
    ("pooling", "mean", "pooling 'mean' is not one of"),
    ("rnn_layers", 4, "rnn_layers must be 1 to 3"),
    ("ensemble_size", 0, "ensemble_size must be >= 1"),
])
def test_invalid_options_are_refused(option, value, message):
    with pytest.raises(ValueError, match=message):
        model_lib.build_model(VOCAB, **{option: value})


@pytest.mark.parametrize("compressed", [False, True])
def test_glove_vectors_fill_known_tokens_and_random_rows_the_rest(tmp_path, compressed):
    lines = "the 0.1 0.2 0.3\ngood 1 2 3\nunused 9 9 9\n"
    path = tmp_path / ("glove.txt.gz" if compressed else "glove.txt")
    if compressed:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(lines)
    else:
        path.write_text(lines)
    matrix, found = embeddings.embedding_matrix(["good", "the", "zzz"], str(path), 3, 1, seed=0)
    assert found == 2 and matrix.shape == (5, 3)
    np.testing.assert_array_equal(matrix[0], 0)  # padding
    np.testing.assert_allclose(matrix[1], [1, 2, 3])  # "good" is vocabulary id 1
    np.testing.assert_allclose(matrix[2], [0.1, 0.2, 0.3])
    assert np.abs(matrix[3]).sum() > 0  # "zzz": random, not zero
    again, _ = embeddings.embedding_matrix(["good", "the", "zzz"], str(path), 3, 1, seed=0)
    np.testing.assert_array_equal(matrix, again)  # reproducible from the seed


def test_pretrained_vocabulary_rows_follow_the_oov_bucket_and_hold_their_vectors(tmp_path):
    path = tmp_path / "glove.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("the 0.1 0.2 0.3\ngood 1 2 3\nsuperb 4 5 6\nrare 7 8 9\n")
    words = embeddings.read_glove_words(str(path), 3)
    assert words == ["the", "good", "superb"]  # the most frequent first, as GloVe files are sorted
    first = features.first_pretrained_id(5)  # padding + up to 5 vocabulary ids + OOV -> 7
    matrix, found = embeddings.embedding_matrix(["good", "zzz"], str(path), 3, 1, seed=0,
                                                pretrained_words=words, first_pretrained_id=first)
    assert first == 7 and matrix.shape == (first + 3, 3) and found == 1
    np.testing.assert_allclose(matrix[1], [1, 2, 3])  # vocabulary id 1
    np.testing.assert_allclose(matrix[first:], [[0.1, 0.2, 0.3], [1, 2, 3], [4, 5, 6]])


def test_glove_dimension_mismatch_names_the_line(tmp_path):
    path = tmp_path / "glove.txt"
    path.write_text("the 0.1 0.2 0.3\n")
    with pytest.raises(ValueError, match=r"glove.txt:1: 3 values for 'the', expected 50"):
        embeddings.embedding_matrix(["the"], str(path), 50, 1, seed=0)


def test_pretrained_embeddings_start_the_embedding_layer_and_can_be_frozen():
    matrix = np.arange(VOCAB * 4, dtype=np.float32).reshape(VOCAB, 4)
    model = model_lib.build_model(VOCAB, embedding_dim=4, rnn_units=4, attention_units=4, dense_units=4,
                                  embedding_matrix=matrix, trainable_embeddings=False)
    layer = model.get_layer("embedding")
    np.testing.assert_array_equal(layer.get_weights()[0], matrix)
    assert not layer.trainable
    # The matrix is in the weights, not in the config (TensorBoard serialises that on every run).
    assert str(float(matrix[-1, -1])) not in model.to_json()
    ensemble = model_lib.build_model(VOCAB, embedding_dim=4, rnn_units=4, attention_units=4, dense_units=4,
                                     embedding_matrix=matrix, ensemble_size=2)
    for index in range(2):
        member = ensemble.get_layer(f"{model_lib.MEMBER}_{index}")
        np.testing.assert_array_equal(member.get_layer("embedding").get_weights()[0], matrix)


def test_token_dropout_zeroes_whole_tokens_in_training_only():
    tf.keras.utils.set_random_seed(3)
    model = model_lib.build_model(VOCAB, embedding_dim=16, rnn_units=4, attention_units=4, dense_units=4,
                                  embedding_dropout=0.0, token_dropout=0.5)
    dropout = model.get_layer("token_dropout")
    vectors = tf.ones([4, 30, 16])
    dropped = dropout(vectors, training=True).numpy()
    # Every token vector is either all zero or all kept (scaled by 1 / (1 - rate)).
    per_token = np.unique(dropped, axis=2).reshape(4, 30)
    assert set(np.unique(per_token)) == {0.0, 2.0}
    assert 0.3 < np.mean(per_token == 0.0) < 0.7
    np.testing.assert_array_equal(dropout(vectors, training=False), vectors)


def _adversarial_fit(epsilon, trainable=True, learning_rate=0.0):
    tf.keras.utils.set_random_seed(0)
    model = model_lib.build_model(VOCAB, embedding_dim=8, rnn_units=8, attention_units=8, dense_units=8,
                                  embedding_dropout=0.0, dense_dropout=0.0, trainable_embeddings=trainable)
    view = model_lib.training_view(model, adversarial_epsilon=epsilon)
    model_lib.compile_model(view, learning_rate, 1.0)
    ids = np.random.default_rng(0).integers(0, VOCAB, (32, 7))
    labels = (ids[:, 0] % 2).astype(np.float32)
    before = {w.name: w.numpy().copy() for w in model.weights}
    history = view.fit(ids, {model_lib.LOGIT: labels}, epochs=1, batch_size=8, shuffle=False, verbose=0,
                       validation_data=(ids[:8], {model_lib.LOGIT: labels[:8]}))
    return model, before, history.history


def test_adversarial_perturbation_raises_the_loss_and_is_undone_after_the_step():
    # Learning rate 0: the weights stay put, so any difference is the perturbation's.
    model, before, history = _adversarial_fit(epsilon=0.5)
    assert history["adversarial_loss"][0] > history["loss"][0] + 1e-3
    assert "val_adversarial_loss" not in history
    for weight in model.weights:
        np.testing.assert_array_equal(weight.numpy(), before[weight.name])
    plain_model, _, plain = _adversarial_fit(epsilon=0.0)
    assert "adversarial_loss" not in plain
    np.testing.assert_allclose(plain["loss"], history["loss"], rtol=1e-6)  # the clean loss is still reported


def test_adversarial_training_changes_the_update_and_keeps_a_frozen_embedding_frozen():
    adversarial, before, _ = _adversarial_fit(epsilon=0.5, trainable=False, learning_rate=1e-2)
    plain, _, _ = _adversarial_fit(epsilon=0.0, trainable=False, learning_rate=1e-2)
    embedding = adversarial.get_layer("embedding").embeddings
    np.testing.assert_array_equal(embedding.numpy(), before[embedding.name])
    dense = [adversarial.get_layer("dense").kernel.numpy(), plain.get_layer("dense").kernel.numpy()]
    assert np.abs(dense[0] - dense[1]).max() > 1e-4
    with pytest.raises(ValueError, match="adversarial_epsilon must be >= 0"):
        model_lib.training_view(plain, adversarial_epsilon=-1.0)


def _small(**options):
    return model_lib.build_model(VOCAB, embedding_dim=8, rnn_units=6, attention_units=5, dense_units=4,
                                 embedding_dropout=0.0, dense_dropout=0.0, **options)


def test_an_ensemble_outputs_its_members_mean_and_still_ignores_padding():
    tf.keras.utils.set_random_seed(2)
    model = _small(ensemble_size=3)
    ids = tf.constant([SHORT + [0] * (len(LONG) - len(SHORT)), LONG], tf.int64)
    out = model(ids, training=False)
    members = [model.get_layer(f"{model_lib.MEMBER}_{i}")(ids, training=False) for i in range(3)]
    for key in (model_lib.LOGIT, features.ATTENTION, features.TRAJECTORY):
        np.testing.assert_allclose(out[key], np.mean([m[key] for m in members], axis=0), atol=1e-6)
    logits = np.array([m[model_lib.LOGIT] for m in members])
    assert np.abs(logits[0] - logits[1]).max() > 1e-4  # members start from different weights
    alone = model(tf.constant([SHORT], tf.int64), training=False)
    np.testing.assert_allclose(out[model_lib.LOGIT][0], alone[model_lib.LOGIT][0], atol=1e-5)
    np.testing.assert_allclose(out[features.ATTENTION].numpy().sum(axis=1), [1.0, 1.0], rtol=1e-5)
    assert np.all(out[features.ATTENTION][0, 4:] == 0)


def test_each_ensemble_member_trains_exactly_as_it_would_alone():
    tf.keras.utils.set_random_seed(3)
    ensemble, single = _small(ensemble_size=2), _small()
    member = ensemble.get_layer(f"{model_lib.MEMBER}_0")
    single.set_weights(member.get_weights())
    other_before = [w.copy() for w in ensemble.get_layer(f"{model_lib.MEMBER}_1").get_weights()]
    ids = np.random.default_rng(0).integers(0, VOCAB, (32, 7))
    labels = (ids[:, 0] % 2).astype(np.float32)
    histories = []
    for model in (ensemble, single):
        view = model_lib.training_view(model)
        model_lib.compile_model(view, 1e-2, 1.0)
        histories.append(view.fit(ids, {model_lib.LOGIT: labels}, epochs=2, batch_size=8, shuffle=False,
                                  verbose=0, validation_data=(ids[:8], {model_lib.LOGIT: labels[:8]})).history)
    # Member 0 took the very steps the single model took: no gradient flowed from member 1.
    for trained, alone in zip(member.get_weights(), single.get_weights()):
        np.testing.assert_allclose(trained, alone, atol=1e-5)
    assert max(np.abs(a - b).max() for a, b in zip(ensemble.get_layer(f"{model_lib.MEMBER}_1").get_weights(),
                                                   other_before)) > 1e-3
    assert "member_loss" in histories[0] and "val_member_loss" not in histories[0]
    with pytest.raises(ValueError, match="not supported for an ensemble"):
        model_lib.training_view(ensemble, adversarial_epsilon=1.0)
