"""Input resolution and the checked download, exercised offline with file:// URLs."""

import hashlib

import pytest

from pipeline import configs, data_sources
from tests.helpers import write_tar


def _polarity_archive(path):
    """A small rt-polaritydata.tar.gz with the official layout; returns its sha256."""
    write_tar(path, {"rt-polaritydata/rt-polarity.pos": b"a gem\n", "rt-polaritydata/rt-polarity.neg": b"a mess\n"})
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def no_default_data(tmp_path, monkeypatch):
    monkeypatch.delenv(data_sources.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(data_sources, "SHARED_DATA_DIR", tmp_path / "absent")


def test_input_wins_then_data_dir_then_environment(tmp_path, monkeypatch):
    explicit, from_env = tmp_path / "explicit", tmp_path / "env"
    _polarity_archive(explicit / "polarity" / "rt-polaritydata.tar.gz")
    (from_env / "polarity").mkdir(parents=True)
    (from_env / "polarity" / "rt-polarity.csv.gz").write_bytes(b"")
    monkeypatch.setenv(data_sources.DATA_DIR_ENV, str(from_env))
    own = tmp_path / "mine.csv"
    own.write_text("text,label\n")
    assert data_sources.resolve_input(configs.POLARITY, input_path=own) == own
    assert data_sources.resolve_input(configs.POLARITY, data_dir=explicit) == \
        explicit / "polarity" / "rt-polaritydata.tar.gz"
    # The first source that exists wins: the CSV when there is no archive.
    assert data_sources.resolve_input(configs.POLARITY) == from_env / "polarity" / "rt-polarity.csv.gz"


def test_missing_input_or_empty_data_dir_name_what_was_expected(tmp_path):
    with pytest.raises(data_sources.DataNotFoundError, match="--input .* does not exist"):
        data_sources.resolve_input(configs.IMDB, input_path=tmp_path / "nope.csv")
    with pytest.raises(data_sources.DataNotFoundError, match=r"holds none of imdb/aclImdb_v1_labeled\.tar\.gz"):
        data_sources.resolve_input(configs.IMDB, data_dir=tmp_path)


def test_no_data_and_no_download_is_a_clear_error(tmp_path, no_default_data):
    with pytest.raises(data_sources.DataNotFoundError, match="pass --input or --data-dir"):
        data_sources.resolve_input(configs.POLARITY, download=False, cache_dir=tmp_path / "cache")


def test_download_checks_sha256_and_keeps_the_archive_as_a_source(tmp_path, monkeypatch, no_default_data):
    archive = tmp_path / "served" / "rt-polaritydata.tar.gz"
    sha = _polarity_archive(archive)
    monkeypatch.setitem(data_sources.DOWNLOADS, "polarity", data_sources.Download(
        archive.as_uri(), sha, data_sources.DOWNLOADS["polarity"].relative_path))
    cache = tmp_path / "cache"
    resolved = data_sources.resolve_input(configs.POLARITY, cache_dir=cache)
    assert resolved == cache / "polarity" / "rt-polaritydata.tar.gz"
    assert resolved.read_bytes() == archive.read_bytes()
    # A second resolution finds the cached archive without downloading.
    archive.unlink()
    assert data_sources.resolve_input(configs.POLARITY, cache_dir=cache) == resolved


def test_a_corrupt_download_is_rejected_and_not_kept(tmp_path):
    archive = tmp_path / "rt-polaritydata.tar.gz"
    _polarity_archive(archive)
    target = tmp_path / "cache" / "archive.tar.gz"
    with pytest.raises(data_sources.DataNotFoundError, match="does not match the expected"):
        data_sources.fetch(archive.as_uri(), "0" * 64, target)
    assert not target.exists() and not list(target.parent.glob("*.part"))


def test_offline_download_fails_with_advice(tmp_path):
    with pytest.raises(data_sources.DataNotFoundError, match="offline.*--data-dir"):
        data_sources.fetch((tmp_path / "nowhere.tar.gz").as_uri(), "0" * 64, tmp_path / "x.tar.gz")
