"""Where the datasets come from: a data directory, or a checked download.

Resolution order: --input (any supported file, archive or folder), then
--data-dir, then $SENTIMENT_DATA_DIR, then ../shared/data next to the project
(when present), then a download of the official archive into a cache
directory, verified by sha256. Inside a data directory the dataset config's
`sources` are tried in order.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from pipeline import configs

DATA_DIR_ENV = "SENTIMENT_DATA_DIR"
CACHE_DIR_ENV = "SENTIMENT_CACHE_DIR"
SHARED_DATA_DIR = configs.PROJECT_ROOT.parent / "shared" / "data"


class DataNotFoundError(RuntimeError):
    pass


@dataclass(frozen=True)
class Download:
    url: str
    sha256: str
    # Where the archive is kept, relative to the cache dir; one of the dataset's sources.
    relative_path: str


DOWNLOADS: dict[str, Download] = {
    "imdb": Download(
        url="https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
        sha256="c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe",
        relative_path="imdb/aclImdb_v1.tar.gz",
    ),
    "polarity": Download(
        url="https://www.cs.cornell.edu/people/pabo/movie-review-data/rt-polaritydata.tar.gz",
        sha256="a05befe52aafda71d458d188a1c54506a998b1308613ba76bbda2e5029409ce9",
        relative_path="polarity/rt-polaritydata.tar.gz",
    ),
}


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV, Path.home() / ".cache" / "sentiment-pipeline"))


def find_source(data_dir: Path, dataset: configs.DatasetConfig) -> Path | None:
    """The first of the dataset's sources that exists under data_dir."""
    for source in dataset.sources:
        if glob.glob(str(data_dir / source)):
            return data_dir / source
    return None


def resolve_input(
    dataset: configs.DatasetConfig,
    input_path: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    cache_dir: Path | None = None,
) -> Path:
    """Returns the source ExampleGen reads, downloading it if allowed."""
    if input_path:
        path = Path(input_path).expanduser().resolve()
        if not glob.glob(str(path)):
            raise DataNotFoundError(f"--input {path} does not exist")
        return path
    explicit = data_dir or os.environ.get(DATA_DIR_ENV)
    if explicit:
        path = Path(explicit).expanduser().resolve()
        source = find_source(path, dataset)
        if source is None:
            raise DataNotFoundError(
                f"data directory {path} holds none of {', '.join(dataset.sources)}"
            )
        return source
    for directory in (SHARED_DATA_DIR, cache_dir or default_cache_dir()):
        source = find_source(directory, dataset) if directory.is_dir() else None
        if source is not None:
            return source
    if not download:
        raise DataNotFoundError(
            f"no data for {dataset.name!r}: pass --input or --data-dir, set ${DATA_DIR_ENV}, or allow the download"
        )
    source = DOWNLOADS[dataset.name]
    return fetch(source.url, source.sha256, (cache_dir or default_cache_dir()) / source.relative_path)


def span_numbers(path: str | os.PathLike) -> list[int]:
    """The spans of an input laid out as <path>/span-<N>/ folders (empty for any other input)."""
    from models.features import SPAN_FOLDER_PREFIX  # not components.review_example_gen: that loads TensorFlow

    path = Path(path)
    if not path.is_dir():
        return []
    spans = []
    for child in path.iterdir():
        number = child.name[len(SPAN_FOLDER_PREFIX):]
        if child.is_dir() and child.name.startswith(SPAN_FOLDER_PREFIX) and number.isascii() and number.isdigit():
            spans.append(int(number))
    return sorted(spans)


def resolve_embeddings(path: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Pretrained vectors: an absolute path, or one relative to the data directory."""
    return resolve_data_file(path, data_dir, "pretrained embeddings")


def resolve_pretraining_sources(dataset: configs.DatasetConfig,
                                data_dir: str | os.PathLike | None = None) -> configs.DatasetConfig:
    """`dataset` with the local files its pretraining objective reads resolved to absolute paths
    (remote ones, gs://..., as they are); a missing one raises DataNotFoundError saying how to
    run without it."""
    import dataclasses

    pretraining = dataset.pretraining
    field = "labelled_sources" if pretraining.objective == "labelled_sentences" else "unlabeled_sources"
    what = "labelled text" if field == "labelled_sources" else "unlabeled text"
    try:
        paths = [path if "://" in path else str(resolve_data_file(path, data_dir, what))
                 for path in getattr(pretraining, field)]
    except DataNotFoundError as error:
        raise DataNotFoundError(f"{error}. {dataset.name} pretrains on it (pretraining.{field}): add the file, "
                                "or run without the pretraining (--set pretraining.enabled=false)") from None
    return dataclasses.replace(dataset, pretraining=dataclasses.replace(pretraining, **{field: tuple(paths)}))


def resolve_data_file(path: str, data_dir: str | os.PathLike | None = None, what: str = "data file") -> Path:
    """A file named by an absolute path or by one relative to the data directory (--data-dir,
    $SENTIMENT_DATA_DIR, the shared data beside the project, the working directory)."""
    candidate = Path(path).expanduser()
    if candidate.is_absolute():
        roots = [Path("/")]
    else:
        roots = [Path(p) for p in (data_dir, os.environ.get(DATA_DIR_ENV)) if p] + [SHARED_DATA_DIR, Path.cwd()]
    for root in roots:
        if (root / candidate).is_file():
            return (root / candidate).resolve()
    raise DataNotFoundError(f"{what} {path} not found (looked under {', '.join(map(str, roots))})")


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
