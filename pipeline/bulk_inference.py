"""`python -m pipeline score`: batch scoring with TFX's BulkInferrer.

Scores a set of unlabeled texts (e.g. the 50,000 unlabeled IMDB reviews) with
a pushed model version, the latest unless --version says which, through a
small TFX pipeline run by LocalDagRunner, with its own pipeline root and
SQLite metadata under the output directory:

    ImportExampleGen   the texts, written as tf.Examples (`text`, `num_chars`,
                       and `id` = "<file>:<row>" to put the results back in
                       input order), one split "unlabeled"
    ModelImporter      an Importer of the pushed version as a Model artifact
    BulkInferrer       TFX's standard component: the model's
                       `serving_tf_example` signature (serialized tf.Example
                       in, probability and label out) on every example, no
                       blessing needed (the version was blessed to be pushed)

The BulkInferrer's PredictionLogs are then written as JSON lines, one per
input row in input order, in the request log's format
(pipeline/request_log.py), so `python -m pipeline monitor` reads them too:

    {"time": 1764400000.123, "model_version": 1764399000, "text": "...", "probability": 0.91, "label": 1}

`time` is when the BulkInferrer finished (the same for every row of a run),
`label` is 1 when probability >= 0.5.

Layout of <out>:

    predictions-<UTC YYYYmmddTHHMMSSffffff>.jsonl   one file per run
    pipeline/    pipeline root (ImportExampleGen's examples, the PredictionLogs)
    metadata.sqlite
    models/<version>/Format-Serving/   the version as the Model artifact's
                 payload: hard links to the pushed files (a copy across
                 filesystems), so pruning the version from the serving
                 directory cannot pull it from under a run
    .score.lock  one run per output directory at a time

Inputs: a CSV or TSV (optionally .gz) with a header holding a `text` column
(other columns ignored), or a .txt[.gz] file with one text a line (blank lines
skipped), or a folder of such files (every one, recursively, in name order).
--exclude-test-texts drops every input whose exact text is a text of the
dataset's test split (as the pipeline splits it: the official test split
for IMDB, the hashed one for polarity), so a test review is never scored as
traffic; the count is reported.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import errno
import fcntl
import glob
import gzip
import io
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

PIPELINE_DIR = "pipeline"
METADATA_FILE = "metadata.sqlite"
MODELS_DIR = "models"
INPUTS_DIR = "inputs"
LOCK_FILE = ".score.lock"
PREDICTIONS_PREFIX = "predictions-"
SPLIT = "unlabeled"
RECORD_KEYS = ("time", "model_version", "text", "probability", "label")
TEXT_COLUMN = "text"
_TABLE_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz")
_LINE_SUFFIXES = (".txt", ".txt.gz")
_STAMP_FORMAT = "%Y%m%dT%H%M%S%f"

csv.field_size_limit(sys.maxsize)  # a review can be long


class ScoreError(RuntimeError):
    """A usage or data problem, said in one line."""


class NoModelError(ScoreError):
    """No pushed version to score with."""


@dataclass(frozen=True)
class Row:
    id: str  # "<file>:<line>" (the line a CSV record starts on)
    text: str


# --- inputs --------------------------------------------------------------------------


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def read_table(path: Path) -> Iterator[Row]:
    """The `text` column of a CSV/TSV with a header; ids are the record's first line number."""
    delimiter = "\t" if ".tsv" in path.name.lower() else ","
    with _open_bytes(path) as raw:
        stream = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        reader = csv.reader(stream, delimiter=delimiter, strict=True)
        try:
            header = [name.strip() for name in next(reader)]
        except StopIteration:
            raise ScoreError(f"{path}: empty file (expected a header with a {TEXT_COLUMN!r} column)") from None
        except (csv.Error, UnicodeDecodeError) as error:
            raise ScoreError(f"{path}:1: unreadable header ({error})") from None
        if TEXT_COLUMN not in header:
            raise ScoreError(f"{path}:1: header {header} has no {TEXT_COLUMN!r} column")
        index = header.index(TEXT_COLUMN)
        line = reader.line_num + 1
        try:
            for record in reader:
                if record:
                    if len(record) != len(header):
                        raise ScoreError(f"{path}:{line}: {len(record)} fields, the header has {len(header)}")
                    yield Row(f"{path.name}:{line}", record[index])
                line = reader.line_num + 1
        except (csv.Error, UnicodeDecodeError) as error:
            raise ScoreError(f"{path}:{line}: unreadable record ({error})") from None


