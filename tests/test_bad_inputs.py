"""The bad-input suite: damaged data fed through ingestion and validation.

Each case runs the real ExampleGen executor (Beam, in-process) on a small
file, then validates the examples against the curated schema with TFDV, the
way StatisticsGen + ExampleValidator + the gate do, and asserts the exact
outcome: rejected (naming file and line), quarantined (rows in = rows out +
rows quarantined), stopped by an anomaly (feature, type, count), or accepted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv

from components import review_example_gen as gen
from components import review_sources, validation_gate
from pipeline import configs
from tests.helpers import write_tar

POLARITY_SCHEMA = tfdv.load_schema_text(str(configs.POLARITY.schema_dir / "schema.pbtxt"))
IMDB_SCHEMA = tfdv.load_schema_text(str(configs.IMDB.schema_dir / "schema.pbtxt"))

GOOD_ROWS = [(f"review number {i}, {'fine' if i % 2 else 'poor'} film", i % 2) for i in range(40)]


def write_csv(path: Path, rows, header="text,label", newline="\n", bom=False) -> Path:
    lines = [header] + [f'"{text}",{label}' if isinstance(text, str) else f"{text},{label}" for text, label in rows]
    data = (newline.join(lines) + newline).encode("utf-8")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


def ingest(source: Path, tmp_path: Path, quarantine: bool = False) -> tuple[dict, Path]:
    """Runs the ExampleGen executor on `source`; returns (ingestion report, examples dir)."""
    examples_dir = tmp_path / "examples"
    # Small samples may leave a split empty; tests/test_degenerate_data.py covers that stop.
    report = gen.ingest(str(source), str(examples_dir), quarantine=quarantine, require_every_split=False)
    assert report["rows_in"] == report["examples_out"] + report["rows_quarantined"]
    return report, examples_dir


def anomalies_of(examples_dir: Path, schema) -> dict[str, int]:
    """{"feature:ANOMALY_TYPE": examples affected} over all splits, as the gate reports them."""
    found = {}
    for split in gen.SPLITS:
        pattern = str(examples_dir / f"Split-{split}" / "*")
        stats = tfdv.generate_statistics_from_tfrecord(pattern)
        findings = validation_gate.findings_in(tfdv.validate_statistics(stats, schema), split)
        if findings:
            counts = validation_gate.count_anomalous_examples(pattern, schema)
            for finding in findings:
                found[finding.key] = found.get(finding.key, 0) + counts.get(finding.key, 0)
    return found


def read_examples(examples_dir: Path, split: str) -> list[tf.train.Example]:
    files = [str(p) for p in (examples_dir / f"Split-{split}").glob("*.gz")]
    return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(files, "GZIP")]


def text_of(example) -> str:
    return example.features.feature["text"].bytes_list.value[0].decode()


# --- labels ------------------------------------------------------------------

@pytest.mark.parametrize("bad_label, anomaly", [("2", "label:INT_TYPE_BIG_INT"),
                                                ("-1", "label:INT_TYPE_SMALL_INT")])
def test_label_outside_0_1_is_stopped_by_validation_with_a_count(tmp_path, bad_label, anomaly):
    rows = GOOD_ROWS + [("odd label", bad_label), ("another odd label", bad_label)]
    report, examples = ingest(write_csv(tmp_path / "reviews.csv", rows), tmp_path)
    assert report["rows_in"] == 42 and report["rows_quarantined"] == 0
    assert anomalies_of(examples, POLARITY_SCHEMA) == {anomaly: 2}


def test_label_that_is_not_a_number_fails_naming_file_and_line(tmp_path):
    rows = GOOD_ROWS[:5] + [("text with a word label", "pos")] + GOOD_ROWS[5:]
    with pytest.raises(gen.RowRejectedError, match=r"reviews\.csv:7: label 'pos' is not an integer"):
        ingest(write_csv(tmp_path / "reviews.csv", rows), tmp_path)


def test_label_that_is_not_a_number_is_quarantined_on_request(tmp_path):
    rows = GOOD_ROWS[:5] + [("text with a word label", "pos")] + GOOD_ROWS[5:]
    report, examples = ingest(write_csv(tmp_path / "reviews.csv", rows), tmp_path, quarantine=True)
    assert (report["rows_in"], report["examples_out"], report["rows_quarantined"]) == (41, 40, 1)
    [quarantined] = [json.loads(line) for line in (examples / gen.QUARANTINE_DIR / "rows.jsonl").open()]
    assert quarantined["id"] == "reviews.csv:7"
    assert "not an integer" in quarantined["reason"] and "word label" in quarantined["raw"]
    assert anomalies_of(examples, POLARITY_SCHEMA) == {}


def test_missing_label_column_fails_before_reading_rows(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("text,score\ngood,1\n")
    with pytest.raises(review_sources.SourceFormatError, match=r"reviews\.csv:1: .* lacks column\(s\) \['label'\]"):
        ingest(path, tmp_path)


# --- text --------------------------------------------------------------------

@pytest.mark.parametrize("blank", ["", "   \t  "])
def test_empty_or_blank_text_is_stopped_by_validation(tmp_path, blank):
    rows = GOOD_ROWS + [(blank, 1)]
    report, examples = ingest(write_csv(tmp_path / "reviews.csv", rows), tmp_path)
    assert report["examples_out"] == 41
    assert anomalies_of(examples, POLARITY_SCHEMA) == {"num_chars:INT_TYPE_SMALL_INT": 1}


def test_undecodable_bytes_fail_naming_the_line_or_are_quarantined(tmp_path):
    path = tmp_path / "reviews.csv"
    write_csv(path, GOOD_ROWS)
    lines = path.read_bytes().split(b"\n")
    lines.insert(3, b'"caf\xe9 au lait, in latin-1",1')
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(gen.RowRejectedError, match=r"reviews\.csv:4: not valid UTF-8"):
        ingest(path, tmp_path / "strict")
    report, _ = ingest(path, tmp_path / "lenient", quarantine=True)
    assert (report["rows_in"], report["examples_out"], report["rows_quarantined"]) == (41, 40, 1)


def test_unbalanced_quote_rejects_only_its_own_line(tmp_path):
    path = tmp_path / "reviews.csv"
    write_csv(path, GOOD_ROWS)
    lines = path.read_text().split("\n")
    lines.insert(2, '"a quote that never closes,1')
    path.write_text("\n".join(lines))
    with pytest.raises(gen.RowRejectedError, match=r"reviews\.csv:3: unterminated quoted field"):
        ingest(path, tmp_path / "strict")
    report, examples = ingest(path, tmp_path / "lenient", quarantine=True)
    assert (report["rows_in"], report["examples_out"], report["rows_quarantined"]) == (41, 40, 1)
    texts = {text_of(e) for split in gen.SPLITS for e in read_examples(examples, split)}
    assert texts == {text for text, _ in GOOD_ROWS}


def test_utf8_bom_and_crlf_line_ends_are_read_cleanly(tmp_path):
    path = write_csv(tmp_path / "reviews.csv", GOOD_ROWS, newline="\r\n", bom=True)
    report, examples = ingest(path, tmp_path)
    assert report["examples_out"] == 40 and report["rows_quarantined"] == 0
    texts = {text_of(e) for split in gen.SPLITS for e in read_examples(examples, split)}
    assert texts == {text for text, _ in GOOD_ROWS}  # no "\r" left, no BOM in the header
    assert anomalies_of(examples, POLARITY_SCHEMA) == {}


def test_a_5_mb_review_is_read_whole_and_then_stopped_as_too_long(tmp_path):
    huge = "word " * 1_000_000
    report, examples = ingest(write_csv(tmp_path / "reviews.csv", GOOD_ROWS + [(huge, 1)]), tmp_path)
    assert report["examples_out"] == 41
    lengths = [e.features.feature["num_chars"].int64_list.value[0]
               for split in gen.SPLITS for e in read_examples(examples, split)]
    assert max(lengths) == len(huge.strip())
    assert anomalies_of(examples, IMDB_SCHEMA) == {"num_chars:INT_TYPE_BIG_INT": 1}


def test_an_empty_file_fails_with_a_clear_message(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_bytes(b"")
    with pytest.raises(review_sources.SourceFormatError, match=r"reviews\.csv: file is empty"):
        ingest(path, tmp_path)


# --- archives ----------------------------------------------------------------

def write_aclimdb(path: Path, reviews: dict[str, list[tuple[str, int]]]) -> Path:
    """{"train/pos": [(text, rating), ...], ...} as an aclImdb-layout .tar.gz (with an unsup/ to skip)."""
    members = {f"aclImdb/{folder}/{index}_{rating}.txt": text.encode("utf-8")
               for folder, items in reviews.items() for index, (text, rating) in enumerate(items)}
    return write_tar(path, {**members, "aclImdb/train/unsup/0_0.txt": b"???"})


def _aclimdb_reviews(n=10):
    return {
        "train/pos": [(f"train positive {i}", 8) for i in range(n)],
        "train/neg": [(f"train negative {i}", 2) for i in range(n)],
        "test/pos": [(f"test positive {i}", 10) for i in range(n)],
        "test/neg": [(f"test negative {i}", 1) for i in range(n)],
    }


def test_aclimdb_archive_keeps_the_official_split_labels_ratings_and_ids(tmp_path):
    report, examples = ingest(write_aclimdb(tmp_path / "aclImdb_v1.tar.gz", _aclimdb_reviews()), tmp_path)
    assert report["rows_in"] == 40  # unsup/ skipped
    test = read_examples(examples, "test")
    assert sorted(text_of(e) for e in test) == sorted(
        f"test {p} {i}" for p in ("positive", "negative") for i in range(10))
    assert report["examples_per_split"]["train"] + report["examples_per_split"]["eval"] == 20
    example = next(e for e in test if text_of(e) == "test positive 3")
    f = example.features.feature
    assert (f["label"].int64_list.value[0], f["rating"].int64_list.value[0]) == (1, 10)
    assert f["id"].bytes_list.value[0].decode() == "aclImdb_v1.tar.gz:aclImdb/test/pos/3_10.txt"
    assert anomalies_of(examples, IMDB_SCHEMA) == {}


def test_an_archive_with_a_missing_folder_is_refused(tmp_path):
    reviews = _aclimdb_reviews()
    del reviews["test/neg"]
    with pytest.raises(review_sources.SourceFormatError, match="lacks the folder.*test/neg"):
        ingest(write_aclimdb(tmp_path / "aclImdb_v1.tar.gz", reviews), tmp_path)


def test_training_set_duplicated_into_the_test_split_warns_with_a_count(tmp_path):
    reviews = _aclimdb_reviews()
    reviews["test/pos"] += reviews["train/pos"]
    reviews["test/neg"] += reviews["train/neg"]
    report, _ = ingest(write_aclimdb(tmp_path / "aclImdb_v1.tar.gz", reviews), tmp_path)
    assert report["test_texts_in_training"] == 20
    assert report["examples_per_split"]["test"] == 40


def test_polarity_archive_is_decoded_as_windows_1252(tmp_path):
    path = write_tar(tmp_path / "rt-polaritydata.tar.gz", {
        "rt-polaritydata/rt-polarity.pos": b"a gem \x96 truly .\nwarm\n",
        "rt-polaritydata/rt-polarity.neg": b"a mess \x85 \n"})
    report, examples = ingest(path, tmp_path)
    assert report["rows_in"] == 3
    texts = {text_of(e) for split in gen.SPLITS for e in read_examples(examples, split)}
    assert texts == {"a gem – truly .", "warm", "a mess … "}


# --- the gate's decisions ------------------------------------------------------

def test_allowed_anomalies_are_named_by_feature_or_feature_and_type():
    finding = validation_gate.Finding("train", "num_chars", "INT_TYPE_BIG_INT", "too long", 1)
    assert validation_gate.is_allowed(finding, ["num_chars"])
    assert validation_gate.is_allowed(finding, ["num_chars:INT_TYPE_BIG_INT"])
    assert not validation_gate.is_allowed(finding, ["num_chars:INT_TYPE_SMALL_INT", "label"])
    report = validation_gate.validation_report([finding], "/anomalies/7")
    assert "[train] num_chars: INT_TYPE_BIG_INT (1 example(s)) - too long" in report
    assert "Anomalies artifact: /anomalies/7" in report


def test_a_quoted_field_over_the_line_limit_is_quarantined_whole_and_nothing_inside_it_is_read(tmp_path):
    path = tmp_path / "reviews.csv"
    write_csv(path, GOOD_ROWS)
    lines = path.read_text().split("\n")
    # 250 lines in one quoted field, each line inside it shaped like a `text,label` row.
    field = ['"opening line of a long field,1'] + [f"inside the field {i},1" for i in range(248)] + ['closing line",0']
    lines[3:3] = field
    path.write_text("\n".join(lines))
    with pytest.raises(gen.RowRejectedError, match=r"reviews\.csv:4: a quoted field spans 250 lines \(limit 200\)"):
        ingest(path, tmp_path / "strict")
    report, examples = ingest(path, tmp_path / "lenient", quarantine=True)
    assert (report["rows_in"], report["examples_out"], report["rows_quarantined"]) == (41, 40, 1)
    [quarantined] = [json.loads(line) for line in (examples / gen.QUARANTINE_DIR / "rows.jsonl").open()]
    assert quarantined["id"] == "reviews.csv:4"
    assert quarantined["raw"] == "\n".join(field) + "\n"
    texts = {text_of(e) for split in gen.SPLITS for e in read_examples(examples, split)}
    assert texts == {text for text, _ in GOOD_ROWS}  # the rows after the field kept, none made from inside it


def test_aclimdb_files_not_named_id_rating_are_quarantined_not_silently_dropped(tmp_path):
    # 60 reviews a folder, so that no split (eval is ~10% of train) comes out empty.
    path = write_aclimdb(tmp_path / "aclImdb_v1.tar.gz", _aclimdb_reviews(60))
    import tarfile
    with tarfile.open(path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    members.update({"aclImdb/train/pos/notes.txt": b"my notes", "aclImdb/test/neg/12_x.txt": b"no rating",
                    "aclImdb/train/urls_pos.txt": b"http://skipped.by.design\n"})
    write_tar(path, members)
    with pytest.raises(gen.RowRejectedError, match=r"file name is not <id>_<rating>\.txt"):
        ingest(path, tmp_path / "strict")
    report, examples = ingest(path, tmp_path / "lenient", quarantine=True)
    assert (report["rows_in"], report["examples_out"], report["rows_quarantined"]) == (242, 240, 2)
    quarantined = sorted((row["id"], row["reason"])
                         for row in map(json.loads, (examples / gen.QUARANTINE_DIR / "rows.jsonl").open()))
    assert quarantined == [("aclImdb_v1.tar.gz:aclImdb/test/neg/12_x.txt", "file name is not <id>_<rating>.txt"),
                           ("aclImdb_v1.tar.gz:aclImdb/train/pos/notes.txt", "file name is not <id>_<rating>.txt")]
