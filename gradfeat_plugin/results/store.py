"""The SQLite results store: one row per (run, protocol), written one run at a time."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import GradfeatError
from ._files import create_new_file
from .provenance import config_hash, package_versions

#: Environment variable that overrides the default results database path.
RESULTS_ENV_VAR = "GRADFEAT_RESULTS"
#: The database path used when neither ``--results`` nor the environment sets one.
DEFAULT_RESULTS_FILE = "gradfeat_results.db"

SCHEMA_VERSION = 2
#: Row statuses: a finished protocol, one whose training diverged, one that failed.
STATUSES = ("ok", "diverged", "failed")
#: How long a read waits for another process's lock before giving up.
READ_TIMEOUT_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id            TEXT    NOT NULL,
    model             TEXT    NOT NULL,
    weights           TEXT    NOT NULL,
    split             TEXT    NOT NULL DEFAULT '',
    dataset           TEXT    NOT NULL,
    protocol          TEXT    NOT NULL,
    metric            TEXT    NOT NULL,
    value             REAL,
    epochs            INTEGER,
    seed              INTEGER,
    wall_time_s       REAL,
    peak_memory_bytes INTEGER,
    flops             INTEGER,
    params            INTEGER,
    trainable_params  INTEGER,
    versions          TEXT    NOT NULL,
    config_hash       TEXT,
    config            TEXT,
    timestamp         TEXT    NOT NULL,
    extra             TEXT    NOT NULL DEFAULT '{}',
    status            TEXT    NOT NULL DEFAULT 'ok',
    reason            TEXT    NOT NULL DEFAULT '',
    UNIQUE (run_id, protocol)
);
CREATE INDEX IF NOT EXISTS results_model_dataset ON results (model, dataset);
"""

#: Columns a record must give (``value`` only when ``status`` is ``ok``).
REQUIRED_FIELDS = ("model", "weights", "dataset", "protocol", "metric", "value")
#: Columns added by schema 2; rows of older stores read with these defaults.
SCHEMA2_DEFAULTS = {"status": "ok", "reason": ""}
#: Columns a record may give; ``add_run`` fills the rest.
OPTIONAL_FIELDS = (
    "split",
    "epochs",
    "seed",
    "wall_time_s",
    "peak_memory_bytes",
    "flops",
    "params",
    "trainable_params",
    "versions",
    "config_hash",
    "config",
    "extra",
    "status",
    "reason",
)
#: Every column of a stored row, in table order (``id`` excluded).
COLUMNS = (
    "run_id",
    "model",
    "weights",
    "split",
    "dataset",
    "protocol",
    "metric",
    "value",
    "epochs",
    "seed",
    "wall_time_s",
    "peak_memory_bytes",
    "flops",
    "params",
    "trainable_params",
    "versions",
    "config_hash",
    "config",
    "timestamp",
    "extra",
    "status",
    "reason",
)
_INT_FIELDS = (
    "epochs", "seed", "peak_memory_bytes", "flops", "params", "trainable_params"
)
_JSON_FIELDS = ("versions", "extra")
_INSERT = (
    f"INSERT INTO results ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in COLUMNS)})"
)


def default_results_path() -> str:
    """The results database used when no path is given.

    ``$GRADFEAT_RESULTS`` if set and non-empty, else ``./gradfeat_results.db`` in the
    working directory.
    """
    return os.environ.get(RESULTS_ENV_VAR) or os.path.join(".", DEFAULT_RESULTS_FILE)


def new_run_id() -> str:
    """A fresh, globally unique run id (32 hex characters)."""
    return uuid.uuid4().hex


