"""Where ML Metadata lives: a SQLite file (the default) or a database server.

A store is named by a URI, on the command line (`--metadata`) or in
`SENTIMENT_METADATA_URI`:

    sqlite:///abs/path/store.sqlite     (or a plain path)
    postgresql://user@host:port/dbname  (ml-metadata's PostgreSQL source; ?sslmode=...)
    mysql://user@host:port/dbname

A URI never carries a password: it would show in `ps`, shell history and logs.
PostgreSQL passwords come from where every libpq client reads them
(PGPASSWORD, or a passfile: PGPASSFILE or ~/.pgpass); MySQL's from MYSQL_PWD.
The database is created on first use when the login may create databases.

`connect()` turns the server's own reason for a refusal ("connection
refused", "password authentication failed") into one line: ml-metadata only
logs it to stderr and raises "connection pointer is NULL".
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
import tempfile
import time
import urllib.parse
from pathlib import Path

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

ENV_URI = "SENTIMENT_METADATA_URI"
SQLITE, POSTGRESQL, MYSQL = "sqlite", "postgresql", "mysql"
_SCHEMES = {"sqlite": SQLITE, "postgresql": POSTGRESQL, "postgres": POSTGRESQL, "mysql": MYSQL}
_DEFAULT_PORTS = {POSTGRESQL: 5432, MYSQL: 3306}


class MetadataStoreError(RuntimeError):
    """The store's URI is wrong, or its server cannot be reached or refuses the login."""


@dataclasses.dataclass(frozen=True)
class StoreAddress:
    """A parsed store URI. `str()` gives it back for display (it holds no secret)."""

    kind: str
    path: Path | None = None  # sqlite
    host: str = ""
    port: int = 0
    user: str = ""
    dbname: str = ""
    sslmode: str = ""

    @classmethod
    def sqlite(cls, path: Path | str) -> StoreAddress:
        return cls(SQLITE, path=Path(path))

    @classmethod
    def parse(cls, uri: str | Path) -> StoreAddress:
        if isinstance(uri, Path) or "://" not in str(uri):
            return cls.sqlite(Path(uri).expanduser().resolve())
        parts = urllib.parse.urlsplit(str(uri))
        kind = _SCHEMES.get(parts.scheme)
        if kind is None:
            raise MetadataStoreError(f"metadata store {uri!r}: the scheme must be one of sqlite://, postgresql://, "
                                     "mysql://")
        if kind == SQLITE:
            if parts.netloc:
                raise MetadataStoreError(f"metadata store {uri!r}: write sqlite:///path (three slashes)")
            return cls.sqlite(Path(parts.path).expanduser().resolve())
        if parts.password is not None:
            where = "PGPASSWORD or a passfile (PGPASSFILE, ~/.pgpass)" if kind == POSTGRESQL else "MYSQL_PWD"
            raise MetadataStoreError(f"metadata store {parts.scheme}://{parts.username}@{parts.hostname}: a password "
                                     f"in the URI would show in process lists and logs; put it in {where}")
        dbname = parts.path.lstrip("/")
        if not parts.hostname or not parts.username or not dbname or "/" in dbname:
            raise MetadataStoreError(f"metadata store {uri!r}: write {parts.scheme}://USER@HOST[:PORT]/DBNAME")
        query = urllib.parse.parse_qs(parts.query)
        unknown = set(query) - ({"sslmode"} if kind == POSTGRESQL else set())
        if unknown:
            raise MetadataStoreError(f"metadata store {uri!r}: unknown option(s) {', '.join(sorted(unknown))}")
        try:
            port = parts.port or _DEFAULT_PORTS[kind]
        except ValueError as error:
            raise MetadataStoreError(f"metadata store {uri!r}: {error}") from None
        return cls(kind, host=parts.hostname, port=port, user=urllib.parse.unquote(parts.username),
                   dbname=dbname, sslmode=query.get("sslmode", [""])[0])

    def __str__(self) -> str:
        if self.kind == SQLITE:
            return f"sqlite://{self.path}"
        ssl = f"?sslmode={self.sslmode}" if self.sslmode else ""
        return f"{self.kind}://{urllib.parse.quote(self.user)}@{self.host}:{self.port}/{self.dbname}{ssl}"

    @property
    def is_server(self) -> bool:
        return self.kind != SQLITE

    def connection_config(self, readonly: bool = False) -> metadata_store_pb2.ConnectionConfig:
        """The ConnectionConfig TFX and ml-metadata take (the only place a password is put).

        Whoever builds one for a server store gets reads in the order asked
        (keep_request_order): the processes TFX runs components in included.
        """
        if self.is_server:
            keep_request_order()
        config = metadata_store_pb2.ConnectionConfig()
        if self.kind == SQLITE:
            config.sqlite.filename_uri = str(self.path)
            config.sqlite.connection_mode = (metadata_store_pb2.SqliteMetadataSourceConfig.READONLY if readonly else
                                             metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE)
        elif self.kind == POSTGRESQL:
            # Unset fields fall back to libpq's own environment: PGPASSWORD, PGPASSFILE, ~/.pgpass.
            config.postgresql.host = self.host
            config.postgresql.port = str(self.port)
            config.postgresql.user = self.user
            config.postgresql.dbname = self.dbname
            if self.sslmode:
                config.postgresql.ssloption.sslmode = self.sslmode
        else:
            config.mysql.host = self.host
            config.mysql.port = self.port
            config.mysql.user = self.user
            config.mysql.database = self.dbname
            if os.environ.get("MYSQL_PWD"):
                config.mysql.password = os.environ["MYSQL_PWD"]
        return config


