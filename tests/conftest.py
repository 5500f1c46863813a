"""Shared fixtures: a tiny tf.Transform output built from a handful of texts, a PostgreSQL server.

Plain helpers (texts, artifact and archive writers) are in tests/helpers.py: import them from there.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from tests.helpers import TINY_LABELS, TINY_TEXTS, run_transform  # noqa: E402


@pytest.fixture(scope="session")
def tiny_transform(tmp_path_factory):
    """(transformed rows, TFTransformOutput) for TINY_TEXTS, vocab 1000, max_len 12."""
    return run_transform(TINY_TEXTS, TINY_LABELS, vocab_size=1000, max_len=12,
                         output_dir=tmp_path_factory.mktemp("tft"))


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server started once per session by scripts/start_postgres.sh, as a user would.

    Yields its base URI, `postgresql://USER@127.0.0.1:PORT`: each test appends a
    database of its own, which ml-metadata creates on first use. The login's
    password is in the script's passfile, found through PGPASSFILE, as libpq
    finds it for any client (and for the pipelines these tests start).
    """
    import shutil
    import socket
    import subprocess
    import tempfile
    from pathlib import Path

    from pipeline import configs

    # Not under pytest's basetemp: the server runs as the postgres user, who cannot enter root's 0700 dirs.
    directory = Path(tempfile.mkdtemp(prefix="sentiment-postgres-"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    scripts = configs.PROJECT_ROOT / "scripts"
    started = subprocess.run(["bash", str(scripts / "start_postgres.sh"), str(directory), str(port)],
                             capture_output=True, text=True, timeout=900)
    if started.returncode != 0:
        pytest.fail(f"scripts/start_postgres.sh failed ({started.returncode}): {started.stderr[-2000:]}")
    uri = started.stdout.strip().splitlines()[-1]
    patch = pytest.MonkeyPatch()
    patch.setenv("PGPASSFILE", str(directory / "pgpass"))
    try:
        yield uri.rsplit("/", 1)[0]
    finally:
        patch.undo()
        subprocess.run(["bash", str(scripts / "stop_postgres.sh"), str(directory)], capture_output=True, timeout=120)
        shutil.rmtree(directory, ignore_errors=True)
