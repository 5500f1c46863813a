"""The classifier: output shapes, masking, length batching and the exported signatures."""

import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from models import features, naive_bayes, trainer
from models import model as model_lib
from pipeline import predict
from tests.helpers import TINY_LABELS, TINY_TEXTS

VOCAB = 50


@pytest.fixture(scope="module")
def model():
    tf.keras.utils.set_random_seed(0)
    # Dropout everywhere: it must be inactive at inference and survive export. With the rating
    # head, so that its output is held to the same padding invariance.
    return model_lib.build_model(VOCAB, embedding_dim=8, rnn_units=8, rnn_layers=2, attention_units=8,
                                 dense_units=8, embedding_dropout=0.5, rnn_dropout=0.3, dense_dropout=0.5,
                                 rating_head=True)


def test_outputs_one_logit_and_per_token_attention(model):
    ids = tf.constant([[3, 4, 5, 0, 0], [6, 7, 8, 9, 10]], tf.int64)
    outputs = model(ids, training=False)
    assert outputs[model_lib.LOGIT].shape == (2,)
    attention = outputs[features.ATTENTION].numpy()
    assert attention.shape == (2, 5)
    np.testing.assert_allclose(attention.sum(axis=1), [1.0, 1.0], rtol=1e-5)
    # Padding gets exactly no attention.
    assert np.all(attention[0, 3:] == 0.0)


def test_prediction_is_the_same_alone_and_padded_in_a_batch_with_a_longer_text(model):
    short = [3, 4, 5]
    long_text = list(np.arange(1, VOCAB)) * 4  # 196 tokens
    alone = model(tf.constant([short], tf.int64), training=False)
    padded = tf.constant([short + [0] * (len(long_text) - 3), long_text], tf.int64)
    batched = model(padded, training=False)
    np.testing.assert_allclose(batched[model_lib.LOGIT][0], alone[model_lib.LOGIT][0], atol=1e-5)
    np.testing.assert_allclose(batched[features.ATTENTION][0, :3], alone[features.ATTENTION][0], atol=1e-5)
    np.testing.assert_allclose(batched[features.PREDICTED_RATING][0], alone[features.PREDICTED_RATING][0], atol=1e-5)
    # The long text really changes the batch: its own logit and rating differ.
    assert abs(float(batched[model_lib.LOGIT][1] - batched[model_lib.LOGIT][0])) > 1e-6
    assert abs(float(batched[features.PREDICTED_RATING][1] - batched[features.PREDICTED_RATING][0])) > 1e-6


def test_an_all_padding_row_yields_a_finite_prediction(model):
    outputs = model(tf.constant([[0, 0, 0]], tf.int64), training=False)
    assert np.isfinite(outputs[model_lib.LOGIT].numpy()).all()
    assert 1.0 <= float(outputs[features.PREDICTED_RATING][0]) <= 10.0


