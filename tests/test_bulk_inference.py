"""`python -m pipeline score`: TFX BulkInferrer over unlabeled texts, results as request-log JSON lines."""

import csv
import gzip
import json
import time

import numpy as np
import pytest

from components import versioned_pusher
from pipeline import bulk_inference
from pipeline.__main__ import main
from tests import serving_models

# Texts of a tiny aclImdb test split (the dataset's test split for --dataset imdb).
TEST_TEXTS = ["A test review, held out.", "Another \"held out\" one \u2014 with a dash."]
TRAIN_TEXT = "A training review."


def _write_aclimdb(root):
    files = {
        "train/pos/0_9.txt": TRAIN_TEXT, "train/neg/0_2.txt": "A bad training review.",
        "test/pos/0_8.txt": TEST_TEXTS[0], "test/neg/0_1.txt": TEST_TEXTS[1],
    }
    for name, text in files.items():
        path = root / "imdb" / "aclImdb" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


# Input rows, in order. The first and third test texts repeat exactly (dropped, 3 rows);
# one differs by a trailing space and one is a training text (both kept).
INPUT_TEXTS = [
    "A good movie, a good cast!",
    TEST_TEXTS[0],
    "Bad movie.<br /><br />Really bad acting.",
    TEST_TEXTS[1],
    "",
    TEST_TEXTS[0] + " ",
    "ünïcödé 🎬 text, with \"quotes\"",
    TEST_TEXTS[0],
    TRAIN_TEXT,
    "good",
    "Dull, slow, bad.",
]
EXPECTED_KEPT = [t for i, t in enumerate(INPUT_TEXTS) if i not in (1, 3, 7)]


@pytest.fixture(scope="module")
def served(tiny_transform, tmp_path_factory):
    """A serving dir with two different (untrained) versions: 100 and 200 (the latest)."""
    _, tft_output = tiny_transform
    root = tmp_path_factory.mktemp("bulk")
    base = root / "serving"
    for version, seed in ((100, 0), (200, 1)):
        model = serving_models.export_tiny_model(tft_output, str(root / f"export-{seed}"), seed=seed)
        versioned_pusher.push_atomically(model, str(base), version=version)
    return base


def _serving_default(model_dir, texts):
    import tensorflow as tf

    signature = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    return signature(text=tf.constant(texts, dtype=tf.string))["probability"].numpy()


@pytest.fixture(scope="module")
def scored(served, tmp_path_factory):
    """One scoring run (the latest version, test texts excluded); returns what it left."""
    root = tmp_path_factory.mktemp("scored")
    data = _write_aclimdb(root / "data")
    reviews = root / "unsup.csv.gz"
    with gzip.open(reviews, "wt", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["text"])
        writer.writerows([t] for t in INPUT_TEXTS)
    out = root / "out"
    report = root / "report.json"
    before = time.time()
    code = main(["score", "--dataset", "imdb", "--input", str(reviews), "--out", str(out),
                 "--model-base-dir", str(served), "--exclude-test-texts", "--data-dir", str(data),
                 "--report-json", str(report)])
    after = time.time()
    return code, out, report, before, after


@pytest.mark.e2e
def test_one_record_per_input_row_with_the_models_probability(scored, served, capsys):
    code, out, report, before, after = scored
    assert code == 0
    [predictions] = sorted(out.glob("predictions-*.jsonl"))
    records = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines()]
    assert [list(r) for r in records] == [list(bulk_inference.RECORD_KEYS)] * len(EXPECTED_KEPT)
    assert [r["text"] for r in records] == EXPECTED_KEPT  # input order, nothing lost or added
    assert {r["model_version"] for r in records} == {200}
    assert all(isinstance(r["time"], float) and before <= r["time"] <= after for r in records)
    assert len({r["time"] for r in records}) == 1
    probabilities = np.array([r["probability"] for r in records])
    assert [r["label"] for r in records] == [int(p >= 0.5) for p in probabilities]
    # The same texts through the served SavedModel's serving_default (raw text in).
    np.testing.assert_allclose(probabilities, _serving_default(served / "200", EXPECTED_KEPT), atol=1e-5, rtol=0)
    # ...and not what the other version says, so the comparison can tell versions apart.
    assert np.abs(probabilities - _serving_default(served / "100", EXPECTED_KEPT)).max() > 1e-3


