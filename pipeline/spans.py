"""`python -m pipeline make-spans`: cuts a dataset into spans, to replay continuous training.

Each span is a folder in the dataset's own official layout, so the readers
(components/review_sources.py) read it like the original and keep what it
carries:

* IMDB (aclImdb): a review goes to a span by its id, the number before `_`
  in its file name (0..12,499 within each class of each split): contiguous id
  ranges, span index `id * S // 12500`, for train AND test alike. Every span
  thus holds its own slice of the training reviews and of the official test
  set, with as many positives as negatives. Written as
  `DIR/span-<N>/aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt` with the
  original bytes (split, label and rating kept).
* polarity (rt-polaritydata): no ids and no official split, so each class's
  lines are cut into contiguous slices by line number (line i of n goes to
  span index `i * S // n`). Written as
  `DIR/span-<N>/rt-polaritydata/rt-polarity.{pos,neg}` with the original
  (Windows-1252) bytes of each line.

Spans are numbered first_span .. first_span + S - 1. Options:
`--limit-per-span N` keeps the first N train and N test reviews of each span
(polarity: the first N lines), by id (line) and then class, so an even N
keeps the classes balanced; `--label-balance P` then drops negatives (or, for
P < 0.5, positives), the highest ids (lines) first, until each split is a
share P positive: a deliberately drifted span.

A span is written into a temporary folder, read back with
review_sources.read and compared with what was meant to be in it (every
review, its split, label and rating), and only then renamed to span-<N>: a
reader never sees half a span. An existing non-empty span folder is left
alone unless --force.
"""

from __future__ import annotations

import collections
import glob
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from components import review_sources

IMDB_IDS_PER_CLASS = 12_500
SPAN_PREFIX = "span-"
_ACLIMDB_ID = re.compile(r"(?:^|/)(train|test)/(pos|neg)/([0-9]+)_([0-9]+)\.txt$")
_POLARITY_NAMES = {1: "rt-polarity.pos", 0: "rt-polarity.neg"}


class SpanError(RuntimeError):
    """Something the user can fix: wrong source, bad option, a span folder in the way."""


@dataclass(frozen=True)
class Item:
    """One review as it will be written: where it goes and its exact bytes."""

    order: int  # the id (aclImdb) or the 0-based line number (polarity)
    split: str | None  # "train" | "test" for aclImdb, None for polarity
    label: int
    rating: int | None
    text: str  # as review_sources reads it back
    data: bytes  # the bytes written (a file's content, or a line without its "\n")

    @property
    def key(self) -> tuple:
        """What the read-back must reproduce."""
        return (self.split, self.label, self.rating, self.text)


# --- reading the source --------------------------------------------------------


def _reviews(path: str) -> list[review_sources.Review]:
    reviews, rejected = [], []
    for row in review_sources.read(path):
        (rejected if isinstance(row, review_sources.Rejected) else reviews).append(row)
    if rejected:
        shown = "; ".join(f"{r.id}: {r.reason}" for r in rejected[:3])
        raise SpanError(f"{path}: {len(rejected)} row(s) cannot be read ({shown}); fix the source first")
    return reviews


def imdb_items(path: str) -> list[Item]:
    """Every review of an aclImdb archive or folder, with its id."""
    items, seen = [], set()
    for review in _reviews(path):
        match = _ACLIMDB_ID.search(review.id.split(":", 1)[1])
        split, polarity, number, rating = match.groups()  # the reader accepted the name, so it matches
        number = int(number)
        if number >= IMDB_IDS_PER_CLASS:
            raise SpanError(f"{review.id}: id {number} is outside 0..{IMDB_IDS_PER_CLASS - 1}, "
                            "the range IMDB spans are cut from")
        name = (split, polarity, number, int(rating))
        if name in seen:
            raise SpanError(f"{review.id}: the same file appears twice in {path}")
        seen.add(name)
        items.append(Item(number, split, review.label, review.rating, review.text, review.text.encode("utf-8")))
    return items


def polarity_items(path: str) -> list[Item]:
    """Every line of rt-polarity.pos/.neg, numbered from 0 within its class, with its original bytes."""
    texts = collections.defaultdict(list)
    for review in _reviews(path):
        texts[review.label].append(review.text)
    items = []
    for _, label, data in review_sources._polarity_files(path):  # noqa: SLF001 (the raw bytes, as the reader sees them)
        lines = data.split(b"\n")
        if data.endswith(b"\n"):
            lines.pop()
        if len(lines) != len(texts[label]):
            raise SpanError(f"{path}: {_POLARITY_NAMES[label]} has {len(lines)} lines but reads as "
                            f"{len(texts[label])} sentences")
        items += [Item(i, None, label, None, text, line) for i, (line, text) in enumerate(zip(lines, texts[label]))]
    return items