def utc_timestamp() -> str:
    """The current UTC time, ISO 8601 to the second (``2024-05-01T12:00:00+00:00``)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ResultsStore:
    """A SQLite file of evaluation results, safe for several concurrent writers.

    Each call to :meth:`add_run` writes its records in a single ``BEGIN IMMEDIATE``
    transaction, so they are stored whole or not at all. ``evaluate`` calls it once
    per protocol as each finishes, under one run id: an interrupted run keeps the
    protocols that finished and leaves no partial row. A protocol that diverged or
    failed is a row with its ``status`` and ``reason`` and no value. Stores of
    schema 1 are read as they are and upgraded in place when written. The database runs in WAL mode with a busy timeout, so processes that
    write at the same time wait for each other instead of failing. Connections are
    opened per call, so a store can be handed to worker processes.

    Metric values are stored as returned by the protocol (fractions in ``[0, 1]`` for
    ``val_top1`` and ``val_map``); the leaderboard shows them in percent.

    Args:
        path: The database file (local path). ``None`` means
            :func:`default_results_path`.
        create: Create the file (and its parent folders) if it does not exist. With
            ``False`` a missing file is a :class:`GradfeatError`.
        timeout_s: How long a writer waits for another writer's lock.

    >>> store = ResultsStore("results.db")
    >>> run_id = store.add_run([dict(model="zoo:rotation_mnist5k", weights="pretrained",
    ...     dataset="mnist5k", protocol="linear", metric="val_top1", value=0.97)])
    >>> store.records(run_id=run_id)[0]["value"]
    0.97
    """

    def __init__(
        self, path: str | os.PathLike | None = None, create: bool = True,
        timeout_s: float = 60.0,
    ) -> None:
        self.path = Path(os.path.expanduser(path or default_results_path()))
        self.timeout_s = timeout_s
        version = verify_store(self.path, writable=create, must_exist=not create)
        new = not self.path.exists()
        if new:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Created here, as any new file, so that it follows the umask: SQLite
            # creates it 0o644 less the umask, which no umask makes group-writable.
            create_new_file(self.path)
        if create:
            try:
                self._initialise(version)
            except GradfeatError:
                if new:  # no store half-made on a full disk
                    for side in ("", "-wal", "-shm", "-journal"):
                        Path(f"{self.path}{side}").unlink(missing_ok=True)
                raise

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"

    def add_run(
        self, records: Sequence[Mapping[str, Any]], run_id: str | None = None
    ) -> str:
        """Store records of one run atomically (all of them or none).

        Every record is one protocol's result; later calls with the same ``run_id``
        add the run's other protocols. ``run_id``, ``timestamp`` and (unless a
        record gives them) ``versions`` and ``config_hash`` are filled in. All records
        are checked before the database is touched, then written in one transaction.

        Args:
            records: One mapping per protocol with the fields in ``REQUIRED_FIELDS``
                and any of ``OPTIONAL_FIELDS``. ``split`` may be a list of module
                names; ``versions`` and ``extra`` are JSON-serialisable mappings;
                ``status`` is one of ``STATUSES`` (``value`` is absent unless ok).
            run_id: The id to store the run under; a new one by default.

        Returns:
            The run id.

        Raises:
            ValueError: A record misses a required field, has an unknown one, or a
                value of the wrong type; nothing is written.
        """
        if not records:
            raise ValueError("a run needs at least one record")
        run_id = run_id or new_run_id()
        timestamp = utc_timestamp()
        versions = package_versions()
        rows = [_to_row(record, run_id, timestamp, versions) for record in records]
        with self._transaction() as conn:
            conn.executemany(_INSERT, rows)
        return run_id

    def records(self, **filters: Any) -> list[dict[str, Any]]:
        """Stored rows, oldest first, as dicts (``versions`` and ``extra`` decoded).

        Args:
            **filters: ``column=value`` equality filters; a list, tuple or set value
                matches any of its elements, e.g. ``protocol=["linear", "gradfeat"]``.

        Raises:
            ValueError: A filter names an unknown column.
        """
        clauses, params = [], []
        for column, wanted in filters.items():
            if column not in COLUMNS:
                known = ", ".join(COLUMNS)
                raise ValueError(f"unknown column {column!r}; known: {known}")
            many = isinstance(wanted, (list, tuple, set, frozenset))
            values = list(wanted) if many else [wanted]
            clauses.append(f"{column} IN ({', '.join('?' for _ in values)})")
            params.extend(values)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._connection() as conn:
            present = {r[1] for r in conn.execute("PRAGMA table_info(results)")}
            # A schema-1 store (read without upgrading) lacks the status columns.
            selected = [
                c if c in present else f"{_sql_literal(SCHEMA2_DEFAULTS[c])} AS {c}"
                for c in COLUMNS
            ]
            query = f"SELECT id, {', '.join(selected)} FROM results{where} ORDER BY id"
            rows = conn.execute(query, params).fetchall()
        return [_from_row(row, self.path) for row in rows]

    def __len__(self) -> int:
        with self._connection() as conn:
            return conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def _initialise(self, version: int) -> None:
        """WAL mode, and the schema in a new file; only after :func:`verify_store`."""
        with self._connection() as conn:
            journal_mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if journal_mode.lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
        if version == 1:
            self._upgrade_from_schema_1()
        elif version < 1:
            with self._transaction() as conn:
                # Another writer may have created it since the check.
                if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
                    return
                # Statement by statement: executescript would commit the transaction.
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _upgrade_from_schema_1(self) -> None:
        """Add ``status`` and ``reason`` and let ``value`` be absent, keeping every row.

        SQLite cannot drop a NOT NULL constraint in place, so the table is rebuilt
        in one transaction.
        """
        with self._transaction() as conn:
            if conn.execute("PRAGMA user_version").fetchone()[0] != 1:
                return  # another process upgraded it meanwhile
            old_columns = ", ".join(c for c in COLUMNS if c not in SCHEMA2_DEFAULTS)
            conn.execute("DROP INDEX IF EXISTS results_model_dataset")
            conn.execute("ALTER TABLE results RENAME TO results_schema1")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(
                f"INSERT INTO results (id, {old_columns}) "
                f"SELECT id, {old_columns} FROM results_schema1"
            )
            conn.execute("DROP TABLE results_schema1")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """A connection; a full disk or a lock held too long is a
        :class:`GradfeatError`."""
        conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        try:
            yield conn
        except sqlite3.OperationalError as err:
            if _busy(err):
                raise GradfeatError(
                    f"results database {self.path} stayed locked by another process "
                    f"for {self.timeout_s:.0f} s; try again when it has finished "
                    "writing"
                ) from None
            full = getattr(err, "sqlite_errorname", "") == "SQLITE_FULL"
            if not (full or "disk is full" in str(err)):
                raise
            raise GradfeatError(
                f"cannot write to results database {self.path}: the disk is full; "
                "free space or pass another --results"
            ) from None
        finally:
            conn.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the write lock up front and rolls back on
        any exception, ``KeyboardInterrupt`` included."""
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")