def test_length_batching_groups_similar_lengths_trims_padding_and_loses_nothing():
    lengths = np.array([9, 1, 5, 2, 8, 3, 7, 4, 6, 10, 2, 3], np.int64)
    max_len = 12
    ids = np.zeros((len(lengths), max_len), np.int64)
    for row, n in enumerate(lengths):
        ids[row, :n] = np.arange(1, n + 1) + 100 * row
    labels = (np.arange(len(lengths)) % 2).astype(np.int64)
    dataset = tf.data.Dataset.from_tensor_slices(
        {features.TOKEN_IDS: ids, features.LENGTH: lengths, features.TRANSFORMED_LABEL: labels}
    )
    batches = list(trainer.length_batched_dataset(dataset, batch_size=3, sort_window_batches=2,
                                                  shuffle_batches=False, seed=0))
    seen_rows = []
    for batch_ids, batch_labels in batches:
        batch_ids = batch_ids.numpy()
        batch_lengths = (batch_ids > 0).sum(axis=1)
        # Trimmed to the longest text in the batch, not to max_len.
        assert batch_ids.shape[1] == batch_lengths.max()
        seen_rows += [int(row[0]) // 100 for row in batch_ids]
        assert list(batch_labels[model_lib.LOGIT].numpy()) == [float(r % 2) for r in seen_rows[-len(batch_ids):]]
    assert sorted(seen_rows) == list(range(len(lengths)))
    # Within each window of 6 examples, batches come out sorted by length.
    first_window = sorted(lengths[:6])
    assert [int(b.shape[1]) for b, _ in batches[:2]] == [first_window[2], first_window[5]]
    # Widths rounded up to a multiple of 4, never past max_len, with the same rows.
    rounded = list(trainer.length_batched_dataset(dataset, batch_size=3, sort_window_batches=2,
                                                  shuffle_batches=False, seed=0, length_multiple=4))
    for (exact, _), (wide, _) in zip(batches, rounded):
        width = min(-(-exact.shape[1] // 4) * 4, max_len)
        assert wide.shape[1] == width
        np.testing.assert_array_equal(wide.numpy()[:, :exact.shape[1]], exact.numpy())
        assert not wide.numpy()[:, exact.shape[1]:].any()


def _with_naive_bayes(clf, transformed_rows, id_space):
    """The model stacked with n-gram ratios counted on the tiny texts (as the Trainer stacks them)."""
    ids = np.stack([row[features.TOKEN_IDS] for row in transformed_rows])
    labels = np.array([row[features.TRANSFORMED_LABEL] for row in transformed_rows], np.float32)
    counted = tf.data.Dataset.from_tensor_slices((ids, {model_lib.LOGIT: labels})).batch(4)
    keys, ratios = naive_bayes.log_count_ratios(counted, 2, id_space)
    return naive_bayes.stacked(clf, naive_bayes.NaiveBayesScore(keys, 3.0 * ratios, 2, id_space))


@pytest.mark.parametrize("ensemble_size,stack_naive_bayes", [(1, False), (2, False), (2, True)])
def test_exported_model_serves_raw_strings_and_tf_examples(tiny_transform, tmp_path, ensemble_size,
                                                            stack_naive_bayes):
    transformed_rows, tft_output = tiny_transform
    tf.keras.utils.set_random_seed(0)
    clf = model_lib.build_model(trainer.embedding_input_dim(tft_output), embedding_dim=8, rnn_units=8,
                                attention_units=8, dense_units=8, embedding_dropout=0.5, rnn_dropout=0.3,
                                dense_dropout=0.5, ensemble_size=ensemble_size)
    model_lib.compile_model(clf, learning_rate=1e-2, clipnorm=1.0)
    if stack_naive_bayes:
        clf = _with_naive_bayes(clf, transformed_rows, trainer.embedding_input_dim(tft_output))
    trainer.export_model(clf, tft_output, str(tmp_path / "export"))

    # The classifier is saved as its variables, not as Keras objects (slow to trace, and nothing loads them).
    saved = saved_model_pb2.SavedModel.FromString((tmp_path / "export" / "saved_model.pb").read_bytes())
    kinds = {node.user_object.identifier for node in saved.meta_graphs[0].object_graph_def.nodes}
    assert not kinds & {"_tf_keras_network", "_tf_keras_layer", "_tf_keras_rnn_layer"}, kinds
    loaded = tf.saved_model.load(str(tmp_path / "export"))
    serve = loaded.signatures[features.SERVING_SIGNATURE]
    texts = ["good", TINY_TEXTS[3], "", "ünïcödé 🎬 text"]
    out = serve(text=tf.constant(texts))
    probability = out[features.PROBABILITY].numpy()
    assert probability.shape == (4,)
    assert np.all((probability >= 0) & (probability <= 1))
    np.testing.assert_array_equal(out[features.PREDICTED_LABEL].numpy(), (probability >= 0.5).astype(np.int64))
    assert list(out[features.TOKEN_LENGTH].numpy()) == [1, 12, 0, 3]
    # Per token: attention and the probability after each prefix, zero past a text's length.
    trajectory, attention = out[features.TRAJECTORY].numpy(), out[features.ATTENTION].numpy()
    assert trajectory.shape == attention.shape == (4, 12)
    np.testing.assert_allclose(trajectory[[0, 1, 3], [0, 11, 2]], probability[[0, 1, 3]], atol=1e-5)
    assert np.all(trajectory[0, 1:] == 0) and np.all(attention[3, 3:] == 0) and np.all(trajectory[2] == 0)
    # Dropout is off at serving time: the same request gives the same answer.
    np.testing.assert_array_equal(serve(text=tf.constant(texts))[features.PROBABILITY].numpy(), probability)
    # Alone vs. in a batch with a longer text.
    alone = serve(text=tf.constant(["good"]))[features.PROBABILITY].numpy()[0]
    np.testing.assert_allclose(alone, probability[0], atol=1e-6)

    examples = [
        tf.train.Example(features=tf.train.Features(feature={
            features.TEXT: tf.train.Feature(bytes_list=tf.train.BytesList(value=[t.encode()])),
            features.LABEL: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        })).SerializeToString()
        for t, label in zip(["good", TINY_TEXTS[3]], TINY_LABELS[:2])
    ]
    by_example = loaded.signatures[features.TF_EXAMPLE_SIGNATURE](examples=tf.constant(examples))
    np.testing.assert_allclose(by_example[features.PROBABILITY].numpy(), probability[:2], atol=1e-6)


def test_early_stopping_and_the_schedule_watch_the_configured_metric_in_its_direction():
    stop, plateau = trainer.training_callbacks({"early_stopping_monitor": "val_auc", "early_stopping_patience": 2,
                                                "lr_schedule": "plateau"})
    assert (stop.monitor, stop.patience, stop.restore_best_weights) == ("val_auc", 2, True)
    assert stop.monitor_op(0.9, 0.8)  # higher AUC is better
    assert plateau.monitor == "val_auc" and plateau.monitor_op(0.9, 0.8)
    (stop,) = trainer.training_callbacks({"early_stopping_patience": 1})
    assert stop.monitor == "val_loss" and stop.monitor_op(0.2, 0.3)  # lower loss is better
    with pytest.raises(ValueError, match="early_stopping_monitor 'auc'"):
        trainer.training_callbacks({"early_stopping_monitor": "auc", "early_stopping_patience": 1})
    with pytest.raises(ValueError, match="lr_schedule 'cosine'"):
        trainer.training_callbacks({"early_stopping_patience": 1, "lr_schedule": "cosine"})


def test_the_export_carries_tf_servings_warmup_file_covering_every_padded_width(tiny_transform, tmp_path):
    from tensorflow_serving.apis import prediction_log_pb2

    from pipeline import serve
    from tests import serving_models

    _, tft_output = tiny_transform  # max_len 12
    export_dir = serving_models.export_tiny_model(tft_output, str(tmp_path / "m"))
    path = os.path.join(export_dir, features.WARMUP_FILE)
    records = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
    by_signature = {}
    for record in records:
        request = record.predict_log.request
        by_signature.setdefault(request.model_spec.signature_name, []).append(
            [t.decode() for t in tf.make_ndarray(request.inputs["text"]).reshape(-1)])
    # The same requests for both raw-text signatures: each has its own traced graph to warm.
    assert set(by_signature) == {features.SERVING_SIGNATURE, features.PER_TEXT_SIGNATURE}
    texts = by_signature[features.SERVING_SIGNATURE]
    assert by_signature[features.PER_TEXT_SIGNATURE] == texts
    # The empty text, every width 1..12 (length_multiple 1), then one mixed batch of 8.
    assert texts[0] == [""]
    assert [len(batch[0].split()) for batch in texts[1:-1]] == list(range(1, 13))
    assert len(texts[-1]) == 8
    # The server replays the whole file (at the path it looks at) before the version takes traffic.
    assert str(serve.WARMUP_FILE) == features.WARMUP_FILE
    signature = predict.load_signature(export_dir)
    per_text, per_text_calls = signature.per_text, []
    signature.per_text = lambda **inputs: per_text_calls.append(inputs) or per_text(**inputs)
    assert serve.replay_warmup_file(signature, export_dir) == len(records)
    assert len(per_text_calls) == len(texts)  # its records ran on the per-text signature
    # Without a per-text signature (an older export) its records are skipped, not run on another.
    signature.per_text = None
    assert serve.replay_warmup_file(signature, export_dir) == len(texts)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_recurrent_layer_is_kerass_layer_traced_once(cell):
    """recurrent_layer runs the cell in a plain RNN loop (no GPU here): the same outputs as Keras'
    LSTM/GRU layer on the same weights, over masked variable-length input, in a traced graph (where
    that layer would choose between two implementations), without that layer's second (cuDNN) graph."""
    tf.keras.utils.set_random_seed(1)
    inputs = tf.keras.Input((None, 5))
    mask = tf.keras.Input((None,), dtype=tf.bool)
    ours = tf.keras.layers.Bidirectional(model_lib.recurrent_layer(cell, 4, name=cell))
    theirs = tf.keras.layers.Bidirectional(model_lib.CUDNN_LAYERS[cell](4, return_sequences=True))
    ours_model = tf.keras.Model([inputs, mask], ours(inputs, mask=mask))
    theirs_model = tf.keras.Model([inputs, mask], theirs(inputs, mask=mask))
    assert isinstance(ours.forward_layer, tf.keras.layers.RNN)
    assert not isinstance(ours.forward_layer, tuple(model_lib.CUDNN_LAYERS.values()))
    theirs.set_weights(ours.get_weights())

    x = tf.random.normal((3, 7, 5))
    lengths = tf.constant([7, 3, 1])
    valid = tf.sequence_mask(lengths, 7)

    def graph_functions(model):
        traced = tf.function(lambda x, m: model([x, m])).get_concrete_function(x, valid)
        return traced, {f.signature.name for f in traced.graph.as_graph_def().library.function}

    ours_traced, ours_functions = graph_functions(ours_model)
    theirs_traced, theirs_functions = graph_functions(theirs_model)
    np.testing.assert_allclose(ours_traced(x, valid), theirs_traced(x, valid), atol=1e-6)
    np.testing.assert_allclose(ours_model([x, valid]), theirs_model([x, valid]), atol=1e-6)
    assert any("gpu" in name or "cudnn" in name for name in theirs_functions)
    assert not any("gpu" in name or "cudnn" in name for name in ours_functions)
