"""`python -m pipeline monitor`: served traffic against what the served model was trained on.

Reads the request logs `python -m pipeline serve --log-requests DIR` writes
(pipeline/request_log.py: JSON lines with time, model_version, text,
probability, label; plain `.jsonl` or `.jsonl.gz`, and any other directory of
JSON lines with the same keys, e.g. batch predictions) within a time window,
and computes per record:

    num_chars        characters of the stripped text
    oov_share        share of the text's tokens (the model's own tokenizer,
                     models/preprocessing.tokenize) absent from the vocabulary
                     file tf.Transform wrote, found in the served SavedModel's
                     assets (0 for a text without tokens). Words that only the
                     pretrained vectors know (DatasetConfig.pretrained_vocabulary)
                     count as out of vocabulary here.
    probability      what the model answered
    predicted_label  likewise (categorical)

The reference is the eval split of the Examples artifact the served version
was trained from (found in ML Metadata by the version's lineage), a sample of
monitoring.reference_examples texts scored by that version, with the same
features; its statistics are cached under
<output_dir>/monitoring/sentiment-<dataset>/reference-v<version>/. TFDV
computes the statistics, and its comparators measure skew (traffic against
the reference: `tfdv.validate_statistics(reference, schema,
serving_statistics=traffic)`) and drift (against the previous monitoring
window's traffic: `tfdv.validate_statistics(traffic, schema,
previous_statistics=previous)`): Jensen-Shannon divergence for num_chars,
oov_share and probability, L-infinity distance for predicted_label, bounds in
DatasetConfig.monitoring (`--set monitoring.X=V` overrides them).

Every window writes <output_dir>/monitoring/sentiment-<dataset>/<until, UTC
YYYYmmddTHHMMSSZ>/: skew_anomalies.pbtxt/.pb and drift_anomalies.pbtxt/.pb
(TFDV Anomalies), summary.json (every distance and bound), traffic_stats.pb
(the next window's "previous"), schema.pbtxt and index.html.

Exit codes: 0 nothing exceeds its bound; 1 skew or drift exceeds a bound
(one line per finding); 2 no verdict: a usage error, no served model or
reference, no logged record in the window, or fewer than
monitoring.min_requests records.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import gzip
import html
import json
import math
import os
import random
import re
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

EXIT_OK, EXIT_FINDINGS, EXIT_NO_VERDICT = 0, 1, 2

NUM_CHARS, OOV_SHARE, PROBABILITY, PREDICTED_LABEL = "num_chars", "oov_share", "probability", "predicted_label"
NUMERIC_FEATURES = (NUM_CHARS, OOV_SHARE, PROBABILITY)
FEATURES = NUMERIC_FEATURES + (PREDICTED_LABEL,)
JSD, LINF = "jensen_shannon_divergence", "infinity_norm"
MEASURE_NAMES = {JSD: "Jensen-Shannon divergence", LINF: "L-infinity distance"}
_WINDOW_DIR = re.compile(r"\d{8}T\d{6}Z")
_STAMP = "%Y%m%dT%H%M%SZ"
LOG_SUFFIXES = (".jsonl", ".jsonl.gz")


class MonitorError(Exception):
    """An expected problem (bad arguments, no traffic, no model): a message, exit code 2."""


# --- time


def parse_time(raw: str) -> float:
    """Unix seconds from "1764400000[.5]", an ISO 8601 date/time (no zone = UTC) or "20261129T120000Z"."""
    text = raw.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(value):
            return value
        raise MonitorError(f"not a time: {raw!r}")
    for fmt in (_STAMP, "%Y%m%dT%H%M%S"):
        try:
            return datetime.datetime.strptime(text, fmt).replace(tzinfo=datetime.timezone.utc).timestamp()
        except ValueError:
            pass
    try:
        when = datetime.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        raise MonitorError(f"not a time: {raw!r}; give unix seconds or ISO 8601, e.g. 2026-11-29T12:00:00Z") \
            from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def iso(when: float | None) -> str | None:
    if when is None:
        return None
    return datetime.datetime.fromtimestamp(when, tz=datetime.timezone.utc).isoformat(timespec="seconds")


def window_stamp(until: float) -> str:
    return datetime.datetime.fromtimestamp(until, tz=datetime.timezone.utc).strftime(_STAMP)


# --- reading the logs


@dataclasses.dataclass(frozen=True)
class Record:
    time: float
    model_version: int
    text: str
    probability: float
    label: int


@dataclasses.dataclass
class ReadReport:
    files: int = 0
    lines: int = 0
    in_window: int = 0
    outside_window: int = 0
    malformed: int = 0  # not JSON, or without the record keys
    incomplete: int = 0  # a last line without its newline (a file being written) or a cut .gz


def log_files(paths: Iterable[Path]) -> list[Path]:
    """The .jsonl / .jsonl.gz files of each path (a directory, not recursively, or a file)."""
    files = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(LOG_SUFFIXES))
        elif path.is_file():
            files.append(path)
        else:
            raise MonitorError(f"no such log directory or file: {path}")
    return files


def _lines(path: Path, report: ReadReport) -> Iterable[str]:
    """Complete lines only: a last line without its newline is still being written."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace", newline="\n") as f:
            for line in f:
                if not line.endswith("\n"):
                    report.incomplete += 1
                    return
                yield line
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:  # a .gz still being written, or cut
        report.incomplete += 1
        print(f"warning: {path}: read up to a damaged or unfinished end ({error})", file=sys.stderr)


