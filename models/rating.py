"""The star-rating head's loss and metrics (ModelConfig.rating_head).

IMDB reviews carry their star rating (1-4 negative, 7-10 positive). A small
regression head on the pooled vector predicts it beside the classifier's
logit. A target of 0 means "no rating" (a source without ratings, or a
review from one): such an example has zero weight in the rating loss and in
the rating metrics, and still trains the classifier.

The loss is Huber on rating / 10 with delta 0.1 (one star): squared within a
star, linear beyond, so a review whose stars contradict its words (a 4 that
reads like a 7) pulls the shared encoder with a gradient of at most 0.1,
against up to 1 for the classifier's cross-entropy. The classifier keeps
driving the shared encoder; the head's own layers still learn at full speed,
since Adam scales each parameter's step by its own gradient's magnitude.
Hence a loss weight of 1 (RATING_LOSS_WEIGHT) rather than a tuned one.

The Evaluator's rating metrics (MAE and Pearson's r on the test split) are
TFMA's, in pipeline/rating_metrics.py.
"""

from __future__ import annotations

import tensorflow as tf

from models import features

RATING_SCALE = features.RATING_MAX  # targets and predictions are compared as rating / 10
HUBER_DELTA = 0.1  # one star, on that scale
RATING_LOSS_WEIGHT = 1.0


def rated(y_true: tf.Tensor) -> tf.Tensor:
    """1.0 where the example has a rating (target > 0), 0.0 where it has none."""
    return tf.cast(tf.reshape(y_true, [-1]) > 0, tf.float32)


class MaskedRatingLoss(tf.keras.losses.Loss):
    """Huber on rating / 10 per example, exactly 0 (and no gradient) where the target is 0.

    Keras averages a loss over the batch size whatever the sample weights, so
    masking here is the same as a zero sample weight for unrated examples.
    """

    def __init__(self, delta: float = HUBER_DELTA, name: str = "masked_rating_huber", **kwargs):
        super().__init__(name=name, **kwargs)
        self.delta = delta

    def call(self, y_true, y_pred):
        y_true = tf.reshape(tf.cast(y_true, tf.float32), [-1])
        y_pred = tf.reshape(tf.cast(y_pred, tf.float32), [-1])
        error = tf.abs(y_pred - y_true) / RATING_SCALE
        quadratic = tf.minimum(error, self.delta)
        per_example = 0.5 * quadratic ** 2 + self.delta * (error - quadratic)
        return tf.where(y_true > 0, per_example, tf.zeros_like(per_example))

    def get_config(self):
        return {**super().get_config(), "delta": self.delta}


class MaskedMeanAbsoluteError(tf.keras.metrics.Metric):
    """Mean absolute error in stars over the examples that have a rating (target > 0)."""

    def __init__(self, name: str = "mae", **kwargs):
        super().__init__(name=name, **kwargs)
        self.total = self.add_weight(name="total", initializer="zeros", dtype=tf.float64)
        self.count = self.add_weight(name="count", initializer="zeros", dtype=tf.float64)

    def update_state(self, y_true, y_pred, sample_weight=None):
        weight = rated(y_true)
        if sample_weight is not None:
            weight *= tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
        error = tf.abs(tf.reshape(tf.cast(y_pred, tf.float32), [-1]) - tf.reshape(tf.cast(y_true, tf.float32), [-1]))
        self.total.assign_add(tf.cast(tf.reduce_sum(error * weight), tf.float64))
        self.count.assign_add(tf.cast(tf.reduce_sum(weight), tf.float64))

    def result(self):
        return tf.cast(tf.math.divide_no_nan(self.total, self.count), tf.float32)

    def reset_state(self):
        for variable in (self.total, self.count):
            variable.assign(tf.zeros_like(variable))


def pearson_r(predicted, actual) -> float:
    """Pearson's r over the examples with a rating (actual > 0), in NumPy (benchmarks, reports)."""
    import numpy as np

    predicted, actual = np.asarray(predicted, np.float64).reshape(-1), np.asarray(actual, np.float64).reshape(-1)
    keep = actual > 0
    if keep.sum() < 2 or predicted[keep].std() == 0 or actual[keep].std() == 0:
        return 0.0
    return float(np.corrcoef(predicted[keep], actual[keep])[0, 1])


def class_mean_baselines(train_rating, train_label, test_rating, test_label) -> dict | None:
    """MAE on the rated test examples of two baselines the head must beat: predicting the training
    split's mean rating, and the mean rating of each example's true class (class means over the
    rated training examples); None where either split has no rating or a class has none. Arrays of
    ratings (0 = none) and labels (0/1)."""
    import numpy as np

    train_rating, train_label = np.asarray(train_rating, float), np.asarray(train_label)
    test_rating, test_label = np.asarray(test_rating, float), np.asarray(test_label)
    rated, test_rated = train_rating > 0, test_rating > 0
    if not test_rated.any() or not all((rated & (train_label == c)).any() for c in (0, 1)):
        return None
    means = {c: float(train_rating[rated & (train_label == c)].mean()) for c in (0, 1)}
    overall = float(train_rating[rated].mean())
    actual = test_rating[test_rated]
    by_class = np.where(test_label[test_rated] == 1, means[1], means[0])
    return {"rated_test_examples": int(actual.size), "overall_mean": overall,
            "class_means": {"negative": means[0], "positive": means[1]},
            "overall_mean_mae": float(np.abs(actual - overall).mean()),
            "class_mean_mae": float(np.abs(actual - by_class).mean())}
