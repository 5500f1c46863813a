"""The star-rating head (model.rating_head): bounded output, zero weight for missing ratings,
padding invariance, Transform pass-through, export, stacking, the Evaluator's metrics, the config checks."""

import json
import tempfile

import numpy as np
import pytest
import tensorflow as tf

from models import calibration, features, naive_bayes, rating, trainer
from models import model as model_lib
from pipeline import configs, pipeline, predict
from tests.helpers import TINY_LABELS, TINY_TEXTS

VOCAB = 50


def _model(seed=0, **kwargs):
    tf.keras.utils.set_random_seed(seed)
    options = dict(embedding_dim=8, rnn_units=8, attention_units=8, dense_units=8, rating_head=True)
    return model_lib.build_model(VOCAB, **{**options, **kwargs})


def _head_weights(model):
    return [w.numpy().copy() for name in ("rating_dense", "rating_score") for w in model.get_layer(name).weights]


def test_the_rating_is_within_1_and_10_for_any_input_even_with_extreme_weights():
    model = _model()
    ids = tf.constant([[3, 4, 5, 0], [0, 0, 0, 0], [49, 49, 49, 49]], tf.int64)
    value = model(ids, training=False)[features.PREDICTED_RATING].numpy()
    assert value.shape == (3,) and np.all((value >= 1.0) & (value <= 10.0))
    score = model.get_layer("rating_score")
    for bias, expected in ((1e6, 10.0), (-1e6, 1.0)):  # saturated: exactly the bounds, never past them
        score.kernel.assign(tf.zeros_like(score.kernel))
        score.bias.assign([bias])
        np.testing.assert_array_equal(model(ids, training=False)[features.PREDICTED_RATING].numpy(), expected)
    score.kernel.assign(tf.fill(score.kernel.shape, 1e4))  # huge scores of either sign
    score.bias.assign([0.0])
    value = model(ids, training=False)[features.PREDICTED_RATING].numpy()
    assert np.all(np.isfinite(value)) and np.all((value >= 1.0) & (value <= 10.0))
    score.bias.assign([0.0])
    score.kernel.assign(tf.zeros_like(score.kernel))
    np.testing.assert_allclose(model(ids, training=False)[features.PREDICTED_RATING].numpy(), 5.5)


def test_the_loss_ignores_examples_without_a_rating():
    loss = rating.MaskedRatingLoss()
    rated_only = float(loss(tf.constant([8.0, 0.0]), tf.constant([7.0, 3.0])))
    assert rated_only == pytest.approx(0.5 * 0.1 ** 2 / 2)  # one star off, in the quadratic zone, over 2 examples
    # The unrated example's prediction changes nothing.
    assert float(loss(tf.constant([8.0, 0.0]), tf.constant([7.0, 10.0]))) == pytest.approx(rated_only)
    assert float(loss(tf.constant([0.0, 0.0]), tf.constant([1.0, 10.0]))) == 0.0
    # Beyond a star the loss grows linearly (Huber), by delta per unit of rating / 10.
    far, farther = (float(loss(tf.constant([10.0]), tf.constant([p]))) for p in (5.0, 3.0))
    assert farther - far == pytest.approx(0.1 * 0.2, rel=1e-4)
    mae = rating.MaskedMeanAbsoluteError()
    mae.update_state(tf.constant([8.0, 0.0, 2.0]), tf.constant([7.0, 9.0, 4.0]))
    assert float(mae.result()) == pytest.approx(1.5)


def _fit(model, ratings, labels, steps=3):
    view = model_lib.training_view(model)
    model_lib.compile_model(view, learning_rate=1e-2, clipnorm=1.0)
    ids = np.tile(np.array([[3, 4, 5, 6, 0, 0]], np.int64), (len(labels), 1))
    ids[:, 0] = np.arange(len(labels)) + 1
    data = tf.data.Dataset.from_tensors((ids, {model_lib.LOGIT: np.asarray(labels, np.float32),
                                               features.PREDICTED_RATING: np.asarray(ratings, np.float32)}))
    return view.fit(data.repeat(steps), epochs=1, verbose=0).history


