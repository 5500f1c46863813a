"""Platt scaling of the logit, fitted on the validation split after training.

Early stopping picks the epoch with the best validation AUC, and AUC ignores
where the decision threshold sits: two seeds with the same AUC can put the
0.5 threshold a point of accuracy apart. A scale and an offset of the logit,
fitted by log loss on held-out labels, put it back where the data says and
make the served probabilities calibrated. They are folded into the last dense
layer, so the exported model, its signatures and the per-token trajectory
(the same head) carry them with no extra op.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from models import model as model_lib

LOGIT_LAYER = "logit_dense"


def fit(logits: np.ndarray, labels: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """(scale, offset) minimising the log loss of sigmoid(scale * logit + offset), by Newton's method."""
    scale, offset = fit_logistic(np.asarray(logits, dtype=np.float64).reshape(-1, 1), labels, iterations)
    return scale, offset


def fit_logistic(columns: np.ndarray, labels: np.ndarray, iterations: int = 50) -> tuple[float, ...]:
    """Weights of each column and an offset, minimising the log loss on `labels`, by Newton's method.

    The first column is the model's logit: a map that does not increase with
    it (the model does not separate the labels) raises ValueError.
    """
    x = np.asarray(columns, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if x.ndim != 2 or x.shape[0] != y.size or y.size == 0:
        raise ValueError(f"need as many labels as logits, and some: {x.shape[:1]} vs {y.shape}")
    if y.min() == y.max():
        raise ValueError("calibration needs both labels in the validation split")
    x = np.concatenate([x, np.ones((y.size, 1))], axis=1)

    def log_loss(w):
        z = x @ w
        return float(np.sum(np.logaddexp(0.0, z) - y * z))

    params = np.zeros(x.shape[1])
    params[0] = 1.0
    loss = log_loss(params)
    for _ in range(iterations):
        p = 0.5 * (1.0 + np.tanh(0.5 * (x @ params)))  # the logistic function, without overflow
        gradient = x.T @ (p - y)
        hessian = (x * (p * (1 - p))[:, None]).T @ x + 1e-9 * np.eye(x.shape[1])
        step = np.linalg.solve(hessian, gradient)
        # Damped: a full Newton step from saturated probabilities (a confident
        # model's large logits) overshoots and diverges; halve it until the loss falls.
        for _ in range(40):
            candidate = params - step
            candidate_loss = log_loss(candidate)
            if candidate_loss <= loss:
                break
            step = step / 2
        else:
            break  # no step lowers the loss: a minimum, to numerical precision
        params, loss = candidate, candidate_loss
        if np.max(np.abs(step)) < 1e-10:
            break
    if not np.isfinite(params).all() or params[0] <= 0:
        raise ValueError(f"calibration did not find an increasing map (weights {params.round(4).tolist()}): "
                         "the model does not separate the validation labels")
    return tuple(float(w) for w in params)


def apply(model: tf.keras.Model, scale: float, offset: float) -> int:
    """Folds logit -> scale * logit + offset into every classifier head of `model`.

    An ensemble's logit is the mean of its members', so the same map applied
    to each member applies it to the mean. Returns how many heads changed.
    """
    heads = {id(layer): layer for layer in model_lib.keras_layers(model)
             if isinstance(layer, tf.keras.layers.Dense) and layer.name == LOGIT_LAYER}
    if not heads:
        raise ValueError(f"{model.name} has no {LOGIT_LAYER!r} layer to calibrate")
    for layer in heads.values():
        layer.kernel.assign(layer.kernel * scale)
        layer.bias.assign(layer.bias * scale + offset)
    return len(heads)


def logits_and_labels(model: tf.keras.Model, dataset: tf.data.Dataset, logit_key: str) -> tuple[np.ndarray, np.ndarray]:
    """The model's logits and the labels over a (token ids, {logit_key: label}) dataset."""
    logit_of = tf.function(lambda ids: tf.reshape(model(ids, training=False)[logit_key], [-1]),
                           input_signature=[dataset.element_spec[0]])  # traced once, not run op by op
    logits, labels = [], []
    for ids, label in dataset:
        logits.append(logit_of(ids).numpy())
        labels.append(np.asarray(label[logit_key]).reshape(-1))
    return np.concatenate(logits), np.concatenate(labels)


def cross_fitted_accuracy(columns: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy after the fit, each half of the examples mapped by the fit on the other half.

    `columns` is the logit ([n]) or the logit and other scores ([n, k]). The
    fit on the whole split scores it in-sample; this is the honest figure to
    compare with the unfitted accuracy on the same split.
    """
    x = np.asarray(columns, dtype=np.float64)
    x = x.reshape(-1, 1) if x.ndim == 1 else x
    y = np.asarray(labels).reshape(-1)
    halves = (np.arange(y.size) % 2 == 0, np.arange(y.size) % 2 == 1)
    correct = 0
    for fit_on, score_on in (halves, halves[::-1]):
        *weights, offset = fit_logistic(x[fit_on], y[fit_on])
        correct += int(np.sum(((x[score_on] @ np.array(weights) + offset) > 0) == (y[score_on] > 0.5)))
    return correct / y.size