@contextlib.contextmanager
def _read_only(path: Path, timeout_s: float = 60.0) -> Iterator[sqlite3.Connection]:
    """A connection that cannot change the stored rows, and that takes SQLite's locks.

    Not ``immutable`` where a writer may be active: another process may commit and
    checkpoint at any moment, and a reader that takes no locks would see pages
    half-copied and call a busy store corrupt. A WAL-mode store without a ``-wal``
    file is opened as a normal connection with ``query_only``, so that SQLite
    removes the ``-wal``/``-shm`` files it makes when the last connection closes (a
    ``mode=ro`` connection cannot). Where this user cannot write the file or its
    folder, such a store is opened ``immutable`` (SQLite could not open it
    otherwise without leaving those files, and no writer of this user can be
    active); any other file with ``mode=ro``.
    """
    with open(path, "rb") as f:
        header = f.read(20)
    wal_mode = header[:16] == b"SQLite format 3\x00" and header[18:19] == b"\x02"
    quiet = wal_mode and not Path(f"{path}-wal").exists()
    writable = os.access(path, os.W_OK) and os.access(path.resolve().parent, os.W_OK)
    if quiet and writable:
        conn = sqlite3.connect(path, timeout=timeout_s, isolation_level=None)
        conn.execute("PRAGMA query_only = 1")
    else:
        uri = f"{path.resolve().as_uri()}?mode=ro" + ("&immutable=1" if quiet else "")
        conn = sqlite3.connect(uri, uri=True, timeout=timeout_s, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def _busy(err: sqlite3.Error) -> bool:
    """SQLite's busy or locked error: another process holds the store."""
    return getattr(err, "sqlite_errorname", "") in ("SQLITE_BUSY", "SQLITE_LOCKED") or (
        "locked" in str(err) or "busy" in str(err)
    )


def _not_a_store(path: Path, why: str) -> GradfeatError:
    return GradfeatError(f"{path} is not a gradfeat results database ({why}); "
                         "pass another --results")


def verify_store(
    path: str | os.PathLike, writable: bool = True, must_exist: bool = False
) -> int:
    """Check a results path without changing anything on disk.

    An existing file is opened read-only and must be an empty file or SQLite
    database, or a gradfeat store whose schema this version reads, that passes
    SQLite's ``quick_check``; a foreign, corrupt or newer file is refused before
    anything writes to it. With ``writable``, the file (or, for a new store, its
    folder) must be writable too, so that a run finds out before it trains.

    Args:
        path: The database file.
        writable: The caller is going to write results.
        must_exist: A missing file is an error (reading a leaderboard).

    Returns:
        The file's schema version (0 for a new or empty file).

    Raises:
        GradfeatError: What is wrong, in one line.
    """
    path = Path(os.path.expanduser(path))
    if path.is_dir():
        raise GradfeatError(
            f"results path {path} is a folder; pass a file such as "
            f"{path / DEFAULT_RESULTS_FILE}"
        )
    folder = path.resolve().parent
    if not path.exists():
        if must_exist:
            raise GradfeatError(
                f"results database {path} does not exist; run "
                f"benchmarks/eval.py first or pass --results PATH"
            )
        existing = next((p for p in (folder, *folder.parents) if p.exists()), folder)
        if writable and not os.access(existing, os.W_OK):
            raise GradfeatError(f"results folder {existing} is not writable")
        return 0
    if not path.is_file():
        raise GradfeatError(f"results path {path} is not a regular file")
    if writable and not (os.access(path, os.W_OK) and os.access(folder, os.W_OK)):
        raise GradfeatError(
            f"results database {path} is read-only (it and its folder must be "
            "writable); pass another --results"
        )
    if path.stat().st_size == 0:
        if must_exist:
            raise _not_a_store(path, "it is an empty file")
        return 0
    try:
        with _read_only(path, READ_TIMEOUT_S) as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%'"
            )}
            columns = {r[1] for r in conn.execute("PRAGMA table_info(results)")}
    except sqlite3.DatabaseError as err:
        if _busy(err):
            raise GradfeatError(
                f"results database {path} stayed locked by another process for "
                f"{READ_TIMEOUT_S:.0f} s; try again when it has finished writing"
            ) from None
        raise GradfeatError(
            f"{path} is not a SQLite results database ({err}); pass another --results"
        ) from None
    if check != "ok":
        raise _not_a_store(path, f"SQLite finds it damaged: {check}")
    if version > SCHEMA_VERSION:
        raise GradfeatError(
            f"{path} was written by a newer gradfeat-plugin "
            f"(schema {version}); upgrade gradfeat-plugin"
        )
    if version == 0:
        if tables:
            raise GradfeatError(
                f"{path} is a SQLite database of another program; "
                f"pass another --results"
            )
        if must_exist:
            raise _not_a_store(path, "it has no results table")
        return 0
    # Schema 1 lacks only the columns schema 2 added (it is upgraded on write).
    required = set(COLUMNS) - (set() if version == SCHEMA_VERSION else set(SCHEMA2_DEFAULTS))
    missing = sorted(required - columns)
    if "results" not in tables or missing:
        raise _not_a_store(path, f"its results table lacks {missing or 'everything'}")
    return version


