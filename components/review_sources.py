"""Readers for labelled review text, as users bring it.

* the aclImdb layout (Stanford `aclImdb_v1.tar.gz`, as the archive or unpacked):
  `train|test/pos|neg/<id>_<rating>.txt`, label from the folder, rating from
  the file name, the official split kept. Every file inside those four
  folders is a row: one not named `<id>_<rating>.txt` (`notes.txt`,
  `.DS_Store`, a subfolder's files) is rejected, not skipped. Everything
  outside them (`unsup/`, `README`, the `*.feat`, vocabulary and `urls_*.txt`
  files) is skipped by design;
* the rt-polaritydata layout (Cornell `rt-polaritydata.tar.gz`, archive or
  folder): `rt-polarity.pos|neg`, one sentence a line, Windows-1252 (the five
  bytes it leaves undefined read as Latin-1);
* a CSV or TSV (optionally gzipped) with a header naming the text and label
  columns (and optionally a rating column).

Labels and ratings are plain ASCII digits with an optional leading "-"
(surrounding whitespace ignored); what else `int()` would take ("+1", "1_0",
full-width or Arabic-Indic digits) is rejected.

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
# A member inside one of the four labelled folders (at any depth below it),
# and the name it must have there. [0-9], not \d: \d takes any Unicode digit.
_ACLIMDB_MEMBER = re.compile(r"(?:^|/)(train|test)/(pos|neg)/(.+)$", re.DOTALL)
_ACLIMDB_NAME = re.compile(r"([0-9]+)_([0-9]+)\.txt")
# A label or rating: ASCII digits, maybe a minus (so that -1 reaches the
# schema as an out-of-domain integer); int() alone would also take "+1",
# "1_0" and any Unicode decimal digit.
_INTEGER = re.compile(r"-?[0-9]+")
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


def _aclimdb_members(path: str) -> Iterator[tuple[str, bytes | None]]:
    """(name, content) of every file inside the four labelled folders, at any
    depth; content None for an entry that is not a regular file once links
    are followed (a broken link, a link to a folder, a device). Nothing else
    is yielded."""
    if os.path.isdir(path):
        for folder in _ACLIMDB_FOLDERS:
            directory = _find_dir(path, folder)
            for root, dirs, files in os.walk(directory):
                dirs.sort()
                # os.walk lists a link to a folder among the folders and does
                # not enter it: it is reported, not silently left out.
                links = [name for name in dirs if os.path.islink(os.path.join(root, name))]
                for name in sorted(files + links):
                    file_path = os.path.join(root, name)
                    relative = os.path.relpath(file_path, directory).replace(os.sep, "/")
                    if not os.path.isfile(file_path):
                        yield f"{folder}/{relative}", None
                        continue
                    with open(file_path, "rb") as f:
                        yield f"{folder}/{relative}", f.read()
        return
    with tarfile.open(path) as tar:
        for member in tar:
            if member.isdir() or not _ACLIMDB_MEMBER.search(member.name):
                continue
            yield member.name, _member_bytes(tar, member)


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes | None:
    if not (member.isfile() or member.islnk() or member.issym()):
        return None
    try:
        content = tar.extractfile(member)  # follows a link to another member
    except (KeyError, tarfile.TarError):
        return None  # a link to a member the archive lacks
    return content.read() if content is not None else None


def _find_dir(root: str, folder: str) -> str:
    for candidate in (os.path.join(root, folder), os.path.join(root, "aclImdb", folder)):
        if os.path.isdir(candidate):
            return candidate
    raise SourceFormatError(f"{root}: aclImdb layout lacks the folder {folder}")


def read_aclimdb(path: str) -> Iterator[Row]:
    source = os.path.basename(path.rstrip("/"))
    for name, data in _aclimdb_members(path):
        split, polarity, file_name = _ACLIMDB_MEMBER.search(name).groups()
        review_id = f"{source}:{name}"
        if data is None:
            yield Rejected(review_id, "not a regular file", "")
            continue
        named = _ACLIMDB_NAME.fullmatch(file_name)
        if not named:
            yield Rejected(review_id, "file name is not <id>_<rating>.txt", data.decode("utf-8", "replace"))
            continue
        rating = named.group(2)
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


def _latin1_fallback(error: UnicodeError) -> tuple[str, int]:
    """A codecs error handler: undecodable bytes become the code points of
    their values (Latin-1), so nothing turns into U+FFFD."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return "".join(map(chr, error.object[error.start:error.end])), error.end


_LATIN1_FALLBACK = "review_sources.latin1_fallback"
codecs.register_error(_LATIN1_FALLBACK, _latin1_fallback)


