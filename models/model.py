"""The many-to-one classifier: tokens in, one logit out, token weights exposed.

Padding is masked end to end: the embedding emits a mask for id 0, the
recurrent layers carry their state unchanged through masked steps, and every
pooling ignores masked steps (attention gives them exactly zero weight). So
the prediction for a text does not depend on how much padding its batch adds.

Besides the logit the model outputs, per token:
* `attention`: how much each token contributed to the pooled vector (the
  attention weights; for max pooling the share of features a token supplied;
  for last-state pooling all weight on the last token);
* `trajectory`: the logit the classifier head gives to the pooling of the
  first t tokens, for every t, computed in the same pass. With a
  unidirectional reader this is exactly the prediction after reading t
  tokens; with a bidirectional one the states also carry right context, so
  it shows where along the text the evidence for the decision sits.

An ensemble (`ensemble_size` > 1) holds several such classifiers and outputs
the mean of each of these.

With `rating_head`, a small regression head of its own on the same pooled
vector also outputs `rating`, the predicted star rating, 1 + 9 * sigmoid(x):
within [1, 10] by construction. The training view then trains both outputs
(RatingTraining; the loss is in models/rating.py).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from models import features, optimization, rating, tracing

# Traced steps leave Keras' own code as written (models/tracing.py).
tracing.leave_keras_unconverted()

LOGIT = "logit"
MEMBER = "member"  # ensemble members are sub-models member_0, member_1, ...
CELLS = {"lstm": tf.keras.layers.LSTMCell, "gru": tf.keras.layers.GRUCell, "simple": tf.keras.layers.SimpleRNNCell}
CUDNN_LAYERS = {"lstm": tf.keras.layers.LSTM, "gru": tf.keras.layers.GRU}
POOLINGS = ("attention", "max", "last", "attention_max")
_NEG = -1e9  # a large negative (not -inf) keeps all-masked rows finite


def recurrent_layer(cell: str, units: int, dropout: float = 0.0, name: str | None = None) -> tf.keras.layers.RNN:
    """A recurrent layer returning every step's state: the `cell` run over the sequence.

    Keras' LSTM and GRU layers put two implementations into every graph they
    are traced into (cuDNN's and a portable one, chosen when the graph runs)
    and differentiate through that choice. Without a GPU only the portable one
    ever runs, yet both were traced, for training and for each exported
    signature: on polarity that was 40 s of a 225 s Trainer. RNN over the
    same cell is the same arithmetic on the same weights (the losses of a
    training run agree to every printed digit), traced once. Where a GPU is
    visible, the cuDNN layers are kept.
    """
    if cell in CUDNN_LAYERS and tf.config.list_logical_devices("GPU"):
        return CUDNN_LAYERS[cell](units, return_sequences=True, dropout=dropout, name=name)
    return tf.keras.layers.RNN(CELLS[cell](units, dropout=dropout), return_sequences=True, name=name)


def keras_layers(model: tf.keras.Model):
    """Every layer of `model`, through nested models (ensemble members). tf.Module.submodules
    would also walk the recurrent cells' dropout-mask caches, keyed by graphs it cannot sort."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, tf.keras.Model):
            yield from keras_layers(layer)


class SequencePooling(tf.keras.layers.Layer):
    """Pools [batch, time, features] to one vector, and to one vector per prefix.

    Returns (pooled [batch, F'], token_weights [batch, time], prefix_pooled [batch, time, F']).
    """

    def __init__(self, mode: str = "attention", units: int = 64, depth: int = 1, bidirectional: bool = True,
                 **kwargs):
        super().__init__(**kwargs)
        if mode not in POOLINGS:
            raise ValueError(f"pooling {mode!r} is not one of {POOLINGS}")
        self.mode, self.units, self.depth, self.bidirectional = mode, units, depth, bidirectional
        self.supports_masking = True

    def build(self, input_shape):
        if "attention" in self.mode:
            self.projections = [tf.keras.layers.Dense(self.units, activation="tanh", name=f"projection_{i}")
                                for i in range(self.depth)]
            self.score = tf.keras.layers.Dense(1, use_bias=False, name="score")
        super().build(input_shape)

    def call(self, sequence, mask=None):
        if mask is None:
            mask = tf.ones(tf.shape(sequence)[:2], tf.bool)
        mask_f = tf.cast(mask, sequence.dtype)
        parts = []
        if "attention" in self.mode:
            parts.append(self._attention(sequence, mask, mask_f))
        if "max" in self.mode:
            parts.append(self._max(sequence, mask_f))
        if self.mode == "last":
            parts.append(self._last(sequence, mask_f))
        pooled = tf.concat([p[0] for p in parts], axis=-1)
        weights = tf.add_n([p[1] for p in parts]) / float(len(parts))
        prefix = tf.concat([p[2] for p in parts], axis=-1)
        return pooled, weights, prefix

    def _attention(self, sequence, mask, mask_f):
        hidden = sequence
        for projection in self.projections:
            hidden = projection(hidden)
        scores = tf.squeeze(self.score(hidden), axis=-1)
        scores = tf.where(mask, scores, tf.fill(tf.shape(scores), _NEG))
        weights = tf.nn.softmax(scores, axis=-1) * mask_f
        pooled = tf.reduce_sum(sequence * weights[..., None], axis=1)
        # Softmax over each prefix, in one pass: running sums of exp(score).
        stable = tf.exp(scores - tf.reduce_max(scores, axis=1, keepdims=True)) * mask_f
        numerator = tf.cumsum(sequence * stable[..., None], axis=1)
        denominator = tf.cumsum(stable, axis=1)[..., None]
        prefix = tf.math.divide_no_nan(numerator, denominator)
        return pooled, weights, prefix

    def _max(self, sequence, mask_f):
        masked = sequence + (1.0 - mask_f[..., None]) * _NEG
        pooled = tf.reduce_max(masked, axis=1)
        # A token's weight: the share of features whose maximum it holds.
        is_max = tf.cast(tf.equal(masked, pooled[:, None, :]), sequence.dtype) * mask_f[..., None]
        weights = tf.math.divide_no_nan(tf.reduce_sum(is_max, -1), tf.reduce_sum(is_max, [1, 2])[:, None])
        prefix = tf.transpose(tf.scan(tf.maximum, tf.transpose(masked, [1, 0, 2])), [1, 0, 2])
        has_token = tf.cast(tf.cumsum(mask_f, axis=1) > 0, sequence.dtype)[..., None]
        return tf.where(tf.reduce_any(mask_f > 0, 1)[:, None], pooled, 0.0), weights, prefix * has_token

    def _last(self, sequence, mask_f):
        lengths = tf.cast(tf.reduce_sum(mask_f, axis=1), tf.int32)
        last_index = tf.maximum(lengths - 1, 0)
        at_last = tf.gather(sequence, last_index, batch_dims=1)
        weights = tf.one_hot(last_index, tf.shape(sequence)[1], dtype=sequence.dtype) * tf.minimum(
            tf.cast(lengths, sequence.dtype), 1.0)[:, None]
        if not self.bidirectional:
            return at_last, weights, sequence
        # Forward half: state at the last real token; backward half: state at
        # the first token, i.e. after reading the whole text right to left.
        half = sequence.shape[-1] // 2
        pooled = tf.concat([at_last[:, :half], sequence[:, 0, half:]], axis=-1)
        backward_final = tf.broadcast_to(sequence[:, :1, half:], tf.shape(sequence[..., half:]))
        prefix = tf.concat([sequence[..., :half], backward_final], axis=-1)
        return pooled, weights, prefix

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "units": self.units, "depth": self.depth,
                "bidirectional": self.bidirectional}


