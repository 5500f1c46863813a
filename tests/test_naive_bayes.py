"""Naive Bayes n-gram scores: exact n-gram keys, binarized counts, the log-count
ratios of Wang & Manning, padding that scores nothing, and the stacked model
whose logit and trajectory carry the fitted combination."""

import numpy as np
import pytest
import tensorflow as tf

from models import calibration, features, naive_bayes, trainer
from models import model as model_lib

VOCAB = 12


def _dataset(ids, labels, batch=4):
    return tf.data.Dataset.from_tensor_slices(
        (tf.constant(ids, tf.int64), {model_lib.LOGIT: np.asarray(labels, np.float32)})).batch(batch)


def test_ngram_keys_are_exact_and_no_ngram_touches_padding():
    keys = naive_bayes.ngram_keys(tf.constant([[3, 5, 3, 0, 0]]), order=3, id_space=10).numpy()[0]
    np.testing.assert_array_equal(keys[:, 0], [3, 5, 3, 0, 0])
    np.testing.assert_array_equal(keys[:, 1], [0, 35, 53, 0, 0])
    np.testing.assert_array_equal(keys[:, 2], [0, 0, 353, 0, 0])
    with pytest.raises(ValueError, match="order"):
        naive_bayes.ngram_keys(tf.constant([[1]]), order=4, id_space=10)
    with pytest.raises(ValueError, match="int64"):
        naive_bayes.ngram_keys(tf.constant([[1]]), order=3, id_space=3_000_000)


def test_an_ngram_counts_once_per_text():
    keys = naive_bayes.ngram_keys(tf.constant([[3, 5, 3, 5, 0]]), order=2, id_space=10)
    first = naive_bayes.first_occurrences(keys).numpy()[0]
    np.testing.assert_array_equal(first[:, 0], [True, True, False, False, False])  # 3, 5, then repeats
    np.testing.assert_array_equal(first[:, 1], [False, True, True, False, False])  # 35, 53, then 35 again


def test_first_occurrences_match_a_plain_python_count_on_random_texts():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 5, (16, 30))  # few distinct ids: many repeats, and padding in the middle too
    keys = naive_bayes.ngram_keys(tf.constant(ids), order=3, id_space=10).numpy()
    first = naive_bayes.first_occurrences(tf.constant(keys)).numpy()
    for row, flags in zip(keys, first):
        seen = set()
        for key, flag in zip(row.reshape(-1), flags.reshape(-1)):
            assert flag == (key > 0 and key not in seen)
            seen.add(key)


def test_log_count_ratios_follow_wang_and_manning():
    # Positive texts: "1 2", "1 1"; negative: "2 3". Unigrams and bigrams, binarized.
    ids, labels = [[1, 2], [1, 1], [2, 3]], [1, 1, 0]
    keys, ratios = naive_bayes.log_count_ratios(_dataset(ids, labels), order=2, id_space=10, alpha=1.0)
    np.testing.assert_array_equal(keys, [1, 2, 3, 11, 12, 23])
    positive = np.array([2, 1, 0, 1, 1, 0]) + 1.0  # text "1 1" counts unigram 1 once
    negative = np.array([0, 1, 1, 0, 0, 1]) + 1.0
    np.testing.assert_allclose(ratios, np.log(positive / positive.sum()) - np.log(negative / negative.sum()),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="both labels"):
        naive_bayes.log_count_ratios(_dataset(ids, [1, 1, 1]), order=2, id_space=10)
    # The matrix both the ratios and the regression read: one row per text, 1 per distinct n-gram.
    counts = naive_bayes.count_ngrams(_dataset(ids, labels, batch=2), order=2, id_space=10)
    np.testing.assert_array_equal(counts.matrix.toarray(), [[1, 1, 0, 0, 1, 0], [1, 0, 0, 1, 0, 0],
                                                            [0, 1, 1, 0, 0, 1]])
    assert counts.labels.tolist() == [True, True, False]


def test_the_score_sums_the_ratios_of_distinct_ngrams_and_ignores_padding():
    keys, ratios = np.array([1, 2, 12, 21]), np.array([0.5, -0.25, 2.0, -1.0])
    score = naive_bayes.NaiveBayesScore(keys, ratios, order=2, id_space=10)
    alone = score(tf.constant([[1, 2, 1, 2, 7]])).numpy()
    # 1, 2, "1 2", "2 1" first occur at tokens 0-2; "1 2" again at 3 and the unknown 7 add nothing.
    np.testing.assert_allclose(alone[0], [0.5, -0.25 + 2.0, -1.0, 0.0, 0.0])
    padded = score(tf.constant([[1, 2, 1, 2, 7, 0, 0], [2, 0, 0, 0, 0, 0, 0]])).numpy()
    np.testing.assert_allclose(padded[0, :5], alone[0])
    np.testing.assert_allclose(padded[0, 5:], 0.0)
    np.testing.assert_allclose(padded[1], [-0.25, 0, 0, 0, 0, 0, 0])



