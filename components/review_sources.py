"""Readers for labelled review text, as users bring it.

* the aclImdb layout (Stanford `aclImdb_v1.tar.gz`, as the archive or unpacked):
  `train|test/pos|neg/<id>_<rating>.txt`, label from the folder, rating from
  the file name, the official split kept; `unsup/` and feature files skipped;
* the rt-polaritydata layout (Cornell `rt-polaritydata.tar.gz`, archive or
  folder): `rt-polarity.pos|neg`, one sentence a line, Windows-1252;
* a CSV or TSV (optionally gzipped) with a header naming the text and label
  columns (and optionally a rating column).

Every reader yields `Review`s, or `Rejected` rows that could not be parsed.
A row is never dropped without one or the other, so rows in = reviews +
rejected, always.
"""

from __future__ import annotations

import codecs
import collections
import csv
import gzip
import io
import os
import re
import sys
import tarfile
from typing import IO, Iterable, Iterator, NamedTuple, Union

TEXT_COLUMN = "text"
LABEL_COLUMN = "label"
RATING_COLUMN = "rating"

OFFICIAL_SPLITS = ("train", "test")
_ACLIMDB_FILE = re.compile(r"(?:^|/)(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")
_ACLIMDB_FOLDERS = tuple(f"{split}/{polarity}" for split in OFFICIAL_SPLITS for polarity in ("neg", "pos"))
_POLARITY_FILES = {"rt-polarity.neg": 0, "rt-polarity.pos": 1}
_TABLE_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz")
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")

# A review can be long (the IMDB maximum is 13.7k characters); the csv
# module's default 128 KiB field limit would reject a long but valid row.
csv.field_size_limit(sys.maxsize)


class Review(NamedTuple):
    text: str
    label: int
    id: str  # "<file>:<line>" or the archive member: traces the example to its source.
    rating: int | None = None
    source_split: str | None = None  # the official split, where the source has one.


class Rejected(NamedTuple):
    id: str
    reason: str
    raw: str


Row = Union[Review, Rejected]


class SourceFormatError(ValueError):
    """The input as a whole is unusable (wrong layout, missing folder, no header)."""


class RowError(ValueError):
    """One row cannot be parsed; the message names the file and line."""


def describe(path: str) -> str:
    """Which reader a path needs: 'aclimdb', 'polarity' or 'table'."""
    lower = path.lower()
    if lower.endswith(_TABLE_SUFFIXES):
        return "table"
    if lower.endswith(_ARCHIVE_SUFFIXES):
        with tarfile.open(path) as tar:
            return _layout_of(tar.getnames(), path)
    if os.path.isdir(path):
        names = [os.path.relpath(os.path.join(root, name), path)
                 for root, dirs, files in os.walk(path) for name in dirs + files]
        return _layout_of(names, path)
    raise SourceFormatError(
        f"{path}: not a supported input (a .csv/.tsv[.gz] file, an aclImdb or rt-polaritydata "
        "archive or folder)"
    )


def _layout_of(names: list[str], path: str) -> str:
    normalized = {name.replace(os.sep, "/").rstrip("/") for name in names}
    # Archives need not list directories; every file's folders count too.
    normalized |= {os.path.dirname(name) for name in normalized}
    if any(name.endswith(tuple(_POLARITY_FILES)) for name in normalized):
        missing = [f for f in _POLARITY_FILES if not any(n.endswith(f) for n in normalized)]
        if missing:
            raise SourceFormatError(f"{path}: rt-polaritydata layout lacks {', '.join(missing)}")
        return "polarity"
    folders = {folder for folder in _ACLIMDB_FOLDERS if any(n.endswith(folder) for n in normalized)}
    if folders:
        missing = sorted(set(_ACLIMDB_FOLDERS) - folders)
        if missing:
            raise SourceFormatError(f"{path}: aclImdb layout lacks the folder(s) {', '.join(missing)}")
        return "aclimdb"
    raise SourceFormatError(f"{path}: neither the aclImdb nor the rt-polaritydata layout")


def read(path: str, text_column: str = TEXT_COLUMN, label_column: str = LABEL_COLUMN) -> Iterator[Row]:
    """Yields every row of a source, whatever its layout."""
    layout = describe(path)
    if layout == "table":
        yield from read_table(path, text_column, label_column)
    elif layout == "aclimdb":
        yield from read_aclimdb(path)
    else:
        yield from read_polarity(path)