def build_model(
    vocab_size: int,
    embedding_dim: int = 64,
    cell: str = "lstm",
    rnn_units: int = 64,
    rnn_layers: int = 1,
    bidirectional: bool = True,
    pooling: str = "attention",
    attention_units: int = 64,
    attention_depth: int = 1,
    dense_units: int = 64,
    embedding_dropout: float = 0.2,
    token_dropout: float = 0.0,
    rnn_dropout: float = 0.0,
    dense_dropout: float = 0.3,
    embedding_matrix: np.ndarray | None = None,
    trainable_embeddings: bool = True,
    ensemble_size: int = 1,
    rating_head: bool = False,
) -> tf.keras.Model:
    """Returns a Keras model mapping token ids [batch, time] to logit, token weights and trajectory.

    `vocab_size` counts every id the embedding must hold, padding and OOV
    included. The time axis is unknown so batches can be trimmed to their own
    longest text. `embedding_matrix` ([vocab_size, embedding_dim]) starts the
    embedding from pretrained vectors. With `ensemble_size` N > 1 the model
    holds N classifiers of this shape, each with its own weights, and every
    output is the members' mean (see EnsembleTraining for how they train).
    `rating_head` adds the star-rating output (not with an ensemble).
    """
    if rating_head and ensemble_size > 1:
        raise ValueError("the rating head is not supported for an ensemble (ensemble_size > 1)")
    if cell not in CELLS:
        raise ValueError(f"cell {cell!r} is not one of {sorted(CELLS)}")
    if not 1 <= rnn_layers <= 3:
        raise ValueError(f"rnn_layers must be 1 to 3, got {rnn_layers}")
    if ensemble_size < 1:
        raise ValueError(f"ensemble_size must be >= 1, got {ensemble_size}")
    if embedding_matrix is not None and embedding_matrix.shape != (vocab_size, embedding_dim):
        raise ValueError(f"embedding matrix has shape {embedding_matrix.shape}, "
                         f"expected {(vocab_size, embedding_dim)}")

    embedding_layers = []

    def classifier(token_ids):
        # Zeros draw no random numbers, so the layers after it start as they would without a matrix.
        embedding = tf.keras.layers.Embedding(vocab_size, embedding_dim, mask_zero=True, name="embedding",
                                              embeddings_initializer="uniform" if embedding_matrix is None
                                              else "zeros", trainable=trainable_embeddings)
        embedding_layers.append(embedding)
        x = embedding(token_ids)
        # Drops whole embedding channels rather than single values, which
        # regularises a recurrent reader better.
        x = tf.keras.layers.SpatialDropout1D(embedding_dropout, name="embedding_dropout")(x)
        if token_dropout:
            # Drops whole tokens (their vector is zeroed, the mask kept), so the
            # reader cannot lean on any single word.
            x = tf.keras.layers.Dropout(token_dropout, noise_shape=(None, None, 1), name="token_dropout")(x)
        for index in range(rnn_layers):
            recurrent = recurrent_layer(cell, rnn_units, dropout=rnn_dropout, name=f"{cell}_{index}")
            if bidirectional:
                recurrent = tf.keras.layers.Bidirectional(recurrent, name=f"bi{cell}_{index}")
            x = recurrent(x)
        pooled, weights, prefix = SequencePooling(pooling, attention_units, attention_depth, bidirectional,
                                                  name="pooling")(x)

        # The classifier head, applied to the whole text and to every prefix.
        head = [tf.keras.layers.Dense(dense_units, activation="relu", name="dense"),
                tf.keras.layers.Dropout(dense_dropout, name="dense_dropout"),
                tf.keras.layers.Dense(1, name="logit_dense")]

        def classify(vector):
            for layer in head:
                vector = layer(vector)
            return vector

        outputs = {
            LOGIT: tf.keras.layers.Reshape((), name=LOGIT)(classify(pooled)),
            features.ATTENTION: tf.keras.layers.Identity(name=features.ATTENTION)(weights),
            features.TRAJECTORY: tf.keras.layers.Lambda(lambda t: tf.squeeze(t, -1),
                                                        name=features.TRAJECTORY)(classify(prefix)),
        }
        if rating_head:
            # Its own layers (none shared with the classifier head, which calibration and
            # Naive Bayes stacking rescale), on the same pooled vector.
            x = tf.keras.layers.Dense(dense_units, activation="relu", name="rating_dense")(pooled)
            x = tf.keras.layers.Dropout(dense_dropout, name="rating_dropout")(x)
            x = tf.keras.layers.Dense(1, name="rating_score")(x)
            outputs[features.PREDICTED_RATING] = BoundedRating(name=features.PREDICTED_RATING)(x)
        return outputs

    token_ids = tf.keras.Input(shape=(None,), dtype=tf.int64, name=features.TOKEN_IDS)
    name = f"{'bi' if bidirectional else ''}{cell}_{pooling}"
    if ensemble_size == 1:
        model = tf.keras.Model(inputs=token_ids, outputs=classifier(token_ids), name=name)
    else:
        members = []
        for index in range(ensemble_size):
            member_input = tf.keras.Input(shape=(None,), dtype=tf.int64,
                                          name=f"member_{index}_{features.TOKEN_IDS}")
            member = tf.keras.Model(member_input, classifier(member_input), name=f"{MEMBER}_{index}")
            members.append(member(token_ids))
        outputs = {key: tf.keras.layers.Average(name=key)([m[key] for m in members])
                   for key in (LOGIT, features.ATTENTION, features.TRAJECTORY)}
        model = tf.keras.Model(inputs=token_ids, outputs=outputs, name=f"{name}_x{ensemble_size}")
    if embedding_matrix is not None:
        # Assigned, not passed as a Constant initializer: that would put the whole
        # matrix into the model's config, which TensorBoard serialises at the start
        # of training (minutes for 120k x 50 floats).
        for embedding in embedding_layers:
            embedding.embeddings.assign(embedding_matrix)
    return model