@pytest.mark.e2e
def test_test_texts_are_dropped_and_counted_exactly(scored):
    code, out, report, _, _ = scored
    summary = json.loads(report.read_text())
    assert summary["rows_read"] == len(INPUT_TEXTS) == 11
    assert summary["dropped_test_texts"] == 3
    assert summary["rows_scored"] == 8
    assert summary["model_version"] == 200
    assert 0 <= summary["share_positive"] <= 1 and 0 < summary["mean_probability"] < 1
    records = [json.loads(line) for line in open(summary["predictions"], encoding="utf-8")]
    assert summary["share_positive"] == pytest.approx(np.mean([r["label"] for r in records]))
    assert summary["mean_probability"] == pytest.approx(np.mean([r["probability"] for r in records]))


@pytest.mark.e2e
def test_the_run_is_a_tfx_pipeline_with_its_own_metadata(scored):
    from pipeline import run_summary

    _, out, _, _, _ = scored
    store = run_summary.open_store(out / bulk_inference.METADATA_FILE)
    components = {run_summary.component_id(store, e) for e in store.get_executions()}
    assert {"ImportExampleGen", "ModelImporter", "BulkInferrer"} <= components
    [model] = store.get_artifacts_by_type("Model")
    assert model.custom_properties["model_version"].int_value == 200
    assert (out / "pipeline" / "BulkInferrer").is_dir()
    assert not (out / bulk_inference.INPUTS_DIR).exists()  # the staged input is gone, ExampleGen has its copy


@pytest.fixture
def fake_versions(tmp_path):
    """A serving dir listing versions 100 and 200 (no real model: these tests stop before loading one)."""
    base = tmp_path / "serving"
    for version in (100, 200):
        (base / str(version)).mkdir(parents=True)
        (base / str(version) / "saved_model.pb").write_bytes(b"")
    return base


def test_missing_model_is_a_clear_error(tmp_path, fake_versions, capsys):
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("a text\n", encoding="utf-8")
    args = ["score", "--dataset", "polarity", "--input", str(reviews), "--out", str(tmp_path / "out")]
    assert main([*args, "--output-dir", str(tmp_path / "nothing-trained")]) == 1
    err = capsys.readouterr().err
    assert "no pushed model under" in err
    assert str(tmp_path / "nothing-trained" / "serving" / "sentiment-polarity") in err
    assert main([*args, "--model-base-dir", str(fake_versions), "--version", "7"]) == 1
    err = capsys.readouterr().err
    assert "version 7 is not under" in err and "(pushed: 100, 200)" in err
    assert not (tmp_path / "out").exists()  # nothing was started


def test_bad_inputs_are_clear_errors(tmp_path, fake_versions, capsys):
    args = ["score", "--dataset", "polarity", "--out", str(tmp_path / "out"), "--model-base-dir", str(fake_versions)]
    no_text = tmp_path / "labels.csv"
    no_text.write_text("review,label\ngood,1\n", encoding="utf-8")
    assert main([*args, "--input", str(no_text)]) == 2
    assert "has no 'text' column" in capsys.readouterr().err
    assert main([*args, "--input", str(tmp_path / "absent.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([*args, "--input", str(tmp_path / "empty")]) == 2
    assert "holds no" in capsys.readouterr().err


def test_inputs_csv_txt_and_folders(tmp_path):
    folder = tmp_path / "in"
    (folder / "more").mkdir(parents=True)
    (folder / "a.txt").write_text("one\n\n  \ntwo\n", encoding="utf-8")
    with gzip.open(folder / "more" / "b.csv.gz", "wt", encoding="utf-8", newline="") as f:
        f.write('id,text\n1,"multi\nline, quoted"\n2,\n')
    rows = bulk_inference.read_inputs(folder)
    assert [(r.id, r.text) for r in rows] == [("a.txt:1", "one"), ("a.txt:4", "two"),
                                              ("more/b.csv.gz:2", "multi\nline, quoted"), ("more/b.csv.gz:4", "")]
    assert [r.text for r in bulk_inference.read_inputs(folder / "a.txt")] == ["one", "two"]
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nfine,1\ntoo,many,fields\n", encoding="utf-8")
    with pytest.raises(bulk_inference.ScoreError, match=r"bad\.csv:3: 3 fields, the header has 2"):
        bulk_inference.read_inputs(bad)
