"""The pipeline definition, shared by every runner (local, Kubeflow, Airflow).

Runners differ only in how they orchestrate and where paths point; the graph
of components is built here once.
"""

from __future__ import annotations

import dataclasses
import glob
import json

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx
from tfx.proto import transform_pb2

from components.drift_check import SpanDriftCheck
from components.infra_validator import InfraValidator
from components.reader_pretrainer import ReaderPretrainer
from components.review_example_gen import LENGTH_BUCKET, SOURCE, SPAN_PATTERN, SPLITS, ReviewExampleGen
from components.validation_gate import DataValidationGate
from components.versioned_pusher import VersionedPusher
from models import features
from pipeline import configs, data_sources

PREPROCESSING_FN = "models.preprocessing.preprocessing_fn"
RUN_FN = "models.trainer.run_fn"
TRAIN, EVAL, TEST = SPLITS
MIN_DEFINED_AUC = 1e-6
GATE_ID = "DataValidationGate"
# How many of the newest validations the drift check chooses the previous span from.
DRIFT_HISTORY = 100
TRANSFORM_ID = "Transform"
# The rating head's metrics on the test split (model.rating_head), as TFMA names them.
RATING_MAE = features.RATING_MAE_METRIC
RATING_PEARSON_R = features.RATING_PEARSON_METRIC


def make_eval_config(dataset: configs.DatasetConfig, slice_by_source: bool = True) -> tfma.EvalConfig:
    """Metrics on the test split, overall and per slice, and the gates.

    Slices: overall, by text-length bucket and, with `slice_by_source`, by
    source file (raw features ExampleGen writes; an input of one file has one
    source, whose slice would repeat the overall one at the cost of a third of
    the Evaluator's metric work). The gates apply to the overall slice: accuracy
    above min_accuracy and within max_accuracy_drop of the baseline, AUC above min_auc.

    With model.rating_head the model has two outputs (probability and rating),
    each with its own label; the classifier's metrics and gates are those of
    the `probability` output (their metric keys then carry that output name;
    readers go by metric name), and the rating gets its mean absolute error
    and Pearson's r over the rated examples (pipeline/rating_metrics.py),
    candidate only (a baseline trained without the head has no rating), ungated.
    """
    gate = dataset.evaluation
    accuracy_threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": gate.min_accuracy}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER,
            absolute={"value": -gate.max_accuracy_drop},
        ),
    )
    # On a test split with one class TFMA reports AUC 0 (or NaN, which fails any
    # bound): such a split must never bless, whatever min_auc is set to.
    auc_threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": max(gate.min_auc, MIN_DEFINED_AUC)}))
    rating_head = dataset.model.rating_head
    if rating_head:
        model_spec = tfma.ModelSpec(
            signature_name=features.TF_EXAMPLE_SIGNATURE,
            label_keys={features.PROBABILITY: features.LABEL, features.PREDICTED_RATING: features.RATING},
            prediction_keys={features.PROBABILITY: features.PROBABILITY,
                             features.PREDICTED_RATING: features.PREDICTED_RATING},
        )
    else:
        model_spec = tfma.ModelSpec(
            signature_name=features.TF_EXAMPLE_SIGNATURE,
            label_key=features.LABEL,
            prediction_key=features.PROBABILITY,
        )
    classifier_outputs = [features.PROBABILITY] if rating_head else []
    rating_specs = [
        tfma.MetricsSpec(
            output_names=[features.PREDICTED_RATING],
            model_names=[tfma.CANDIDATE_KEY],  # TFMA names the only model "" when there is no baseline
            # MAE and Pearson's r over the rated examples, from one accumulator.
            metrics=[tfma.MetricConfig(class_name="RatingMetrics", module="pipeline.rating_metrics",
                                       config=json.dumps({"mae_name": RATING_MAE, "pearson_name": RATING_PEARSON_R}))],
        )
    ] if rating_head else []
    return tfma.EvalConfig(
        model_specs=[model_spec],
        slicing_specs=[
            tfma.SlicingSpec(),
            tfma.SlicingSpec(feature_keys=[LENGTH_BUCKET]),
            *([tfma.SlicingSpec(feature_keys=[SOURCE])] if slice_by_source else []),
        ],
        metrics_specs=[
            tfma.MetricsSpec(
                output_names=classifier_outputs,
                metrics=[
                    tfma.MetricConfig(class_name="ExampleCount"),
                    # A MetricConfig.threshold would apply to every slice (a small slice could
                    # block the push by chance); the gate is on the overall slice only.
                    tfma.MetricConfig(
                        class_name="BinaryAccuracy",
                        per_slice_thresholds=[
                            tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()],
                                                         threshold=accuracy_threshold)
                        ],
                    ),
                    tfma.MetricConfig(
                        class_name="AUC",
                        per_slice_thresholds=[
                            tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=auc_threshold)
                        ],
                    ),
                    tfma.MetricConfig(class_name="Precision"),
                    tfma.MetricConfig(class_name="Recall"),
                    # The confusion matrix at 0.5, for the run report.
                    tfma.MetricConfig(class_name="TruePositives"),
                    tfma.MetricConfig(class_name="FalsePositives"),
                    tfma.MetricConfig(class_name="TrueNegatives"),
                    tfma.MetricConfig(class_name="FalseNegatives"),
                ]
            ),
            *rating_specs,
        ],
    )


