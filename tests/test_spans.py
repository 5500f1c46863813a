"""`python -m pipeline make-spans` on tiny aclImdb and rt-polaritydata fixtures.

Expected counts are worked out by hand from the fixture's ids (not with the
module's own formula), so a wrong span boundary fails the test.
"""

import collections
import re

import pytest

from components import review_sources
from pipeline import spans
from pipeline.__main__ import main

# Ids per (split, class), spread over 0..12,499. With 5 spans a span covers
# 2,500 ids: span 1 = 0..2499, 2 = 2500..4999, 3 = 5000..7499, 4 = 7500..9999, 5 = 10000..12499.
IDS = {
    ("train", "pos"): [0, 1, 2499, 2500, 4999, 5000, 7000, 9999, 10000, 12499],
    ("train", "neg"): [0, 3, 2499, 2500, 4998, 5001, 7500, 9998, 10001, 12499],
    ("test", "pos"): [5, 2600, 2700, 7499, 7500, 12000],
    ("test", "neg"): [6, 2601, 2701, 7498, 7501, 12001],
}
# Per span: (train pos, train neg, test pos, test neg), counted by hand from IDS
# (e.g. train neg 7500 opens span 4, test pos 7499 closes span 3).
EXPECTED_5 = {
    1: (3, 3, 1, 1),  # train 0, 1, 2499 / 0, 3, 2499; test 5 / 6
    2: (2, 2, 2, 2),  # train 2500, 4999 / 2500, 4998; test 2600, 2700 / 2601, 2701
    3: (2, 1, 1, 1),  # train 5000, 7000 / 5001; test 7499 / 7498
    4: (1, 2, 1, 1),  # train 9999 / 7500, 9998; test 7500 / 7501
    5: (2, 2, 1, 1),  # train 10000, 12499 / 10001, 12499; test 12000 / 12001
}


def _rating(polarity, review_id):
    return 7 + review_id % 4 if polarity == "pos" else 1 + review_id % 4


def _text(split, polarity, review_id):
    return f"{split} {polarity} review {review_id}: caf\u00e9 <br />fine \u2014 or not"


def write_aclimdb(root, ids=IDS, text=_text):
    """An unpacked aclImdb folder (plus an unsup/ the readers skip); returns {relative path: bytes}."""
    written = {}
    for (split, polarity), numbers in ids.items():
        for number in numbers:
            relative = f"aclImdb/{split}/{polarity}/{number}_{_rating(polarity, number)}.txt"
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(text(split, polarity, number).encode("utf-8"))
            written[relative] = path.read_bytes()
    (root / "aclImdb" / "train" / "unsup").mkdir(parents=True, exist_ok=True)
    (root / "aclImdb" / "train" / "unsup" / "0_0.txt").write_bytes(b"not labelled")
    return written


def _reviews(path):
    rows = list(review_sources.read(str(path)))
    assert not [r for r in rows if isinstance(r, review_sources.Rejected)]
    return rows


def _counts(rows):
    c = collections.Counter((r.source_split, r.label) for r in rows)
    return (c[("train", 1)], c[("train", 0)], c[("test", 1)], c[("test", 0)])


def _make(*args):
    return main(["make-spans", *map(str, args)])


@pytest.fixture
def aclimdb(tmp_path):
    root = tmp_path / "source"
    files = write_aclimdb(root)
    return root, files


def test_imdb_spans_have_exact_counts_and_their_own_id_ranges(aclimdb, tmp_path, capsys):
    source, files = aclimdb
    out = tmp_path / "spans"
    assert _make("--dataset", "imdb", "--input", source, "--spans", 5, "--out", out) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [f"span-{n}" for n in range(1, 6)]
    for number, expected in EXPECTED_5.items():
        span = out / f"span-{number}"
        assert _counts(_reviews(span)) == expected, number
        assert f"wrote {span}" in printed
        low, high = 2500 * (number - 1), 2500 * number
        for path in span.rglob("*.txt"):
            relative = path.relative_to(span).as_posix()
            review_id = int(re.match(r"(\d+)_", path.name).group(1))
            assert low <= review_id < high, relative
            # Same name (id, rating), same folder (split, class), same bytes as the source.
            assert path.read_bytes() == files[relative]
    # The table: one row per span and the totals.
    assert re.search(r"^\s+3\s+2\s+1\s+1\s+1\s+5$", printed, re.M)
    assert re.search(r"^\s*all\s+10\s+10\s+6\s+6\s+32$", printed, re.M)


def test_no_review_is_lost_or_duplicated_across_spans(aclimdb, tmp_path):
    source, _ = aclimdb
    out = tmp_path / "spans"
    assert _make("--dataset", "imdb", "--input", source, "--spans", 3, "--out", out) == 0

    def key(r):
        return (r.text, r.label, r.rating, r.source_split)

    every = collections.Counter(key(r) for n in (1, 2, 3) for r in _reviews(out / f"span-{n}"))
    assert every == collections.Counter(key(r) for r in _reviews(source))
    assert sum(every.values()) == 32