def read_lines(path: Path) -> Iterator[Row]:
    """One text a line (UTF-8), blank lines skipped."""
    with _open_bytes(path) as raw:
        for number, line in enumerate(raw, start=1):
            try:
                text = line.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as error:
                raise ScoreError(f"{path}:{number}: not UTF-8 ({error})") from None
            if text.strip():
                yield Row(f"{path.name}:{number}", text)


def input_files(path: Path) -> list[Path]:
    if path.is_dir():
        suffixes = _TABLE_SUFFIXES + _LINE_SUFFIXES
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(suffixes))
        if not files:
            raise ScoreError(f"{path} holds no {', '.join(_TABLE_SUFFIXES + _LINE_SUFFIXES)} file")
        return files
    if not path.is_file():
        raise ScoreError(f"--input {path} does not exist")
    if not path.name.lower().endswith(_TABLE_SUFFIXES + _LINE_SUFFIXES):
        raise ScoreError(f"--input {path}: expected a CSV/TSV[.gz] with a {TEXT_COLUMN!r} column, "
                         "a .txt[.gz] with one text a line, or a folder of them")
    return [path]


def read_inputs(path: Path) -> list[Row]:
    rows: list[Row] = []
    files = input_files(path)
    for file in files:
        reader = read_table if file.name.lower().endswith(_TABLE_SUFFIXES) else read_lines
        for row in reader(file):
            # Ids must be unique to put results back in order; two files of one name in a folder would clash.
            rows.append(Row(str(file.relative_to(path)) + ":" + row.id.rsplit(":", 1)[1], row.text)
                        if len(files) > 1 else row)
    if not rows:
        raise ScoreError(f"{path}: no text to score")
    return rows


# --- excluding the test split -----------------------------------------------------------


def dataset_test_texts(dataset_name: str, data_dir: str | None = None, download: bool = True) -> tuple[set[str], Path]:
    """The texts of the dataset's test split, as the pipeline splits its source."""
    from components import review_example_gen, review_sources
    from pipeline import configs, data_sources

    dataset = configs.DATASETS[dataset_name]
    try:
        source = data_sources.resolve_input(dataset, None, data_dir, download=download)
    except data_sources.DataNotFoundError as error:
        raise ScoreError(f"--exclude-test-texts needs the {dataset_name} data: {error}") from None
    texts = set()
    for path in sorted(glob.glob(str(source))) or [str(source)]:
        for review in review_sources.read(path):
            if isinstance(review, review_sources.Review) and review_example_gen.assign_split(
                    review, dataset.eval_percent, dataset.test_percent) == "test":
                texts.add(review.text)
    if not texts:
        raise ScoreError(f"{source}: no test split found")
    return texts, Path(source)


# --- the model ------------------------------------------------------------------------------


def pick_version(base_dir: Path, version: int | None = None) -> tuple[int, Path]:
    from components.versioned_pusher import list_versions

    versions = list_versions(str(base_dir))
    if not versions:
        raise NoModelError(f"no pushed model under {base_dir}: run `python -m pipeline run` for this dataset "
                           "first, or pass --model-base-dir")
    if version is None:
        version = versions[-1]
    elif version not in versions:
        raise NoModelError(f"version {version} is not under {base_dir} (pushed: {', '.join(map(str, versions))})")
    path = base_dir / str(version)
    if not (path / "saved_model.pb").is_file():
        raise NoModelError(f"{path} holds no saved_model.pb")
    return version, path


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        shutil.copy2(source, destination)