def test_examples_without_a_rating_leave_the_rating_head_untouched_and_still_train_the_classifier():
    model = _model()
    head, classifier = _head_weights(model), model.get_layer("logit_dense").kernel.numpy().copy()
    history = _fit(model, ratings=[0, 0, 0, 0], labels=[1, 0, 1, 0])
    for before, after in zip(head, _head_weights(model)):
        np.testing.assert_array_equal(after, before)
    assert not np.array_equal(model.get_layer("logit_dense").kernel.numpy(), classifier)
    assert history["rating_loss"] == [0.0]
    # With ratings the same steps move the head.
    rated = _model()
    head = _head_weights(rated)
    _fit(rated, ratings=[9, 2, 8, 1], labels=[1, 0, 1, 0])
    assert any(not np.array_equal(a, b) for a, b in zip(head, _head_weights(rated)))


def test_training_logs_keep_the_classifiers_metric_names_beside_the_ratings():
    history = _fit(_model(), ratings=[9, 2, 0, 1], labels=[1, 0, 1, 0])
    assert {"loss", "accuracy", "auc", "rating_loss", "rating_mae", "joint_loss"} <= set(history)
    assert not any(key.startswith(f"{model_lib.LOGIT}_") for key in history)
    # In the order a model without the head logs them (the console shows the first few per epoch).
    assert list(history)[:3] == ["loss", "accuracy", "auc"]
    # What early stopping watches still exists: val_auc and friends come from test_step.
    assert set(trainer.MONITORS) >= {"val_auc", "val_loss", "val_accuracy"}
    assert history["joint_loss"][0] == pytest.approx(history["loss"][0] + history["rating_loss"][0], rel=1e-3)


def test_the_rating_does_not_depend_on_padding_or_batch_company():
    model = _model(rnn_layers=2, dense_dropout=0.5)
    short = [3, 4, 5]
    long_text = list(np.arange(1, VOCAB)) * 4
    alone = model(tf.constant([short], tf.int64), training=False)[features.PREDICTED_RATING]
    padded = tf.constant([short + [0] * (len(long_text) - 3), long_text], tf.int64)
    batched = model(padded, training=False)[features.PREDICTED_RATING]
    np.testing.assert_allclose(batched[0], alone[0], atol=1e-5)
    assert abs(float(batched[1] - batched[0])) > 1e-6  # the long text has a rating of its own


def test_the_rating_head_refuses_an_ensemble_and_adversarial_training():
    with pytest.raises(ValueError, match="rating head is not supported for an ensemble"):
        _model(ensemble_size=2)
    with pytest.raises(ValueError, match="not supported with the rating head"):
        model_lib.training_view(_model(), adversarial_epsilon=0.1)
    with pytest.raises(ValueError, match="model.rating_head is not supported with model.ensemble_size=3"):
        configs.ModelConfig(rating_head=True, ensemble_size=3)
    with pytest.raises(ValueError, match="rating_head is not supported with training.adversarial_epsilon"):
        configs.with_overrides(configs.IMDB, {"training.adversarial_epsilon": "0.5"})
    with pytest.raises(ValueError, match="rating_head is not supported with training.adversarial_epsilon"):
        configs.TrainerConfig(model=configs.ModelConfig(rating_head=True),
                              training=configs.TrainingConfig(adversarial_epsilon=0.5))
    assert configs.IMDB.model.rating_head and not configs.POLARITY.model.rating_head
    assert not configs.with_overrides(configs.IMDB, {"model.rating_head": "false"}).model.rating_head


def test_stacking_and_calibration_keep_the_rating_unchanged():
    model = _model()
    ids = tf.constant([[3, 4, 5, 6, 0], [7, 8, 9, 10, 11], [12, 0, 0, 0, 0]], tf.int64)
    before = model(ids, training=False)
    keys, ratios = naive_bayes.log_count_ratios(
        tf.data.Dataset.from_tensors((ids, {model_lib.LOGIT: tf.constant([1.0, 0.0, 1.0])})), 2, VOCAB)
    calibration.apply(model, 2.0, 0.5)  # as fit_and_stack does before stacking
    stacked = naive_bayes.stacked(model, naive_bayes.NaiveBayesScore(keys, ratios, 2, VOCAB))
    after = stacked(ids, training=False)
    np.testing.assert_array_equal(after[features.PREDICTED_RATING].numpy(), before[features.PREDICTED_RATING].numpy())
    assert not np.allclose(after[model_lib.LOGIT].numpy(), before[model_lib.LOGIT].numpy())  # the logit did change


