"""Weight averaging inside the training step (models/optimization.py): the fused Adam
takes Keras' Adam's steps, validation and early stopping see the average, training
carries on from the raw weights, and the average is what is exported."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from models import features, optimization, trainer
from models import model as model_lib
from pipeline import configs
from tests.test_trainer_resume import _write_transformed


def _steps(optimizer, sparse: bool, steps: int = 5):
    rng = np.random.default_rng(0)
    table = tf.Variable(rng.standard_normal((30, 4)).astype("float32"))
    dense = tf.Variable(rng.standard_normal((4, 3)).astype("float32"))
    optimizer.build([table, dense])
    for step in range(steps):
        rows = tf.constant([1, 5, 5, 7 + step], tf.int64)  # a repeated row adds up
        values = tf.constant(rng.standard_normal((4, 4)).astype("float32"))
        table_gradient = (tf.IndexedSlices(values, rows, tf.constant([30, 4], tf.int64)) if sparse
                          else tf.math.unsorted_segment_sum(values, rows, 30))
        optimizer.apply_gradients([(table_gradient, table),
                                   (tf.constant(rng.standard_normal((4, 3)).astype("float32")), dense)])
    averages = optimization.moving_averages(optimizer, [table, dense])
    return [table.numpy(), dense.numpy()], [a.numpy() for a in averages] if averages else None


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("weight_averaging", [0.0, 0.9])
def test_the_fused_adam_takes_keras_adams_steps_and_keeps_its_moving_average(sparse, weight_averaging):
    keras = tf.keras.optimizers.Adam(0.05, clipnorm=1.0, use_ema=bool(weight_averaging),
                                     ema_momentum=weight_averaging or 0.99)
    fused = optimization.make_optimizer(0.05, 1.0, weight_averaging)
    (want, want_averages), (got, got_averages) = _steps(keras, sparse), _steps(fused, sparse)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert (got_averages is None) == (not weight_averaging)
    for a, b, weights in zip(got_averages or [], want_averages or [], got):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        assert not np.allclose(a, weights)  # an average, not the last weights


def test_sparse_steps_skip_the_rows_no_gradient_has_reached_and_still_take_keras_adams_steps():
    """Row 40 is reached once, then only rows below 10: Adam must keep moving row 40 on its
    momentum (as Keras' Adam does), and rows 41-49 (never reached) stay exactly as built."""
    rng = np.random.default_rng(1)
    initial = rng.standard_normal((50, 4)).astype("float32")
    results = []
    for optimizer in (tf.keras.optimizers.Adam(0.05, use_ema=True, ema_momentum=0.9),
                      optimization.make_optimizer(0.05, 0.0, 0.9)):
        table = tf.Variable(initial)
        optimizer.build([table])
        for step in range(6):
            rows = tf.constant([40, 3] if step == 0 else [1, step + 2], tf.int64)
            values = tf.constant(np.full((2, 4), step + 1.0, "float32"))
            optimizer.apply_gradients([(tf.IndexedSlices(values, rows, tf.constant([50, 4], tf.int64)), table)])
        (average,) = optimization.moving_averages(optimizer, [table])
        results.append((table.numpy(), average.numpy()))
    (want, want_average), (got, got_average) = results
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_average, want_average, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got[40], initial[40])
    np.testing.assert_array_equal(got[41:], initial[41:])
    np.testing.assert_array_equal(got_average[41:], initial[41:])
    assert int(optimizer._reached(table).numpy()) == 41


@pytest.mark.parametrize("decay", [1.0, -0.5, 2.0])
def test_a_decay_outside_zero_to_one_is_refused(decay):
    with pytest.raises(ValueError, match=r"weight_averaging must be in \(0, 1\)"):
        optimization.make_optimizer(1e-3, 1.0, decay)