def stage_model(version_dir: Path, out: Path, version: int) -> Path:
    """<out>/models/<version>, holding the version under Format-Serving (the Model artifact layout)."""
    from tfx.utils import path_constants

    staged = out / MODELS_DIR / str(version)
    if (staged / path_constants.SERVING_MODEL_DIR / "saved_model.pb").is_file():
        return staged  # a pushed version never changes
    staged.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=staged.parent))
    try:
        os.chmod(partial, 0o755)
        shutil.copytree(version_dir, partial / path_constants.SERVING_MODEL_DIR, copy_function=_link_or_copy)
        if staged.exists():
            shutil.rmtree(staged)
        partial.rename(staged)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return staged


# --- the TFX run ----------------------------------------------------------------------------


def write_examples(rows: list[Row], directory: Path) -> Path:
    import tensorflow as tf

    from models import features

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "data.tfrecord.gz"
    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for row in rows:
            example = tf.train.Example(features=tf.train.Features(feature={
                features.TEXT: tf.train.Feature(bytes_list=tf.train.BytesList(value=[row.text.encode("utf-8")])),
                features.NUM_CHARS: tf.train.Feature(int64_list=tf.train.Int64List(value=[len(row.text.strip())])),
                features.ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[row.id.encode("utf-8")])),
            }))
            writer.write(example.SerializeToString())
    return path


def create_pipeline(dataset_name: str, examples_dir: Path, staged_model: Path, version: int, out: Path,
                    beam_args: tuple[str, ...] | None = None):
    from tfx import v1 as tfx
    from tfx import version as tfx_version

    from models import features
    from pipeline import configs

    example_gen = tfx.components.ImportExampleGen(
        input_base=str(examples_dir),
        input_config=tfx.proto.Input(splits=[tfx.proto.Input.Split(name=SPLIT, pattern="*.tfrecord.gz")]),
    )
    # tfx_version marks the artifact as today's layout: the SavedModel under Format-Serving.
    model = tfx.dsl.Importer(
        source_uri=str(staged_model),
        artifact_type=tfx.types.standard_artifacts.Model,
        custom_properties={"tfx_version": tfx_version.__version__, "model_version": int(version)},
    ).with_id("ModelImporter")
    bulk_inferrer = tfx.components.BulkInferrer(
        examples=example_gen.outputs["examples"],
        model=model.outputs["result"],
        data_spec=tfx.proto.DataSpec(),
        model_spec=tfx.proto.ModelSpec(model_signature_name=[features.TF_EXAMPLE_SIGNATURE]),
    )
    return tfx.dsl.Pipeline(
        pipeline_name=f"score-{dataset_name}",
        pipeline_root=str(out / PIPELINE_DIR),
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(out / METADATA_FILE)),
        components=[example_gen, model, bulk_inferrer],
        enable_cache=False,
        beam_pipeline_args=list(beam_args or configs.DEFAULT_BEAM_ARGS),
    )


def latest_inference_result(out: Path) -> tuple[str, float, float]:
    """(uri, finished at, seconds it took) of the newest BulkInferrer output in <out>'s metadata."""
    from pipeline import run_summary

    store = run_summary.open_store(out / METADATA_FILE)
    results = store.get_artifacts_by_type("InferenceResult")
    if not results:
        raise ScoreError(f"{out / METADATA_FILE}: the BulkInferrer recorded no output")
    result = max(results, key=lambda a: a.id)
    events = [e for e in store.get_events_by_artifact_ids([result.id]) if e.type == e.OUTPUT]
    [execution] = store.get_executions_by_id([events[0].execution_id])
    finished = execution.last_update_time_since_epoch / 1000
    return result.uri, finished, finished - execution.create_time_since_epoch / 1000