def load_items(dataset: str, source: Path) -> list[Item]:
    paths = sorted(glob.glob(str(source))) or [str(source)]
    if len(paths) != 1:
        raise SpanError(f"{source} matches {len(paths)} files; make-spans needs the one official archive or folder")
    path = paths[0]
    try:
        layout = review_sources.describe(path)
    except (review_sources.SourceFormatError, OSError) as error:
        raise SpanError(str(error)) from None
    wanted = {"imdb": "aclimdb", "polarity": "polarity"}[dataset]
    if layout != wanted:
        official = {"imdb": "an aclImdb archive or folder (the ids are in its file names)",
                    "polarity": "an rt-polaritydata archive or folder (the line order is the original's)"}[dataset]
        raise SpanError(f"{path} is a {layout} source; make-spans --dataset {dataset} needs {official}. "
                        f"Pass --input or --data-dir")
    try:
        return imdb_items(path) if dataset == "imdb" else polarity_items(path)
    except review_sources.SourceFormatError as error:
        raise SpanError(str(error)) from None


# --- assigning spans -------------------------------------------------------------


def span_index(order: int, spans: int, size: int) -> int:
    """0-based span of the item at `order` among `size`: contiguous, as even as integers allow."""
    return order * spans // size


def assign(dataset: str, items: list[Item], spans: int, first_span: int = 1,
           limit_per_span: int | None = None, label_balance: float | None = None) -> dict[int, list[Item]]:
    """{span number: its items}, every number from first_span on present (maybe empty)."""
    if spans < 1:
        raise SpanError(f"--spans must be at least 1, got {spans}")
    if limit_per_span is not None and limit_per_span < 1:
        raise SpanError(f"--limit-per-span must be at least 1, got {limit_per_span}")
    if label_balance is not None and not 0 < label_balance < 1:
        raise SpanError(f"--label-balance is the positive share, strictly between 0 and 1; got {label_balance}")
    if dataset == "imdb":
        size_of = {key: IMDB_IDS_PER_CLASS for key in {(i.split, i.label) for i in items}}
        if spans > IMDB_IDS_PER_CLASS:
            raise SpanError(f"--spans {spans}: more spans than the {IMDB_IDS_PER_CLASS} ids per class")
    else:
        size_of = collections.Counter((i.split, i.label) for i in items)
        if spans > min(size_of.values(), default=0):
            raise SpanError(f"--spans {spans}: more spans than lines in a class ({dict(size_of)})")
    result: dict[int, list[Item]] = {first_span + k: [] for k in range(spans)}
    for item in items:
        result[first_span + span_index(item.order, spans, size_of[(item.split, item.label)])].append(item)
    for number, members in result.items():
        kept = []
        for split in sorted({i.split for i in members}, key=str):
            group = sorted((i for i in members if i.split == split), key=lambda i: (i.order, i.label))
            if limit_per_span is not None:
                group = group[:limit_per_span]
            if label_balance is not None:
                group = _balance(group, label_balance)
            kept += group
        result[number] = kept
    return result


def _balance(group: list[Item], share: float) -> list[Item]:
    """Drops the minority-to-be class's highest-ordered items until positives are `share` of the group."""
    positives = [i for i in group if i.label == 1]
    negatives = [i for i in group if i.label == 0]
    if share >= 0.5:
        negatives = negatives[:min(len(negatives), round(len(positives) * (1 - share) / share))]
    else:
        positives = positives[:min(len(positives), round(len(negatives) * share / (1 - share)))]
    return sorted(positives + negatives, key=lambda i: (i.order, i.label))


# --- writing and checking ------------------------------------------------------------


def relative_path(dataset: str, item: Item) -> str:
    if dataset == "imdb":
        return f"aclImdb/{item.split}/{'pos' if item.label else 'neg'}/{item.order}_{item.rating}.txt"
    return f"rt-polaritydata/{_POLARITY_NAMES[item.label]}"


def write_span(dataset: str, items: list[Item], directory: Path) -> None:
    if dataset == "imdb":
        for folder in ("train/pos", "train/neg", "test/pos", "test/neg"):
            # Even when empty: the layout needs all four.
            (directory / "aclImdb" / folder).mkdir(parents=True, exist_ok=True)
        for item in items:
            (directory / relative_path(dataset, item)).write_bytes(item.data)
        return
    (directory / "rt-polaritydata").mkdir(parents=True, exist_ok=True)
    for label, name in _POLARITY_NAMES.items():
        lines = [i.data for i in sorted(items, key=lambda i: i.order) if i.label == label]
        (directory / "rt-polaritydata" / name).write_bytes(b"".join(line + b"\n" for line in lines))


def check_span(items: list[Item], directory: Path) -> collections.Counter:
    """Reads the written span back; it must hold exactly `items`. Returns its (split, label) counts."""
    try:
        rows = list(review_sources.read(str(directory)))
    except review_sources.SourceFormatError as error:
        raise SpanError(f"{directory} does not read back: {error}") from None
    rejected = [r for r in rows if isinstance(r, review_sources.Rejected)]
    if rejected:
        raise SpanError(f"{directory}: {len(rejected)} written row(s) do not read back, e.g. {rejected[0]}")
    read_back = collections.Counter((r.source_split, r.label, r.rating, r.text) for r in rows)
    expected = collections.Counter(i.key for i in items)
    if read_back != expected:
        missing, extra = expected - read_back, read_back - expected
        raise SpanError(f"{directory} reads back {sum(read_back.values())} reviews, expected "
                        f"{sum(expected.values())} ({sum(missing.values())} missing, {sum(extra.values())} extra)")
    return collections.Counter((r.source_split, r.label) for r in rows)


