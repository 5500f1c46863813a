"""The one typed place for everything a run depends on.

A run is reproducible from a `PipelineConfig`: the dataset (files, split,
vocabulary), the model and training hyperparameters (with the seed), the
evaluation gate, the paths and the Beam arguments. Command-line overrides go
through `with_overrides` so they are type-checked against the same fields.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, Mapping

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_ROOT = PROJECT_ROOT / "schema"
MODELS_ROOT = PROJECT_ROOT / "models"
COMPONENTS_ROOT = PROJECT_ROOT / "components"
TRANSFORM_MODULE_FILE = MODELS_ROOT / "preprocessing.py"
TRAINER_MODULE_FILE = MODELS_ROOT / "trainer.py"

# Validation metrics early stopping and the plateau schedule can watch, and whether lower or higher is better.
EARLY_STOPPING_MONITORS = {"val_loss": "min", "val_auc": "max", "val_accuracy": "max"}
LR_SCHEDULES = ("constant", "plateau")


def _from_dict(cls, values: Mapping[str, Any]):
    """`cls` rebuilt from a dict of its fields (dataclasses.asdict's output, e.g. read back from a
    custom_config). Missing fields take their defaults, an unknown key is an error, an int where
    the field is a float becomes a float; nested config dataclasses are rebuilt the same way."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {', '.join(map(repr, unknown))}; "
                         f"it has: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        field_type = hints[name]
        if dataclasses.is_dataclass(field_type) and isinstance(value, Mapping):
            value = _from_dict(field_type, value)
        elif field_type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        kwargs[name] = value
    return cls(**kwargs)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    embedding_dim: int = 64
    # GloVe-format vectors (plain or .gz) to start the embedding from; "" = random.
    # Relative paths are resolved against the data directory. embedding_dim must match.
    pretrained_embeddings: str = ""
    trainable_embeddings: bool = True
    cell: str = "lstm"  # lstm | gru | simple
    rnn_units: int = 64
    rnn_layers: int = 1
    bidirectional: bool = True
    pooling: str = "attention"  # attention | max | last | attention_max
    attention_units: int = 64
    attention_depth: int = 1
    dense_units: int = 64
    embedding_dropout: float = 0.2
    # Drops whole tokens' vectors (word dropout), not embedding channels.
    token_dropout: float = 0.0
    rnn_dropout: float = 0.0
    dense_dropout: float = 0.3
    # Independently trained copies of this classifier in one model, their logits
    # averaged (1 = a single model). Costs about N times the training and inference.
    ensemble_size: int = 1
    # A regression head on the pooled vector predicting the star rating (1-10) beside the
    # logit, trained jointly where the examples carry one (IMDB); served as `rating`.
    rating_head: bool = False

    def __post_init__(self):
        if self.ensemble_size < 1:
            raise ValueError(f"model.ensemble_size must be >= 1, got {self.ensemble_size}")
        if self.rating_head and self.ensemble_size > 1:
            raise ValueError(f"model.rating_head is not supported with model.ensemble_size={self.ensemble_size}: "
                             "set model.rating_head=false or model.ensemble_size=1")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ModelConfig:
        return _from_dict(cls, values)


