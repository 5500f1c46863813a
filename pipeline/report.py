"""The run report: one HTML page and its PNGs under the pipeline root.

Written after every local run to `<pipeline root>/report/index.html`:
* training curves (loss and accuracy per epoch, train vs validation) from the
  Trainer's `history.json` (ModelRun artifact);
* TFMA metrics per slice (overall, text-length bucket, source) and the
  confusion matrix at 0.5 (overall slice);
* data statistics from TFDV (StatisticsGen) per split;
* a few test reviews with each token shaded by its attention weight and the
  trajectory (probability of positive after each token) plotted.

`gather()` reads a run back from ML Metadata and the artifacts; `render()` only
draws what it is given, so it can be tested without a run. `screenshot()` opens
the page in headless Chromium.
"""

from __future__ import annotations

import dataclasses
import gzip
import html
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

REPORT_DIR = "report"
REPORT_FILE = "index.html"
CHROMIUM = "/usr/bin/chromium"
SAMPLE_REVIEWS = 6
CONFUSION_KEYS = ("true_positives", "false_positives", "true_negatives", "false_negatives")


@dataclasses.dataclass
class ReportData:
    pipeline_name: str
    run_id: str
    summary: dict[str, Any]
    # {"loss": [...], "val_loss": [...], "binary_accuracy": [...], "val_binary_accuracy": [...]}
    history: dict[str, list[float]]
    # slice name ("Overall", "length_bucket=64-127", ...) -> metric -> value
    slices: dict[str, dict[str, float]]
    # split -> {"num_examples": n, "features": {name: {stat: value}}, "num_chars_histogram": [(low, high, count)]}
    statistics: dict[str, dict[str, Any]]
    # [{"text", "label" (true), "probability", "tokens", "attention", "trajectory"}]
    reviews: list[dict[str, Any]]
    infra: dict[str, Any] = dataclasses.field(default_factory=dict)


# --- gathering ------------------------------------------------------------------------------------


def _run_artifacts(metadata, run_id: str) -> dict[str, list[str]]:
    from pipeline import run_summary

    store = run_summary.open_store(metadata)
    run = store.get_context_by_type_and_name("pipeline_run", run_id)
    found: dict[str, list[str]] = {}
    for execution in store.get_executions_by_context(run.id):
        for artifact in run_summary._output_artifacts(store, execution.id):
            found.setdefault(run_summary._artifact_type(store, artifact), []).append(artifact.uri)
    return found


def load_slices(evaluation_uri: str) -> dict[str, dict[str, float]]:
    import tensorflow_model_analysis as tfma

    slices: dict[str, dict[str, float]] = {}
    for sliced in tfma.load_metrics(evaluation_uri):
        keys = sliced.slice_key.single_slice_keys
        name = "Overall" if not keys else ", ".join(
            f"{k.column}={k.bytes_value.decode('utf-8', 'replace') if k.HasField('bytes_value') else k.int64_value if k.HasField('int64_value') else k.float_value}"
            for k in keys)
        values = slices.setdefault(name, {})
        for item in sliced.metric_keys_and_values:
            if item.key.model_name not in ("", "candidate") or item.key.is_diff:
                continue
            if item.value.HasField("double_value"):
                values[item.key.name] = item.value.double_value.value
    return slices


def load_statistics(statistics_uri: str) -> dict[str, dict[str, Any]]:
    import tensorflow_data_validation as tfdv

    result: dict[str, dict[str, Any]] = {}
    for split_dir in sorted(Path(statistics_uri).glob("Split-*")):
        path = split_dir / "FeatureStats.pb"
        if not path.exists():
            continue
        stats = tfdv.load_stats_binary(str(path)).datasets[0]
        split = split_dir.name[len("Split-"):]
        entry: dict[str, Any] = {"num_examples": int(stats.num_examples), "features": {}}
        for feature in stats.features:
            name = feature.path.step[0] if feature.path.step else feature.name
            if feature.HasField("num_stats"):
                n = feature.num_stats
                entry["features"][name] = {"type": "number", "mean": n.mean, "std": n.std_dev, "min": n.min,
                                           "max": n.max, "missing": n.common_stats.num_missing}
                if name == "num_chars":
                    histogram = [h for h in n.histograms if h.type == h.STANDARD] or list(n.histograms)
                    if histogram:
                        entry["num_chars_histogram"] = [(b.low_value, b.high_value, b.sample_count)
                                                        for b in histogram[0].buckets]
            elif feature.HasField("string_stats"):
                s = feature.string_stats
                entry["features"][name] = {"type": "string", "unique": s.unique, "avg_length": s.avg_length,
                                           "missing": s.common_stats.num_missing,
                                           "top": [(v.value, v.frequency) for v in s.top_values[:3]]}
        result[split] = entry
    return result


