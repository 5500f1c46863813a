"""Platt scaling: the fit recovers a known map, and folding it into the last layer
moves the logit and the whole per-token trajectory by exactly that map."""

import numpy as np
import pytest
import tensorflow as tf

from models import calibration, features, trainer
from models import model as model_lib

VOCAB = 30


def _labels_from(logits, scale, offset, seed=0):
    probability = 1.0 / (1.0 + np.exp(-(scale * logits + offset)))
    return (np.random.default_rng(seed).random(logits.size) < probability).astype(np.int64)


def test_fit_recovers_the_scale_and_offset_that_generated_the_labels():
    logits = np.random.default_rng(1).normal(0.0, 2.0, 40_000)
    scale, offset = calibration.fit(logits, _labels_from(logits, 0.5, -0.8))
    assert scale == pytest.approx(0.5, abs=0.03)
    assert offset == pytest.approx(-0.8, abs=0.05)


def test_fit_rejects_one_class_mismatched_lengths_and_an_inverted_model():
    with pytest.raises(ValueError, match="both labels"):
        calibration.fit(np.array([0.1, 2.0]), np.array([1, 1]))
    with pytest.raises(ValueError, match="as many labels"):
        calibration.fit(np.array([0.1, 2.0]), np.array([1]))
    logits = np.random.default_rng(2).normal(0.0, 2.0, 2000)
    with pytest.raises(ValueError, match="increasing"):
        calibration.fit(logits, _labels_from(-logits, 1.0, 0.0))


def test_a_shifted_threshold_is_corrected_and_the_cross_fitted_accuracy_shows_it():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 4000)
    # Separable around +2, not around 0: at threshold 0 most negatives read as positive.
    logits = np.where(labels == 1, 2.0, -2.0) + rng.normal(0.0, 1.0, labels.size) + 2.0
    uncalibrated = np.mean((logits > 0) == (labels == 1))
    crossed = calibration.cross_fitted_accuracy(logits, labels)
    assert uncalibrated < 0.75
    assert crossed > 0.95
    scale, offset = calibration.fit(logits, labels)
    assert -offset / scale == pytest.approx(2.0, abs=0.2)  # the threshold moved to where the classes meet


@pytest.mark.parametrize("ensemble_size", [1, 2])
def test_apply_maps_the_logit_and_every_prefix_of_the_trajectory(ensemble_size):
    tf.keras.utils.set_random_seed(4)
    model = model_lib.build_model(VOCAB, embedding_dim=6, rnn_units=5, attention_units=4, dense_units=4,
                                  ensemble_size=ensemble_size, rnn_dropout=0.2)
    ids = tf.constant([[3, 4, 5, 0, 0], [7, 8, 9, 10, 11]], tf.int64)
    before = model(ids, training=False)
    # A traced training step leaves the recurrent cells caching dropout masks by graph (which
    # tf.Module.submodules cannot walk): what a model looks like after training.
    tf.function(lambda ids: model(ids, training=True))(ids)
    heads = calibration.apply(model, 1.7, -0.3)
    after = model(ids, training=False)
    assert heads == ensemble_size
    np.testing.assert_allclose(after[model_lib.LOGIT], 1.7 * before[model_lib.LOGIT] - 0.3, atol=1e-5)
    np.testing.assert_allclose(after[features.TRAJECTORY][:, :3], 1.7 * before[features.TRAJECTORY][:, :3] - 0.3,
                               atol=1e-5)
    np.testing.assert_allclose(after[features.ATTENTION], before[features.ATTENTION], atol=1e-6)
    # The training view shares the layers, so it sees the calibrated logit too.
    view = model_lib.training_view(model)
    np.testing.assert_allclose(view(ids, training=False)[model_lib.LOGIT], after[model_lib.LOGIT], atol=1e-6)


def _untrained_model_on_random_texts(seed):
    """(model, its training view, token ids of 600 random texts, the view's logits for them)."""
    tf.keras.utils.set_random_seed(seed)
    model = model_lib.build_model(VOCAB, embedding_dim=6, rnn_units=5, attention_units=4, dense_units=4)
    view = model_lib.training_view(model)
    ids = tf.constant(np.random.default_rng(seed).integers(1, VOCAB, (600, 6)), tf.int64)
    before = view(ids, training=False)[model_lib.LOGIT].numpy()
    return model, view, ids, before


def _validation_split(ids, labels):
    return tf.data.Dataset.from_tensor_slices((ids, {model_lib.LOGIT: labels.astype(np.float32)})).batch(128)


def test_trainer_calibrates_on_the_validation_split_and_returns_the_map():
    model, view, ids, before = _untrained_model_on_random_texts(5)
    labels = _labels_from((before - before.mean()) / before.std(), 2.0, 0.7).astype(np.float32)
    scale, offset = trainer.calibrate_logit(model, view, _validation_split(ids, labels))
    assert (scale, offset) == pytest.approx(calibration.fit(before, labels), rel=1e-4)
    assert scale > 0
    np.testing.assert_allclose(model(ids, training=False)[model_lib.LOGIT], scale * before + offset,
                               rtol=1e-4, atol=1e-4)


def test_trainer_leaves_a_model_that_fails_validation_uncalibrated_for_the_gate_to_judge():
    model, view, ids, before = _untrained_model_on_random_texts(6)
    # Labels that run against the model's own ranking: only a decreasing map would fit.
    inverted = _labels_from(-(before - before.mean()) / before.std(), 3.0, 0.0)
    assert trainer.calibrate_logit(model, view, _validation_split(ids, inverted)) is None
    np.testing.assert_array_equal(model(ids, training=False)[model_lib.LOGIT], before)


def test_the_fit_converges_for_a_confident_models_large_logits():
    """A full Newton step from saturated probabilities overshoots: once, this fit returned
    weights of 5e12 (every probability 0 or 1) for a warm-started IMDB network."""
    rng = np.random.default_rng(0)
    signal = rng.normal(size=2000) * 2
    labels = (rng.random(2000) < 1 / (1 + np.exp(-signal))).astype(float)
    other = signal + rng.normal(size=2000)
    reference = calibration.fit_logistic(np.stack([signal, other], 1), labels)
    for magnitude in (10.0, 40.0, 200.0):
        weights = calibration.fit_logistic(np.stack([magnitude * signal, magnitude * other], 1), labels)
        # The same model, up to the scale of its inputs.
        np.testing.assert_allclose(np.array(weights[:2]) * magnitude, reference[:2], rtol=1e-6)
        assert weights[2] == pytest.approx(reference[2], abs=1e-6)