def test_the_evaluator_measures_the_rating_only_with_the_head():
    with_head = pipeline.make_eval_config(configs.IMDB)
    without = pipeline.make_eval_config(configs.with_overrides(configs.IMDB, {"model.rating_head": "false"}))
    polarity = pipeline.make_eval_config(configs.POLARITY)

    def metric_names(config):
        return {(tuple(spec.output_names), m.class_name, json.loads(m.config or "{}").get("name"))
                for spec in config.metrics_specs for m in spec.metrics}

    rating_metrics = [(("rating",), "RatingMetrics", {"mae_name": pipeline.RATING_MAE,
                                                       "pearson_name": pipeline.RATING_PEARSON_R})]
    assert [(tuple(spec.output_names), m.class_name, json.loads(m.config)) for spec in with_head.metrics_specs
            for m in spec.metrics if "rating" in spec.output_names] == rating_metrics
    for config in (without, polarity):
        assert not any("rating" in str(entry) for entry in metric_names(config))
        (spec,) = config.model_specs
        assert (spec.label_key, spec.prediction_key) == (features.LABEL, features.PROBABILITY)
    (spec,) = with_head.model_specs
    assert dict(spec.label_keys) == {features.PROBABILITY: features.LABEL, features.PREDICTED_RATING: features.RATING}
    assert dict(spec.prediction_keys)[features.PREDICTED_RATING] == features.PREDICTED_RATING
    # The gate: the same thresholds, on the classifier's output only.
    gated = [(tuple(spec.output_names), m.class_name) for spec in with_head.metrics_specs for m in spec.metrics
             if m.per_slice_thresholds]
    assert gated == [(("probability",), "BinaryAccuracy"), (("probability",), "AUC")]
    from pipeline import report
    assert report.gate_thresholds(json.loads(_to_json(with_head))) == report.gate_thresholds(
        json.loads(_to_json(without)))


def _to_json(config) -> str:
    from google.protobuf import json_format

    return json_format.MessageToJson(config, preserving_proto_field_name=True)


def _rating_metrics(pairs, batches=2) -> dict[str, float]:
    """TFMA's rating metrics over (true rating or None, predicted) pairs, fed in `batches`
    accumulators that are then merged, as Beam does."""
    from tensorflow_model_analysis.metrics import metric_types

    from pipeline import rating_metrics

    (computation,) = rating_metrics.RatingMetrics().computations(example_weighted=False)
    combiner = computation.combiner
    accumulators = [combiner.create_accumulator() for _ in range(batches)]
    for i, (actual, predicted) in enumerate(pairs):
        inputs = metric_types.StandardMetricInputs(
            labels=np.array([] if actual is None else [actual], np.float32),
            predictions=np.array([predicted], np.float32), example_weights=np.array([1.0], np.float32))
        accumulators[i % batches] = combiner.add_input(accumulators[i % batches], inputs)
    result = combiner.extract_output(combiner.merge_accumulators(accumulators))
    return {key.name: value for key, value in result.items()}


def test_the_rating_metrics_stream_and_leave_out_examples_without_a_rating():
    predicted = np.array([2.0, 3.5, 8.0, 9.0, 1.5, 7.0, 4.0, 6.0])
    actual = [1.0, 4.0, 7.0, 10.0, 2.0, 0.0, 3.0, None]  # 0 and absent: no rating
    metrics = _rating_metrics(zip(actual, predicted))
    keep = np.array([a is not None and a > 0 for a in actual])
    rated = np.array([a for a in actual if a], np.float64)
    expected_r = np.corrcoef(predicted[keep], rated)[0, 1]
    assert metrics[pipeline.RATING_MAE] == pytest.approx(np.abs(predicted[keep] - rated).mean())
    assert metrics[pipeline.RATING_PEARSON_R] == pytest.approx(expected_r)
    assert rating.pearson_r(predicted[keep], rated) == pytest.approx(expected_r)
    outlier = _rating_metrics([*zip(actual, predicted), (5.0, -100.0)])  # the metric is live
    assert outlier[pipeline.RATING_PEARSON_R] < expected_r - 0.05
    negative = _rating_metrics(zip(rated, -predicted[keep]))
    assert negative[pipeline.RATING_PEARSON_R] == pytest.approx(-expected_r)  # r, not r squared: the sign stays
    constant = _rating_metrics([(1.0, 5.0), (9.0, 5.0)])
    assert constant == {pipeline.RATING_MAE: 4.0, pipeline.RATING_PEARSON_R: 0.0}
    assert all(np.isnan(v) for v in _rating_metrics([(0.0, 5.0), (None, 3.0)]).values())  # nothing rated