def test_validation_and_early_stopping_see_the_average_while_training_continues_from_raw_weights():
    tf.keras.utils.set_random_seed(0)
    x = np.random.rand(128, 4).astype("float32")
    y = (x.sum(axis=1) > 2).astype("float32")
    dense = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(4,))])
    dense.compile(optimization.make_optimizer(0.5, 10.0, 0.9), "mse")
    averaging, stop = trainer.training_callbacks({"early_stopping_patience": 5, "weight_averaging": 0.9})
    assert isinstance(averaging, trainer.ValidateOnAverage) and isinstance(stop, trainer.EarlyStoppingOnAverage)
    averages = lambda: [a.numpy().copy() for a in optimization.moving_averages(  # noqa: E731
        dense.optimizer, dense.trainable_variables)]
    weights = lambda: [w.numpy().copy() for w in dense.trainable_variables]  # noqa: E731
    seen = {"validation": [], "averages": [], "epoch_end": [], "epoch_begin": []}

    class Probe(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen["epoch_begin"].append(weights())

        def on_test_begin(self, logs=None):
            seen["validation"].append(weights())
            seen["averages"].append(averages())

        def on_epoch_end(self, epoch, logs=None):
            seen["epoch_end"].append(weights())

    dense.fit(x, y, batch_size=16, epochs=3, validation_data=(x, y), verbose=0,
              callbacks=[averaging, Probe(), stop])
    for epoch in range(3):
        for got, want in zip(seen["validation"][epoch], seen["averages"][epoch]):
            np.testing.assert_array_equal(got, want)  # validation saw the average
        # ...and not the raw weights, which are back when the epoch ends and the next one starts.
        assert not all(np.allclose(a, r) for a, r in zip(seen["validation"][epoch], seen["epoch_end"][epoch]))
    for end, begin in zip(seen["epoch_end"][:-1], seen["epoch_begin"][1:]):
        for a, b in zip(end, begin):
            np.testing.assert_array_equal(a, b)
    # Early stopping kept the average of its best epoch: what the model holds after fit.
    for got, want in zip(weights(), seen["averages"][stop.best_epoch]):
        np.testing.assert_array_equal(got, want)


def test_validating_on_the_average_needs_an_optimizer_that_keeps_one():
    dense = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(2,))])
    dense.compile(optimization.make_optimizer(0.1, 1.0), "mse")
    x = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match="weight averaging needs an optimizer"):
        dense.fit(x, x[:, 0], epochs=1, verbose=0, callbacks=[trainer.ValidateOnAverage()])


def _hyperparameters(weight_averaging: float, epochs: int = 3):
    dataset = configs.with_overrides(configs.POLARITY, {
        "pretrained_vocabulary": "0", "model.pretrained_embeddings": "", "model.ensemble_size": "2",
        "model.embedding_dim": "8", "model.rnn_units": "8", "model.attention_units": "8", "model.dense_units": "8",
        "training.epochs": str(epochs), "training.batch_size": "2", "training.learning_rate": "0.05",
        "training.weight_averaging": str(weight_averaging), "training.naive_bayes_ngrams": "0",
        "training.early_stopping_patience": "100", "training.early_stopping_monitor": "val_loss", "max_len": "12"})
    return configs.trainer_hyperparameters(dataclasses.replace(dataset))


def test_the_trainer_exports_the_averaged_weights_of_the_best_epoch(tiny_transform, tmp_path, monkeypatch):
    rows, tft_output = tiny_transform
    files = [_write_transformed(rows, tmp_path / "train.gz")]
    recorded = {"averages": [], "raw": []}

    class Record(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            variables = self.model.trainable_variables
            averages = optimization.moving_averages(self.model.optimizer, variables)
            recorded["raw"].append({v.ref(): v.numpy().copy() for v in variables})
            recorded["averages"].append({v.ref(): a.numpy().copy() for v, a in zip(variables, averages)})

    callbacks = trainer.training_callbacks
    stops = []

    def with_record(training):
        made = callbacks(training)
        stops.extend(c for c in made if isinstance(c, trainer.EarlyStoppingOnAverage))
        return made + [Record()]

    monkeypatch.setattr(trainer, "training_callbacks", with_record)
    model, history = trainer.train(files, files, tft_output, _hyperparameters(0.9))
    best = stops[0].best_epoch
    assert history["val_loss"][best] == min(history["val_loss"])
    # The model holds the averages of the best epoch, not its raw weights.
    averages, raw = recorded["averages"][best], recorded["raw"][best]
    assert set(averages) == {v.ref() for v in model.trainable_variables}
    for variable in model.trainable_variables:
        np.testing.assert_array_equal(variable.numpy(), averages[variable.ref()])
    assert max(np.abs(averages[k] - raw[k]).max() for k in raw) > 1e-3

    export_dir = str(tmp_path / "export")
    trainer.export_model(model, tft_output, export_dir)
    serve = tf.saved_model.load(export_dir).signatures[features.SERVING_SIGNATURE]
    texts = tf.constant(["good film", "a dull and tedious mess of a movie", ""])
    exported = serve(text=texts)[features.PROBABILITY].numpy()
    transformed = tft_output.transform_features_layer()({features.TEXT: tf.reshape(texts, [-1, 1])})

    def probability():
        return tf.sigmoid(model(transformed[features.TOKEN_IDS], training=False)[model_lib.LOGIT]).numpy()

    np.testing.assert_allclose(exported, probability(), atol=1e-5)  # the export is the averaged model
    for variable in model.trainable_variables:
        variable.assign(raw[variable.ref()])
    assert np.abs(exported - probability()).max() > 1e-4  # ...and the raw weights would answer otherwise