def test_duplicate_texts_stay_duplicates(tmp_path):
    # The same text in train and test (IMDB has 123 such): both copies kept, each in its split.
    def text(split, polarity, number):
        return "seen twice" if (split, polarity, number) in {("train", "pos", 0), ("test", "pos", 5)} \
            else _text(split, polarity, number)

    source = tmp_path / "source"
    write_aclimdb(source, text=text)
    out = tmp_path / "spans"
    assert _make("--dataset", "imdb", "--input", source, "--spans", 2, "--out", out) == 0
    copies = [r.source_split for r in _reviews(out / "span-1") if r.text == "seen twice"]
    assert sorted(copies) == ["test", "train"]
    assert not [r for r in _reviews(out / "span-2") if r.text == "seen twice"]


def test_first_span_and_limit_per_span_keep_the_first_ids(aclimdb, tmp_path):
    source, _ = aclimdb
    out = tmp_path / "spans"
    assert _make("--dataset", "imdb", "--input", source, "--spans", 5, "--out", out,
                 "--first-span", 6, "--limit-per-span", 3) == 0
    assert {p.name for p in out.iterdir()} == {f"span-{n}" for n in range(6, 11)}
    span = _reviews(out / "span-6")
    # Train of span 1's ids, by (id, class): neg 0, pos 0, pos 1 (then neg 3, ... are cut).
    train = sorted((r.label, int(re.search(r"/(\d+)_", r.id).group(1))) for r in span if r.source_split == "train")
    assert train == [(0, 0), (1, 0), (1, 1)]
    assert _counts(span) == (2, 1, 1, 1)
    # Span 5's train by (id, class): pos 10000, neg 10001, neg 12499 (pos 12499 is cut).
    assert _counts(_reviews(out / "span-10")) == (1, 2, 1, 1)


def test_label_balance_gives_the_asked_positive_share_in_train_and_test(tmp_path):
    # 9 ids per class and split in each of 2 spans (span 1 = ids 0..6249).
    ids = [k * 700 for k in range(9)] + [6250 + k * 700 for k in range(9)]
    source = tmp_path / "source"
    write_aclimdb(source, ids={(s, p): ids for s in ("train", "test") for p in ("pos", "neg")})
    out = tmp_path / "drifted"
    assert _make("--dataset", "imdb", "--input", source, "--spans", 2, "--out", out, "--label-balance", 0.9) == 0
    for number in (1, 2):
        rows = _reviews(out / f"span-{number}")
        assert _counts(rows) == (9, 1, 9, 1)  # 9 / (9 + 1) = 0.9 in each split
    # The negatives kept are the lowest ids.
    negatives = [r.id for r in _reviews(out / "span-2") if r.label == 0]
    assert sorted(n.rsplit("/", 1)[1].split("_")[0] for n in negatives) == ["6250", "6250"]

    low = tmp_path / "mostly-negative"
    assert _make("--dataset", "imdb", "--input", source, "--spans", 1, "--out", low, "--label-balance", 0.25) == 0
    assert _counts(_reviews(low / "span-1")) == (6, 18, 6, 18)  # 6 / 24 = 0.25


def test_refuses_to_overwrite_a_span_unless_forced(aclimdb, tmp_path, capsys):
    source, _ = aclimdb
    out = tmp_path / "spans"
    assert _make("--dataset", "imdb", "--input", source, "--spans", 2, "--out", out) == 0
    marker = out / "span-2" / "mine.txt"
    marker.write_text("keep me")
    capsys.readouterr()
    assert _make("--dataset", "imdb", "--input", source, "--spans", 2, "--out", out) == 2
    err = capsys.readouterr().err
    assert "already hold data" in err and "--force" in err and "span-1" in err
    assert marker.read_text() == "keep me"
    # An empty span folder is not in the way.
    empty = tmp_path / "other"
    (empty / "span-1").mkdir(parents=True)
    assert _make("--dataset", "imdb", "--input", source, "--spans", 1, "--out", empty) == 0
    assert _counts(_reviews(empty / "span-1")) == (10, 10, 6, 6)
    # --force replaces the span whole.
    assert _make("--dataset", "imdb", "--input", source, "--spans", 2, "--out", out, "--force") == 0
    assert not marker.exists()
    assert [_counts(_reviews(out / f"span-{n}")) for n in (1, 2)] == [(6, 6, 3, 3), (4, 4, 3, 3)]


def test_a_span_that_does_not_read_back_is_not_written(aclimdb, tmp_path, monkeypatch):
    source, _ = aclimdb
    out = tmp_path / "spans"
    real_write = spans.write_span

    def loses_one(dataset, items, directory):
        real_write(dataset, items[1:], directory)

    monkeypatch.setattr(spans, "write_span", loses_one)
    with pytest.raises(spans.SpanError, match="1 missing"):
        spans.make_spans("imdb", source, out, 2, log=lambda *_: None)
    assert list(out.iterdir()) == []  # neither the span nor its staging folder


