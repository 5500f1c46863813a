"""AutoGraph leaves Keras' own code as written (models/tracing.py) and still converts this project's;
the training step is traced once (model.build_metric_variables)."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.autograph.core import config
from tensorflow.python.autograph.impl import conversion

from models import features, rating, tracing
from models import model as model_lib


def test_keras_functions_are_left_unconverted_and_the_projects_are_converted():
    assert conversion.is_allowlisted(tf.keras.layers.Dense.call)
    assert conversion.is_allowlisted(tf.keras.layers.GRU.call)
    assert conversion.is_allowlisted(tf.keras.optimizers.Adam.apply_gradients)
    assert not conversion.is_allowlisted(rating.MaskedRatingLoss.call)
    assert not conversion.is_allowlisted(model_lib.build_model)


def test_the_rule_is_added_once():
    assert tracing.leave_keras_unconverted()
    assert tracing.leave_keras_unconverted()
    keras_rules = [r for r in config.CONVERSION_RULES if isinstance(r, config.DoNotConvert) and r.matches("tf_keras")]
    assert len(keras_rules) == 1


@pytest.mark.parametrize("options", [dict(), dict(ensemble_size=2), dict(rating_head=True)])
def test_with_the_metric_variables_made_first_each_step_is_traced_once(options):
    """Keras makes some loss and metric variables in the first traced step (the rating
    head's), which makes tf.function trace that step again; model.build_metric_variables
    makes them before."""

    def traces(prebuild: bool) -> tuple[int, int, list[float]]:
        tf.keras.utils.set_random_seed(0)
        model = model_lib.build_model(30, embedding_dim=4, rnn_units=4, attention_units=4, dense_units=4, **options)
        view = model_lib.training_view(model)
        model_lib.compile_model(view, learning_rate=1e-2, clipnorm=1.0)
        ids = np.array([[3, 4, 5, 0], [6, 7, 0, 0], [8, 9, 10, 11]], np.int64)
        labels = {model_lib.LOGIT: np.array([1, 0, 1], np.float32)}
        if options.get("rating_head"):
            labels[features.PREDICTED_RATING] = np.array([9, 2, 0], np.float32)
        data = tf.data.Dataset.from_tensor_slices((ids, labels)).batch(2)
        if prebuild:
            model_lib.build_metric_variables(view, next(iter(data)))
        history = view.fit(data, validation_data=data, epochs=2, verbose=0).history
        return (view.train_function.experimental_get_tracing_count(),
                view.test_function.experimental_get_tracing_count(), history["loss"] + history["val_loss"])

    lazily, first = traces(False), traces(True)
    assert first[:2] == (1, 1)
    if options.get("rating_head"):  # its masked loss and MAE are what Keras made in the step (IMDB's default)
        assert lazily[0] == 2
    np.testing.assert_allclose(first[2], lazily[2], rtol=1e-6)  # the one example built on counts nowhere