_BY_ID_READS = ("get_artifacts_by_id", "get_executions_by_id", "get_contexts_by_id", "get_artifact_types_by_id",
                "get_execution_types_by_id", "get_context_types_by_id")


def keep_request_order() -> None:
    """Makes ml-metadata's get_*_by_id reads answer in the order asked, duplicates included.

    Its PostgreSQL source answers in table order, which changes as rows are
    updated; TFX's cache (cache_utils._get_outputs_of_execution) zips those
    answers with events by position, so a cached component's outputs were
    published under each other's keys (seen: the validation gate's
    validated_examples recorded as validated_statistics, and Transform found
    no examples in the second run). SQLite already answers in the order asked.
    Idempotent; affects every MetadataStore of the process.
    """
    cls = metadata_store.MetadataStore
    for name in _BY_ID_READS:
        original = getattr(cls, name)
        if getattr(original, "_keeps_request_order", False):
            continue

        def ordered(self, ids, *args, _original=original, **kwargs):
            ids = list(ids)
            by_id = {item.id: item for item in _original(self, ids, *args, **kwargs)}
            return [by_id[i] for i in ids if i in by_id]

        ordered = functools.wraps(original)(ordered)
        ordered._keeps_request_order = True
        ordered._unordered = original
        setattr(cls, name, ordered)


def as_address(location: StoreAddress | Path | str) -> StoreAddress:
    """A store given as an address, a SQLite file's path, or a URI."""
    return location if isinstance(location, StoreAddress) else StoreAddress.parse(location)


def unstorable(address: StoreAddress, values: dict[str, str]) -> str | None:
    """Why a run with these settings cannot be recorded in the store, or None.

    ml-metadata 1.16's PostgreSQL source writes a string holding a backslash as
    `'E'...'`, a syntax error: the run would fail when it records its first
    execution. Refusing up front names the setting instead.
    """
    if address.kind != POSTGRESQL:
        return None
    holding = sorted(name for name, value in values.items() if "\\" in str(value))
    if not holding:
        return None
    return (f"{', '.join(holding)} hold(s) a backslash, which ml-metadata 1.16 cannot store in PostgreSQL (it "
            "writes invalid SQL): rename the path or value, or use a SQLite or MySQL --metadata")


def address_for(uri: str | None, default_sqlite: Path) -> StoreAddress:
    """The store a command uses: its --metadata, else SENTIMENT_METADATA_URI, else the SQLite default."""
    uri = uri or os.environ.get(ENV_URI)
    return StoreAddress.parse(uri) if uri else StoreAddress.sqlite(default_sqlite)


@contextlib.contextmanager
def _stderr_captured():
    """Collects what C++ code writes to file descriptor 2 (ml-metadata logs a refusal's reason there)."""
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        captured: list[str] = []
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "replace"))


def _server_reason(log: str, error: str) -> str:
    """The server's reason, on one line: from ml-metadata's stderr, else from its exception."""
    match = re.search(r"(?:PostgreSQL|MySQL) error: (.*?)(?:\n[IWEF]\d{4} |\Z)", log, re.S)
    reason = match.group(1) if match else error.split("metadata source error:")[-1]
    if "connection pointer is NULL" in reason:
        reason = ""
    return " ".join(reason.split()) or "no reason given"


# Two clients using a new store at once race to create its database and tables;
# the loser sees one of these, and finds the store ready when it tries again.
_CREATION_RACE = ("already exists", "duplicate key", "deadlock detected", "could not serialize",
                  "retry the connection")
_ATTEMPTS = 5


def connect(location: StoreAddress | Path | str, readonly: bool = False) -> metadata_store.MetadataStore:
    """Opens the store, or raises MetadataStoreError with one line saying why not and what to do."""
    address = as_address(location)
    if address.kind == SQLITE:
        if readonly and not address.path.is_file():
            raise MetadataStoreError(f"no ML Metadata store at {address.path}: has the pipeline run with this "
                                     "--output-dir (or --metadata)?")
        return metadata_store.MetadataStore(address.connection_config(readonly=readonly))
    for attempt in range(_ATTEMPTS):
        with _stderr_captured() as log:
            try:
                return metadata_store.MetadataStore(address.connection_config())
            except Exception as error:  # ml-metadata raises RuntimeError, often with no reason
                failure = error
        said = f"{failure}\n{log[0] if log else ''}"
        if attempt + 1 < _ATTEMPTS and any(marker in said for marker in _CREATION_RACE):
            time.sleep(0.2 * 2 ** attempt)
            continue
        break
    reason = _server_reason(log[0] if log else "", str(failure))
    reason += "" if reason.endswith((".", "?")) else "."
    raise MetadataStoreError(
        f"the ML Metadata store {address} cannot be used: {reason} Check that the server runs and that the "
        + ("login's password is in PGPASSWORD or a passfile (PGPASSFILE, ~/.pgpass)" if address.kind == POSTGRESQL
           else "login's password is in MYSQL_PWD")
        + ", or pass another --metadata.") from failure