def check_rating_head(model: ModelConfig, training: TrainingConfig) -> None:
    """The rating head trains through its own training view: not with adversarial training."""
    if model.rating_head and training.adversarial_epsilon > 0:
        raise ValueError(f"model.rating_head is not supported with training.adversarial_epsilon="
                         f"{training.adversarial_epsilon}: set model.rating_head=false or "
                         "training.adversarial_epsilon=0")


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    batch_size: int = 64
    epochs: int = 5
    learning_rate: float = 1e-3
    clipnorm: float = 1.0
    # Decay of an exponential moving average of the weights, which validation,
    # early stopping and the export use (0 = off; 0.99 averages ~100 steps).
    # The optimizer keeps it inside the training step (Keras' use_ema with
    # ema_momentum = this; models/optimization.py); training continues from the raw weights.
    weight_averaging: float = 0.0
    # Adversarial training on the word vectors (Miyato et al., 2017): the
    # L2 norm of the perturbation per example (0 = off; doubles the step cost).
    adversarial_epsilon: float = 0.0
    # After training, fit a scale and offset of the logit on the validation split
    # (Platt scaling) and fold them into the last layer: calibrated probabilities,
    # and a 0.5 threshold where the validation data puts it (models/calibration.py).
    calibrate_logit: bool = False
    # After training, add Naive Bayes log-count ratios of binarized 1..N-grams
    # (counted on the training split) to the logit, their weight and the logit's
    # scale and offset fitted on the validation split (models/naive_bayes.py).
    # 0 = off. It fits what calibrate_logit fits, so the two do not combine.
    naive_bayes_ngrams: int = 0
    # Weigh the n-grams by a logistic regression on their ratio-scaled presence, fitted on
    # the training split (NBSVM, Wang & Manning 2012), instead of summing the ratios as they are.
    naive_bayes_logistic: bool = False
    early_stopping_patience: int = 1
    # What early stopping and the plateau schedule watch: val_loss, val_auc or val_accuracy.
    early_stopping_monitor: str = "val_loss"
    # "constant", or "plateau": halve the learning rate when validation loss stops improving.
    lr_schedule: str = "constant"
    # Examples are sorted by length within windows of this many batches, so a
    # batch holds texts of similar length and is trimmed to its longest one.
    length_sort_window_batches: int = 32
    # ...and its width rounded up to a multiple of this: fewer distinct shapes
    # for the CPU kernels to set up, at the cost of a few masked columns.
    length_multiple: int = 16
    # Records, before parsing. At least the size of the training split: sources
    # are often ordered by label (aclImdb: all negatives, then all positives),
    # and a smaller buffer feeds one class for much of an epoch.
    shuffle_buffer: int = 50_000
    seed: int = 42
    # TensorFlow's thread pools for training (0 = TensorFlow's default). On few
    # cores, one thread per op and two ops at a time lets the forward and
    # backward directions of a bidirectional layer run side by side instead of
    # splitting each small matrix product across cores (bench/results/train_imdb.json).
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    # A deliberately broken candidate, to prove the gate: labels are shuffled
    # within each training batch, so the model cannot learn text -> label.
    shuffle_labels: bool = False
    # With an input laid out as span-N/ folders: train on the newest this many
    # spans (a rolling window; 1 = the newest span only). Evaluation always uses
    # the newest span's test split.
    spans: int = 1
    # Start from the latest blessed model instead of random weights: embedding
    # rows carried over by token, every other layer's weights reused (models/warm_start.py).
    warm_start: bool = False

    def __post_init__(self):
        if self.naive_bayes_ngrams and self.calibrate_logit:
            raise ValueError(f"training.naive_bayes_ngrams={self.naive_bayes_ngrams} already fits the logit's scale "
                             "and offset on validation: turn calibrate_logit off (training.calibrate_logit=false), "
                             "or set training.naive_bayes_ngrams=0")
        if self.naive_bayes_logistic and not self.naive_bayes_ngrams:
            raise ValueError("training.naive_bayes_logistic weighs the Naive Bayes n-grams: set "
                             "training.naive_bayes_ngrams to 1-3 as well, or training.naive_bayes_logistic=false")
        if self.early_stopping_monitor not in EARLY_STOPPING_MONITORS:
            raise ValueError(f"training.early_stopping_monitor {self.early_stopping_monitor!r} is not one of "
                             f"{sorted(EARLY_STOPPING_MONITORS)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"training.lr_schedule {self.lr_schedule!r} is not 'constant' or 'plateau'")
        if self.spans < 1:
            raise ValueError(f"training.spans must be >= 1, got {self.spans}")
        for name in ("batch_size", "length_multiple", "length_sort_window_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"training.{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainingConfig:
        return _from_dict(cls, values)


PRETRAINING_OBJECTIVES = ("language_model", "labelled_sentences")


@dataclasses.dataclass(frozen=True)
class PretrainingConfig:
    """The network learnt first, before the Trainer starts from it (its base_model) by layer path
    and by token; cached like any component. `objective`:
    * "language_model": the reader (embedding and recurrent layers) as a bidirectional language
      model on the training split's texts and `unlabeled_sources` (models/pretraining.py);
    * "labelled_sentences": the whole classifier on the sentences of `labelled_sources`, each with
      its text's label: the same task from another dataset (models/transfer.py)."""
    enabled: bool = False
    objective: str = "language_model"
    # CSV files with a `text` column, relative to the data directory (any other column is
    # ignored). Texts equal to a held-out (eval or test) text are dropped before anything learns.
    unlabeled_sources: tuple[str, ...] = ()
    # CSV files with `text` and `label` (0/1) columns, for "labelled_sentences"; never the
    # pipeline's own test data. Sentences equal to a held-out text are dropped likewise.
    labelled_sources: tuple[str, ...] = ()
    vocab_size: int = 30_000
    epochs: int = 3
    batch_size: int = 128
    learning_rate: float = 2e-3
    # Negative classes of the sampled softmax per predicted token.
    num_sampled: int = 256
    embedding_dropout: float = 0.1

    def __post_init__(self):
        for name in ("vocab_size", "epochs", "batch_size", "num_sampled"):
            if getattr(self, name) < 1:
                raise ValueError(f"pretraining.{name} must be >= 1, got {getattr(self, name)}")
        if self.objective not in PRETRAINING_OBJECTIVES:
            raise ValueError(f"pretraining.objective must be one of {PRETRAINING_OBJECTIVES}, got {self.objective!r}")
        if self.enabled and not (self.labelled_sources if self.objective == "labelled_sentences"
                                 else self.unlabeled_sources):
            needed = "labelled_sources" if self.objective == "labelled_sentences" else "unlabeled_sources"
            raise ValueError(f"pretraining.objective={self.objective} needs pretraining.{needed}")


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    # Absolute gate on the held-out test split.
    min_accuracy: float = 0.7
    # Change gate against the latest blessed model: accuracy may drop at most this much.
    max_accuracy_drop: float = 0.01
    # Absolute gate on test AUC: better than chance. AUC 0 or undefined (a
    # one-class test split) never blesses, whatever this is set to.
    min_auc: float = 0.5


@dataclasses.dataclass(frozen=True)
class DriftConfig:
    """How far a new span's data may move from the previous span's before the run stops.

    Checked by the validation gate with TFDV's drift comparators, before training.
    """
    # L-infinity distance between the label distributions (0.5/0.5 -> 0.9/0.1 is 0.4).
    label_linf: float = 0.1
    # Jensen-Shannon divergence between the histograms of text length in characters.
    num_chars_jsd: float = 0.1
    # Rise in the share of tokens out of the latest blessed model's vocabulary.
    oov_share_increase: float = 0.05


@dataclasses.dataclass(frozen=True)
class MonitoringConfig:
    """`python -m pipeline monitor`: served traffic against the data the served model was trained on
    (skew) and against the previous monitoring window (drift)."""
    # Jensen-Shannon divergence bounds on the histograms of text length, OOV share and probability.
    num_chars_jsd: float = 0.1
    oov_share_jsd: float = 0.1
    probability_jsd: float = 0.1
    # L-infinity bound on the predicted-label distribution.
    predicted_label_linf: float = 0.1
    # Fewer logged requests than this in a window: no verdict (too few to compare).
    min_requests: int = 200
    # How many examples of the training data's eval split are scored as the reference.
    reference_examples: int = 2000


@dataclasses.dataclass(frozen=True)
class ServingConfig:
    # Pusher keeps at most this many versions under the serving directory (newest first).
    versions_to_keep: int = 3
    # InfraValidator: the slowest canary request (median of its repeats, after a
    # warm-up) must answer within this budget.
    latency_budget_ms: float = 2000.0
    # `python -m pipeline serve` limits: instances per request and request body size.
    max_instances: int = 256
    max_body_bytes: int = 8 * 1024 * 1024
    # How often the server looks for newly pushed versions.
    poll_seconds: float = 2.0
    # TF Serving's gRPC API (pipeline/grpc_server.py) beside REST: its port (TF
    # Serving's 8500); 0 turns it off.
    grpc_port: int = 8500
    # Request logging (`serve --log-requests DIR`): the share of requests logged,
    # the size at which a log file is rotated, how many files are kept (the
    # oldest are deleted), and how many records may wait for the writer thread
    # before new ones are dropped (counted) rather than delay a request.
    log_sample_rate: float = 1.0
    log_file_bytes: int = 64 * 1024 * 1024
    log_max_files: int = 20
    log_queue_size: int = 10_000
    # Server-side batching (pipeline/batching.py, TF Serving's batching parameters;
    # `serve --no-batching` turns it off): concurrent requests for one version are
    # merged into one model call of at most max_batch_size texts. With a timeout of 0
    # an idle server runs a lone request at once (no added latency); requests that
    # arrive while the model is busy wait for the next call together. At most
    # max_enqueued_batches batches wait per version: beyond, a request gets a 503.
    # num_batch_threads 0 = one per CPU core. With batching the server's threads
    # mostly wait for a batch, so `serve` defaults to batching_server_threads.
    batching: bool = True
    max_batch_size: int = 128
    batch_timeout_micros: int = 0
    num_batch_threads: int = 0
    max_enqueued_batches: int = 16
    batching_server_threads: int = 16
    # TensorFlow's thread pools in the server, as TF Serving's --tensorflow_intra_op_parallelism
    # and --tensorflow_inter_op_parallelism: threads that one op may split across, and ops
    # run at once. 0 = TensorFlow's default (one per core each). On 2 cores 1 and 2 served
    # batches of 32 IMDB reviews 1.14x faster, single reviews no faster
    # (bench/results/serving_thread_pools_screen.json), so the default stays.
    intra_op_threads: int = 0
    inter_op_threads: int = 0

    def __post_init__(self):
        for name in ("intra_op_threads", "inter_op_threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"serving.{name} must be >= 0 (0: one per core), got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    name: str
    # Where the data is, relative to the data directory, in order of preference:
    # the first that exists is read. Each may be an aclImdb or rt-polaritydata
    # archive or folder, or a CSV/TSV file or glob (see components/review_sources).
    sources: tuple[str, ...]
    vocab_size: int
    # In tokens of `token_level`: "word" (default) or "char".
    max_len: int
    model: ModelConfig
    training: TrainingConfig
    evaluation: EvaluationConfig
    # Splits (see components/review_example_gen.assign_split): a source with an
    # official train/test split keeps it and holds `eval_percent` of train out
    # for early stopping; any other source is split train/eval/test by a
    # stable hash of the text, with these percentages for eval and test.
    eval_percent: int = 10
    test_percent: int = 10
    token_level: str = "word"
    # Every class must be at least this share of every split (the validation
    # gate's LABEL_SHARE_OUT_OF_BOUNDS); a class absent from a split always stops the run.
    min_label_share: float = 0.1
    # The N most frequent words of model.pretrained_embeddings join the
    # vocabulary learnt from the training split, so words the training data
    # never showed keep their pretrained vector instead of becoming OOV.
    pretrained_vocabulary: int = 0
    serving: ServingConfig = ServingConfig()
    drift: DriftConfig = DriftConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    pretraining: PretrainingConfig = PretrainingConfig()

    def __post_init__(self):
        check_rating_head(self.model, self.training)
        if self.pretrained_vocabulary and not self.model.pretrained_embeddings:
            raise ValueError(f"{self.name}: pretrained_vocabulary={self.pretrained_vocabulary} needs "
                             "model.pretrained_embeddings (or set pretrained_vocabulary=0)")
        if self.pretraining.enabled:
            if self.training.warm_start:
                raise ValueError(f"{self.name}: training.warm_start and pretraining.enabled both start the "
                                 "Trainer from a base model; turn one off (a warm start carries the pretrained "
                                 "reader on from the model it starts from)")
            if self.pretraining.objective == "language_model" and (
                    not self.model.bidirectional or self.model.rnn_layers != 1):
                raise ValueError(f"{self.name}: pretraining learns a bidirectional reader of one recurrent layer "
                                 "(a second layer would see the token its forward half predicts); set "
                                 "model.bidirectional=true and model.rnn_layers=1, or pretraining.enabled=false")

    @property
    def schema_dir(self) -> Path:
        return SCHEMA_ROOT / self.name

    @property
    def pipeline_name(self) -> str:
        # Kubeflow requires [a-z0-9][a-z0-9-]*.
        return f"sentiment-{self.name}"

    def serving_dir(self, output_dir: Path) -> Path:
        """Where the Pusher puts this dataset's versions under a run's output directory."""
        return Path(output_dir) / "serving" / self.pipeline_name


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """The Trainer module's custom_config, typed: the model and training hyperparameters and
    what the Trainer needs of the dataset besides them (built by trainer_hyperparameters,
    rebuilt by from_custom_config)."""
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    dataset: str = ""
    max_len: int = 0
    # The vocabulary Transform learns; pretrained-only words get ids after it.
    vocab_size: int = 0
    # DatasetConfig.pretrained_vocabulary: that many pretrained-only words join the vocabulary.
    pretrained_vocabulary: int = 0
    # models_fingerprint(): in the custom_config so TFX's cache sees a change of the model code.
    models_fingerprint: str = ""
    # The base model is a pretrained reader (PretrainingConfig), not a previous classifier.
    pretrained_reader: bool = False

    def __post_init__(self):
        check_rating_head(self.model, self.training)
        if self.pretrained_vocabulary and not self.model.pretrained_embeddings:
            raise ValueError(f"pretrained_vocabulary={self.pretrained_vocabulary} needs model.pretrained_embeddings")
        if self.pretrained_vocabulary and self.vocab_size < 1:
            raise ValueError(f"pretrained_vocabulary={self.pretrained_vocabulary} needs the vocab_size the "
                             "pretrained-only ids start after")

    @classmethod
    def of(cls, dataset: DatasetConfig) -> TrainerConfig:
        return cls(model=dataset.model, training=dataset.training, dataset=dataset.name, max_len=dataset.max_len,
                   vocab_size=dataset.vocab_size, pretrained_vocabulary=dataset.pretrained_vocabulary,
                   models_fingerprint=models_fingerprint(), pretrained_reader=dataset.pretraining.enabled)

    def to_custom_config(self) -> dict[str, Any]:
        """JSON-serializable; from_custom_config(to_custom_config()) == self."""
        return {
            "dataset": self.dataset,
            "max_len": self.max_len,
            "vocab_size": self.vocab_size,
            "pretrained_vocabulary": self.pretrained_vocabulary,
            "models_fingerprint": self.models_fingerprint,
            "model": dataclasses.asdict(self.model),
            "training": dataclasses.asdict(self.training),
            # Only when set: a run without pretraining keeps the cache key it had before the option existed.
            **({"pretrained_reader": True} if self.pretrained_reader else {}),
        }

    @classmethod
    def from_custom_config(cls, values: Mapping[str, Any]) -> TrainerConfig:
        """The typed config back from custom_config (missing fields take their defaults)."""
        return _from_dict(cls, values)


# GloVe 6B 50-d vectors, relative to the data directory (see data_sources.resolve_embeddings).
GLOVE_50D = "embeddings/glove.6B.50d.txt.gz"

POLARITY = DatasetConfig(
    name="polarity",
    sources=("polarity/rt-polaritydata.tar.gz", "polarity/rt-polaritydata", "polarity/rt-polarity.csv.gz"),
    vocab_size=20_000,
    max_len=64,
    # Half the test sentences hold a word training never shows: add GloVe's 100k words (docs/experiments.md).
    pretrained_vocabulary=100_000,
    model=ModelConfig(
        embedding_dim=50,
        pretrained_embeddings=GLOVE_50D,
        rnn_units=64,
        attention_units=64,
        dense_units=64,
        embedding_dropout=0.4,
        # Best word dropout on validation (docs/experiments.md).
        token_dropout=0.1,
        dense_dropout=0.5,
        # Three members, logits averaged: a little more accurate, 2.7x the training time (docs/experiments.md).
        ensemble_size=3,
    ),
    # AUC early stopping, weight averaging and Naive Bayes stacking: best on validation (docs/experiments.md).
    # One thread per op, two ops at a time: the members' six recurrent loops run side by side
    # (an epoch 1.3x faster than TensorFlow's default pools, bench/results/epoch_speed_polarity.json).
    training=TrainingConfig(batch_size=64, epochs=15, learning_rate=1e-3, early_stopping_patience=2,
                            early_stopping_monitor="val_auc", weight_averaging=0.99, naive_bayes_ngrams=2,
                            intra_op_threads=1, inter_op_threads=2),
    evaluation=EvaluationConfig(min_accuracy=0.70),
    # The whole classifier first learns the same task on the 300k sentences of IMDB's labelled
    # training reviews (two epochs, with the Trainer's own batch size, learning rate and model):
    # +1.3 points of cross-fitted validation accuracy over seeds 42-43 for one epoch, +0.7 more for the
    # second (bench/results/transfer_screen_*, transfer_epochs_screen_*).
    # Cached: a later run on the same data and code reuses it.
    pretraining=PretrainingConfig(enabled=True, objective="labelled_sentences",
                                  labelled_sources=("imdb/train.csv.gz",), unlabeled_sources=("imdb/unsup.csv.gz",
                                                                                               "imdb/train.csv.gz"),
                                  vocab_size=100_000, epochs=2, batch_size=64, learning_rate=1e-3),
)

IMDB = DatasetConfig(
    name="imdb",
    # The official archive (or this project's labelled-only copy of it), else
    # the train/test CSVs: all keep the official 25k/25k split.
    sources=("imdb/aclImdb_v1_labeled.tar.gz", "imdb/aclImdb_v1.tar.gz", "imdb/aclImdb", "imdb/*.csv.gz"),
    vocab_size=20_000,
    # Head+tail truncation to 320 tokens: 1.2x faster than 400 for 0.4 points (docs/experiments.md).
    max_len=320,
    # A BiGRU of 32 (as accurate as an LSTM of 64, twice as fast), batches of 512, AUC-driven
    # stopping and LR halving: the best measured on validation (docs/experiments.md).
    model=ModelConfig(
        embedding_dim=50,
        pretrained_embeddings=GLOVE_50D,
        cell="gru",
        rnn_units=32,
        pooling="attention_max",
        attention_units=32,
        dense_units=64,
        embedding_dropout=0.3,
        # Best word dropout on validation over seeds 42-46 (docs/experiments.md).
        token_dropout=0.2,
        dense_dropout=0.4,
        # The star rating beside the label (reviews carry it): MAE and Pearson's r in the Evaluator.
        rating_head=True,
    ),
    # Naive Bayes n-gram stacking beat Platt scaling and neither on validation; n-grams up to
    # trigrams weighed by a logistic regression beat the bigrams' ratios by 0.84 points of
    # cross-fitted validation accuracy (bench/results/train_imdb_stacking_variants.json).
    training=TrainingConfig(batch_size=512, epochs=10, learning_rate=4e-3, early_stopping_patience=2,
                            early_stopping_monitor="val_auc", lr_schedule="plateau", naive_bayes_ngrams=3,
                            naive_bayes_logistic=True, intra_op_threads=1, inter_op_threads=2),
    evaluation=EvaluationConfig(min_accuracy=0.85),
    pretraining=PretrainingConfig(unlabeled_sources=("imdb/unsup.csv.gz",)),
)

DATASETS: dict[str, DatasetConfig] = {d.name: d for d in (POLARITY, IMDB)}
DEFAULT_DATASET = POLARITY.name

# Beam runs in-process on the DirectRunner unless a profile says otherwise.
# --setup_file ships this package to remote workers; it also stops TFX from
# building an ephemeral sdist of itself before every Beam component.
DEFAULT_BEAM_ARGS: tuple[str, ...] = (
    "--direct_running_mode=in_memory",
    "--direct_num_workers=1",
    f"--setup_file={PROJECT_ROOT / 'setup.py'}",
)


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    dataset: DatasetConfig
    # The source ExampleGen reads: a file, archive, folder or glob.
    input_path: Path
    # Everything a run writes lives under here: pipeline root, metadata, serving.
    output_dir: Path
    beam_args: tuple[str, ...] = DEFAULT_BEAM_ARGS
    enable_cache: bool = True
    # Set unparseable rows aside (and count them) instead of failing the run.
    quarantine: bool = False
    # Anomalies accepted on purpose: "feature" or "feature:ANOMALY_TYPE".
    allowed_anomalies: tuple[str, ...] = ()
    # The input is laid out as span-<N>/ folders (data_sources.span_numbers):
    # ExampleGen reads one span, `span`, or the newest when it is None.
    input_spans: bool = False
    span: int | None = None
    # Where ML Metadata lives (pipeline/metadata_store.py): None for the SQLite
    # file under output_dir, or a sqlite://, postgresql:// or mysql:// URI.
    metadata_uri: str | None = None

    def __post_init__(self):
        if self.metadata_uri:
            from pipeline import metadata_store

            try:
                address = metadata_store.StoreAddress.parse(self.metadata_uri)
            except metadata_store.MetadataStoreError as error:
                raise ValueError(str(error)) from None
            settings = {"--input": str(self.input_path), "--output-dir": str(self.output_dir),
                        **{f"--set {key}": value for key, value in _flat_fields(self.dataset).items()}}
            problem = metadata_store.unstorable(address, settings)
            if problem:
                raise ValueError(problem)
        if self.span is not None and not self.input_spans:
            raise ValueError(f"a span ({self.span}) was asked for, but {self.input_path} is not laid out as "
                             "span-<N>/ folders")
        if self.span is not None and self.span < 0:
            raise ValueError(f"span must be >= 0, got {self.span}")
        if self.dataset.training.spans > 1 and not self.input_spans:
            raise ValueError(f"training.spans={self.dataset.training.spans} needs an input laid out as span-<N>/ "
                             f"folders; {self.input_path} is not")

    @property
    def pipeline_name(self) -> str:
        return self.dataset.pipeline_name

    @property
    def pipeline_root(self) -> Path:
        return self.output_dir / "pipelines" / self.pipeline_name

    @property
    def metadata_path(self) -> Path:
        """The default store: a SQLite file per pipeline under the output directory."""
        return self.output_dir / "metadata" / f"{self.pipeline_name}.sqlite"

    @property
    def metadata(self):
        """The store this run records in (a metadata_store.StoreAddress)."""
        from pipeline import metadata_store

        if self.metadata_uri:
            return metadata_store.StoreAddress.parse(self.metadata_uri)
        return metadata_store.StoreAddress.sqlite(self.metadata_path)

    @property
    def lock_path(self) -> Path:
        """One run per pipeline and output directory at a time, whatever the store (local_runner)."""
        return self.output_dir / "metadata" / f"{self.pipeline_name}.lock"

    @property
    def serving_dir(self) -> Path:
        return self.dataset.serving_dir(self.output_dir)


def _flat_fields(value, prefix: str = "") -> dict[str, Any]:
    """A dataclass's fields as dotted names (`model.rnn_units`), nested ones included."""
    flat: dict[str, Any] = {}
    for item in dataclasses.fields(value):
        field_value = getattr(value, item.name)
        if dataclasses.is_dataclass(field_value):
            flat.update(_flat_fields(field_value, f"{prefix}{item.name}."))
        else:
            flat[f"{prefix}{item.name}"] = field_value
    return flat


def _code_digest(paths: list[Path]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def files_fingerprint(paths) -> str:
    """A digest of files' names and contents (e.g. unlabeled text): a changed file re-runs what read it."""
    return _code_digest([Path(path) for path in paths])


def pretraining_fingerprint(objective: str = "language_model") -> str:
    """A digest of the code the pretraining runs (its component, models/pretraining.py and the
    tokenizer, embeddings and state code it uses; for "labelled_sentences" also the classifier's)."""
    names = ["pretraining.py", "preprocessing.py", "embeddings.py", "warm_start.py", "features.py"]
    if objective == "labelled_sentences":
        names += ["transfer.py", "model.py", "optimization.py", "rating.py", "tracing.py"]
    return _code_digest([COMPONENTS_ROOT / "reader_pretrainer.py"] + [MODELS_ROOT / name for name in names])


def with_unlabeled_sources(dataset: DatasetConfig, sources) -> DatasetConfig:
    """`dataset` reading these unlabeled files for pretraining (e.g. resolved to absolute paths)."""
    return dataclasses.replace(dataset, pretraining=dataclasses.replace(dataset.pretraining,
                                                                          unlabeled_sources=tuple(sources)))


def models_fingerprint() -> str:
    """A digest of the Transform and Trainer code (models/*.py).

    Transform and Trainer name their code by import path, which TFX's cache
    cannot see into; putting this digest into their custom_config makes a code
    change re-run them instead of reusing a stale cached artifact.
    """
    return _code_digest(list(MODELS_ROOT.glob("*.py")))


def example_gen_fingerprint() -> str:
    """A digest of ExampleGen's parsing code, for the same reason: a parser fix must
    re-read the data instead of reusing examples the old parser wrote."""
    return _code_digest([COMPONENTS_ROOT / "review_example_gen.py", COMPONENTS_ROOT / "review_sources.py",
                         MODELS_ROOT / "features.py"])


def default_output_dir() -> Path:
    return Path(os.environ.get("SENTIMENT_OUTPUT_DIR", PROJECT_ROOT / "outputs"))


def output_dir_of(output_dir: str | os.PathLike | None) -> Path:
    """An --output-dir argument, resolved; default_output_dir() when it is not given."""
    return Path(output_dir).resolve() if output_dir else default_output_dir()


def trainer_hyperparameters(dataset: DatasetConfig) -> dict[str, Any]:
    """What the Trainer module receives as custom_config (JSON-serializable; TrainerConfig.from_custom_config
    rebuilds it)."""
    return TrainerConfig.of(dataset).to_custom_config()


# The environment variable that sizes each of TensorFlow's thread pools ("intra", "inter").
TF_THREAD_VARIABLES = {"intra": "TF_NUM_INTRAOP_THREADS", "inter": "TF_NUM_INTEROP_THREADS"}


def tf_thread_environment(training: TrainingConfig) -> dict[str, str]:
    """Environment variables that size TensorFlow's thread pools; read once, when TensorFlow starts.

    Set them before TensorFlow is imported (the local runner and the benchmark
    do), since the pools cannot be resized once the runtime is up.
    """
    return {variable: str(getattr(training, f"{pool}_op_threads"))
            for pool, variable in TF_THREAD_VARIABLES.items() if getattr(training, f"{pool}_op_threads")}


def transform_custom_config(dataset: DatasetConfig) -> dict[str, Any]:
    return {"vocab_size": dataset.vocab_size, "max_len": dataset.max_len, "token_level": dataset.token_level,
            "pretrained_embeddings": dataset.model.pretrained_embeddings if dataset.pretrained_vocabulary else "",
            "pretrained_vocabulary": dataset.pretrained_vocabulary, "models_fingerprint": models_fingerprint()}


def add_overrides_option(parser) -> None:
    """The `--set KEY=VALUE` option, the same for every command that takes config overrides
    (read them back with dataset_of)."""
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a dataset config field (repeatable), e.g. training.epochs=2, max_len=128 "
                        "or serving.max_instances=64")


def dataset_of(args) -> DatasetConfig:
    """The --dataset config with the --set overrides (add_overrides_option) applied; ValueError
    for a malformed or unknown override."""
    return with_overrides(DATASETS[args.dataset], parse_overrides(getattr(args, "set", None) or []))


def serving_dir_of(args) -> Path:
    """The serving directory --dataset, --output-dir and --set give: where the pipeline's Pusher
    pushes (PipelineConfig.serving_dir); ValueError for a bad override."""
    return dataset_of(args).serving_dir(output_dir_of(getattr(args, "output_dir", None)))


def parse_overrides(pairs) -> dict[str, str]:
    """["training.epochs=2", ...] (the --set options) -> {"training.epochs": "2"}; ValueError without "="."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        overrides[key.strip()] = value.strip()
    return overrides


def with_overrides(config: Any, overrides: Mapping[str, str]) -> Any:
    """Returns a copy of a (nested) config dataclass with dotted fields replaced.

    `{"training.epochs": "2", "max_len": "32"}` on a DatasetConfig. Values are
    parsed to the field's declared type, and unknown fields are an error, so a
    typo on the command line fails instead of being ignored. Each dataclass is
    rebuilt once with all its changes, so the cross-field checks of its
    __post_init__ judge the combination asked for, whatever the order of the overrides.
    """
    return _override(config, [(dotted.split("."), raw_value, dotted) for dotted, raw_value in overrides.items()])


def _override(config: Any, items: list[tuple[list[str], str, str]]) -> Any:
    if not dataclasses.is_dataclass(config):
        raise ValueError(f"cannot set {items[0][2]!r}: {type(config).__name__} has no fields")
    fields = {f.name: f for f in dataclasses.fields(config)}
    hints = typing.get_type_hints(type(config))
    changes: dict[str, Any] = {}
    nested: dict[str, list[tuple[list[str], str, str]]] = {}
    for path, raw_value, dotted in items:
        head = path[0]
        if head not in fields:
            raise ValueError(
                f"unknown config field {dotted!r}; {type(config).__name__} has: {', '.join(sorted(fields))}"
            )
        if len(path) > 1:
            nested.setdefault(head, []).append((path[1:], raw_value, dotted))
        else:
            changes[head] = _parse_value(hints[head], raw_value, dotted)
    for head, inner in nested.items():
        changes[head] = _override(getattr(config, head), inner)
    return dataclasses.replace(config, **changes) if changes else config


def _parse_value(field_type: Any, raw_value: str, dotted: str) -> Any:
    try:
        if field_type is bool:
            lowered = raw_value.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw_value)
            return lowered in ("true", "1", "yes")
        if field_type in (int, float, str):
            return field_type(raw_value)
        if field_type == tuple[str, ...]:  # a comma-separated list, e.g. pretraining.unlabeled_sources
            return tuple(item.strip() for item in raw_value.split(",") if item.strip())
    except ValueError:
        raise ValueError(f"{dotted}={raw_value!r} is not a valid {field_type.__name__}") from None
    raise ValueError(f"{dotted} cannot be set from the command line")