def input_may_hold_several_sources(config: configs.PipelineConfig) -> bool:
    """Whether ExampleGen may read more than one file (each is a `source`): spans,
    or an input named by a glob. One file, archive or folder is one source."""
    return bool(config.input_spans) or glob.has_magic(config.input_path.name)


def validated_channel(artifact_type, output_key: str):
    """Every run's output `output_key` of the validation gate (an upstream node's own output
    channel would only hold the current run's)."""
    return tfx.dsl.Channel(type=artifact_type, producer_component_id=GATE_ID, output_key=output_key)


def drift_check(config: configs.PipelineConfig, example_gen, statistics_gen, schema_gen) -> SpanDriftCheck:
    """Compares the new span with the newest older validated span, under the last Transform's
    vocabulary (resolved before this run's Transform, so the previous run's; nothing on a first run).

    Inline resolver functions: the local and Airflow runners support them, TFX's
    Kubeflow v2 compiler does not, hence spans are for those two.
    """
    from tfx.dsl.input_resolution.canned_resolver_functions import latest_created

    standard = tfx.types.standard_artifacts
    drift = config.dataset.drift
    return SpanDriftCheck(
        examples=example_gen.outputs["examples"],
        statistics=statistics_gen.outputs["statistics"],
        schema=schema_gen.outputs["schema"],
        # The newest validations (all_spans would need a version property, which statistics lack);
        # the check picks the newest span older than this one among them.
        validated_statistics=latest_created(validated_channel(standard.ExampleStatistics, "validated_statistics"),
                                            n=DRIFT_HISTORY),
        validated_examples=latest_created(validated_channel(standard.Examples, "validated_examples"), n=DRIFT_HISTORY),
        transform_graph=latest_created(tfx.dsl.Channel(type=standard.TransformGraph,
                                                       producer_component_id=TRANSFORM_ID,
                                                       output_key="transform_graph")),
        allowed_anomalies=json.dumps(sorted(config.allowed_anomalies)),
        label=features.LABEL,
        num_chars=features.NUM_CHARS,
        text=features.TEXT,
        label_linf=drift.label_linf,
        num_chars_jsd=drift.num_chars_jsd,
        oov_share_increase=drift.oov_share_increase,
    ).with_id("SpanDriftCheck")