class BoundedRating(tf.keras.layers.Layer):
    """[batch, 1] scores -> [batch] ratings RATING_MIN + (RATING_MAX - RATING_MIN) * sigmoid(score)."""

    def call(self, score):
        span = features.RATING_MAX - features.RATING_MIN
        return features.RATING_MIN + span * tf.sigmoid(tf.squeeze(score, -1))


def has_rating_head(model: tf.keras.Model) -> bool:
    return any(layer.name == features.PREDICTED_RATING for layer in model.layers)


class _ReportsTrainingLoss(tf.keras.Model):
    """A training view that reports one more loss beside `loss`, in training only."""

    training_loss_name = ""

    @property
    def metrics(self):
        if not hasattr(self, "_training_loss_mean"):
            self._training_loss_mean = tf.keras.metrics.Mean(name=self.training_loss_name)
        return super().metrics + [self._training_loss_mean]

    def test_step(self, data):
        logs = super().test_step(data)
        logs.pop(self.training_loss_name, None)  # nothing to report: validation only scores the model
        return logs


class AdversarialTraining(_ReportsTrainingLoss):
    """Trains on each batch twice: as is, and with its word vectors pushed the way that hurts most.

    Adversarial training for text (Miyato et al., 2017): the loss gradient
    with respect to the embedding gives the direction in which a small change
    of the word vectors raises the loss most; the loss at the perturbed
    vectors is added to the clean loss. The perturbation has L2 norm
    `epsilon` per example on average. It regularises a model that otherwise
    memorises the few thousand sentences of a small dataset.
    """

    adversarial_epsilon = 0.0
    # Reported beside the clean loss, so a run shows how much the perturbation hurts.
    training_loss_name = "adversarial_loss"

    def train_step(self, data):
        x, y = data[0], data[1]
        embeddings = self.get_layer("embedding").embeddings
        variables = self.trainable_variables
        refs = [variable.ref() for variable in variables]
        frozen = embeddings.ref() not in refs
        with tf.GradientTape() as tape:
            tape.watch(embeddings)  # also when the embedding is frozen
            y_pred = self(x, training=True)
            loss = self.compute_loss(x, y, y_pred)
        # One backward pass gives both the update and the direction to perturb.
        gradients = tape.gradient(loss, variables + [embeddings] if frozen else variables)
        direction = gradients[-1] if frozen else gradients[refs.index(embeddings.ref())]
        gradients = gradients[:len(variables)]
        # Only the rows this batch looks up move: sum each row's gradient over its occurrences.
        rows, occurrence_row = tf.unique(direction.indices)
        row_direction = tf.stop_gradient(tf.math.unsorted_segment_sum(direction.values, occurrence_row,
                                                                      tf.size(rows)))
        examples = tf.cast(tf.shape(x)[0], row_direction.dtype)
        perturbation = self.adversarial_epsilon * tf.sqrt(examples) * tf.math.l2_normalize(row_direction)
        original = tf.gather(embeddings, rows)
        embeddings.scatter_add(tf.IndexedSlices(perturbation, rows))
        with tf.GradientTape() as tape:
            adversarial_pred = self(x, training=True)
            adversarial_loss = self.loss[LOGIT](y[LOGIT], adversarial_pred[LOGIT])  # the compiled loss
        adversarial_gradients = tape.gradient(adversarial_loss, variables)
        embeddings.scatter_update(tf.IndexedSlices(original, rows))  # exactly, so a frozen embedding stays frozen
        self._training_loss_mean.update_state(adversarial_loss)
        self.optimizer.apply_gradients(
            (_add_gradients(clean, adversarial), variable)
            for clean, adversarial, variable in zip(gradients, adversarial_gradients, variables))
        return self.compute_metrics(x, y, y_pred, None)