def _transform_with_ratings(output_dir, ratings):
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils

    from models import preprocessing

    raw_spec = {features.TEXT: tf.io.FixedLenFeature([1], tf.string),
                features.LABEL: tf.io.FixedLenFeature([1], tf.int64),
                features.RATING: tf.io.VarLenFeature(tf.int64)}  # optional, as in schema/imdb
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(raw_spec))
    rows = [{features.TEXT: [text.encode()], features.LABEL: [label], features.RATING: [] if r is None else [r]}
            for text, label, r in zip(TINY_TEXTS, TINY_LABELS, ratings)]
    fn = preprocessing.build_preprocessing_fn(vocab_size=1000, max_len=12)
    output_dir.mkdir(parents=True, exist_ok=True)
    with tft_beam.Context(temp_dir=tempfile.mkdtemp(dir=output_dir), force_tf_compat_v1=False):
        (transformed, _), transform_fn = (rows, metadata) | tft_beam.AnalyzeAndTransformDataset(
            fn, output_record_batches=False)
        _ = transform_fn | tft_beam.WriteTransformFn(str(output_dir))
    metadata_io.write_metadata(metadata, str(output_dir / tft.TFTransformOutput.RAW_METADATA_DIR))
    return transformed, tft.TFTransformOutput(str(output_dir))


@pytest.fixture(scope="module")
def rated_transform(tmp_path_factory):
    return _transform_with_ratings(tmp_path_factory.mktemp("tft_rating"), [9, 2, None, 1, 10, None])


def test_transform_passes_the_rating_through_and_serving_needs_text_only(rated_transform, tmp_path):
    transformed, tft_output = rated_transform
    assert [float(row[features.TRANSFORMED_RATING]) for row in transformed] == [9.0, 2.0, 0.0, 1.0, 10.0, 0.0]
    assert tft_output.transformed_feature_spec()[features.TRANSFORMED_RATING].dtype == tf.float32
    # Text only, as a client sends: no rating needed, none produced.
    served = tft_output.transform_features_layer()({features.TEXT: tf.constant([["good"]])})
    assert features.TRANSFORMED_RATING not in served and features.TOKEN_IDS in served

    # The export: rating in both signatures, the same alone and beside a longer text.
    tf.keras.utils.set_random_seed(0)
    clf = model_lib.build_model(trainer.embedding_input_dim(tft_output), embedding_dim=8, rnn_units=8,
                                attention_units=8, dense_units=8, dense_dropout=0.5, rating_head=True)
    trainer.export_model(clf, tft_output, str(tmp_path / "export"))
    loaded = tf.saved_model.load(str(tmp_path / "export"))
    serve = loaded.signatures[features.SERVING_SIGNATURE]
    out = serve(text=tf.constant(["good", TINY_TEXTS[3]]))
    value = out[features.PREDICTED_RATING].numpy()
    assert value.shape == (2,) and np.all((value >= 1) & (value <= 10))
    alone = serve(text=tf.constant(["good"]))[features.PREDICTED_RATING].numpy()[0]
    np.testing.assert_allclose(alone, value[0], atol=1e-6)
    examples = [tf.train.Example(features=tf.train.Features(feature={
        features.TEXT: tf.train.Feature(bytes_list=tf.train.BytesList(value=[t.encode()]))})).SerializeToString()
        for t in ("good", TINY_TEXTS[3])]
    by_example = loaded.signatures[features.TF_EXAMPLE_SIGNATURE](examples=tf.constant(examples))
    np.testing.assert_allclose(by_example[features.PREDICTED_RATING].numpy(), value, atol=1e-6)
    # predict's rows (CLI, REST) carry it as a float; format_prediction shows it.
    (row,) = predict.rows({k: v.numpy()[:1] for k, v in out.items()})
    assert row["rating"] == pytest.approx(float(value[0]))
    assert f"rating {value[0]:.1f}/10" in predict.format_prediction("good", row)