def test_clear_errors(aclimdb, tmp_path, capsys):
    source, _ = aclimdb
    table = tmp_path / "train.csv"
    table.write_text("text,label\ngood,1\n")
    assert _make("--dataset", "imdb", "--input", table, "--spans", 2, "--out", tmp_path / "o") == 2
    assert "needs an aclImdb archive or folder" in capsys.readouterr().err
    assert _make("--dataset", "imdb", "--input", source, "--spans", 0, "--out", tmp_path / "o") == 2
    assert "--spans must be at least 1" in capsys.readouterr().err
    assert _make("--dataset", "imdb", "--input", source, "--spans", 2, "--out", tmp_path / "o",
                 "--label-balance", 1) == 2
    assert "strictly between 0 and 1" in capsys.readouterr().err
    big = tmp_path / "big"
    write_aclimdb(big, ids={**IDS, ("test", "neg"): [12500]})
    assert _make("--dataset", "imdb", "--input", big, "--spans", 2, "--out", tmp_path / "o") == 2
    assert "id 12500 is outside 0..12499" in capsys.readouterr().err
    assert _make("--dataset", "polarity", "--input", source, "--spans", 2, "--out", tmp_path / "o") == 2
    assert "needs an rt-polaritydata archive or folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# --- polarity --------------------------------------------------------------------------

# Windows-1252 bytes as in the Cornell files: 0x97 is an em dash, 0x81 is undefined
# (reads as U+0081); most lines end with a space.
POS_LINES = [b"a gem \x97 truly ", b"warm and witty ", b"pos 3 ", b" pos 4", b"pos 5 \x81 ", b"pos 6 ", b"pos 7 "]
NEG_LINES = [b"a mess ", b"neg 2 \x85 ", b"neg 3 ", b"neg 4", b"neg 5 "]


@pytest.fixture
def polarity(tmp_path):
    root = tmp_path / "rt-polaritydata"
    root.mkdir()
    (root / "rt-polarity.pos").write_bytes(b"\n".join(POS_LINES) + b"\n")
    (root / "rt-polarity.neg").write_bytes(b"\n".join(NEG_LINES) + b"\n")
    return root


def test_polarity_spans_are_contiguous_line_slices_with_the_original_bytes(polarity, tmp_path, capsys):
    out = tmp_path / "spans"
    assert _make("--dataset", "polarity", "--input", polarity, "--spans", 3, "--out", out) == 0
    # 7 pos lines -> 3, 2, 2 (line i of 7 -> i * 3 // 7); 5 neg lines -> 2, 2, 1.
    expected_pos = [POS_LINES[0:3], POS_LINES[3:5], POS_LINES[5:7]]
    expected_neg = [NEG_LINES[0:2], NEG_LINES[2:4], NEG_LINES[4:5]]
    for number in (1, 2, 3):
        folder = out / f"span-{number}" / "rt-polaritydata"
        assert (folder / "rt-polarity.pos").read_bytes() == b"".join(line + b"\n" for line in expected_pos[number - 1])
        assert (folder / "rt-polarity.neg").read_bytes() == b"".join(line + b"\n" for line in expected_neg[number - 1])
        rows = _reviews(out / f"span-{number}")
        assert collections.Counter(r.label for r in rows) == {1: len(expected_pos[number - 1]),
                                                              0: len(expected_neg[number - 1])}
    every = collections.Counter((r.text, r.label) for n in (1, 2, 3) for r in _reviews(out / f"span-{n}"))
    assert every == collections.Counter((r.text, r.label) for r in _reviews(polarity))
    assert ("a gem \u2014 truly ", 1) in every and ("pos 5 \x81 ", 1) in every  # cp1252, as the readers decode
    assert re.search(r"^\s*all\s+7\s+5\s+12$", capsys.readouterr().out, re.M)


def test_polarity_from_the_archive_with_limit_and_balance(polarity, tmp_path):
    from tests.helpers import write_tar

    archive = write_tar(tmp_path / "rt-polaritydata.tar.gz", {
        "rt-polaritydata/rt-polarity.pos": (polarity / "rt-polarity.pos").read_bytes(),
        "rt-polaritydata/rt-polarity.neg": (polarity / "rt-polarity.neg").read_bytes()})
    out = tmp_path / "spans"
    assert _make("--dataset", "polarity", "--input", archive, "--spans", 1, "--out", out, "--limit-per-span", 4) == 0
    rows = _reviews(out / "span-1")
    # The first 4 by (line, class): neg 1, pos 1, neg 2, pos 2.
    assert sorted((r.label, r.id.split(":")[1]) for r in rows) == [(0, "1"), (0, "2"), (1, "1"), (1, "2")]
    drifted = tmp_path / "drifted"
    assert _make("--dataset", "polarity", "--input", archive, "--spans", 1, "--out", drifted,
                 "--label-balance", 0.875) == 0
    assert collections.Counter(r.label for r in _reviews(drifted / "span-1")) == {1: 7, 0: 1}  # 7 / 8
