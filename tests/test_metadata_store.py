"""The ML Metadata store's address: URIs, secrets kept out of them, and a server that
is down or refuses the login stopping a run with one clear line."""

import gzip
import socket

import pytest

from pipeline import metadata_store
from pipeline.__main__ import main
from pipeline.metadata_store import MetadataStoreError, StoreAddress

TRACEBACK = "Traceback (most recent call last)"


@pytest.mark.parametrize("uri, shown, kind", [
    ("sqlite:///tmp/a/store.sqlite", "sqlite:///tmp/a/store.sqlite", "sqlite"),
    ("/tmp/b.sqlite", "sqlite:///tmp/b.sqlite", "sqlite"),
    ("postgresql://ml@db.example:6543/mlmd", "postgresql://ml@db.example:6543/mlmd", "postgresql"),
    ("postgres://ml@db.example/mlmd?sslmode=require", "postgresql://ml@db.example:5432/mlmd?sslmode=require",
     "postgresql"),
    ("mysql://ml@db.example/mlmd", "mysql://ml@db.example:3306/mlmd", "mysql"),
])
def test_a_uri_parses_into_the_store_it_names(uri, shown, kind):
    address = StoreAddress.parse(uri)
    assert (str(address), address.kind) == (shown, kind)
    config = address.connection_config()
    assert config.WhichOneof("config") == kind


def test_the_postgresql_config_carries_the_uri_fields_and_no_password():
    config = StoreAddress.parse("postgresql://ml@db.example:6543/mlmd?sslmode=require").connection_config()
    assert (config.postgresql.host, config.postgresql.port, config.postgresql.user, config.postgresql.dbname,
            config.postgresql.ssloption.sslmode) == ("db.example", "6543", "ml", "mlmd", "require")
    # libpq reads PGPASSWORD / PGPASSFILE / ~/.pgpass itself when these stay unset.
    assert not config.postgresql.password and not config.postgresql.passfile