def _to_row(
    record: Mapping[str, Any],
    run_id: str,
    timestamp: str,
    versions: dict[str, str | None],
) -> tuple[Any, ...]:
    """Check one record and turn it into an ``_INSERT`` parameter tuple."""
    status = record.get("status") or "ok"
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    required = REQUIRED_FIELDS if status == "ok" else REQUIRED_FIELDS[:-1]
    missing = [name for name in required if record.get(name) is None]
    if missing:
        protocol = record.get("protocol")
        missing_text = ", ".join(missing)
        raise ValueError(f"record for protocol {protocol!r} misses {missing_text}")
    unknown = sorted(set(record) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        raise ValueError(
            f"unknown record fields {', '.join(unknown)}; known: "
            f"{', '.join(REQUIRED_FIELDS + OPTIONAL_FIELDS)} "
            f"(put anything else in 'extra')"
        )
    row: dict[str, Any] = {name: record.get(name) for name in COLUMNS}
    row.update(run_id=run_id, timestamp=timestamp)
    for name in ("model", "weights", "dataset", "protocol", "metric"):
        row[name] = str(row[name])
    split = row["split"]
    if isinstance(split, (list, tuple)):
        row["split"] = ",".join(split)
    else:
        row["split"] = str(split or "")
    row.update(status=status, reason=str(row["reason"] or ""))
    if status == "ok":
        row["value"] = _finite(row["value"], "value")
    elif row["value"] is not None:
        raise ValueError(f"a {status} record has no value, got {row['value']!r}")
    if row["wall_time_s"] is not None:
        row["wall_time_s"] = _finite(row["wall_time_s"], "wall_time_s")
    for name in _INT_FIELDS:
        if row[name] is not None:
            if isinstance(row[name], bool) or int(row[name]) != row[name]:
                raise ValueError(f"{name} must be an integer, got {row[name]!r}")
            row[name] = int(row[name])
    row["versions"] = row["versions"] if row["versions"] is not None else versions
    row["extra"] = row["extra"] if row["extra"] is not None else {}
    for name in _JSON_FIELDS:
        try:
            row[name] = json.dumps(row[name], sort_keys=True)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name} must be JSON-serialisable: {err}") from None
    if row["config"] is not None and row["config_hash"] is None:
        row["config_hash"] = config_hash(row["config"])
    return tuple(row[name] for name in COLUMNS)


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _finite(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number}")
    return number