def test_batches_carry_the_rating_target_and_a_training_split_without_ratings_fails_clearly(
        rated_transform, tiny_transform, tmp_path):
    transformed, _ = rated_transform
    dataset = tf.data.Dataset.from_tensor_slices({key: np.stack([row[key] for row in transformed])
                                                  for key in transformed[0]})
    (ids, targets), = trainer.length_batched_dataset(dataset, 8, 1, False, 0, rating=True)
    assert sorted(targets[features.PREDICTED_RATING].numpy().tolist()) == [0, 0, 1, 2, 9, 10]
    (_, targets), = trainer.length_batched_dataset(dataset, 8, 1, False, 0)
    assert set(targets) == {model_lib.LOGIT}

    # A training split whose examples all lack the rating.
    unrated, tft_output = _transform_with_ratings(tmp_path / "unrated", [None] * 6)
    path = str(tmp_path / "unrated.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for row in unrated:
            writer.write(tf.train.Example(features=tf.train.Features(feature={
                features.TOKEN_IDS: tf.train.Feature(int64_list=tf.train.Int64List(value=row[features.TOKEN_IDS])),
                features.LENGTH: tf.train.Feature(int64_list=tf.train.Int64List(value=[row[features.LENGTH]])),
                features.TRANSFORMED_LABEL: tf.train.Feature(int64_list=tf.train.Int64List(
                    value=[row[features.TRANSFORMED_LABEL]])),
                features.TRANSFORMED_RATING: tf.train.Feature(float_list=tf.train.FloatList(
                    value=[row[features.TRANSFORMED_RATING]])),
            })).SerializeToString())
    with pytest.raises(ValueError, match="holds no star rating: set model.rating_head=false"):
        trainer.check_has_ratings([path], tft_output)
    # No rating feature at all (a source without ratings, e.g. polarity).
    _, no_rating_feature = tiny_transform
    with pytest.raises(ValueError, match="set model.rating_head=false"):
        trainer.check_has_ratings([path], no_rating_feature)
    with pytest.raises(ValueError, match="set model.rating_head=false"):
        trainer.input_fn([path], no_rating_feature, batch_size=4, sort_window_batches=1, shuffle=False, rating=True)


class _NoRatingRecorder:
    """A fake model without the rating head (test_batching's Recorder less the rating)."""

    def __init__(self):
        from tests.test_batching import Recorder

        self.recorder = Recorder()

    def __call__(self, signature, texts, per_token=True):
        outputs = self.recorder(signature, texts, per_token)
        outputs.pop("rating")
        return outputs


def test_rest_returns_the_rating_when_the_model_has_one_and_refuses_to_filter_for_a_missing_one(tmp_path):
    from tests.test_batching import Recorder, _app, _post

    client, predictor = _app(tmp_path / "rated", Recorder())
    try:
        (row,) = _post(client, {"instances": ["a fine film"]}).get_json()["predictions"]
        assert 1.0 <= row["rating"] <= 10.0 and list(row) == list(predict.OUTPUTS)
        only = _post(client, {"instances": ["a fine film"], "output_filter": ["rating"]}).get_json()["predictions"]
        assert only == [{"rating": row["rating"]}]
    finally:
        predictor.stop()
    client, predictor = _app(tmp_path / "unrated", _NoRatingRecorder())
    try:
        (row,) = _post(client, {"instances": ["a fine film"]}).get_json()["predictions"]
        assert "rating" not in row and "probability" in row
        response = _post(client, {"instances": ["a fine film"], "output_filter": ["probability", "rating"]})
        assert response.status_code == 400 and "'rating', not an output of version" in response.get_json()["error"]
    finally:
        predictor.stop()


def test_tfma_measures_the_rating_of_a_candidate_whose_baseline_has_no_rating_head(rated_transform, tmp_path):
    """The first run with the head: the latest blessed model (the baseline) has no rating output."""
    import tensorflow_model_analysis as tfma
    from tensorflow_model_analysis.utils import config_util

    from pipeline import run_summary

    _, tft_output = rated_transform
    exports = {}
    for name, head in (("candidate", True), ("baseline", False)):
        tf.keras.utils.set_random_seed(0)
        clf = model_lib.build_model(trainer.embedding_input_dim(tft_output), embedding_dim=8, rnn_units=8,
                                    attention_units=8, dense_units=8, rating_head=head)
        exports[name] = str(tmp_path / name)
        trainer.export_model(clf, tft_output, exports[name])
    data = str(tmp_path / "test.tfrecord")
    ratings = [9, 2, 7, 1, 10, 4]
    with tf.io.TFRecordWriter(data) as writer:
        for text, label, stars in zip(TINY_TEXTS, TINY_LABELS, ratings):
            writer.write(tf.train.Example(features=tf.train.Features(feature={
                features.TEXT: tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode()])),
                features.LABEL: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                features.RATING: tf.train.Feature(int64_list=tf.train.Int64List(value=[stars])),
            })).SerializeToString())
        # A review from a source without ratings: left out of the rating metrics, counted by the rest.
        writer.write(tf.train.Example(features=tf.train.Features(feature={
            features.TEXT: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"Unrated, and good."])),
            features.LABEL: tf.train.Feature(int64_list=tf.train.Int64List(value=[1])),
        })).SerializeToString())
    config = config_util.update_eval_config_with_defaults(
        pipeline.make_eval_config(configs.IMDB), has_baseline=True)
    models = [tfma.default_eval_shared_model(eval_saved_model_path=exports[name], eval_config=config,
                                             model_name=name) for name in ("candidate", "baseline")]
    tfma.run_model_analysis(eval_shared_model=models, eval_config=config, data_location=data,
                            output_path=str(tmp_path / "evaluation"))
    metrics = run_summary.load_metrics(str(tmp_path / "evaluation"))
    served = tf.saved_model.load(exports["candidate"]).signatures[features.SERVING_SIGNATURE](
        text=tf.constant(TINY_TEXTS))[features.PREDICTED_RATING].numpy()
    assert metrics[pipeline.RATING_MAE] == pytest.approx(np.abs(served - ratings).mean(), abs=1e-4)
    assert metrics[pipeline.RATING_PEARSON_R] == pytest.approx(rating.pearson_r(served, ratings), abs=1e-4)
    assert {"binary_accuracy", "auc", "example_count"} <= set(metrics)
    assert metrics["example_count"] == len(TINY_TEXTS) + 1


