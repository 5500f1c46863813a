"""Parsing rows and assigning splits, without Beam."""

import io

import pytest

from components import review_example_gen as gen
from components import review_sources as sources


def _table(data: bytes, name="reviews.csv"):
    return list(sources.read_table(name, stream=io.BytesIO(data)))


def test_csv_rows_become_reviews_with_traceable_ids_and_optional_rating():
    rows = _table(b'text,label,rating\n"Great, really",1,9\nmeh,0,\n')
    assert rows == [sources.Review("Great, really", 1, "reviews.csv:2", 9, None),
                    sources.Review("meh", 0, "reviews.csv:3", None, None)]


def test_tsv_and_official_split_from_the_file_name():
    [row] = _table(b"text\tlabel\na, b\t1\n", name="test.tsv")
    assert row == sources.Review("a, b", 1, "test.tsv:2", None, "test")


def test_a_quoted_field_may_span_lines_and_ids_point_at_the_first_line():
    rows = _table(b'text,label\n"two\nlines",1\nnext,0\n')
    assert [(r.text, r.id) for r in rows] == [("two\nlines", "reviews.csv:2"), ("next", "reviews.csv:4")]


@pytest.mark.parametrize("data, reason", [
    (b"text,label\na,b,1\n", "expected 2 columns, found 3"),
    (b"text,label\nfine,1.5\n", "label '1.5' is not an integer"),
    (b'text,label\n"x"y,1\n', "malformed CSV"),
])
def test_unparseable_rows_are_rejected_with_a_reason(data, reason):
    [row] = _table(data)
    assert isinstance(row, sources.Rejected) and row.id == "reviews.csv:2" and reason in row.reason


def test_every_physical_row_is_accounted_for():
    data = b'text,label\nok,1\n"open quote,1\nbad\xff,0\nfine,0\n,1\n'
    reviews, rejected = sources.count_rows(_table(data))
    assert (reviews, rejected) == (3, 2)


def test_split_bucket_is_stable_and_spreads_evenly():
    assert gen.split_bucket("a fine film") == gen.split_bucket("a fine film")
    counts = [0] * 10
    for i in range(5000):
        counts[gen.split_bucket(f"review number {i}", 10)] += 1
    assert min(counts) > 400 and max(counts) < 600


def test_official_splits_are_kept_and_eval_is_carved_from_train_only():
    texts = [f"review {i}" for i in range(3000)]
    official = [gen.assign_split(sources.Review(t, 1, "x", None, "train"), 10, 10) for t in texts]
    assert set(official) == {"train", "eval"}
    assert 0.07 < official.count("eval") / len(texts) < 0.13
    assert {gen.assign_split(sources.Review(t, 1, "x", None, "test"), 10, 10) for t in texts} == {"test"}
    unsplit = [gen.assign_split(sources.Review(t, 1, "x"), 10, 10) for t in texts]
    assert 0.07 < unsplit.count("test") / len(texts) < 0.13
    # The same text always lands in the same split, wherever it comes from.
    assert gen.assign_split(sources.Review("same", 1, "a"), 10, 10) == gen.assign_split(
        sources.Review("same", 0, "b"), 10, 10)


def test_custom_config_round_trips_through_the_component_properties():
    from google.protobuf import json_format
    config = gen.encode_custom_config({gen.EVAL_PERCENT: 10, gen.QUARANTINE: True})
    decoded = gen.decode_custom_config({"custom_config": json_format.MessageToJson(config)})
    assert decoded == {gen.EVAL_PERCENT: 10, gen.QUARANTINE: True}


