"""The optimizer: Keras' Adam with each variable's update in one fused kernel, and
its moving average of the weights (`use_ema`) updated inside the training step.

Keras' Adam updates a variable with a dozen element-wise ops; for a sparse
gradient (an embedding) it decays both moments over the whole matrix op by op
before scattering the batch's rows in. On the polarity ensemble's three
120k x 50 embeddings that was 34 ms per member per step, against 8 ms for
TensorFlow's fused ResourceApplyAdam kernel on the gradient made dense (the
same formula: m and v decay everywhere, the rows the batch touched get its
gradient). The moving average is Keras' own (`use_ema`, `ema_momentum`),
updated in the compiled step right after the variables, in place, in one
pass over each variable; it used to be a Python callback after every batch,
as slow as the batch itself.

An embedding with a sparse gradient is updated only up to the highest row a
gradient has reached so far (its high-water mark, an optimizer variable).
Rows past it have never had a gradient: their moments are zero, so Adam
moves them by exactly zero, and their average equals them. Skipping them is
the same update at a fraction of the cost where most rows are never trained:
the polarity vocabulary's 100k pretrained-only words (ids after the 17.5k the
training split holds). The reached rows are gathered and scattered, not
sliced: assigning to a slice of a variable copies the whole matrix first.

The averages are optimizer variables: Keras' BackupAndRestore checkpoints
them with the raw weights, and `Model.fit` puts them into the model's
variables when training ends (`finalize_variable_values`).
"""

from __future__ import annotations

import contextlib

import tensorflow as tf


class FusedAdam(tf.keras.optimizers.Adam):
    """tf.keras.optimizers.Adam (not amsgrad): each dense update in one kernel, a sparse one on the rows reached."""

    def build(self, var_list):
        if getattr(self, "_built", False):
            return
        super().build(var_list)
        # Per variable: how many leading rows a sparse gradient has reached (see the module's docstring).
        self._rows_reached = [self.add_variable(shape=(), dtype=tf.int64, name="rows_reached") for _ in var_list]
        # Keys of the variables a sparse gradient has updated (known while the step is traced).
        self._sparse_keys = set()

    def _reached(self, variable) -> tf.Variable:
        return self._rows_reached[self._index_dict[self._var_key(variable)]]

    def update_step(self, gradient, variable):
        if self.amsgrad or variable.dtype != tf.float32:
            return super().update_step(gradient, variable)
        if isinstance(gradient, tf.IndexedSlices):
            self._sparse_keys.add(self._var_key(variable))
            return self._update_reached_rows(gradient, variable)
        if self._var_key(variable) in self._sparse_keys:
            # A dense gradient where a sparse one came before: every row moves from now on.
            self._reached(variable).assign(tf.shape(variable, out_type=tf.int64)[0])
        beta_1, beta_2, beta_1_power, beta_2_power, epsilon = self._coefficients(variable.dtype)
        index = self._index_dict[self._var_key(variable)]
        # var -= lr * sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon), as Keras' Adam.
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=self._momentums[index].handle, v=self._velocities[index].handle,
            beta1_power=beta_1_power, beta2_power=beta_2_power, lr=tf.cast(self.learning_rate, variable.dtype),
            beta1=beta_1, beta2=beta_2, epsilon=epsilon, grad=gradient)

    def _coefficients(self, dtype):
        """beta_1, beta_2, their powers at this step and epsilon, as Keras' Adam computes them."""
        local_step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        beta_2_power = tf.pow(beta_2, local_step)
        epsilon = tf.cast(self.epsilon, dtype)
        if self.adaptive_epsilon:
            epsilon = epsilon * tf.sqrt(1 - beta_2_power)
        return beta_1, beta_2, tf.pow(beta_1, local_step), beta_2_power, epsilon

    def _update_reached_rows(self, gradient: tf.IndexedSlices, variable):
        """Adam on the rows up to the highest any sparse gradient has reached: the same
        update as on the whole matrix (rows past it have zero moments), written as
        ResourceApplyAdam computes it."""
        reached = self._reached(variable)
        rows = tf.maximum(reached, tf.reduce_max(tf.cast(gradient.indices, tf.int64)) + 1)
        reached.assign(rows)
        # Duplicate rows add up, as Keras' scatter_add does.
        grad = tf.math.unsorted_segment_sum(gradient.values, gradient.indices, rows)
        index = self._index_dict[self._var_key(variable)]
        m, v = self._momentums[index], self._velocities[index]
        beta_1, beta_2, beta_1_power, beta_2_power, epsilon = self._coefficients(variable.dtype)
        alpha = tf.cast(self.learning_rate, variable.dtype) * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        reached_rows = tf.range(rows)
        old_m, old_v = m.sparse_read(reached_rows), v.sparse_read(reached_rows)
        new_m = old_m + (grad - old_m) * (1 - beta_1)
        new_v = old_v + (tf.square(grad) - old_v) * (1 - beta_2)
        m.scatter_update(tf.IndexedSlices(new_m, reached_rows))
        v.scatter_update(tf.IndexedSlices(new_v, reached_rows))
        variable.scatter_sub(tf.IndexedSlices(alpha * new_m / (tf.sqrt(new_v) + epsilon), reached_rows))

    def _update_model_variables_moving_average(self, var_list):
        if not self.use_ema or not self.ema_momentum:
            return super()._update_model_variables_moving_average(var_list)
        # average <- momentum * average + (1 - momentum) * weight in one pass, in place: the
        # proximal gradient step with l1 = 0 computes var <- (var - alpha * delta) / (1 + alpha * l2),
        # which with alpha = -(1 - momentum) / momentum, l2 = -1 and delta = the weight is exactly
        # that (1 + alpha * l2 = 1 / momentum). Half the memory traffic of the two-pass update, which
        # matters over 120k x 50 embeddings (3 of them in the polarity ensemble) every step.
        momentum = float(self.ema_momentum)
        for variable in var_list:
            average = self._model_variables_moving_average[self._index_dict[self._var_key(variable)]]
            step = dict(var=average.handle, alpha=tf.constant(-(1.0 - momentum) / momentum, average.dtype),
                        l1=tf.constant(0.0, average.dtype), l2=tf.constant(-1.0, average.dtype))
            if self._var_key(variable) in self._sparse_keys:
                # Past the rows reached, the weights never moved and their average equals them.
                reached_rows = tf.range(self._reached(variable))
                tf.raw_ops.ResourceSparseApplyProximalGradientDescent(
                    **step, grad=variable.sparse_read(reached_rows), indices=reached_rows)
            else:
                tf.raw_ops.ResourceApplyProximalGradientDescent(**step, delta=variable.read_value())


