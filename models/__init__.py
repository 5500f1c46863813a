"""The Transform and Trainer code: features, preprocessing, the Keras model and its training."""

import os

# tf.Transform needs Keras 2 (tf-keras): set before any module of this package loads TensorFlow.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
