"""Where the datasets come from: a data directory, or a checked download.

Resolution order: --data-dir, then $SENTIMENT_DATA_DIR, then ../shared/data
next to the project (when present), then a download of the official archive
into a cache directory, verified by sha256 and converted to the same CSV
layout the rest of the pipeline reads.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from pipeline import configs

DATA_DIR_ENV = "SENTIMENT_DATA_DIR"
CACHE_DIR_ENV = "SENTIMENT_CACHE_DIR"
SHARED_DATA_DIR = configs.PROJECT_ROOT.parent / "shared" / "data"

Row = tuple[str, int]


class DataNotFoundError(RuntimeError):
    pass


@dataclass(frozen=True)
class Download:
    url: str
    sha256: str
    # Turns the downloaded archive into {csv file name: rows}.
    to_csv_files: Callable[[Path], dict[str, list[Row]]]


def _imdb_rows(archive: Path) -> dict[str, list[Row]]:
    pattern = re.compile(r"aclImdb/(train|test)/(pos|neg)/\d+_\d+\.txt$")
    rows: dict[str, list[Row]] = {"train.csv.gz": [], "test.csv.gz": []}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            match = pattern.search(member.name)
            if not match or not member.isfile():
                continue
            text = tar.extractfile(member).read().decode("utf-8")
            rows[f"{match.group(1)}.csv.gz"].append((text, int(match.group(2) == "pos")))
    return rows


def _polarity_rows(archive: Path) -> dict[str, list[Row]]:
    rows: list[Row] = []
    with tarfile.open(archive, "r:gz") as tar:
        for polarity, label in (("neg", 0), ("pos", 1)):
            data = tar.extractfile(f"rt-polaritydata/rt-polarity.{polarity}").read()
            # The Cornell files are Windows-1252, not UTF-8.
            rows.extend((line, label) for line in data.decode("cp1252").split("\n") if line)
    return {"rt-polarity.csv.gz": rows}


DOWNLOADS: dict[str, Download] = {
    "imdb": Download(
        url="https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
        sha256="c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe",
        to_csv_files=_imdb_rows,
    ),
    "polarity": Download(
        url="https://www.cs.cornell.edu/people/pabo/movie-review-data/rt-polaritydata.tar.gz",
        sha256="a05befe52aafda71d458d188a1c54506a998b1308613ba76bbda2e5029409ce9",
        to_csv_files=_polarity_rows,
    ),
}


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV, Path.home() / ".cache" / "sentiment-pipeline"))


def required_files(dataset: configs.DatasetConfig) -> list[str]:
    return sorted({split.source for split in dataset.splits})


def missing_files(data_dir: Path, dataset: configs.DatasetConfig) -> list[Path]:
    return [data_dir / dataset.subdir / name for name in required_files(dataset)
            if not (data_dir / dataset.subdir / name).exists()]


def resolve_data_dir(
    dataset: configs.DatasetConfig,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    cache_dir: Path | None = None,
) -> Path:
    """Returns a directory holding the dataset's files, downloading them if allowed."""
    explicit = data_dir or os.environ.get(DATA_DIR_ENV)
    if explicit:
        path = Path(explicit).expanduser().resolve()
        missing = missing_files(path, dataset)
        if missing:
            raise DataNotFoundError(
                f"data directory {path} lacks {', '.join(str(m) for m in missing)} "
                f"(expected {dataset.subdir}/{{{', '.join(required_files(dataset))}}})"
            )
        return path
    if SHARED_DATA_DIR.is_dir() and not missing_files(SHARED_DATA_DIR, dataset):
        return SHARED_DATA_DIR
    cache_dir = cache_dir or default_cache_dir()
    if not missing_files(cache_dir, dataset):
        return cache_dir
    if not download:
        raise DataNotFoundError(
            f"no data for {dataset.name!r}: pass --data-dir, set ${DATA_DIR_ENV}, or allow the download"
        )
    download_dataset(dataset, cache_dir)
    return cache_dir


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, sha256: str, destination: Path) -> Path:
    """Downloads `url` to `destination` (atomically) and checks its sha256."""
    if destination.exists() and sha256_of(destination) == sha256:
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    print(f"Downloading {url} -> {destination}", flush=True)
    partial = destination.with_suffix(destination.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    except (urllib.error.URLError, OSError) as error:
        partial.unlink(missing_ok=True)
        raise DataNotFoundError(
            f"could not download {url} ({error}). If this machine is offline, copy the data and "
            f"pass --data-dir or set ${DATA_DIR_ENV}"
        ) from error
    actual = sha256_of(partial)
    if actual != sha256:
        partial.unlink()
        raise DataNotFoundError(f"{url}: sha256 {actual} does not match the expected {sha256}")
    partial.replace(destination)
    return destination


def write_csv_gz(path: Path, rows: Iterator[Row] | list[Row]) -> None:
    """The same layout as the shared data: gzip CSV, header text,label, one row a line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as tmp:
        with gzip.open(tmp, "wt", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["text", "label"])
            writer.writerows(rows)
    Path(tmp.name).replace(path)


def download_dataset(dataset: configs.DatasetConfig, cache_dir: Path) -> None:
    source = DOWNLOADS[dataset.name]
    archive = fetch(source.url, source.sha256, cache_dir / "archives" / Path(source.url).name)
    for name, rows in source.to_csv_files(archive).items():
        write_csv_gz(cache_dir / dataset.subdir / name, rows)
