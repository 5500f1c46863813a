"""The Trainer refuses a GZIP file cut short, even where TensorFlow's reader does not notice."""

import pytest
import tensorflow as tf

from models import trainer


def _write_records(path, count=300):
    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for i in range(count):
            writer.write(f"record {i} ".encode() * (i % 7 + 1))
    return path


def _records(path) -> int:
    return sum(1 for _ in tf.data.TFRecordDataset([str(path)], compression_type="GZIP"))


def test_a_whole_file_passes(tmp_path):
    path = _write_records(tmp_path / "whole.gz")
    trainer.check_complete([str(path)])
    assert _records(path) == 300


def test_a_cut_tensorflow_reads_silently_is_caught(tmp_path):
    whole = _write_records(tmp_path / "whole.gz").read_bytes()
    silent = None
    for cut in range(len(whole) // 4, len(whole) - 8):
        path = tmp_path / "cut.gz"
        path.write_bytes(whole[:cut])
        try:
            fewer = _records(path)
        except tf.errors.DataLossError:
            continue
        silent = (cut, fewer)
        break
    # The reason for the check: TensorFlow took a cut file as complete, with fewer records.
    assert silent is not None and silent[1] < 300
    with pytest.raises(tf.errors.DataLossError, match=r"cut\.gz is truncated or corrupt"):
        trainer.check_complete([str(tmp_path / "cut.gz")])


def test_a_corrupt_byte_is_caught(tmp_path):
    data = bytearray(_write_records(tmp_path / "whole.gz").read_bytes())
    data[-6] ^= 0xFF  # inside the CRC/length trailer
    (tmp_path / "bad.gz").write_bytes(bytes(data))
    with pytest.raises(tf.errors.DataLossError, match="truncated or corrupt"):
        trainer.check_complete([str(tmp_path / "bad.gz")])
