"""Engine, migrations and the queries of the online database.

    from core.store import Store, make_engine, upgrade
    engine = make_engine(database_url(cfg)); upgrade(engine); store = Store(engine)

SQLite (the default: `<artifacts.root>/online/shop.db`) runs in WAL mode with a busy timeout, so
readers never wait on the writer and concurrent writers queue instead of failing. PostgreSQL
takes its password from the environment variable named by `online.password_env` (a Kubernetes
Secret in the rendered manifests), never from the URL in the config.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, delete, event, func, select, text, update
from sqlalchemy.engine import make_url

from core.store.models import EventRow, ProductRow, RefreshWatermark, ServedRow

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000


def now_ms() -> int:
    return int(time.time() * 1000)


def database_url(cfg) -> str:
    """`online.database_url`, or the embedded SQLite file under a local `artifacts.root`."""
    if cfg.online.database_url:
        return cfg.online.database_url
    from core.runtime import local_dir

    try:
        root = local_dir(cfg.artifacts.root)
    except ValueError as e:
        raise ValueError(f"{e}; or set online.database_url to a PostgreSQL URL") from None
    return f"sqlite:///{(root / 'online' / 'shop.db').resolve()}"


def make_engine(url: str, password_env: str | None = None) -> Engine:
    """An engine for `url`: SQLite gets its directory, WAL and a busy timeout; a server URL
    without a password gets the one in `$password_env` when that is set."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes, fast commits
            cur.close()

        return engine
    if parsed.password is None and password_env and os.environ.get(password_env):
        parsed = parsed.set(password=os.environ[password_env])
    return create_engine(parsed, pool_size=10, max_overflow=10, pool_pre_ping=True)