def training_window(config: configs.PipelineConfig):
    """The validated examples Transform and the Trainer read, when they are more than this
    run's span: the newest `training.spans` validated spans (up to `config.span` when one is
    asked for), this run's included. None when this run's span alone is read.

    A plain channel on the gate's output: an upstream node's output channel
    would only see the current run's artifacts, and the window spans runs.
    """
    window = config.dataset.training.spans
    if not config.input_spans or window == 1:
        return None
    from tfx.dsl.input_resolution import canned_resolver_functions as spans

    validated = validated_channel(tfx.types.standard_artifacts.Examples, "validated_examples")
    if config.span is not None:
        return spans.static_range(validated, start_span_number=max(0, config.span - window + 1),
                                  end_span_number=config.span, min_spans=1)
    return spans.rolling_range(validated, num_spans=window, min_spans=1)


def reader_pretrainer(config: configs.PipelineConfig, examples) -> ReaderPretrainer:
    """The network learnt first, shaped as the classifier so the Trainer starts from it: the reader
    as a language model on the training texts and the unlabeled ones (models/pretraining.py), or
    the whole classifier on labelled sentences of another dataset (models/transfer.py)."""
    dataset = config.dataset
    pretraining, model = dataset.pretraining, dataset.model
    labelled = pretraining.objective == "labelled_sentences"
    # Already absolute when the command line built the config (with its --data-dir); resolved here otherwise.
    resolved = data_sources.resolve_pretraining_sources(dataset).pretraining
    unlabeled = [] if labelled else list(resolved.unlabeled_sources)
    labelled_sources = list(resolved.labelled_sources) if labelled else []
    sources = labelled_sources or unlabeled
    local = [source for source in sources if "://" not in source]
    settings = {"vocab_size": pretraining.vocab_size, "max_len": dataset.max_len, "token_level": dataset.token_level,
                "epochs": pretraining.epochs, "batch_size": pretraining.batch_size,
                "learning_rate": pretraining.learning_rate, "num_sampled": pretraining.num_sampled,
                "embedding_dropout": pretraining.embedding_dropout, "seed": dataset.training.seed,
                "pretrained_embeddings": model.pretrained_embeddings}
    if labelled:
        # The whole classifier, as the Trainer builds it (the rating head starts in the Trainer:
        # the labelled sentences carry no rating).
        reader = {**{k: v for k, v in dataclasses.asdict(model).items() if k != "pretrained_embeddings"},
                  "rating_head": False}
        settings.update(clipnorm=dataset.training.clipnorm, weight_averaging=dataset.training.weight_averaging)
    else:
        reader = {key: getattr(model, key) for key in ("embedding_dim", "cell", "rnn_units", "rnn_layers",
                                                       "bidirectional")}
    return ReaderPretrainer(
        examples=examples,
        unlabeled_sources=json.dumps(unlabeled),
        labelled_sources=json.dumps(labelled_sources),
        objective=pretraining.objective,
        reader=json.dumps(reader, sort_keys=True),
        settings=json.dumps(settings, sort_keys=True),
        text_feature=features.TEXT,
        # Local files by content; a remote file (gs://...) by its name only.
        source_fingerprint=configs.files_fingerprint(local) + json.dumps(sorted(set(sources) - set(local))),
        code_fingerprint=configs.pretraining_fingerprint(pretraining.objective),
        # A new span's run copies the last pretraining when its corpus is the same; --no-cache learns anew.
        reuse_earlier=int(config.enable_cache),
    ).with_id("ReaderPretrainer")