def parse_record(line: str) -> Record | None:
    try:
        row = json.loads(line)
        record = Record(time=float(row["time"]), model_version=int(row["model_version"]), text=row["text"],
                        probability=float(row["probability"]), label=int(row["label"]))
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(record.text, str) or not math.isfinite(record.time) or not math.isfinite(record.probability):
        return None
    return record


def read_records(paths: Iterable[Path], since: float | None, until: float) -> tuple[list[Record], ReadReport]:
    """The records with since <= time < until from every log file under `paths`."""
    report = ReadReport()
    records = []
    for path in log_files(paths):
        report.files += 1
        for line in _lines(path, report):
            if not line.strip():
                continue
            report.lines += 1
            record = parse_record(line)
            if record is None:
                report.malformed += 1
            elif (since is None or record.time >= since) and record.time < until:
                records.append(record)
            else:
                report.outside_window += 1
    report.in_window = len(records)
    return records, report


# --- features


def find_vocabulary(model_dir: Path) -> Path:
    """The vocabulary file tf.Transform wrote (models.features.VOCABULARY_NAME), in the SavedModel's assets."""
    from models import features

    assets = Path(model_dir) / "assets"
    candidates = sorted(assets.glob(f"{features.VOCABULARY_NAME}*")) if assets.is_dir() else []
    exact = [p for p in candidates if p.name == features.VOCABULARY_NAME]
    if not (exact or candidates):
        raise MonitorError(f"no vocabulary file {features.VOCABULARY_NAME!r} in {assets}: is {model_dir} "
                           "a model this pipeline exported?")
    return (exact or candidates)[0]


def read_vocabulary(path: Path) -> frozenset[str]:
    with open(path, encoding="utf-8", errors="replace") as f:
        return frozenset(line.rstrip("\n") for line in f if line.rstrip("\n"))


def tokenize(texts: Sequence[str], token_level: str = "word", batch: int = 1024) -> list[list[str]]:
    """The tokens the model sees (models/preprocessing.tokenize, eager TensorFlow)."""
    import tensorflow as tf

    from models import preprocessing

    tokens: list[list[str]] = []
    for start in range(0, len(texts), batch):
        ragged = preprocessing.tokenize(tf.constant(list(texts[start:start + batch]), dtype=tf.string), token_level)
        tokens += [[t.decode("utf-8", "replace") for t in row] for row in ragged.to_list()]
    return tokens


def feature_frame(texts: Sequence[str], probabilities: Sequence[float], labels: Sequence[int],
                  vocabulary: frozenset[str] | set[str], token_level: str = "word",
                  tokenizer: Callable[[Sequence[str], str], list[list[str]]] | None = None):
    """A pandas DataFrame of the four monitored features, one row per text."""
    import numpy as np
    import pandas as pd

    token_lists = (tokenizer or tokenize)(texts, token_level)
    oov = [sum(t not in vocabulary for t in tokens) / len(tokens) if tokens else 0.0 for tokens in token_lists]
    return pd.DataFrame({
        NUM_CHARS: np.array([len(t.strip()) for t in texts], dtype=np.int64),
        OOV_SHARE: np.array(oov, dtype=np.float64),
        PROBABILITY: np.array(probabilities, dtype=np.float64),
        PREDICTED_LABEL: np.array(labels, dtype=np.int64),
    }, columns=list(FEATURES))


# --- statistics and comparison (TFDV)


