"""The pipeline's definition, runners, serving and operations commands."""

import os

# tf.Transform needs Keras 2 (tf-keras): set before any module of this package loads TensorFlow.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