def sample_test_reviews(examples_uri: str, count: int = SAMPLE_REVIEWS, max_chars: int = 400) -> list[tuple[str, int]]:
    """Up to `count` short test reviews, half of each label, in file order (deterministic)."""
    import tensorflow as tf

    files = sorted(str(p) for p in (Path(examples_uri) / "Split-test").glob("*.gz"))
    by_label: dict[int, list[str]] = {0: [], 1: []}
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        example = tf.train.Example.FromString(record.numpy())
        text = example.features.feature["text"].bytes_list.value[0].decode("utf-8")
        label = int(example.features.feature["label"].int64_list.value[0])
        if len(text) <= max_chars and len(by_label[label]) < count // 2:
            by_label[label].append(text)
        if all(len(v) >= count // 2 for v in by_label.values()):
            break
    return [(t, 1) for t in by_label[1]] + [(t, 0) for t in by_label[0]]


def gather(metadata, summary) -> ReportData:
    from pipeline import predict

    artifacts = _run_artifacts(metadata, summary.run_id)
    history: dict[str, list[float]] = {}
    for uri in artifacts.get("ModelRun", []):
        path = Path(uri) / "history.json"
        if path.exists():
            history = json.loads(path.read_text())
    slices = load_slices(summary.evaluation_uri) if summary.evaluation_uri else {}
    # StatisticsGen's statistics (Transform also writes ExampleStatistics, of another layout).
    stats_uris = [u for u in artifacts.get("ExampleStatistics", []) if f"{os.sep}StatisticsGen{os.sep}" in u]
    statistics = load_statistics(stats_uris[0]) if stats_uris else {}
    reviews: list[dict[str, Any]] = []
    if summary.model_uri and artifacts.get("Examples"):  # noqa: SIM102
        from tfx.utils import path_utils

        # ExampleGen's raw examples, not Transform's transformed ones (both are Examples).
        raw = [uri for uri in artifacts["Examples"] if f"{os.sep}ExampleGen{os.sep}" in uri] or artifacts["Examples"]
        samples = sample_test_reviews(raw[0])
        if samples:
            signature = predict.load_signature(Path(path_utils.serving_model_path(summary.model_uri)))
            texts = [t for t, _ in samples]
            for (text, label), result in zip(samples, predict.predict(signature, texts)):
                reviews.append({"text": text, "true_label": label, **result})
    infra: dict[str, Any] = {}
    for uri in artifacts.get("InfraBlessing", []):
        path = Path(uri) / "infra_validation.json"
        if path.exists():
            infra = json.loads(path.read_text())
    return ReportData(summary.pipeline_name, summary.run_id, dataclasses.asdict(summary), history, slices,
                      statistics, reviews, infra)


# --- drawing --------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(history: dict[str, list[float]], path: Path) -> bool:
    if not history:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, metric, title in ((axes[0], "loss", "loss"), (axes[1], "binary_accuracy", "accuracy")):
        for key, label, style in ((metric, "train", "-o"), (f"val_{metric}", "validation", "--s")):
            values = history.get(key) or history.get(key.replace("binary_accuracy", "accuracy"))
            if values:
                # After a resume from a checkpoint the history starts past epoch 1.
                epochs = [e + 1 for e in history.get("epochs_run") or []]
                ax.plot(epochs if len(epochs) == len(values) else range(1, len(values) + 1), values, style,
                        label=label)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def confusion_counts(metrics: dict[str, float]) -> dict[str, float] | None:
    if not all(k in metrics for k in CONFUSION_KEYS):
        return None
    return {k: metrics[k] for k in CONFUSION_KEYS}


def plot_confusion_matrix(counts: dict[str, float], path: Path) -> None:
    plt = _plt()
    matrix = [[counts["true_negatives"], counts["false_positives"]],
              [counts["false_negatives"], counts["true_positives"]]]
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    image = ax.imshow(matrix, cmap="Blues")
    for i in range(2):
        for j in range(2):
            value = matrix[i][j]
            ax.text(j, i, f"{int(value)}", ha="center", va="center", fontsize=16,
                    color="white" if value > max(max(r) for r in matrix) / 2 else "black")
    ax.set_xticks([0, 1], ["negative", "positive"])
    ax.set_yticks([0, 1], ["negative", "positive"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (test, threshold 0.5)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_slices(slices: dict[str, dict[str, float]], path: Path) -> bool:
    rows = [(name, m["binary_accuracy"], m.get("example_count", 0)) for name, m in slices.items()
            if "binary_accuracy" in m]
    if not rows:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    names = [f"{n} (n={int(c)})" for n, _, c in rows]
    ax.barh(names, [a for _, a, _ in rows], color=["#444" if n == "Overall" else "#4a90d9" for n, _, _ in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy")
    ax.set_title("accuracy per slice (test split)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_length_histogram(statistics: dict[str, dict[str, Any]], path: Path) -> bool:
    splits = {s: e["num_chars_histogram"] for s, e in statistics.items() if e.get("num_chars_histogram")}
    if not splits:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.4))
    for split, buckets in splits.items():
        total = sum(c for _, _, c in buckets) or 1
        ax.step([(lo + hi) / 2 for lo, hi, _ in buckets], [c / total for _, _, c in buckets], where="mid", label=split)
    ax.set_xlabel("characters per text (num_chars)")
    ax.set_ylabel("share of examples")
    ax.set_title("text length by split (TFDV)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_trajectory(review: dict[str, Any], path: Path) -> None:
    plt = _plt()
    tokens, trajectory = review["tokens"], review["trajectory"]
    fig, ax = plt.subplots(figsize=(max(6, 0.32 * len(tokens) + 1.5), 2.8))
    ax.plot(range(1, len(trajectory) + 1), trajectory, "-o", markersize=3, color="#d9534f")
    ax.axhline(0.5, color="gray", lw=0.8, ls="--")
    ax.set_ylim(0, 1)
    ax.set_xlim(0.5, max(1, len(trajectory)) + 0.5)
    ax.set_ylabel("P(positive)")
    if len(tokens) <= 60:
        ax.set_xticks(range(1, len(tokens) + 1), tokens, rotation=70, fontsize=8)
    else:
        ax.set_xlabel("tokens read")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- the page -------------------------------------------------------------------------------------

_CSS = """
body { font-family: sans-serif; margin: 24px auto; max-width: 1100px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 32px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; } th { background: #f3f3f3; }
td.name, th.name { text-align: left; }
.ok { color: #1a7f37; font-weight: bold; } .no { color: #c62828; font-weight: bold; }
.review { border: 1px solid #ddd; border-radius: 6px; padding: 10px; margin: 12px 0; }
.tokens span { padding: 1px 2px; margin: 1px; border-radius: 3px; display: inline-block; }
img { max-width: 100%; }
"""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.0f}"
    return html.escape(str(value))


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f'<th class="{"name" if i == 0 else ""}">{html.escape(h)}</th>' for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"name" if i == 0 else ""}">{_fmt(c)}</td>'
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _shaded_tokens(review: dict[str, Any]) -> str:
    top = max(review["attention"] or [1.0]) or 1.0
    spans = []
    for token, weight in zip(review["tokens"], review["attention"]):
        alpha = 0.08 + 0.92 * (weight / top)
        spans.append(f'<span title="attention {weight:.4f}" style="background: rgba(255,140,0,{alpha:.3f})">'
                     f"{html.escape(token)}</span>")
    return "".join(spans)


def render(data: ReportData, out_dir: Path) -> Path:
    """Writes index.html and its PNGs into out_dir; returns the page's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.png"):
        old.unlink()
    summary = data.summary
    parts = [f"<h1>Run report: {html.escape(data.pipeline_name)}</h1>",
             f"<p>Run <code>{html.escape(data.run_id)}</code>. "
             f"Blessed by the Evaluator: <span class=\"{'ok' if summary.get('blessed') else 'no'}\">"
             f"{summary.get('blessed')}</span>; infra validation: "
             f"<span class=\"{'ok' if data.infra.get('blessed') else 'no'}\">{data.infra.get('blessed', 'n/a')}</span>; "
             f"pushed: <b>{html.escape(str(summary.get('pushed_path') or 'no'))}</b>.</p>"]
    if data.infra.get("failures"):
        parts.append("<p class=\"no\">Infra validation failures: " +
                     html.escape("; ".join(data.infra["failures"])) + "</p>")
    components = summary.get("components") or []
    if components:
        parts.append(_table(["component", "state", "wall time (s)"],
                            [[c["component"], c["state"], float(c["wall_time_s"])] for c in components]))

    parts.append("<h2>Training curves</h2>")
    if plot_training_curves(data.history, out_dir / "training_curves.png"):
        parts.append('<img src="training_curves.png" alt="training curves">')
    else:
        parts.append("<p>No training history in this run.</p>")

    parts.append("<h2>Evaluation (TFMA, test split)</h2>")
    if data.slices:
        metric_names = ["example_count", "binary_accuracy", "auc", "precision", "recall"]
        rows = [[name] + [m.get(k, float("nan")) for k in metric_names] for name, m in data.slices.items()]
        parts.append(_table(["slice"] + metric_names, rows))
        if plot_slices(data.slices, out_dir / "slices.png"):
            parts.append('<img src="slices.png" alt="accuracy per slice">')
        counts = confusion_counts(data.slices.get("Overall", {}))
        if counts:
            plot_confusion_matrix(counts, out_dir / "confusion_matrix.png")
            parts.append('<img src="confusion_matrix.png" alt="confusion matrix">')
    else:
        parts.append("<p>No evaluation in this run.</p>")

    parts.append("<h2>Data statistics (TFDV)</h2>")
    if data.statistics:
        rows = []
        for split, entry in data.statistics.items():
            for name, stats in sorted(entry["features"].items()):
                if stats["type"] == "number":
                    detail = f"mean {stats['mean']:.1f}, std {stats['std']:.1f}, min {stats['min']:.0f}, max {stats['max']:.0f}"
                else:
                    top = ", ".join(f"{v[:20]} ({int(f)})" for v, f in stats.get("top", []))
                    detail = f"{stats['unique']} unique, avg length {stats['avg_length']:.1f}; top: {top}"
                rows.append([f"{split} / {name}", entry["num_examples"], int(stats["missing"]), detail])
        parts.append(_table(["split / feature", "examples", "missing", "statistics"], rows))
        if plot_length_histogram(data.statistics, out_dir / "text_length.png"):
            parts.append('<img src="text_length.png" alt="text length by split">')
    else:
        parts.append("<p>No statistics in this run.</p>")

    parts.append("<h2>Test reviews: attention and trajectory</h2>"
                 "<p>Each token is shaded by its attention weight (darker = more weight); the plot shows the "
                 "probability of positive after reading each token.</p>")
    for i, review in enumerate(data.reviews):
        plot_trajectory(review, out_dir / f"trajectory_{i}.png") if review["tokens"] else None
        verdict = "positive" if review["label"] == 1 else "negative"
        truth = "positive" if review["true_label"] == 1 else "negative"
        parts.append(
            f'<div class="review"><div>true: <b>{truth}</b>, predicted: '
            f'<b class="{"ok" if verdict == truth else "no"}">{verdict}</b> '
            f"(P(positive) = {review['probability']:.3f})</div>"
            f'<p class="tokens">{_shaded_tokens(review)}</p>'
            + (f'<img src="trajectory_{i}.png" alt="trajectory {i}">' if review["tokens"] else "") + "</div>")
    if not data.reviews:
        parts.append("<p>No model to explain in this run.</p>")

    page = ("<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(data.pipeline_name)} run report</title><style>{_CSS}</style></head><body>"
            + "\n".join(parts) + "</body></html>")
    path = out_dir / REPORT_FILE
    path.write_text(page, encoding="utf-8")
    return path


def write_report(metadata, pipeline_root: Path, summary) -> Path:
    """`metadata`: the store, as a SQLite path, URI or metadata_store.StoreAddress."""
    return render(gather(metadata, summary), pipeline_root / REPORT_DIR)


def screenshot(html_path: Path, png_path: Path, width: int = 1200, height: int = 3000,
               chromium: str = CHROMIUM, timeout_s: float = 120.0) -> Path:
    """Renders the page in headless Chromium (fresh profile, no network services) to a PNG."""
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
               f"--window-size={width},{height}", f"--screenshot={png_path}", Path(html_path).resolve().as_uri()]
        subprocess.run(cmd, check=True, capture_output=True, timeout=timeout_s)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if not Path(png_path).exists():
        raise RuntimeError(f"chromium wrote no screenshot to {png_path}")
    return Path(png_path)


def image_is_blank(path: Path, min_std: float = 2.0) -> bool:
    """True when a PNG is (close to) one flat colour."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(path).convert("L"), dtype="float32")
    return pixels.size == 0 or float(pixels.std()) < min_std