class EnsembleTraining(_ReportsTrainingLoss):
    """Trains every member of an ensemble on its own loss, in one pass over each batch.

    Each member minimises its own cross-entropy, exactly as if trained alone
    (with its own dropout masks and initial weights), so the members stay
    independent and their errors partly cancel in the mean. Training on the
    loss of the mean logit instead would let members lean on each other.
    Metrics and validation are those of the mean logit, which is what serves.
    """

    member_logits: tf.keras.Model  # token ids -> ([each member's logit], the ensemble's logit)
    training_loss_name = "member_loss"  # the members' mean loss, beside the ensemble's

    def train_step(self, data):
        x, y = data[0], data[1]
        with tf.GradientTape() as tape:
            logits, ensemble_logit = self.member_logits(x, training=True)
            member_losses = [self.loss[LOGIT](y[LOGIT], logit) for logit in logits]  # the compiled loss
            # Summed, not averaged: each member's gradient is the one it would get alone.
            loss = tf.add_n(member_losses)
        self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
        self._training_loss_mean.update_state(loss / len(member_losses))
        y_pred = {LOGIT: ensemble_logit}
        self.compute_loss(x, y, y_pred)  # tracks the ensemble's own loss, comparable to val_loss
        return self.compute_metrics(x, y, y_pred, None)