# --- aclImdb -----------------------------------------------------------------


def _aclimdb_members(path: str) -> Iterator[tuple[str, bytes]]:
    if os.path.isdir(path):
        for folder in _ACLIMDB_FOLDERS:
            directory = _find_dir(path, folder)
            for name in sorted(os.listdir(directory)):
                with open(os.path.join(directory, name), "rb") as f:
                    yield f"{folder}/{name}", f.read()
        return
    with tarfile.open(path) as tar:
        for member in tar:
            if member.isfile() and _ACLIMDB_FILE.search(member.name):
                yield member.name, tar.extractfile(member).read()


def _find_dir(root: str, folder: str) -> str:
    for candidate in (os.path.join(root, folder), os.path.join(root, "aclImdb", folder)):
        if os.path.isdir(candidate):
            return candidate
    raise SourceFormatError(f"{root}: aclImdb layout lacks the folder {folder}")


def read_aclimdb(path: str) -> Iterator[Row]:
    source = os.path.basename(path.rstrip("/"))
    for name, data in _aclimdb_members(path):
        match = _ACLIMDB_FILE.search(name)
        if not match:
            continue
        split, polarity, _, rating = match.groups()
        review_id = f"{source}:{name}"
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            yield Rejected(review_id, f"not valid UTF-8 at byte {error.start}", data.decode("utf-8", "replace"))
            continue
        yield Review(text, int(polarity == "pos"), review_id, int(rating), split)


# --- rt-polaritydata ---------------------------------------------------------


def _polarity_files(path: str) -> Iterator[tuple[str, int, bytes]]:
    if os.path.isdir(path):
        for name, label in _POLARITY_FILES.items():
            matches = [os.path.join(root, name) for root, _, files in os.walk(path) if name in files]
            if not matches:
                raise SourceFormatError(f"{path}: rt-polaritydata layout lacks {name}")
            with open(matches[0], "rb") as f:
                yield name, label, f.read()
        return
    with tarfile.open(path) as tar:
        members = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}
        for name, label in _POLARITY_FILES.items():
            if name not in members:
                raise SourceFormatError(f"{path}: rt-polaritydata layout lacks {name}")
            yield name, label, tar.extractfile(members[name]).read()


def read_polarity(path: str) -> Iterator[Row]:
    for name, label, data in _polarity_files(path):
        # The Cornell files are Windows-1252 (bytes 0x81, 0x8d, 0x8f, 0x90 and
        # 0x9d are undefined there and fall back to Latin-1), so no row is lost.
        lines = data.decode("cp1252", errors="strict" if _is_cp1252(data) else "replace").split("\n")
        if data.endswith(b"\n"):
            lines.pop()  # the final newline ends the last sentence, it is not an empty one
        for line_number, line in enumerate(lines, start=1):
            yield Review(line.rstrip("\r"), label, f"{name}:{line_number}")


def _is_cp1252(data: bytes) -> bool:
    try:
        data.decode("cp1252")
        return True
    except UnicodeDecodeError:
        return False


# --- CSV / TSV ---------------------------------------------------------------