def base_schema(reference_stats):
    """The schema inferred from the reference, predicted_label marked categorical."""
    import tensorflow_data_validation as tfdv

    schema = tfdv.infer_schema(reference_stats)
    tfdv.get_feature(schema, PREDICTED_LABEL).int_domain.is_categorical = True  # replaces an inferred bool_domain
    return schema


def statistics(frame, schema=None):
    """TFDV statistics of a feature frame (predicted_label as categorical when the schema says so)."""
    import tensorflow_data_validation as tfdv

    options = tfdv.StatsOptions(schema=schema) if schema is not None else tfdv.StatsOptions()
    return tfdv.generate_statistics_from_dataframe(frame, stats_options=options, n_jobs=1)


def reference_statistics(frame):
    """(statistics, schema) of the reference frame: statistics computed with the inferred schema."""
    schema = base_schema(statistics(frame))
    return statistics(frame, schema), schema


def thresholds(monitoring) -> dict[str, tuple[str, float]]:
    """{feature: (comparator, bound)} from a configs.MonitoringConfig."""
    return {NUM_CHARS: (JSD, monitoring.num_chars_jsd), OOV_SHARE: (JSD, monitoring.oov_share_jsd),
            PROBABILITY: (JSD, monitoring.probability_jsd), PREDICTED_LABEL: (LINF, monitoring.predicted_label_linf)}


def comparator_schema(schema, monitoring):
    """A copy of `schema` with skew and drift comparators set to the monitoring bounds."""
    import tensorflow_data_validation as tfdv
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = schema_pb2.Schema.FromString(schema.SerializeToString())
    for name, (measure, bound) in thresholds(monitoring).items():
        feature = tfdv.get_feature(schema, name)
        for comparator in (feature.skew_comparator, feature.drift_comparator):
            getattr(comparator, measure).threshold = bound
    return schema


@dataclasses.dataclass(frozen=True)
class Measurement:
    kind: str  # "skew" or "drift"
    feature: str
    measure: str  # JSD or LINF
    value: float
    threshold: float

    @property
    def exceeds(self) -> bool:
        return self.value > self.threshold

    def finding(self) -> str:
        if math.isinf(self.value):
            return f"{self.kind}: {self.feature}: {MEASURE_NAMES[self.measure]} not measured (absent from one side)"
        # Two decimals, more where two would print the value as not above the bound (0.101 > 0.10).
        bound = f"{self.threshold:.2f}" if round(self.threshold, 2) == self.threshold else f"{self.threshold:g}"
        digits = next((d for d in range(2, 7) if round(self.value, d) > float(bound)), 6)
        return f"{self.kind}: {self.feature}: {MEASURE_NAMES[self.measure]} {self.value:.{digits}f} > {bound}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "feature": self.feature, "measure": self.measure, "value": self.value,
                "threshold": self.threshold, "exceeds": self.exceeds}


@dataclasses.dataclass
class Comparison:
    schema: Any  # with the comparators
    reference_stats: Any
    traffic_stats: Any
    skew: Any  # Anomalies
    drift: Any | None  # Anomalies, None without a previous window
    measurements: list[Measurement]
    other_anomalies: list[str]  # anomalies that are not a comparator's (e.g. a feature missing)

    @property
    def findings(self) -> list[str]:
        return [m.finding() for m in self.measurements if m.exceeds] + self.other_anomalies

    @property
    def exit_code(self) -> int:
        return EXIT_FINDINGS if self.findings else EXIT_OK


def _measurements(anomalies, kind: str, wanted: dict[str, tuple[str, float]]) -> list[Measurement]:
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    types = {anomalies_pb2.DriftSkewInfo.Measurement.JENSEN_SHANNON_DIVERGENCE: JSD,
             anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY: LINF}
    found = {}
    for info in anomalies.drift_skew_info:
        name = "/".join(info.path.step)
        for m in (info.skew_measurements if kind == "skew" else info.drift_measurements):
            if types.get(m.type) == wanted.get(name, (None,))[0]:
                found[name] = Measurement(kind, name, types[m.type], float(m.value), float(m.threshold))
    missing = sorted(set(wanted) - set(found))
    if missing:  # TFDV measured nothing (e.g. a feature absent from one side): say so, as a finding
        return [found[n] for n in wanted if n in found] + [
            Measurement(kind, n, wanted[n][0], math.inf, wanted[n][1]) for n in missing]
    return [found[n] for n in wanted]