def read_prediction_logs(uri: str) -> Iterator[tuple[str, str, float]]:
    """(id, text, probability) per PredictionLog the BulkInferrer wrote under `uri`."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    from models import features

    files = sorted(glob.glob(os.path.join(uri, "prediction_logs-*")))
    if not files:
        raise ScoreError(f"{uri}: no prediction_logs files")
    # In batches: one eager step per record costs 20x the parsing (10 s for 50k records).
    records = (record for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(1024)
               .as_numpy_iterator() for record in batch)
    for record in records:
        log = prediction_log_pb2.PredictionLog.FromString(record).predict_log
        [serialized] = next(iter(log.request.inputs.values())).string_val
        example = tf.train.Example.FromString(serialized).features.feature
        probability = tf.make_ndarray(log.response.outputs[features.PROBABILITY]).reshape(-1)
        yield (example[features.ID].bytes_list.value[0].decode("utf-8"),
               example[features.TEXT].bytes_list.value[0].decode("utf-8"), float(probability[0]))


def format_record(when: float, version: int, text: str, probability: float) -> str:
    return json.dumps({"time": round(when, 6), "model_version": int(version), "text": text,
                       "probability": probability, "label": int(probability >= 0.5)}, ensure_ascii=False) + "\n"


@contextlib.contextmanager
def exclusive(out: Path):
    """One scoring run per output directory (they share the metadata store)."""
    with open(out / LOCK_FILE, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            raise ScoreError(f"another score run is using {out} ({lock.read().strip() or 'unknown'}); wait for it "
                             "or pass another --out") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}")
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def score(dataset_name: str, input_path: Path, out: Path, model_base_dir: Path, version: int | None = None,
          exclude_test_texts: bool = False, data_dir: str | None = None, download: bool = True,
          beam_args: tuple[str, ...] | None = None, log=print) -> dict:
    """Scores the input; returns the summary (also the content of --report-json)."""
    started = time.time()
    version, version_dir = pick_version(model_base_dir, version)  # fails fast, before reading anything
    rows = read_inputs(input_path)
    rows_read = len(rows)
    dropped = None
    if exclude_test_texts:
        texts, test_source = dataset_test_texts(dataset_name, data_dir, download)
        rows = [row for row in rows if row.text not in texts]
        dropped = rows_read - len(rows)
        log(f"--exclude-test-texts: {dropped} of {rows_read} input texts are texts of the {dataset_name} test split "
            f"({len(texts)} distinct texts, from {test_source}); dropped")
        if not rows:
            raise ScoreError("every input text is a test text: nothing left to score")
    out.mkdir(parents=True, exist_ok=True)
    with exclusive(out):
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime(_STAMP_FORMAT)
        examples_dir = out / INPUTS_DIR / stamp
        log(f"scoring {len(rows)} texts from {input_path} with {version_dir} (version {version})\n"
            f"  pipeline root: {out / PIPELINE_DIR}\n  metadata:      {out / METADATA_FILE}")
        try:
            write_examples(rows, examples_dir)
            staged = stage_model(version_dir, out, version)
            from tfx import v1 as tfx

            pipeline_started = time.time()
            tfx.orchestration.LocalDagRunner().run(
                create_pipeline(dataset_name, examples_dir, staged, version, out, beam_args))
            pipeline_wall_time = time.time() - pipeline_started
        finally:
            shutil.rmtree(examples_dir, ignore_errors=True)  # ImportExampleGen keeps its own copy
            with contextlib.suppress(OSError):
                examples_dir.parent.rmdir()  # when no other run's inputs are left in it
        uri, scored_at, inferrer_seconds = latest_inference_result(out)
        by_id = {}
        for row_id, text, probability in read_prediction_logs(uri):
            if row_id in by_id:
                raise ScoreError(f"{uri}: {row_id} was scored twice")
            by_id[row_id] = (text, probability)
        missing = [row.id for row in rows if row.id not in by_id]
        if missing or len(by_id) != len(rows):
            raise ScoreError(f"{uri}: {len(by_id)} predictions for {len(rows)} texts ({len(missing)} missing, "
                             f"e.g. {missing[:3]})")
        predictions = out / f"{PREDICTIONS_PREFIX}{stamp}.jsonl"
        partial = predictions.with_name(f".{predictions.name}.tmp")
        with open(partial, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(format_record(scored_at, version, row.text, by_id[row.id][1]))
        partial.replace(predictions)
    probabilities = [by_id[row.id][1] for row in rows]
    wall_time = time.time() - started
    return {
        "dataset": dataset_name,
        "input": str(input_path),
        "model_base_dir": str(model_base_dir),
        "model_version": version,
        "rows_read": rows_read,
        "dropped_test_texts": dropped,
        "rows_scored": len(rows),
        "share_positive": sum(p >= 0.5 for p in probabilities) / len(rows),
        "mean_probability": sum(probabilities) / len(rows),
        "wall_time_s": round(wall_time, 2),
        "pipeline_wall_time_s": round(pipeline_wall_time, 2),
        "bulk_inferrer_s": round(inferrer_seconds, 2),
        "rows_per_s": round(len(rows) / wall_time, 1),
        "bulk_inferrer_rows_per_s": round(len(rows) / inferrer_seconds, 1) if inferrer_seconds > 0 else None,
        "predictions": str(predictions),
        "inference_result": uri,
    }


def format_summary(summary: dict) -> str:
    dropped = summary["dropped_test_texts"]
    lines = [
        f"model version:       {summary['model_version']} ({summary['model_base_dir']})",
        f"rows read:           {summary['rows_read']}",
    ]
    if dropped is not None:
        lines.append(f"test texts dropped:  {dropped}")
    lines += [
        f"rows scored:         {summary['rows_scored']}",
        f"predicted positive:  {summary['share_positive']:.4f}",
        f"mean probability:    {summary['mean_probability']:.4f}",
        f"wall time:           {summary['wall_time_s']:.1f} s ({summary['rows_per_s']:.0f} rows/s; "
        f"BulkInferrer {summary['bulk_inferrer_s']:.1f} s)",
        f"predictions:         {summary['predictions']}",
    ]
    return "\n".join(lines)


# --- command line ------------------------------------------------------------------------


def add_parser(commands) -> None:
    from pipeline import configs, data_sources

    parser = commands.add_parser("score", help="batch-score unlabeled texts with a pushed model (TFX BulkInferrer)")
    parser.add_argument("--dataset", choices=sorted(configs.DATASETS), default=configs.DEFAULT_DATASET)
    parser.add_argument("--input", required=True, help=f"a CSV/TSV[.gz] with a {TEXT_COLUMN!r} column, a .txt[.gz] "
                        "with one text a line, or a folder of them")
    parser.add_argument("--out", required=True, help="where predictions-<stamp>.jsonl, the pipeline root and the "
                        "metadata go")
    parser.add_argument("--output-dir", help="the training run's output directory, for the default --model-base-dir "
                        "(default: $SENTIMENT_OUTPUT_DIR or ./outputs)")
    parser.add_argument("--model-base-dir", help="a serving directory of numbered versions "
                        "(default: <output-dir>/serving/sentiment-<dataset>)")
    parser.add_argument("--version", type=int, help="the version to score with (default: the latest pushed)")
    parser.add_argument("--exclude-test-texts", action="store_true",
                        help="drop inputs whose exact text is in the dataset's test split")
    parser.add_argument("--data-dir", help=f"where the dataset is, for --exclude-test-texts (default: "
                        f"${data_sources.DATA_DIR_ENV}, then ../shared/data, then a download)")
    parser.add_argument("--no-download", action="store_true", help="fail instead of downloading missing data")
    parser.add_argument("--report-json", help="also write the summary to this JSON file")
    parser.add_argument("--verbose", action="store_true", help="TFX's and Beam's logs, and tracebacks")


def score_command(args) -> int:
    from pipeline import configs

    if args.model_base_dir:
        base = Path(args.model_base_dir).expanduser().resolve()
    else:
        base = configs.DATASETS[args.dataset].serving_dir(configs.output_dir_of(args.output_dir))
    if args.verbose:
        from absl import logging

        logging.set_verbosity(logging.INFO)
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads: its C++ INFO and warnings
    try:
        summary = score(args.dataset, Path(args.input).expanduser().resolve(), Path(args.out).expanduser().resolve(),
                        base, args.version, args.exclude_test_texts, args.data_dir, not args.no_download)
    except NoModelError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except ScoreError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # the TFX run itself
        if args.verbose:
            traceback.print_exc()
        print(f"error: scoring failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
              + ("" if args.verbose else " (--verbose for the traceback)"), file=sys.stderr)
        return 1
    print(format_summary(summary))
    if args.report_json:
        Path(args.report_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report_json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0