def test_unknown_inputs_are_refused_by_name(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(sources.SourceFormatError, match="not a supported input"):
        sources.describe(str(tmp_path / "notes.txt"))
    with pytest.raises(sources.SourceFormatError, match="neither the aclImdb nor the rt-polaritydata"):
        sources.describe(str(tmp_path))


# --- labels and ratings are plain ASCII digits -------------------------------

@pytest.mark.parametrize("raw", ["0_1", "1_0", "\uff11", "+1", " +0 ", "-0_1", "\u0661", "\u0663", "\U0001d7cf"])
def test_labels_int_would_accept_are_rejected_unless_plain_ascii_digits(raw):
    # int() takes underscores, a plus sign, full-width, Arabic-Indic and
    # mathematical digits; a label must be written with 0-9 (and maybe "-").
    [row] = _table(f"text,label\nfine,{raw}\n".encode("utf-8"))
    assert row == sources.Rejected("reviews.csv:2", f"label {raw.strip()!r} is not an integer", f"fine,{raw}\n")


@pytest.mark.parametrize("raw, label", [("1", 1), (" 0 ", 0), ("-1", -1), ("007", 7)])
def test_plain_ascii_labels_are_read_with_whitespace_stripped_and_a_minus_kept(raw, label):
    # "-1" stays an integer so that the schema, not the reader, rejects it as out of domain.
    [row] = _table(f"text,label\nfine,{raw}\n".encode("utf-8"))
    assert row == sources.Review("fine", label, "reviews.csv:2")


@pytest.mark.parametrize("raw", ["+9", "\uff19", "1_0", "\u0669"])
def test_ratings_int_would_accept_are_rejected_unless_plain_ascii_digits(raw):
    [row] = _table(f"text,label,rating\nfine,1,{raw}\n".encode("utf-8"))
    assert row == sources.Rejected("reviews.csv:2", f"rating {raw!r} is not an integer", f"fine,1,{raw}\n")


def test_plain_ascii_ratings_are_read_with_whitespace_stripped():
    rows = _table(b"text,label,rating\na,1, 9 \nb,0,-3\n")
    assert [(r.text, r.rating) for r in rows] == [("a", 9), ("b", -3)]


# --- aclImdb: every file in a labelled folder is a review or a rejection -------

_ACLIMDB_SKIPPED = {  # outside train|test/pos|neg: skipped by design
    "README": b"readme", "imdb.vocab": b"good\nbad\n", "imdbEr.txt": b"0.1\n",
    "train/unsup/0_0.txt": b"unlabelled", "train/labeledBow.feat": b"0 1:1\n",
    "train/urls_pos.txt": b"http://x\n", "test/urls_neg.txt": b"http://y\n",
}
_ACLIMDB_LABELLED = {
    "train/pos/0_9.txt": b"loved it", "train/pos/notes.txt": b"my notes",
    "train/neg/1_3.txt": b"hated it", "train/neg/12_x.txt": b"no rating",
    "test/pos/2_10.txt": b"great", "test/pos/.DS_Store": b"\x00\x00\x00\x01Bud1",
    "test/neg/4_1.txt": b"awful", "test/neg/3_\u0662.txt": b"arabic-indic rating",
    "test/neg/5_2.TXT": b"upper-case suffix", "test/neg/6_2.txt.bak": b"a backup",
}


def _write_aclimdb(tmp_path, kind, files):
    if kind == "archive":
        from tests.helpers import write_tar
        return str(write_tar(tmp_path / "aclImdb_v1.tar.gz", {f"aclImdb/{name}": data for name, data in files.items()}))
    for name, data in files.items():
        (tmp_path / "aclImdb" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "aclImdb" / name).write_bytes(data)
    return str(tmp_path / "aclImdb")


@pytest.mark.parametrize("kind", ["folder", "archive"])
def test_aclimdb_files_not_named_id_rating_in_labelled_folders_are_rejected_not_dropped(tmp_path, kind):
    path = _write_aclimdb(tmp_path, kind, {**_ACLIMDB_SKIPPED, **_ACLIMDB_LABELLED})
    prefix = "aclImdb_v1.tar.gz:aclImdb/" if kind == "archive" else "aclImdb:"
    rows = list(sources.read(path))
    reviews = sorted((r.id, r.text, r.label, r.rating, r.source_split) for r in rows if isinstance(r, sources.Review))
    rejected = sorted((r.id, r.reason, r.raw) for r in rows if isinstance(r, sources.Rejected))
    assert reviews == [(prefix + "test/neg/4_1.txt", "awful", 0, 1, "test"),
                       (prefix + "test/pos/2_10.txt", "great", 1, 10, "test"),
                       (prefix + "train/neg/1_3.txt", "hated it", 0, 3, "train"),
                       (prefix + "train/pos/0_9.txt", "loved it", 1, 9, "train")]
    reason = "file name is not <id>_<rating>.txt"
    assert rejected == sorted([
        (prefix + "test/neg/3_\u0662.txt", reason, "arabic-indic rating"),
        (prefix + "test/neg/5_2.TXT", reason, "upper-case suffix"),
        (prefix + "test/neg/6_2.txt.bak", reason, "a backup"),
        (prefix + "test/pos/.DS_Store", reason, "\x00\x00\x00\x01Bud1"),
        (prefix + "train/neg/12_x.txt", reason, "no rating"),
        (prefix + "train/pos/notes.txt", reason, "my notes"),
    ])
    # Rows in (every file in the four labelled folders) = reviews + rejected.
    assert len(rows) == len(_ACLIMDB_LABELLED) == len(reviews) + len(rejected)


@pytest.mark.parametrize("kind", ["folder", "archive"])
def test_aclimdb_files_in_a_subfolder_of_a_labelled_folder_are_rejected_not_dropped(tmp_path, kind):
    files = {"train/pos/0_9.txt": b"a", "train/neg/1_1.txt": b"b", "test/pos/2_8.txt": b"c",
             "test/neg/3_2.txt": b"d", "train/pos/extra/4_7.txt": b"nested"}
    path = _write_aclimdb(tmp_path, kind, files)
    prefix = "aclImdb_v1.tar.gz:aclImdb/" if kind == "archive" else "aclImdb:"
    rows = list(sources.read(path))
    assert sources.count_rows(rows) == (4, 1)
    [rejected] = [r for r in rows if isinstance(r, sources.Rejected)]
    assert rejected == sources.Rejected(prefix + "train/pos/extra/4_7.txt", "file name is not <id>_<rating>.txt",
                                        "nested")


# --- a quoted field longer than the line limit ---------------------------------

def _long_record(lines: int) -> bytes:
    """One `text,label` record whose quoted text spans `lines` lines, each looking like a row."""
    inner = [f"inside line {i},1" for i in range(1, lines - 1)]
    return ('"opening line,1\n' + "".join(f"{line}\n" for line in inner) + 'closing line",0\n').encode()


def test_a_quoted_field_over_the_line_limit_is_one_rejected_record_and_reading_resumes_after_it():
    assert sources._MAX_RECORD_LINES == 200
    record = _long_record(250)
    rows = _table(b"text,label\n" + record + b"after the long one,1\n")
    assert rows == [
        sources.Rejected("reviews.csv:2", "a quoted field spans 250 lines (limit 200)", record.decode()),
        sources.Review("after the long one", 1, "reviews.csv:252"),
    ]


def test_a_quoted_field_of_exactly_the_line_limit_is_still_read():
    record = _long_record(200)
    rows = _table(b"text,label\n" + record + b"after,1\n")
    text = record.decode()[1:].rsplit('",', 1)[0]
    assert rows == [sources.Review(text, 0, "reviews.csv:2"), sources.Review("after", 1, "reviews.csv:202")]


def test_a_stray_quote_that_never_closes_rejects_its_own_line_alone_even_past_the_limit():
    rows = _table(b'text,label\n"stray quote,1\n' + b"".join(b"row %d,%d\n" % (i, i % 2) for i in range(300)))
    assert rows[0] == sources.Rejected("reviews.csv:2", "unterminated quoted field", '"stray quote,1\n')
    assert rows[1:] == [sources.Review(f"row {i}", i % 2, f"reviews.csv:{i + 3}") for i in range(300)]


def test_an_undecodable_line_inside_a_closed_quoted_field_rejects_the_whole_record():
    # The bad line must not end the field early and let its inside be read as rows.
    data = b'text,label\n"opening,1\nbad \xff line,0\nlooks like a row,1\nclosing",0\nafter,1\n'
    rows = _table(data)
    assert rows == [
        sources.Rejected("reviews.csv:2", "not valid UTF-8 at byte 4 (line 3)",
                         '"opening,1\nbad \ufffd line,0\nlooks like a row,1\nclosing",0\n'),
        sources.Review("after", 1, "reviews.csv:6"),
    ]


# --- rt-polaritydata: Windows-1252, undefined bytes as Latin-1 ---------------------

def test_polarity_undefined_cp1252_bytes_decode_as_latin1_and_defined_ones_as_cp1252(tmp_path):
    (tmp_path / "rt-polarity.pos").write_bytes(b"caf\xe9 \x81x\n")
    (tmp_path / "rt-polarity.neg").write_bytes(b"\x85 \x91a\x92 \x96 \x97 \x8d\x8f\x90\x9d\nplain\n")
    rows = list(sources.read(str(tmp_path)))
    assert rows == [sources.Review("\u2026 \u2018a\u2019 \u2013 \u2014 \x8d\x8f\x90\x9d", 0, "rt-polarity.neg:1"),
                    sources.Review("plain", 0, "rt-polarity.neg:2"),
                    sources.Review("caf\u00e9 \x81x", 1, "rt-polarity.pos:1")]
    assert not any("\ufffd" in r.text for r in rows)


def test_aclimdb_links_are_followed_and_a_link_to_nothing_is_rejected_not_dropped(tmp_path):
    import io
    import tarfile
    files = {"train/pos/0_9.txt": b"a", "train/neg/1_1.txt": b"b", "test/pos/2_8.txt": b"c", "test/neg/3_2.txt": b"d"}
    _write_aclimdb(tmp_path / "dir", "folder", files)
    (tmp_path / "dir/aclImdb/test/neg/4_3.txt").symlink_to(tmp_path / "dir/aclImdb/test/neg/3_2.txt")
    (tmp_path / "dir/aclImdb/test/neg/5_3.txt").symlink_to(tmp_path / "nowhere.txt")
    (tmp_path / "dir/aclImdb/test/pos/linked").symlink_to(tmp_path / "dir/aclImdb/train/pos")
    rows = list(sources.read(str(tmp_path / "dir/aclImdb")))
    assert sorted((r.id, r.text) for r in rows if isinstance(r, sources.Review))[:2] == [
        ("aclImdb:test/neg/3_2.txt", "d"), ("aclImdb:test/neg/4_3.txt", "d")]
    assert sorted(r for r in rows if isinstance(r, sources.Rejected)) == [
        sources.Rejected("aclImdb:test/neg/5_3.txt", "not a regular file", ""),
        sources.Rejected("aclImdb:test/pos/linked", "not a regular file", "")]
    assert sources.count_rows(rows) == (5, 2)

    archive = tmp_path / "aclImdb_v1.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"aclImdb/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, kind, target in [("test/neg/4_3.txt", tarfile.LNKTYPE, "aclImdb/test/neg/3_2.txt"),
                                   ("test/neg/5_3.txt", tarfile.SYMTYPE, "missing.txt")]:
            info = tarfile.TarInfo(f"aclImdb/{name}")
            info.type, info.linkname = kind, target
            tar.addfile(info)
    rows = list(sources.read(str(archive)))
    assert sources.count_rows(rows) == (5, 1)
    assert ("aclImdb_v1.tar.gz:aclImdb/test/neg/4_3.txt", "d", 3) in [
        (r.id, r.text, r.rating) for r in rows if isinstance(r, sources.Review)]
    assert [r for r in rows if isinstance(r, sources.Rejected)] == [
        sources.Rejected("aclImdb_v1.tar.gz:aclImdb/test/neg/5_3.txt", "not a regular file", "")]