def _other_anomalies(anomalies, kind: str) -> list[str]:
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    comparator = {anomalies_pb2.AnomalyInfo.COMPARATOR_L_INFTY_HIGH,
                  anomalies_pb2.AnomalyInfo.COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH}
    lines = []
    for name, info in sorted(anomalies.anomaly_info.items()):
        for reason in info.reason:
            if reason.type not in comparator:
                lines.append(f"{kind}: {name}: {reason.description or reason.short_description}")
    for reason in anomalies.dataset_anomaly_info.reason:
        lines.append(f"{kind}: <dataset>: {reason.description or reason.short_description}")
    return lines


def compare(reference_stats, schema, traffic_frame, monitoring, previous_stats=None) -> Comparison:
    """Traffic against the reference (skew) and the previous window (drift), with TFDV's comparators."""
    import tensorflow_data_validation as tfdv

    traffic_stats = statistics(traffic_frame, schema)
    with_comparators = comparator_schema(schema, monitoring)
    wanted = thresholds(monitoring)
    skew = tfdv.validate_statistics(statistics=reference_stats, schema=with_comparators,
                                    serving_statistics=traffic_stats)
    measurements = _measurements(skew, "skew", wanted)
    other = _other_anomalies(skew, "skew")
    drift = None
    if previous_stats is not None:
        drift = tfdv.validate_statistics(statistics=traffic_stats, schema=with_comparators,
                                         previous_statistics=previous_stats)
        measurements += _measurements(drift, "drift", wanted)
        other += _other_anomalies(drift, "drift")
    return Comparison(with_comparators, reference_stats, traffic_stats, skew, drift, measurements, other)


def figures_line(comparison: Comparison, records: int, versions: dict[int, int]) -> str:
    def part(kind):
        items = [m for m in comparison.measurements if m.kind == kind]
        if not items:
            return f"{kind}: no previous window"
        short = {JSD: "JSD", LINF: "Linf"}
        return f"{kind}: " + ", ".join(f"{m.feature} {short[m.measure]} {m.value:.3f}/{m.threshold:.2f}"
                                       for m in items)

    shown = ", ".join(f"v{v}: {n}" for v, n in sorted(versions.items()))
    verdict = f"{len(comparison.findings)} finding(s)" if comparison.findings else "nothing exceeds its bound"
    return f"monitor: {records} records ({shown}); {part('skew')}; {part('drift')}; {verdict}"


# --- the reference


@dataclasses.dataclass
class Reference:
    """What the traffic is compared with, for one model version; `frame()` is the expensive part."""
    version: int
    vocabulary: frozenset[str]
    source: str  # where the reference texts come from, for people
    cache_key: dict[str, Any]  # the cached statistics are reused only while this is equal
    frame: Callable[[], Any]  # -> feature frame (scores the texts)


def read_eval_texts(examples_uri: str) -> list[str]:
    """The `text` of every tf.Example in <examples_uri>/Split-eval/*.gz (GZIP TFRecords)."""
    import tensorflow as tf

    from models import features

    files = sorted(tf.io.gfile.glob(os.path.join(examples_uri, "Split-eval", "*")))
    if not files:
        raise MonitorError(f"no eval split in the Examples artifact {examples_uri} (Split-eval/ is missing or empty)")
    texts = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        example = tf.train.Example.FromString(record.numpy())
        values = example.features.feature[features.TEXT].bytes_list.value
        if values:
            texts.append(values[0].decode("utf-8", "replace"))
    return texts


def read_text_file(path: Path) -> list[str]:
    """Texts from a CSV/TSV[.gz] with a `text` column (like the dataset files) or JSON lines with "text"."""
    import pandas as pd

    name = path.name
    if name.endswith((".jsonl", ".jsonl.gz")):
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            return [json.loads(line)["text"] for line in f if line.strip()]
    frame = pd.read_csv(path, sep="\t" if ".tsv" in name else ",", dtype=str, keep_default_na=False)
    if "text" not in frame.columns:
        raise MonitorError(f"{path} has no 'text' column (columns: {list(frame.columns)})")
    return frame["text"].tolist()


