"""Tracing without converting Keras' own code: AutoGraph leaves tf_keras alone, as it left Keras 2.

AutoGraph rewrites every Python function a traced step calls, except those
of packages on its do-not-convert list; that list names `keras`, where Keras 2
lived until TensorFlow 2.16, but not `tf_keras`, where it lives now. So each
first trace rewrote hundreds of Keras internals (layers, optimizer, metrics):
on IMDB's model the first training step took 12.7 s to trace, 4.5 s with Keras
left as written. Keras 2 is written to run unconverted (its tensor-dependent
control flow uses tf.cond and tf.while_loop); the losses and weights of a
training run are bit-identical either way. This project's own code is still
converted.
"""

from __future__ import annotations

import logging

KERAS_PACKAGE = "tf_keras"


def leave_keras_unconverted() -> bool:
    """Adds tf_keras to AutoGraph's do-not-convert rules (once); False where this TensorFlow has no such rules."""
    try:
        from tensorflow.python.autograph.core import config
    except ImportError:
        logging.warning("AutoGraph's conversion rules not found: tf_keras is converted when traced (slower)")
        return False
    rule = config.DoNotConvert(KERAS_PACKAGE)
    if not any(isinstance(r, config.DoNotConvert) and r.matches(KERAS_PACKAGE) for r in config.CONVERSION_RULES):
        config.CONVERSION_RULES = (rule, *config.CONVERSION_RULES)
    return True