def _from_row(row: Sequence[Any], path: Path) -> dict[str, Any]:
    """A stored row as a record; a hand-edited row that breaks a rule is an error."""
    row_id, values = row[0], row[1:]
    record = dict(zip(COLUMNS, values))

    def damaged(why: str) -> GradfeatError:
        return GradfeatError(
            f"{path}: row {row_id} is damaged ({why}); delete or repair that row"
        )

    status = record["status"]
    if status not in STATUSES:
        raise damaged(f"status {status!r} is not one of {', '.join(STATUSES)}")
    for name in REQUIRED_FIELDS:
        if name == "value" and status != "ok":
            continue
        if not isinstance(record[name], (str, int, float)) or record[name] == "":
            raise damaged(f"{name} is {record[name]!r}")
    value = record["value"]
    if status == "ok" and (isinstance(value, str) or not math.isfinite(value)):
        raise damaged(f"value {value!r} is not a finite number")
    if status != "ok" and value is not None:
        raise damaged(f"a {status} row has value {value!r}")
    for name in _INT_FIELDS:
        if record[name] is not None and not isinstance(record[name], int):
            raise damaged(f"{name} {record[name]!r} is not an integer")
    wall_time = record["wall_time_s"]
    if wall_time is not None and not isinstance(wall_time, (int, float)):
        raise damaged(f"wall_time_s {wall_time!r} is not a number")
    for name in _JSON_FIELDS:
        try:
            record[name] = json.loads(record[name])
        except (TypeError, ValueError):
            raise damaged(f"{name} is not JSON") from None
    return record