def examples_uri_for_version(metadata, model_dir: Path) -> tuple[str, str]:
    """(Examples URI, how it was found): the ExampleGen output upstream of the push of `model_dir`
    in ML Metadata (pipeline/lineage.py walks it), else the newest ExampleGen output in the store.

    `metadata`: the store, as a SQLite path, URI or metadata_store.StoreAddress.
    """
    from pipeline import lineage, metadata_store, run_summary

    store_address = metadata_store.as_address(metadata)
    try:
        store = run_summary.open_store(store_address)
    except metadata_store.MetadataStoreError as error:
        raise MonitorError(f"{error} (the data the model was trained on is found there; or give "
                           "--reference-data FILE)") from None
    graph = lineage.MetadataGraph(store)
    pushers = [e for push in lineage.pushes_of(graph, model_dir) for e in graph.producers(push.id)]
    found = lineage.training_examples(graph, pushers)
    if found:
        return found[0].uri, f"lineage of the push of {model_dir.name} in {store_address}"
    candidates = [a for a in store.get_artifacts_by_type("Examples") if graph.is_example_gen_output(a)]
    if not candidates:
        raise MonitorError(f"no ExampleGen output in {store_address}; give --reference-data FILE")
    newest = max(candidates, key=lambda a: a.create_time_since_epoch)
    return newest.uri, (f"newest ExampleGen output in {store_address} (no push of {model_dir} recorded there)")


def model_scorer(model_dir: Path, batch_size: int = 64) -> Callable[[Sequence[str]], tuple[list[float], list[int]]]:
    """Scores texts with the SavedModel's serving signature, in batches of similar length."""
    import numpy as np
    import tensorflow as tf

    from pipeline import predict

    signature = predict.load_signature(model_dir)

    def score(texts: Sequence[str]):
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        probabilities, labels = [0.0] * len(texts), [0] * len(texts)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            out = signature(text=tf.constant([texts[i] for i in chunk], dtype=tf.string))
            p, lab = np.asarray(out["probability"]).reshape(-1), np.asarray(out["label"]).reshape(-1)
            for j, i in enumerate(chunk):
                probabilities[i], labels[i] = float(p[j]), int(lab[j])
        return probabilities, labels

    return score


def model_reference(model_dir: Path, version: int, read_texts: Callable[[], list[str]], source: str,
                    source_key: str, examples: int, token_level: str, seed: int = 0) -> Reference:
    """The reference for a served version: a sample of `examples` texts scored by it, with its vocabulary.

    The texts are read and scored only when the cached statistics cannot be reused.
    """
    from pipeline import serve

    vocabulary = read_vocabulary(find_vocabulary(model_dir))

    def frame():
        texts = read_texts()
        if len(texts) > examples:
            texts = random.Random(seed).sample(texts, examples)
        if not texts:
            raise MonitorError(f"the reference data ({source}) holds no text")
        probabilities, labels = model_scorer(model_dir)(texts)
        return feature_frame(texts, probabilities, labels, vocabulary, token_level)

    key = {"version": version, "model_fingerprint": serve.fingerprint(model_dir), "source": source_key,
           "examples": examples, "token_level": token_level, "seed": seed}
    return Reference(version, vocabulary, source, key, frame)


def cached_reference_stats(root: Path, reference: Reference):
    """(statistics, schema, cache dir, reused?) of the reference, computed once per model version and key."""
    import tensorflow_data_validation as tfdv

    cache = root / f"reference-v{reference.version}"
    meta_path = cache / "reference.json"
    stats_path, schema_path = cache / "reference_stats.pb", cache / "schema.pbtxt"
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == reference.cache_key and stats_path.is_file() and schema_path.is_file():
            return (tfdv.load_stats_binary(str(stats_path)), tfdv.load_schema_text(str(schema_path)), cache, True)
    except (OSError, ValueError):
        pass
    frame = reference.frame()
    stats, schema = reference_statistics(frame)
    cache.mkdir(parents=True, exist_ok=True)
    stats_path.write_bytes(stats.SerializeToString())
    tfdv.write_schema_text(schema, str(schema_path))
    frame.to_csv(cache / "reference_features.csv.gz", index=False)
    meta_path.write_text(json.dumps({"key": reference.cache_key, "source": reference.source,
                                     "examples": int(len(frame)), "created": iso(time.time())}, indent=2))
    return stats, schema, cache, False


# --- windows


def previous_window(root: Path, stamp: str) -> Path | None:
    """The newest earlier window directory that holds traffic statistics."""
    if not root.is_dir():
        return None
    earlier = sorted(p for p in root.iterdir() if _WINDOW_DIR.fullmatch(p.name) and p.name < stamp
                     and (p / "traffic_stats.pb").is_file())
    return earlier[-1] if earlier else None