def create_pipeline(
    config: configs.PipelineConfig,
    metadata_connection_config=None,
) -> tfx.dsl.Pipeline:
    dataset = config.dataset

    if config.input_spans:
        input_base, source = str(config.input_path), SPAN_PATTERN
    else:
        input_base, source = str(config.input_path.parent), config.input_path.name
    example_gen = ReviewExampleGen(
        input_base=input_base,
        source=source,
        eval_percent=dataset.eval_percent,
        test_percent=dataset.test_percent,
        quarantine=config.quarantine,
        code_fingerprint=configs.example_gen_fingerprint(),
        span=config.span,
    ).with_id("ExampleGen")

    schema_gen = tfx.components.ImportSchemaGen(schema_file=str(dataset.schema_dir / "schema.pbtxt"))

    # With the schema, the categorical label gets per-class counts (the gate checks them).
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"],
                                                  schema=schema_gen.outputs["schema"])

    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"],
        schema=schema_gen.outputs["schema"],
    )

    # With spans, a drift from the previous validated span stops the run before the gate.
    span_drift = drift_check(config, example_gen, statistics_gen, schema_gen) if config.input_spans else None

    # ExampleValidator only records anomalies; the gate stops the run on them,
    # and publishes what passed.
    validation_gate = DataValidationGate(
        anomalies=example_validator.outputs["anomalies"],
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        statistics=statistics_gen.outputs["statistics"],
        allowed_anomalies=json.dumps(sorted(config.allowed_anomalies)),
        label=features.LABEL,
        min_label_share=dataset.min_label_share,
    ).with_id(GATE_ID)
    if span_drift is not None:
        validation_gate.add_upstream_node(span_drift)
    validated_examples = validation_gate.outputs["validated_examples"]

    window = training_window(config)
    transform = tfx.components.Transform(
        examples=window if window is not None else validated_examples,
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        # The vocabulary is learnt from training text only. The test split is not
        # materialized: the Evaluator scores raw examples through the serving graph.
        splits_config=transform_pb2.SplitsConfig(analyze=[TRAIN], transform=[TRAIN, EVAL]),
        custom_config=configs.transform_custom_config(dataset),
        # StatisticsGen and ExampleValidator already check the raw data against the curated
        # schema; Transform's own pre- and post-transform statistics (with anomalies against a
        # schema it infers) are read by nothing here and cost a pass over every split.
        disable_statistics=True,
    ).with_id(TRANSFORM_ID)
    if window is not None:
        transform.add_upstream_node(validation_gate)  # the window holds this run's validated span

    latest_blessed_model = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("LatestBlessedModelResolver")

    # Warm start: the latest blessed model's weights, carried over by token (models/warm_start.py);
    # or the reader pretrained on unlabeled text, carried over the same way.
    pretrainer = reader_pretrainer(config, validated_examples) if dataset.pretraining.enabled else None
    base_model = None
    if dataset.training.warm_start:
        base_model = latest_blessed_model.outputs["model"]
    elif pretrainer is not None:
        base_model = pretrainer.outputs["model"]
    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        base_model=base_model,
        train_args=tfx.proto.TrainArgs(splits=[TRAIN]),
        eval_args=tfx.proto.EvalArgs(splits=[EVAL]),
        custom_config=configs.trainer_hyperparameters(dataset),
    )

    evaluator = tfx.components.Evaluator(
        examples=validated_examples,
        model=trainer.outputs["model"],
        baseline_model=latest_blessed_model.outputs["model"],
        eval_config=make_eval_config(dataset, slice_by_source=input_may_hold_several_sources(config)),
        example_splits=[TEST],
    )

    # Loads the candidate in a separate process and sends it canary requests.
    infra_validator = InfraValidator(
        model=trainer.outputs["model"],
        latency_budget_ms=dataset.serving.latency_budget_ms,
    ).with_id("InfraValidator")

    # Pushes only with both blessings; atomic versions, at most `versions_to_keep` kept.
    pusher = VersionedPusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        infra_blessing=infra_validator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=str(config.serving_dir))
        ),
        versions_to_keep=dataset.serving.versions_to_keep,
    ).with_id("Pusher")

    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=str(config.pipeline_root),
        components=[
            example_gen,
            statistics_gen,
            schema_gen,
            example_validator,
            *([span_drift] if span_drift is not None else []),
            validation_gate,
            transform,
            *([pretrainer] if pretrainer is not None else []),
            latest_blessed_model,
            trainer,
            evaluator,
            infra_validator,
            pusher,
        ],
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(config.beam_args),
    )