def _open_text_lines(path: str, stream: IO[bytes] | None = None) -> Iterator[tuple[int, str | Exception]]:
    """Physical lines as text, numbered; a line that is not UTF-8 becomes the error."""
    raw = stream or (gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb"))
    with raw:
        for number, line in enumerate(iter(raw.readline, b""), start=1):
            if number == 1 and line.startswith(codecs.BOM_UTF8):
                line = line[len(codecs.BOM_UTF8):]
            try:
                yield number, line.decode("utf-8")
            except UnicodeDecodeError as error:
                yield number, error


def read_table(
    path: str,
    text_column: str = TEXT_COLUMN,
    label_column: str = LABEL_COLUMN,
    stream: IO[bytes] | None = None,
) -> Iterator[Row]:
    """Rows of a CSV/TSV with a header; tab-separated when the name says .tsv."""
    source = os.path.basename(path)
    delimiter = "\t" if ".tsv" in path.lower() else ","
    official_split = _official_split_of(source)
    lines = _open_text_lines(path, stream)
    header_line = next(lines, None)
    if header_line is None:
        raise SourceFormatError(f"{source}: file is empty (expected a header line)")
    if isinstance(header_line[1], Exception):
        raise SourceFormatError(f"{source}:1: header is not valid UTF-8")
    header = [name.strip() for name in next(csv.reader([header_line[1]], delimiter=delimiter))]
    missing = [name for name in (text_column, label_column) if name not in header]
    if missing:
        raise SourceFormatError(f"{source}:1: header {header} lacks column(s) {missing}")
    text_index, label_index = header.index(text_column), header.index(label_column)
    rating_index = header.index(RATING_COLUMN) if RATING_COLUMN in header else None

    for first_line, record, raw in _csv_records(lines, delimiter, source):
        row_id = f"{source}:{first_line}"
        if isinstance(record, str):
            yield Rejected(row_id, record, raw)
            continue
        if len(record) != len(header):
            yield Rejected(row_id, f"expected {len(header)} columns, found {len(record)}", raw)
            continue
        raw_label = record[label_index].strip()
        try:
            label = int(raw_label)
        except ValueError:
            yield Rejected(row_id, f"label {raw_label!r} is not an integer", raw)
            continue
        rating = None
        if rating_index is not None and record[rating_index].strip():
            try:
                rating = int(record[rating_index])
            except ValueError:
                yield Rejected(row_id, f"rating {record[rating_index]!r} is not an integer", raw)
                continue
        yield Review(record[text_index], label, row_id, rating, official_split)


def _official_split_of(file_name: str) -> str | None:
    stem = file_name.lower().split(".")[0]
    return stem if stem in OFFICIAL_SPLITS else None


def _csv_records(
    lines: Iterator[tuple[int, str | Exception]], delimiter: str, source: str
) -> Iterator[tuple[int, list[str] | str, str]]:
    """(first line number, fields or an error reason, raw text) per record.

    A quoted field may span lines. A quote that is never closed (by the end
    of the file or within _MAX_RECORD_LINES lines) rejects only the line it
    opened on; parsing resumes on the next line, so one stray quote cannot
    swallow the rest of the file.
    """
    queue: collections.deque[tuple[int, str | Exception]] = collections.deque()
    source_lines = iter(lines)

    def next_line():
        if queue:
            return queue.popleft()
        return next(source_lines, None)

    pending: list[tuple[int, str]] = []
    while True:
        item = next_line()
        if item is None and not pending:
            return
        if item is not None and isinstance(item[1], Exception):
            if pending:
                queue.appendleft(item)
                yield from _reject_first_and_requeue(pending, queue)
                pending = []
                continue
            number, error = item
            yield number, f"not valid UTF-8 at byte {error.start}", repr(error.object)[:200]
            continue
        if item is None or len(pending) >= _MAX_RECORD_LINES:
            # The end of the data (or too many lines) inside a quoted field.
            if item is not None:
                queue.appendleft(item)
            yield from _reject_first_and_requeue(pending, queue)
            pending = []
            continue
        number, line = item
        if not pending and line.strip() == "":
            continue  # a blank line is not a record (as the csv module treats it)
        pending.append((number, line))
        text = "".join(part for _, part in pending)
        try:
            records = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
        except csv.Error as error:
            if "unexpected end of data" in str(error) or "EOF" in str(error):
                continue  # a quoted field that goes on on the next line
            if len(pending) > 1:
                # The quote opened on the first line never closed properly:
                # reject that line alone and read the following lines afresh.
                yield from _reject_first_and_requeue(pending, queue)
            else:
                yield pending[0][0], f"malformed CSV ({error})", text
            pending = []
            continue
        start = pending[0][0]
        pending = []
        if len(records) != 1:
            yield start, "malformed CSV (more than one record on a line)", text
            continue
        yield start, records[0], text


def _reject_first_and_requeue(pending, queue):
    number, line = pending[0]
    queue.extendleft(reversed(pending[1:]))
    yield number, "unterminated quoted field", line


# A quoted field may hold newlines, but a stray quote must not swallow the file.
_MAX_RECORD_LINES = 200


def count_rows(rows: Iterable[Row]) -> tuple[int, int]:
    reviews = rejected = 0
    for row in rows:
        if isinstance(row, Rejected):
            rejected += 1
        else:
            reviews += 1
    return reviews, rejected