def upgrade(target: str | Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` with the migrations shipped in this package. Replicas that
    start together migrate one at a time: an advisory lock on PostgreSQL, a file lock on SQLite."""
    from alembic import command
    from alembic.config import Config

    engine = make_engine(target) if isinstance(target, str) else target
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with _sqlite_migration_lock(engine), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(715517)"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    if isinstance(target, str):
        engine.dispose()


@contextlib.contextmanager
def _sqlite_migration_lock(engine: Engine):
    """SQLite: replicas that start together migrate one at a time (a file lock beside the
    database), so none reads the old version while another is creating the tables."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    import fcntl

    with open(f"{database}.migrate.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _insert(engine: Engine, table):
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


# The events columns an ingest batch writes, with their PostgreSQL array types (Store.add_events).
_EVENT_COLUMNS = {
    "event": "text", "user_key": "text", "product_id": "text", "ts": "int8", "value": "float8",
    "request_id": "text", "idempotency_key": "text", "received_at": "int8", "flagged_reason": "text",
}  # fmt: skip
_PG_EVENTS_INSERT = text(
    f"INSERT INTO {EventRow.__tablename__} ({', '.join(_EVENT_COLUMNS)}) "
    f"SELECT * FROM unnest({', '.join(f'CAST(:{c} AS {t}[])' for c, t in _EVENT_COLUMNS.items())}) "
    "ON CONFLICT (idempotency_key) DO NOTHING RETURNING idempotency_key"
)

# Store.recent_events, by the (user_key, ts) index; `{types}` is one placeholder per event type.
_RECENT_EVENTS_SQL = (
    f"SELECT product_id, event, ts FROM {EventRow.__tablename__} "
    "WHERE user_key = {p} AND ts > {p} AND event IN ({types}) AND flagged_reason IS NULL "
    "ORDER BY ts DESC, id DESC LIMIT {p}"
)

# Store.add_served: every column but the id, in the table's order; `{p}` is the DBAPI's placeholder.
_SERVED_COLUMNS = tuple(c.name for c in ServedRow.__table__.columns if c.name != "id")
_SERVED_INSERT_SQL = f"INSERT INTO {ServedRow.__tablename__} ({', '.join(_SERVED_COLUMNS)}) VALUES ({{values}})"

PRODUCT_FIELDS = ("title", "category", "brand", "price", "attributes", "description", "in_stock", "stock")


class Store:
    """The queries serving needs, each one short transaction."""

    def __init__(self, engine: Engine):
        self.engine = engine
        # SQLite has one writer at a time; writers of one process take turns here instead of in
        # SQLite's busy handler, which sleeps in steps of up to 100 ms (the p99 of a batch).
        self._writing = threading.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        # The DBAPI's placeholder, for the few hot queries that bypass the statement layer.
        self._param = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(engine.dialect.paramstyle)
        if self._param is None:
            raise ValueError(f"online database driver {engine.dialect.driver!r}: use SQLite or PostgreSQL (psycopg)")
        self._served_sql = _SERVED_INSERT_SQL.format(values=", ".join([self._param] * len(_SERVED_COLUMNS)))

    # -- events

    def add_events(self, rows: list[dict[str, Any]]) -> set[str]:
        """Insert a batch in one transaction; rows whose idempotency key is already stored are
        skipped (ON CONFLICT DO NOTHING). Returns the keys this call stored."""
        if not rows:
            return set()
        # executemany ("insertmanyvalues": multi-row INSERTs of a cached compiled statement, still one
        # transaction); compiling one .values(rows) statement per batch cost ~10x more.
        if self.engine.dialect.name == "postgresql":
            # One statement over column arrays (unnest): PostgreSQL parses and plans it once, where
            # executemany sends ~100 rows x 9 bound values of multi-row VALUES; half the batch time.
            params = {c: [r.get(c) for r in rows] for c in _EVENT_COLUMNS}
            with self.engine.begin() as conn:
                return set(conn.execute(_PG_EVENTS_INSERT, params).scalars())
        stmt = (
            _insert(self.engine, EventRow)
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(EventRow.idempotency_key)
        )
        with self._writing, self.engine.begin() as conn:
            return set(conn.execute(stmt, rows).scalars())

    def recent_events(self, user_key: str, types: list[str], since_ms: int, limit: int) -> list[tuple[str, str, int]]:
        """(product_id, event, ts) of the user's latest unflagged events of `types` after
        `since_ms`, oldest first, `limit` at most.

        Every recommendation of a known user runs this, so it skips SQLAlchemy's statement layer:
        one fixed SQL string on a pooled DBAPI connection. `bench/store_read.py`: 17-54 us per call
        on SQLite and 310 us on PostgreSQL, where building and running the Core statement took
        375-463 us and 1,140-1,590 us."""
        if not types or limit <= 0:
            return []
        sql = _RECENT_EVENTS_SQL.format(p=self._param, types=", ".join([self._param] * len(types)))
        conn = self.engine.raw_connection()
        try:
            cur = conn.cursor()
            try:
                cur.execute(sql, (user_key, since_ms, *types, limit))
                rows = cur.fetchall()
            finally:
                cur.close()
            conn.commit()  # end the read transaction the DBAPI opened (PostgreSQL), before the pool takes it back
        finally:
            conn.close()
        return [(str(p), str(e), int(t)) for p, e, t in rows][::-1]

    @property
    def inline_reads(self) -> bool:
        """Whether a short indexed read may run on the event loop instead of in a thread: an
        embedded SQLite file in WAL mode (a reader never waits for the writer, and the thread hop
        costs more than the read); never a server database."""
        return self.engine.dialect.name == "sqlite"

    def erase_users(self, user_keys: list[str]) -> int:
        """Delete every event and served item of these pseudonyms (erasure, at once, in one
        transaction); returns how many events."""
        if not user_keys:
            return 0
        with self._writing, self.engine.begin() as conn:
            conn.execute(delete(ServedRow).where(ServedRow.user_key.in_(user_keys)))
            return int(conn.execute(delete(EventRow).where(EventRow.user_key.in_(user_keys))).rowcount or 0)

    def user_events(self, user_keys: list[str], limit: int = 10_000) -> list[dict[str, Any]]:
        """The stored events of these pseudonyms, oldest first (export)."""
        cols = (EventRow.event, EventRow.product_id, EventRow.ts, EventRow.value, EventRow.request_id,
                EventRow.received_at, EventRow.flagged_reason)  # fmt: skip
        stmt = select(*cols).where(EventRow.user_key.in_(user_keys)).order_by(EventRow.ts, EventRow.id).limit(limit)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    def count_events(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(EventRow)).scalar_one())

    # -- what was shown (online evaluation: core.store.evaluation)

    def add_served(self, rows: list[dict[str, Any]]) -> int:
        """Insert served items (`ServedRow` columns; a missing one is NULL) in one transaction;
        returns how many.

        Each answer writes k rows, so this runs at ~10x the request rate: one fixed SQL string
        and the DBAPI's executemany on a pooled connection, not SQLAlchemy's statement layer.
        `bench/store_read.py` (batches of 200, both ways in turn): 22 vs 24 us per row on SQLite,
        31 vs 37 on PostgreSQL; the rest is the database's own index upkeep."""
        if not rows:
            return 0
        params = [tuple(r.get(c) for c in _SERVED_COLUMNS) for r in rows]
        with self._writing:
            conn = self.engine.raw_connection()
            try:
                cur = conn.cursor()
                try:
                    cur.executemany(self._served_sql, params)
                finally:
                    cur.close()
                conn.commit()
            except BaseException:
                with contextlib.suppress(Exception):  # a dead connection: the original error is the one to see
                    conn.rollback()
                raise
            finally:
                conn.close()
        return len(rows)

    def count_served(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(ServedRow)).scalar_one())

    # -- products

    def get_product(self, product_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(ProductRow).where(ProductRow.product_id == product_id)).first()
        return _facts(row) if row else None

    def put_product(self, facts: dict[str, Any]) -> dict[str, Any]:
        """Create or replace a product (a deleted one comes back)."""
        values = {k: facts.get(k) for k in PRODUCT_FIELDS}
        values |= {"updated_at": now_ms(), "deleted_at": None}
        stmt = (
            _insert(self.engine, ProductRow)
            .values(product_id=facts["product_id"], **values)
            .on_conflict_do_update(index_elements=["product_id"], set_=values)
        )
        with self._writing, self.engine.begin() as conn:
            conn.execute(stmt)
        return {"product_id": facts["product_id"], **values}

    def patch_product(
        self, product_id: str, changes: dict[str, Any], base: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """Change some fields of a stored product, or of `base` (its catalog facts) when the
        database has no row for it yet. None: no such product; a deleted one is returned as is."""
        with self._writing, self.engine.begin() as conn:
            query = select(ProductRow).where(ProductRow.product_id == product_id)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()
            row = conn.execute(query).first()
            if row is not None:
                current = _facts(row)
                if current["deleted_at"] is not None:
                    return current
                values = {**changes, "updated_at": now_ms()}
                conn.execute(update(ProductRow).where(ProductRow.product_id == product_id).values(**values))
                return {**current, **values}
            if base is None:
                return None
            values = {**{k: base.get(k) for k in PRODUCT_FIELDS}, **changes, "updated_at": now_ms(), "deleted_at": None}
            stmt = (
                _insert(self.engine, ProductRow)
                .values(product_id=product_id, **values)
                .on_conflict_do_update(index_elements=["product_id"], set_=values)
            )
            conn.execute(stmt)
            return {"product_id": product_id, **values}

    def delete_product(self, product_id: str, base: dict[str, Any] | None) -> bool:
        """Soft-delete (`deleted_at` set). A catalog product with no row gets one, deleted.
        False: no such product, or already deleted."""
        stamp = now_ms()
        with self._writing, self.engine.begin() as conn:
            done = conn.execute(
                update(ProductRow)
                .where(ProductRow.product_id == product_id, ProductRow.deleted_at.is_(None))
                .values(deleted_at=stamp, updated_at=stamp)
            ).rowcount
            if done or base is None:
                return bool(done)
            exists = conn.execute(select(ProductRow.product_id).where(ProductRow.product_id == product_id)).first()
            if exists:
                return False
            values = {k: base.get(k) for k in PRODUCT_FIELDS}
            conn.execute(
                _insert(self.engine, ProductRow)
                .values(product_id=product_id, **values, updated_at=stamp, deleted_at=stamp)
                .on_conflict_do_nothing(index_elements=["product_id"])
            )
            return True

    def existing_products(self, product_ids: list[str]) -> set[str]:
        """Which of `product_ids` have a row (deleted ones included)."""
        stmt = select(ProductRow.product_id).where(ProductRow.product_id.in_(product_ids))
        with self.engine.connect() as conn:
            return set(conn.execute(stmt).scalars())

    def changed_products(self, since_ms: int) -> list[dict[str, Any]]:
        """Products written at or after `since_ms` (deleted ones included), oldest change first."""
        stmt = select(ProductRow).where(ProductRow.updated_at >= since_ms).order_by(ProductRow.updated_at)
        with self.engine.connect() as conn:
            return [_facts(r) for r in conn.execute(stmt)]

    # -- refresh watermarks

    def get_watermark(self, name: str) -> dict[str, Any] | None:
        """The `refresh_watermarks` row of consumer `name`, or None before its first run."""
        with self.engine.connect() as conn:
            row = conn.execute(select(RefreshWatermark).where(RefreshWatermark.name == name)).first()
        return dict(row._mapping) if row else None

    def set_watermark(self, name: str, products_updated_at: int) -> None:
        """Record that consumer `name` has applied every product written up to `products_updated_at` (ms)."""
        values = {"products_updated_at": int(products_updated_at), "updated_at": now_ms()}
        stmt = (
            _insert(self.engine, RefreshWatermark)
            .values(name=name, events_id=0, **values)
            .on_conflict_do_update(index_elements=["name"], set_=values)
        )
        with self._writing, self.engine.begin() as conn:
            conn.execute(stmt)


def _facts(row) -> dict[str, Any]:
    facts = dict(row._mapping)
    facts["attributes"] = facts.get("attributes") or {}
    return facts