def make_optimizer(learning_rate: float, clipnorm: float, weight_averaging: float = 0.0) -> FusedAdam:
    """Adam, keeping an exponential moving average of the weights with decay
    `weight_averaging` when it is not 0 (0.99 averages about the last 100 steps)."""
    if weight_averaging and not 0.0 < weight_averaging < 1.0:
        raise ValueError(f"weight_averaging must be in (0, 1), or 0 for none; got {weight_averaging}")
    return FusedAdam(learning_rate=learning_rate, clipnorm=clipnorm, use_ema=bool(weight_averaging),
                     ema_momentum=float(weight_averaging) if weight_averaging else 0.99)


def moving_averages(optimizer, variables) -> list[tf.Variable] | None:
    """The optimizer's moving average of each of `variables`, or None when it keeps none (yet)."""
    if not getattr(optimizer, "use_ema", False) or not getattr(optimizer, "_built", False):
        return None
    return [optimizer._model_variables_moving_average[optimizer._index_dict[optimizer._var_key(v)]]
            for v in variables]


@contextlib.contextmanager
def averaged_weights(model: tf.keras.Model):
    """Inside, the model's trainable variables hold their moving averages; after, the raw weights again.

    A no-op for an optimizer without averages.
    """
    variables = model.trainable_variables
    averages = moving_averages(model.optimizer, variables)
    if averages is None:
        yield
        return
    # Snapshots: a later update of a variable copies its buffer rather than change them.
    raw = [variable.read_value() for variable in variables]
    for variable, average in zip(variables, averages):
        variable.assign(average)
    try:
        yield
    finally:
        for variable, value in zip(variables, raw):
            variable.assign(value)