def test_the_report_and_the_model_card_show_the_rating_metrics_and_the_class_mean_baseline(tmp_path):
    from pipeline import model_card, report
    from tests.test_model_card import _data

    plain = _data(None)
    assert report.rating_section(plain) is None
    assert "Star rating" not in model_card.to_markdown(model_card.build_card(plain))
    data = _data(None)
    data.slices["Overall"] = {**data.slices["Overall"], features.RATING_MAE_METRIC: 1.3797,
                              features.RATING_PEARSON_METRIC: 0.8394}
    data.rating_baseline = {"class_mean_mae": 1.0528, "overall_mean_mae": 3.2898}
    section = report.rating_section(data)
    assert section["table"]["rows"] == [["Overall", "1.3797", "0.8394"]] and section["class_mean_mae"] == "1.0528"
    page = report.render(data, tmp_path / "report").read_text()
    assert "Star rating" in page and "1.3797" in page and "MAE 1.0528" in page
    card = model_card.build_card(data)
    assert {"type": features.RATING_MAE_METRIC, "value": 1.3797, "slice": "Overall"} in (
        card["quantitative_analysis"]["performance_metrics"])
    assert ("MAE 1.3797 stars, Pearson's r 0.8394; predicting the mean rating of the review's true class: "
            "MAE 1.0528") in model_card.to_markdown(card)


def test_class_mean_baselines_skip_unrated_examples_and_use_the_train_split_means():
    # Train: negatives rated 2 and 4 (mean 3), positives 8 and 10 (mean 9); one unrated example each side.
    baselines = rating.class_mean_baselines([2, 4, 0, 8, 10, 0], [0, 0, 0, 1, 1, 1], [1, 9, 0, 7], [0, 1, 1, 1])
    assert baselines["class_means"] == {"negative": 3.0, "positive": 9.0}
    assert baselines["overall_mean"] == 6.0 and baselines["rated_test_examples"] == 3
    assert baselines["class_mean_mae"] == pytest.approx((2 + 0 + 2) / 3)
    assert baselines["overall_mean_mae"] == pytest.approx((5 + 3 + 1) / 3)
    assert rating.class_mean_baselines([2, 4], [0, 0], [1], [0]) is None  # no rated positive to take a mean of