def read_polarity(path: str) -> Iterator[Row]:
    for name, label, data in _polarity_files(path):
        # The Cornell files are Windows-1252; the bytes it leaves undefined
        # (0x81, 0x8d, 0x8f, 0x90 and 0x9d) fall back to Latin-1, i.e. U+0081
        # and so on, so no row is lost and no character is replaced.
        lines = data.decode("cp1252", errors=_LATIN1_FALLBACK).split("\n")
        if data.endswith(b"\n"):
            lines.pop()  # the final newline ends the last sentence, it is not an empty one
        for line_number, line in enumerate(lines, start=1):
            yield Review(line.rstrip("\r"), label, f"{name}:{line_number}")


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
        if not _INTEGER.fullmatch(raw_label):
            yield Rejected(row_id, f"label {raw_label!r} is not an integer", raw)
            continue
        label = int(raw_label)
        rating = None
        if rating_index is not None and record[rating_index].strip():
            if not _INTEGER.fullmatch(record[rating_index].strip()):
                yield Rejected(row_id, f"rating {record[rating_index]!r} is not an integer", raw)
                continue
            rating = int(record[rating_index])
        yield Review(record[text_index], label, row_id, rating, official_split)


def _official_split_of(file_name: str) -> str | None:
    stem = file_name.lower().split(".")[0]
    return stem if stem in OFFICIAL_SPLITS else None


def _csv_records(
    lines: Iterator[tuple[int, str | Exception]], delimiter: str, source: str
) -> Iterator[tuple[int, list[str] | str, str]]:
    """(first line number, fields or an error reason, raw text) per record.

    A quoted field may span lines, up to _MAX_RECORD_LINES of them. A longer
    one is read to its closing quote and rejected whole, as one row named by
    its first line; reading resumes after it, so no line inside the field is
    ever taken for a record of its own. A line that is not UTF-8 inside a
    quoted field that closes likewise rejects the whole record.

    A quote that never closes properly (the file ends inside it, or what
    closes it is followed by something other than a delimiter or the end of
    the line: a stray quote) rejects only the line it opened on; the lines
    after it are read afresh, so one stray quote cannot swallow the file.
    Finding that out may hold the rest of the file in memory.
    """
    queue: collections.deque[tuple[int, str | Exception]] = collections.deque()
    source_lines = iter(lines)

    def next_line():
        if queue:
            return queue.popleft()
        return next(source_lines, None)

    while True:
        item = next_line()
        if item is None:
            return
        number, line = item
        if isinstance(line, Exception):
            yield number, f"not valid UTF-8 at byte {line.start}", repr(line.object)[:200]
            continue
        if line.strip() == "":
            continue  # a blank line is not a record (as the csv module treats it)
        consumed: list[tuple[int, str | Exception]] = [item]  # the physical lines read for this record
        texts = [line]
        undecodable: list[tuple[int, UnicodeDecodeError]] = []
        state = {"rest": 0}  # parts of the current physical line not handed to the parser yet

        def parts():
            # Each physical line split as io.StringIO(newline="") splits it
            # (a bare "\r" ends a part too), pulling lines only while the
            # parser is inside a quoted field: the csv reader is incremental.
            text = line
            while True:
                pieces = io.StringIO(text, newline="").readlines()
                for index, piece in enumerate(pieces):
                    state["rest"] = len(pieces) - index - 1
                    yield piece
                following = next_line()
                if following is None:
                    return
                consumed.append(following)
                text = following[1]
                if isinstance(text, Exception):
                    undecodable.append((following[0], text))
                    text = text.object.decode("utf-8", "replace")
                texts.append(text)

        reader = csv.reader(parts(), delimiter=delimiter, strict=True)
        try:
            record = next(reader)
            error = None
        except csv.Error as caught:
            record, error = None, caught
        raw = "".join(texts)
        if error is not None:
            if len(consumed) == 1 and "unexpected end of data" not in str(error):
                yield number, f"malformed CSV ({error})", raw
            else:
                # The quote opened on the first line never closed properly:
                # reject that line alone and read the following lines afresh.
                queue.extendleft(reversed(consumed[1:]))
                yield number, "unterminated quoted field", line
            continue
        if state["rest"]:
            yield number, "malformed CSV (more than one record on a line)", raw
        elif len(consumed) > _MAX_RECORD_LINES:
            yield number, f"a quoted field spans {len(consumed)} lines (limit {_MAX_RECORD_LINES})", raw
        elif undecodable:
            bad_line, bad = undecodable[0]
            yield number, f"not valid UTF-8 at byte {bad.start} (line {bad_line})", raw
        else:
            yield number, record, raw


# A quoted field may hold newlines; a record of more lines than this is
# rejected (whole) rather than read.
_MAX_RECORD_LINES = 200


def count_rows(rows: Iterable[Row]) -> tuple[int, int]:
    reviews = rejected = 0
    for row in rows:
        if isinstance(row, Rejected):
            rejected += 1
        else:
            reviews += 1
    return reviews, rejected