class RatingTraining(tf.keras.Model):
    """Trains the classifier's logit and the rating head together (models/rating.py: the loss).

    Keras prefixes each metric of a two-output model with its output's name;
    the logs keep the classifier's names instead, so early stopping, the
    schedule and the history read `loss`, `auc`, `accuracy` and their `val_`
    twins as without the head: `loss` is the classifier's cross-entropy,
    `rating_loss` the rating's (unweighted), `joint_loss` what is minimised,
    `rating_mae` the mean absolute error in stars over the rated examples.
    """

    def train_step(self, data):
        return _classifier_names(super().train_step(data))

    def test_step(self, data):
        return _classifier_names(super().test_step(data))


def _classifier_names(logs):
    """The logs under the classifier's own names, in the order a model without the head logs them
    (loss, accuracy, auc; the console shows the first few), then the rating's and the joint loss."""
    logs = dict(logs)
    if f"{LOGIT}_loss" in logs:
        logs["joint_loss"] = logs.pop("loss")
        logs["loss"] = logs.pop(f"{LOGIT}_loss")
    prefix = f"{LOGIT}_"
    renamed = {key[len(prefix):] if key.startswith(prefix) else key: value for key, value in logs.items()}
    later = [key for key in renamed if key.startswith(f"{features.PREDICTED_RATING}_")] + ["joint_loss"]
    first = ["loss"] if "loss" in renamed else []
    order = first + [key for key in renamed if key not in first and key not in later] + later
    return {key: renamed[key] for key in order if key in renamed}