@pytest.mark.parametrize("uri, message", [
    ("postgresql://ml:hunter2@db/mlmd", "put it in PGPASSWORD or a passfile"),
    ("mysql://ml:hunter2@db/mlmd", "put it in MYSQL_PWD"),
    ("http://db/mlmd", "the scheme must be one of"),
    ("postgresql://db/mlmd", "write postgresql://USER@HOST[:PORT]/DBNAME"),
    ("postgresql://ml@db/", "write postgresql://USER@HOST[:PORT]/DBNAME"),
    ("postgresql://ml@db/mlmd?pool=3", "unknown option(s) pool"),
    ("sqlite://host/store", "three slashes"),
])
def test_a_wrong_uri_is_refused_and_a_password_never_echoed(uri, message):
    with pytest.raises(MetadataStoreError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")) as raised:
        StoreAddress.parse(uri)
    assert "hunter2" not in str(raised.value)


def test_the_environment_names_the_store_when_the_command_line_does_not(monkeypatch, tmp_path):
    monkeypatch.delenv(metadata_store.ENV_URI, raising=False)
    assert metadata_store.address_for(None, tmp_path / "x.sqlite") == StoreAddress.sqlite(tmp_path / "x.sqlite")
    monkeypatch.setenv(metadata_store.ENV_URI, "postgresql://ml@db/mlmd")
    assert str(metadata_store.address_for(None, tmp_path / "x.sqlite")) == "postgresql://ml@db:5432/mlmd"
    assert str(metadata_store.address_for("postgresql://ml@db/other", tmp_path)) == "postgresql://ml@db:5432/other"


def test_the_server_store_is_created_on_first_use_and_shared(postgres_server):
    uri = f"{postgres_server}/mlmd_shared_unit"
    writer = metadata_store.connect(uri)
    [type_id] = [writer.put_artifact_type(_artifact_type())]
    from ml_metadata.proto import metadata_store_pb2

    artifact = metadata_store_pb2.Artifact(type_id=type_id, uri="/somewhere")
    [artifact_id] = writer.put_artifacts([artifact])
    reader = metadata_store.connect(uri, readonly=True)
    assert [a.uri for a in reader.get_artifacts_by_id([artifact_id])] == ["/somewhere"]


def _artifact_type():
    from ml_metadata.proto import metadata_store_pb2

    return metadata_store_pb2.ArtifactType(name="UnitTestThing")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_server_that_is_down_gives_one_line_naming_it(postgres_server):
    uri = f"postgresql://{postgres_server.split('//')[1].split('@')[0]}@127.0.0.1:{_closed_port()}/mlmd"
    with pytest.raises(MetadataStoreError) as raised:
        metadata_store.connect(uri)
    message = str(raised.value)
    assert message.startswith(f"the ML Metadata store {StoreAddress.parse(uri)} cannot be used: ")
    assert "ECONNREFUSED" in message or "Connection refused" in message
    assert "\n" not in message


def test_a_refused_login_gives_the_servers_reason(postgres_server, monkeypatch):
    monkeypatch.delenv("PGPASSFILE")
    monkeypatch.setenv("PGPASSWORD", "not-the-password")
    with pytest.raises(MetadataStoreError, match=r'password authentication failed for user "[^"]+"\. Check'):
        metadata_store.connect(f"{postgres_server}/mlmd_refused")


def test_a_run_against_a_server_that_is_down_exits_1_with_one_paragraph(postgres_server, tmp_path, capsys):
    data = tmp_path / "reviews.csv.gz"
    with gzip.open(data, "wt") as f:
        f.write("text,label\n" + "".join(f"review {i} good,1\nreview {i} bad,0\n" for i in range(20)))
    uri = f"postgresql://{postgres_server.split('//')[1].split('@')[0]}@127.0.0.1:{_closed_port()}/mlmd"
    code = main(["run", "--dataset", "polarity", "--input", str(data), "--output-dir", str(tmp_path / "out"),
                 "--metadata", uri])
    err = capsys.readouterr().err
    assert code == 1
    assert f"the ML Metadata store {StoreAddress.parse(uri)} cannot be used" in err
    assert "Nothing ran; the served model is unchanged." in err
    assert TRACEBACK not in err
    assert not (tmp_path / "out" / "serving").exists()


def test_a_password_on_the_command_line_is_refused_before_anything_runs(tmp_path, capsys):
    data = tmp_path / "reviews.csv.gz"
    with gzip.open(data, "wt") as f:
        f.write("text,label\ngood,1\nbad,0\n")
    with pytest.raises(SystemExit) as raised:
        main(["run", "--dataset", "polarity", "--input", str(data), "--output-dir", str(tmp_path / "out"),
              "--metadata", "postgresql://ml:hunter2@db/mlmd"])
    assert "put it in PGPASSWORD or a passfile" in str(raised.value.code)
    assert "hunter2" not in str(raised.value.code)


def test_clients_that_create_a_new_store_at_the_same_moment_all_connect(postgres_server, tmp_path):
    """Two runs started together race to create the database and its tables; neither may fail."""
    import subprocess
    import sys
    import time

    from pipeline import configs

    uri = f"{postgres_server}/mlmd_race_{int(time.time() * 1000)}"
    start = time.time() + 8  # every client imports first, then connects at this instant
    code = ("import sys, time\nfrom pipeline import metadata_store\n"
            "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
            "metadata_store.connect(sys.argv[1])\nprint('connected')\n")
    clients = [subprocess.Popen([sys.executable, "-c", code, uri, str(start)], cwd=configs.PROJECT_ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outcomes = [(client.wait(timeout=120), client.stdout.read(), client.stderr.read()[-500:]) for client in clients]
    assert [(code, out.strip()) for code, out, _ in outcomes] == [(0, "connected")] * 3, outcomes


def test_ml_metadata_still_cannot_store_a_backslash_in_postgresql(postgres_server):
    """Why `unstorable` exists. If this fails, ml-metadata was fixed: drop the guard."""
    from ml_metadata.proto import metadata_store_pb2

    store = metadata_store.connect(f"{postgres_server}/mlmd_backslash")
    type_id = store.put_artifact_type(metadata_store_pb2.ArtifactType(name="Backslashed"))
    assert store.put_artifacts([metadata_store_pb2.Artifact(type_id=type_id, uri="/plain/path")])
    with pytest.raises(Exception, match="syntax error"):
        store.put_artifacts([metadata_store_pb2.Artifact(type_id=type_id, uri="/a\\b")])


def test_a_setting_with_a_backslash_is_refused_before_a_postgresql_run(tmp_path):
    data = tmp_path / "my\\reviews.csv.gz"  # a legal file name on Linux
    with gzip.open(data, "wt") as f:
        f.write("text,label\ngood,1\nbad,0\n")
    args = ["run", "--dataset", "polarity", "--input", str(data), "--output-dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as raised:
        main(args + ["--metadata", "postgresql://ml@db/mlmd"])
    assert "--input hold(s) a backslash" in str(raised.value.code)
    assert "use a SQLite or MySQL --metadata" in str(raised.value.code)
    # SQLite stores it: the same input passes the check there.
    from pipeline import configs

    config = configs.PipelineConfig(dataset=configs.POLARITY, input_path=data, output_dir=tmp_path)
    assert config.metadata.kind == "sqlite"


def test_reads_by_id_answer_in_the_order_asked_on_postgresql(postgres_server):
    """TFX's cache zips get_artifacts_by_id's answer with events by position (keep_request_order)."""
    from ml_metadata import metadata_store as mlmd
    from ml_metadata.proto import metadata_store_pb2

    store = metadata_store.connect(f"{postgres_server}/mlmd_order")
    type_id = store.put_artifact_type(metadata_store_pb2.ArtifactType(name="Ordered"))
    ids = store.put_artifacts([metadata_store_pb2.Artifact(type_id=type_id, uri=f"/a/{i}") for i in range(3)])
    # An update moves the first row behind the others in PostgreSQL's table.
    [first] = store.get_artifacts_by_id([ids[0]])
    first.custom_properties["touched"].int_value = 1
    store.put_artifacts([first])
    unordered = mlmd.MetadataStore.get_artifacts_by_id._unordered(store, ids)
    # Why the wrapper exists; if this fails, ml-metadata keeps the order itself: drop keep_request_order.
    assert [a.id for a in unordered] != ids
    assert [a.id for a in store.get_artifacts_by_id(ids)] == ids
    assert [a.id for a in store.get_artifacts_by_id(ids[::-1])] == ids[::-1]
    assert [t.id for t in store.get_artifact_types_by_id([type_id, type_id])] == [type_id, type_id]