def previous_until(window: Path | None) -> float | None:
    if window is None:
        return None
    try:
        return float(json.loads((window / "summary.json").read_text())["window"]["until"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclasses.dataclass
class Outcome:
    exit_code: int
    lines: list[str]
    window_dir: Path | None = None
    summary: dict[str, Any] | None = None


def check_window(log_paths: Sequence[Path], root: Path, monitoring, reference_for: Callable[[int | None], Reference],
                 since: float | None = None, until: float | None = None, token_level: str = "word",
                 tokenizer=None, now: Callable[[], float] = time.time) -> Outcome:
    """One monitoring window, from the logs to the written outputs; the command's core.

    `reference_for(version the traffic names most)` gives the Reference; the
    tests give a fake one. Raises MonitorError when there is no verdict.
    """
    import tensorflow_data_validation as tfdv

    root = Path(root)
    until = now() if until is None else until
    stamp = window_stamp(until)
    previous = previous_window(root, stamp)
    if since is None:
        since = previous_until(previous)
    if since is not None and since >= until:
        raise MonitorError(f"the window is empty: --since {iso(since)} is not before --until {iso(until)}")
    records, report = read_records(log_paths, since, until)
    window_text = f"between {iso(since) or 'the first record'} and {iso(until)}"
    if report.files == 0:
        raise MonitorError(f"no request log files ({', '.join('*' + s for s in LOG_SUFFIXES)}) in "
                           f"{', '.join(map(str, log_paths))}; start the server with --log-requests DIR")
    if not records:
        raise MonitorError(f"no logged record {window_text} ({report.lines} records in {report.files} file(s) "
                           f"all outside the window, {report.malformed} malformed); widen it with --since/--until")
    if len(records) < monitoring.min_requests:
        raise MonitorError(f"only {len(records)} logged records {window_text}: at least monitoring.min_requests="
                           f"{monitoring.min_requests} are needed for a verdict (widen the window with "
                           "--since/--until, or lower the bound with --set monitoring.min_requests=N)")
    versions = collections.Counter(r.model_version for r in records)
    reference = reference_for(versions.most_common(1)[0][0])
    reference_stats, schema, cache_dir, reused = cached_reference_stats(root, reference)
    traffic = feature_frame([r.text for r in records], [r.probability for r in records], [r.label for r in records],
                            reference.vocabulary, token_level, tokenizer)
    previous_stats = tfdv.load_stats_binary(str(previous / "traffic_stats.pb")) if previous else None
    comparison = compare(reference_stats, schema, traffic, monitoring, previous_stats)

    window_dir = root / stamp
    window_dir.mkdir(parents=True, exist_ok=True)
    lines = comparison.findings + [figures_line(comparison, len(records), dict(versions))]
    summary = {
        "window": {"since": since, "until": until, "since_iso": iso(since), "until_iso": iso(until), "stamp": stamp},
        "traffic": {"records": len(records), "model_versions": {str(v): n for v, n in sorted(versions.items())},
                    **dataclasses.asdict(report), "logs": [str(p) for p in log_paths]},
        "reference": {"model_version": reference.version, "source": reference.source,
                      "examples": _count(reference_stats), "statistics": str(cache_dir / "reference_stats.pb"),
                      "cached": reused},
        "previous_window": previous.name if previous else None,
        "thresholds": {f: {"measure": m, "threshold": t} for f, (m, t) in thresholds(monitoring).items()},
        "measurements": [m.to_json() for m in comparison.measurements],
        "findings": comparison.findings,
        "exit_code": comparison.exit_code,
    }
    _write_window(window_dir, comparison, summary)
    lines.append(f"monitor: report {window_dir / 'index.html'}")
    return Outcome(comparison.exit_code, lines, window_dir, summary)


def _count(stats) -> int:
    return int(stats.datasets[0].num_examples) if stats.datasets else 0


def _write_window(window_dir: Path, comparison: Comparison, summary: dict[str, Any]) -> None:
    import tensorflow_data_validation as tfdv
    from google.protobuf import text_format

    for name, anomalies in (("skew_anomalies", comparison.skew), ("drift_anomalies", comparison.drift)):
        if anomalies is None:
            continue
        (window_dir / f"{name}.pb").write_bytes(anomalies.SerializeToString())
        (window_dir / f"{name}.pbtxt").write_text(text_format.MessageToString(anomalies))
    (window_dir / "traffic_stats.pb").write_bytes(comparison.traffic_stats.SerializeToString())
    tfdv.write_schema_text(comparison.schema, str(window_dir / "schema.pbtxt"))
    (window_dir / "index.html").write_text(render_html(comparison, summary), encoding="utf-8")
    # summary.json last: its presence marks a complete window.
    (window_dir / "summary.json").write_text(json.dumps(summary, indent=2))


# --- HTML


def _feature_stats(stats, name: str):
    for feature in stats.datasets[0].features if stats.datasets else []:
        if "/".join(feature.path.step) == name or feature.name == name:
            return feature
    return None


def _histogram_html(feature) -> str:
    if feature is None:
        return "<i>absent</i>"
    if feature.HasField("string_stats"):
        total = sum(v.frequency for v in feature.string_stats.top_values) or 1
        rows = [(v.value, v.frequency / total) for v in sorted(feature.string_stats.top_values, key=lambda v: v.value)]
    else:
        hist = next((h for h in feature.num_stats.histograms if h.type == h.STANDARD), None)
        if hist is None:
            return ""
        total = sum(b.sample_count for b in hist.buckets) or 1
        rows = [(f"{b.low_value:.3g}-{b.high_value:.3g}", b.sample_count / total) for b in hist.buckets]
    bars = "".join(f"<tr><td>{html.escape(str(label))}</td><td><div class=bar style='width:{200 * share:.0f}px'>"
                   f"</div></td><td>{share:.1%}</td></tr>" for label, share in rows)
    return f"<table class=hist>{bars}</table>"


def _summary_html(feature) -> str:
    if feature is None:
        return ""
    if feature.HasField("string_stats"):
        return f"{feature.string_stats.unique} distinct values"
    n = feature.num_stats
    median = next((b.high_value for h in n.histograms if h.type == h.QUANTILES
                   for i, b in enumerate(h.buckets) if i == len(h.buckets) // 2 - 1), float("nan"))
    return f"mean {n.mean:.4g}, std {n.std_dev:.4g}, min {n.min:.4g}, median ~{median:.4g}, max {n.max:.4g}"


def render_html(comparison: Comparison, summary: dict[str, Any]) -> str:
    esc = html.escape
    window, traffic, reference = summary["window"], summary["traffic"], summary["reference"]
    verdict = ("<p class=bad>" + "<br>".join(esc(f) for f in comparison.findings) + "</p>") if comparison.findings \
        else "<p class=good>Nothing exceeds its bound.</p>"
    rows = "".join(
        f"<tr class={'bad' if m.exceeds else 'good'}><td>{m.kind}</td><td>{esc(m.feature)}</td>"
        f"<td>{MEASURE_NAMES[m.measure]}</td><td>{m.value:.4f}</td><td>{m.threshold:.4f}</td>"
        f"<td>{'exceeds' if m.exceeds else 'ok'}</td></tr>" for m in comparison.measurements)
    features = "".join(
        f"<tr><td>{esc(name)}</td>"
        f"<td>{_summary_html(_feature_stats(comparison.reference_stats, name))}"
        f"{_histogram_html(_feature_stats(comparison.reference_stats, name))}</td>"
        f"<td>{_summary_html(_feature_stats(comparison.traffic_stats, name))}"
        f"{_histogram_html(_feature_stats(comparison.traffic_stats, name))}</td></tr>" for name in FEATURES)
    drift_note = (f"previous window {esc(summary['previous_window'])}" if summary["previous_window"]
                  else "no previous window: no drift measured")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Served traffic {esc(window['stamp'])}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;vertical-align:top}} .bad{{color:#a00}} .good{{color:#070}}
table.hist td{{border:none;padding:0 4px;font-size:80%;color:#000}} .bar{{background:#48c;height:9px}}</style>
</head><body>
<h1>Served traffic, {esc(str(window['since_iso'] or 'first record'))} to {esc(window['until_iso'])}</h1>
<p>{traffic['records']} logged records (model versions {esc(json.dumps(traffic['model_versions']))}) from
{traffic['files']} file(s); reference: {reference['examples']} examples scored by version
{reference['model_version']} ({esc(reference['source'])}); {drift_note}.</p>
<h2>Verdict</h2>{verdict}
<h2>Distances</h2>
<table><tr><th>kind</th><th>feature</th><th>measure</th><th>value</th><th>bound</th><th></th></tr>{rows}</table>
<h2>Features</h2>
<table><tr><th>feature</th><th>reference</th><th>traffic</th></tr>{features}</table>
<p>Files: skew_anomalies.pbtxt, drift_anomalies.pbtxt (TFDV Anomalies), traffic_stats.pb, schema.pbtxt,
summary.json.</p>
</body></html>
"""


# --- command line


def monitor_command(args) -> int:
    try:
        outcome = _run_command(args)
    except MonitorError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_NO_VERDICT
    for line in outcome.lines:
        print(line)
    return outcome.exit_code


def _run_command(args) -> Outcome:
    from pipeline import configs

    try:
        dataset = configs.dataset_of(args)
    except ValueError as error:
        raise MonitorError(str(error)) from None
    monitoring = dataset.monitoring
    if monitoring.min_requests < 1 or monitoring.reference_examples < 1:
        raise MonitorError("monitoring.min_requests and monitoring.reference_examples must be at least 1")
    output_dir = configs.output_dir_of(args.output_dir)
    pipeline_name = dataset.pipeline_name
    serving_dir = Path(args.model_base_dir).resolve() if args.model_base_dir else dataset.serving_dir(output_dir)
    log_dirs = [Path(p) for p in (args.log_dir or [output_dir / "requests" / pipeline_name])]
    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    from pipeline import metadata_store

    try:
        store_address = metadata_store.address_for(args.metadata, output_dir / "metadata" / f"{pipeline_name}.sqlite")
    except metadata_store.MetadataStoreError as error:
        raise MonitorError(str(error)) from None

    def reference_for(traffic_version: int | None) -> Reference:
        from pipeline import serve

        versions = serve.versions_on_disk(serving_dir)
        if not versions:
            raise MonitorError(f"no served model under {serving_dir}; give --model-base-dir or --output-dir")
        version = traffic_version if traffic_version in versions else versions[-1]
        if traffic_version is not None and traffic_version not in versions:
            print(f"warning: version {traffic_version}, which answered most of the traffic, is no longer under "
                  f"{serving_dir}; comparing with version {version}", file=sys.stderr)
        model_dir = serving_dir / str(version)
        if args.reference_data:
            path = Path(args.reference_data).resolve()
            if not path.is_file():
                raise MonitorError(f"no such reference data file: {path}")
            return model_reference(model_dir, version, lambda: read_text_file(path), str(path), str(path),
                                   monitoring.reference_examples, dataset.token_level)
        uri, how = examples_uri_for_version(store_address, model_dir)
        return model_reference(model_dir, version, lambda: read_eval_texts(uri), f"eval split of {uri} ({how})",
                               f"eval split of {uri}", monitoring.reference_examples, dataset.token_level)

    root = Path(args.monitoring_dir).resolve() if args.monitoring_dir else output_dir / "monitoring" / pipeline_name
    return check_window(log_dirs, root, monitoring, reference_for, since=since, until=until,
                        token_level=dataset.token_level)


def add_parser(commands) -> None:
    from pipeline import configs

    parser = commands.add_parser(
        "monitor", help="compare logged served traffic with the training data (skew) and the previous window (drift)",
        description="Exit codes: 0 nothing exceeds its bound, 1 skew or drift exceeds one, 2 no verdict "
                    "(usage error, no model or reference, no or too few logged records in the window).")
    parser.add_argument("--dataset", choices=sorted(configs.DATASETS), default=configs.DEFAULT_DATASET)
    parser.add_argument("--log-dir", action="append", metavar="DIR",
                        help="request logs (JSON lines, .jsonl or .jsonl.gz) or a file of them; repeat for "
                        "several (default: <output-dir>/requests/sentiment-<dataset>)")
    parser.add_argument("--since", help="start of the window, unix seconds or ISO 8601 (no zone = UTC); "
                        "default: the end of the previous window, else the first record")
    parser.add_argument("--until", help="end of the window (exclusive); default: now")
    parser.add_argument("--output-dir", help="the run's output directory: metadata, serving, and monitoring/ "
                        "(default: $SENTIMENT_OUTPUT_DIR or ./outputs)")
    parser.add_argument("--metadata", metavar="URI", help="the ML Metadata store the run used (as for `run`; "
                        "default $SENTIMENT_METADATA_URI, else the SQLite file under --output-dir)")
    parser.add_argument("--model-base-dir", help="the serving directory of numbered versions "
                        "(default: <output-dir>/serving/sentiment-<dataset>)")
    parser.add_argument("--monitoring-dir", help="where windows and the cached reference statistics go "
                        "(default: <output-dir>/monitoring/sentiment-<dataset>)")
    parser.add_argument("--reference-data", metavar="FILE", help="score these texts (CSV/TSV[.gz] with a text "
                        "column, or JSON lines) as the reference instead of the eval split found in ML Metadata")
    configs.add_overrides_option(parser)  # e.g. monitoring.num_chars_jsd=0.2 or monitoring.min_requests=50