class _Scorer(tf.Module):
    def __init__(self, score):
        super().__init__()
        self.score = score

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int64, name="token_ids")])
    def serve(self, token_ids):
        return {"score": self.score(token_ids)}


def test_a_saved_score_refills_its_table_from_the_restored_variables(tmp_path):
    """The hash table is rebuilt from the variables checkpoint when the SavedModel loads,
    in Python and through TF1's session loader (restore, then the init op: as TF Serving
    loads), and the keys are not copied into the graph as constants."""
    rng = np.random.default_rng(0)
    keys = np.unique(rng.integers(1, 10 ** 6, 50_000))
    ratios = rng.normal(size=keys.size).astype(np.float32)
    score = naive_bayes.NaiveBayesScore(keys, ratios, order=2, id_space=1000)
    ids = np.array([[keys[0], keys[7], 0], [keys[3], 999, 1]]) % 1000
    expected = score(tf.constant(ids)).numpy()
    assert np.count_nonzero(expected) >= 2
    module = _Scorer(score)
    tf.saved_model.save(module, str(tmp_path / "score"), signatures={"serving_default": module.serve})
    assert (tmp_path / "score" / "saved_model.pb").stat().st_size < keys.nbytes / 4

    loaded = tf.saved_model.load(str(tmp_path / "score")).signatures["serving_default"]
    np.testing.assert_array_equal(loaded(token_ids=tf.constant(ids))["score"].numpy(), expected)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(tmp_path / "score"))
        signature = graph.signature_def["serving_default"]
        served = session.run(signature.outputs["score"].name, {signature.inputs["token_ids"].name: ids})
    np.testing.assert_array_equal(served, expected)


def _cued_texts(seed, count=400, width=6):
    """Texts whose label a cue word gives (1: positive, 2: negative), 10% of labels flipped."""
    rng = np.random.default_rng(seed)
    cue = rng.integers(0, 2, count)
    ids = rng.integers(3, VOCAB, (count, width))
    ids[:, 2] = np.where(cue == 1, 1, 2)
    ids[rng.random(count) < 0.3, width - 2:] = 0  # some shorter texts
    return ids, np.where(rng.random(count) < 0.1, 1 - cue, cue)


def _briefly_trained(seed, ensemble_size, train_ids, train_labels):
    """A small model trained until it reads the cue word, as a trained network would."""
    tf.keras.utils.set_random_seed(seed)
    model = model_lib.build_model(VOCAB, embedding_dim=6, rnn_units=5, attention_units=4, dense_units=4,
                                  ensemble_size=ensemble_size)
    view = model_lib.training_view(model)
    model_lib.compile_model(view, learning_rate=2e-2, clipnorm=1.0)
    view.fit(_dataset(train_ids, train_labels, 32), epochs=4, verbose=0)
    return model, view


