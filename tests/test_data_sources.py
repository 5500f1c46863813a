"""Data directory resolution and the checked download, exercised offline with file:// URLs."""

import csv
import gzip
import hashlib
import io
import tarfile

import pytest

from pipeline import configs, data_sources


def _write_polarity(data_dir):
    data_sources.write_csv_gz(data_dir / "polarity" / "rt-polarity.csv.gz", [("fine", 1), ("poor", 0)])


def test_explicit_data_dir_wins_over_environment(tmp_path, monkeypatch):
    explicit, from_env = tmp_path / "explicit", tmp_path / "env"
    _write_polarity(explicit)
    _write_polarity(from_env)
    monkeypatch.setenv(data_sources.DATA_DIR_ENV, str(from_env))
    assert data_sources.resolve_data_dir(configs.POLARITY, explicit) == explicit.resolve()
    assert data_sources.resolve_data_dir(configs.POLARITY) == from_env.resolve()


def test_a_data_dir_without_the_files_names_what_is_missing(tmp_path):
    with pytest.raises(data_sources.DataNotFoundError, match=r"lacks .*imdb/test\.csv\.gz"):
        data_sources.resolve_data_dir(configs.IMDB, tmp_path)


def test_no_data_and_no_download_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv(data_sources.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(data_sources, "SHARED_DATA_DIR", tmp_path / "absent")
    with pytest.raises(data_sources.DataNotFoundError, match="pass --data-dir"):
        data_sources.resolve_data_dir(configs.POLARITY, download=False, cache_dir=tmp_path / "cache")


def _polarity_archive(path):
    """A small rt-polaritydata.tar.gz with the official layout and cp1252 bytes."""
    files = {"rt-polaritydata/rt-polarity.pos": b"a gem \x96 truly .\nwarm and funny\n",
             "rt-polaritydata/rt-polarity.neg": b"a mess \x85 \n"}
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_checks_sha256_and_converts_the_archive(tmp_path, monkeypatch):
    archive = tmp_path / "rt-polaritydata.tar.gz"
    sha = _polarity_archive(archive)
    source = data_sources.DOWNLOADS["polarity"]
    monkeypatch.setitem(data_sources.DOWNLOADS, "polarity",
                        data_sources.Download(archive.as_uri(), sha, source.to_csv_files))
    monkeypatch.delenv(data_sources.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(data_sources, "SHARED_DATA_DIR", tmp_path / "absent")

    cache = tmp_path / "cache"
    assert data_sources.resolve_data_dir(configs.POLARITY, cache_dir=cache) == cache
    with gzip.open(cache / "polarity" / "rt-polarity.csv.gz", "rt", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows == [["text", "label"], ["a mess … ", "0"], ["a gem – truly .", "1"], ["warm and funny", "1"]]


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