def span_dir(out: Path, number: int) -> Path:
    return out / f"{SPAN_PREFIX}{number}"


def _in_the_way(path: Path) -> bool:
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def make_spans(dataset: str, source: Path, out: Path, spans: int, first_span: int = 1,
               limit_per_span: int | None = None, label_balance: float | None = None, force: bool = False,
               log=print) -> dict[int, collections.Counter]:
    """Writes the spans; returns {span number: Counter of (split, label)} as read back."""
    if first_span < 0:
        raise SpanError(f"--first-span must be 0 or more, got {first_span}")
    numbers = range(first_span, first_span + spans)
    in_the_way = [span_dir(out, n) for n in numbers if _in_the_way(span_dir(out, n))]
    if in_the_way and not force:
        raise SpanError(f"{len(in_the_way)} span folder(s) already hold data ({', '.join(map(str, in_the_way[:3]))}"
                        f"{', ...' if len(in_the_way) > 3 else ''}); pass --force to replace them")
    items = load_items(dataset, source)
    log(f"{source}: {len(items)} reviews -> {spans} span(s) in {out}")
    assigned = assign(dataset, items, spans, first_span, limit_per_span, label_balance)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for number, members in assigned.items():
        final = span_dir(out, number)
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=out))
        try:
            write_span(dataset, members, staging)
            counts[number] = check_span(members, staging)
            if final.exists() or final.is_symlink():
                if final.is_dir() and not final.is_symlink():
                    shutil.rmtree(final)
                else:
                    final.unlink()
            staging.rename(final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        log(f"wrote {final}: {_describe(counts[number])}")
    return counts


def _split_order(split: str | None) -> tuple:
    return ({"train": 0, "test": 1}.get(split, 2), str(split))


def _describe(counts: collections.Counter) -> str:
    parts = []
    for split in sorted({s for s, _ in counts}, key=_split_order):
        name = f"{split} " if split else ""
        parts.append(f"{name}{counts[(split, 1)]} pos / {counts[(split, 0)]} neg")
    return ", ".join(parts) or "empty"


def table(counts: dict[int, collections.Counter]) -> str:
    splits = sorted({s for c in counts.values() for s, _ in c} or {None}, key=_split_order)
    columns = [(s, label) for s in splits for label in (1, 0)]
    names = [f"{s + ' ' if s else ''}{'pos' if label else 'neg'}" for s, label in columns]
    lines = ["span  " + "  ".join(f"{n:>9}" for n in names) + "      total"]
    for number, c in sorted(counts.items()):
        lines.append(f"{number:>4}  " + "  ".join(f"{c[col]:>9}" for col in columns) + f"  {sum(c.values()):>9}")
    totals = [sum(c[col] for c in counts.values()) for col in columns]
    lines.append(" all  " + "  ".join(f"{t:>9}" for t in totals) + f"  {sum(totals):>9}")
    return "\n".join(lines)


# --- command line ------------------------------------------------------------------


def add_parser(commands) -> None:
    from pipeline import configs, data_sources

    parser = commands.add_parser("make-spans", help="cut a dataset into spans (span-N/ folders in the official "
                                 "layout) to replay continuous training")
    parser.add_argument("--dataset", choices=sorted(configs.DATASETS), default=configs.DEFAULT_DATASET)
    parser.add_argument("--spans", type=int, required=True, metavar="S", help="how many spans")
    parser.add_argument("--out", required=True, help="folder to write span-<N>/ folders into")
    parser.add_argument("--first-span", type=int, default=1, help="number of the first span (default 1)")
    parser.add_argument("--limit-per-span", type=int, metavar="N",
                        help="keep only the first N train and N test reviews of each span, by id "
                        "(polarity: the first N lines)")
    parser.add_argument("--label-balance", type=float, metavar="P",
                        help="make each split of each span a share P positive by dropping negatives "
                        "(positives if P < 0.5): a deliberately drifted span")
    parser.add_argument("--force", action="store_true", help="replace span folders that already hold data")
    parser.add_argument("--input", help="the official archive or folder to cut (default: the dataset's source)")
    parser.add_argument("--data-dir", help="directory holding <dataset>/ files "
                        f"(default: ${data_sources.DATA_DIR_ENV}, then ../shared/data, then a download)")
    parser.add_argument("--no-download", action="store_true", help="fail instead of downloading missing data")


def make_spans_command(args) -> int:
    from pipeline import configs, data_sources

    dataset = configs.DATASETS[args.dataset]
    try:
        source = data_sources.resolve_input(dataset, args.input, args.data_dir, download=not args.no_download)
        counts = make_spans(args.dataset, source, Path(args.out).expanduser().resolve(), args.spans,
                            args.first_span, args.limit_per_span, args.label_balance, args.force)
    except (SpanError, data_sources.DataNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(table(counts))
    return 0