@pytest.mark.parametrize("ensemble_size", [1, 2])
def test_the_stacked_model_adds_the_fitted_score_to_its_logit_and_trajectory(ensemble_size):
    train_ids, train_labels = _cued_texts(1)
    eval_ids, eval_labels = _cued_texts(2)
    model, view = _briefly_trained(7, ensemble_size, train_ids, train_labels)
    before = model(tf.constant(eval_ids), training=False)
    stacked, weights, count = naive_bayes.fit_and_stack(model, view, _dataset(train_ids, train_labels, 64),
                                                        _dataset(eval_ids, eval_labels, 64), 2, VOCAB)
    scale, nb_scale, offset = weights
    assert nb_scale > 0 and count > VOCAB  # bigrams were counted
    after = stacked(tf.constant(eval_ids), training=False)
    accuracy = lambda logits: np.mean((np.asarray(logits) > 0) == (eval_labels == 1))  # noqa: E731
    assert accuracy(before[model_lib.LOGIT]) > 0.85 and accuracy(after[model_lib.LOGIT]) > 0.85
    keys, ratios = naive_bayes.log_count_ratios(_dataset(train_ids, train_labels), 2, VOCAB)
    unit = naive_bayes.NaiveBayesScore(keys, ratios, 2, VOCAB)(tf.constant(eval_ids)).numpy()
    np.testing.assert_allclose(after[model_lib.LOGIT], scale * before[model_lib.LOGIT] + offset
                               + nb_scale * unit.sum(axis=1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(after[features.TRAJECTORY], scale * before[features.TRAJECTORY] + offset
                               + nb_scale * np.cumsum(unit, axis=1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(after[features.ATTENTION], before[features.ATTENTION], atol=1e-6)
    # The same text alone, and in a batch padded further beside a longer one, gets the same logit.
    short = eval_ids[eval_ids[:, -1] == 0][0, :-2]
    alone = stacked(tf.constant([short]), training=False)[model_lib.LOGIT].numpy()
    batch = np.zeros((2, eval_ids.shape[1] + 5), np.int64)
    batch[0, :short.size], batch[1, :eval_ids.shape[1]] = short, eval_ids[eval_ids[:, -1] > 0][0]
    batched = stacked(tf.constant(batch), training=False)[model_lib.LOGIT].numpy()
    np.testing.assert_allclose(batched[0], alone[0], rtol=1e-5, atol=1e-5)


def test_the_trainer_leaves_out_scores_that_validation_finds_no_use_for():
    train_ids, train_labels = _cued_texts(3)
    eval_ids, eval_labels = _cued_texts(4)
    model, view = _briefly_trained(8, 1, train_ids, train_labels)
    before = model(tf.constant(eval_ids), training=False)[model_lib.LOGIT].numpy()
    # Validation labels inverted against the cue: the scores would need a negative weight.
    returned, weights = trainer.stack_naive_bayes(model, view, _dataset(train_ids, train_labels, 64),
                                                  _dataset(eval_ids, 1 - eval_labels, 64), 2, VOCAB)
    assert weights == [] and returned is model
    np.testing.assert_array_equal(model(tf.constant(eval_ids), training=False)[model_lib.LOGIT], before)


def test_cross_fitted_accuracy_takes_several_scores():
    rng = np.random.default_rng(9)
    labels = rng.integers(0, 2, 4000)
    signal = np.where(labels == 1, 1.0, -1.0)
    weak, strong = signal + rng.normal(0, 3.0, labels.size), signal + rng.normal(0, 0.5, labels.size)
    both = np.stack([weak, strong], axis=1)
    assert calibration.cross_fitted_accuracy(both, labels) > calibration.cross_fitted_accuracy(weak, labels) + 0.2
    weights = calibration.fit_logistic(both, labels)
    assert weights[1] > 2 * weights[0] > 0


def test_the_trainer_refuses_to_fit_the_logit_twice_before_it_trains():
    with pytest.raises(ValueError, match="turn calibrate_logit off"):
        trainer.train([], [], None, {"training": {"naive_bayes_ngrams": 2, "calibrate_logit": True}})


def test_the_logistic_weights_score_a_text_as_the_regression_does():
    """NBSVM-style weights (naive_bayes.logistic_weights) in the same score layer: a text's
    summed score is the regression's decision on its ratio-scaled, binarized n-grams, less
    the intercept (which the stacking's offset takes), and padding still scores nothing."""
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 40)
    # Token 2 leans positive, 3 negative; 4-9 are noise; repeats count once.
    ids = np.zeros((40, 7), np.int64)
    for row, label in enumerate(labels):
        length = rng.integers(2, 8)
        ids[row, :length] = rng.choice([2 if label else 3, 4, 5, 6, 7, 8, 9], length)
    counts = naive_bayes.count_ngrams(_dataset(ids, labels), order=2, id_space=VOCAB)
    assert counts.labels.tolist() == [bool(y) for y in labels]
    keys, ratios = counts.keys, naive_bayes.ratios_of(counts)
    values = naive_bayes.logistic_weights(counts, ratios)
    assert values[np.searchsorted(keys, 2)] > 0 > values[np.searchsorted(keys, 3)]

    # The regression written out afresh: each text's distinct n-grams, scaled by their ratios.
    present = [np.unique(naive_bayes.ngram_keys(tf.constant([row]), 2, VOCAB).numpy()) for row in ids]
    columns = [np.searchsorted(keys, k[k > 0]) for k in present]
    x = sparse.csr_matrix((np.concatenate([ratios[c] for c in columns]), np.concatenate(columns),
                           np.cumsum([0] + [c.size for c in columns])), shape=(len(present), keys.size))
    regression = LogisticRegression(C=1.0, solver="liblinear", max_iter=1000).fit(x, labels == 1)
    score = naive_bayes.NaiveBayesScore(keys, values, 2, VOCAB)(tf.constant(ids)).numpy()
    np.testing.assert_allclose(score.sum(axis=1), regression.decision_function(x) - regression.intercept_[0],
                               rtol=1e-4, atol=1e-4)
    assert np.all(score[ids == 0] == 0)


def test_logistic_weights_need_the_ngrams_they_weigh():
    from pipeline import configs

    with pytest.raises(ValueError, match="naive_bayes_logistic weighs the Naive Bayes n-grams: set "
                                         "training.naive_bayes_ngrams"):
        configs.TrainingConfig(naive_bayes_logistic=True)
    # Turning the n-grams off on a dataset that weighs them names both settings.
    with pytest.raises(ValueError, match="or training.naive_bayes_logistic=false"):
        configs.with_overrides(configs.IMDB, {"training.naive_bayes_ngrams": "0"})
    assert configs.TrainingConfig(naive_bayes_ngrams=2, naive_bayes_logistic=True).naive_bayes_logistic