def _add_gradients(a, b):
    if isinstance(a, tf.IndexedSlices) and isinstance(b, tf.IndexedSlices):
        return tf.IndexedSlices(tf.concat([a.values, b.values], 0), tf.concat([a.indices, b.indices], 0),
                                a.dense_shape)
    return tf.convert_to_tensor(a) + tf.convert_to_tensor(b)


def training_view(model: tf.keras.Model, adversarial_epsilon: float = 0.0) -> tf.keras.Model:
    """The same layers with only the logit as output, so training computes no per-token extras.

    With `adversarial_epsilon` > 0 each step also trains on adversarially
    perturbed word vectors (see AdversarialTraining); an ensemble trains each
    member on its own loss (see EnsembleTraining).
    """
    if adversarial_epsilon < 0:
        raise ValueError(f"adversarial_epsilon must be >= 0, got {adversarial_epsilon}")
    logit = model.get_layer(LOGIT)
    outputs = {LOGIT: logit.output}
    if has_rating_head(model):
        if adversarial_epsilon:
            raise ValueError("adversarial training is not supported with the rating head (model.rating_head)")
        outputs[features.PREDICTED_RATING] = model.get_layer(features.PREDICTED_RATING).output
        return RatingTraining(model.input, outputs, name=f"{model.name}_train")
    if isinstance(logit, tf.keras.layers.Average):  # an ensemble: the mean of the members' logits
        if adversarial_epsilon:
            raise ValueError("adversarial training is not supported for an ensemble (ensemble_size > 1)")
        view = EnsembleTraining(model.input, outputs, name=f"{model.name}_train")
        view.member_logits = tf.keras.Model(model.input, (logit.input, logit.output), name=f"{model.name}_members")
        return view
    if not adversarial_epsilon:
        return tf.keras.Model(model.input, outputs, name=f"{model.name}_train")
    view = AdversarialTraining(model.input, outputs, name=f"{model.name}_adversarial_train")
    view.adversarial_epsilon = float(adversarial_epsilon)
    return view


def build_metric_variables(model: tf.keras.Model, batch) -> None:
    """Creates the compiled losses' and metrics' variables now, eagerly, on one example of `batch`.

    Keras creates some of them (the rating head's loss and MAE) inside the
    first traced training step, and a tf.function that creates variables is
    traced a second time without: 5 s more for IMDB's model. Made before
    `fit`, each step is traced once. The metrics are reset afterwards: the
    example counts nowhere.
    """
    x, y = tf.nest.map_structure(lambda t: t[:1], (batch[0], batch[1]))
    y_pred = model(x, training=False)
    model.compute_loss(x, y, y_pred)
    model.compute_metrics(x, y, y_pred, None)
    _ = model.metrics  # a training view's own loss tracker is created on first access
    model.reset_metrics()


def compile_model(model: tf.keras.Model, learning_rate: float, clipnorm: float,
                  weight_averaging: float = 0.0) -> None:
    """Adam (models/optimization.py), with a moving average of the weights of decay
    `weight_averaging` (0 = none) kept inside the training step.

    The optimizer is built here, so its state (moments, averages) exists before
    training starts: a checkpoint restores it at once, and the averages start
    from the weights the training starts from.
    """
    losses = {LOGIT: tf.keras.losses.BinaryCrossentropy(from_logits=True)}
    metrics = {
        LOGIT: [
            tf.keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0),
            tf.keras.metrics.AUC(name="auc", from_logits=True),
        ]
    }
    weights = None
    if features.PREDICTED_RATING in model.output_names:  # a training view with the rating head
        losses[features.PREDICTED_RATING] = rating.MaskedRatingLoss()
        metrics[features.PREDICTED_RATING] = [rating.MaskedMeanAbsoluteError(name="mae")]
        weights = {LOGIT: 1.0, features.PREDICTED_RATING: rating.RATING_LOSS_WEIGHT}
    model.compile(
        optimizer=optimization.make_optimizer(learning_rate, clipnorm, weight_averaging),
        loss=losses,
        loss_weights=weights,
        metrics=metrics,
    )
    model.optimizer.build(model.trainable_variables)
