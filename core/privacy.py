"""Pseudonymous user ids and erasure tombstones: the one place a raw user id is turned into the id
every shard, cache, log line and prompt holds.

    shopgraph data erase-user --user-id jane.doe@example.com    # records a tombstone

A pseudonym is a keyed hash: `u_<kid>_<HMAC-SHA256(key, raw id) as 32 hex digits>` (128 bits).
The same raw id under the same key always gives the same pseudonym, so the batch pipeline and
every Serve replica agree without ever storing the raw id; without the key it cannot be
reversed or recomputed from a guessed id.

Keys. `privacy.key_env` (default SHOPGRAPH_PSEUDONYM_KEYS) holds `kid:secret[,kid:secret...]`:
the first key is current (new pseudonyms use it), the others are old keys kept for rotation.
On Kubernetes the rendered manifests fill that variable from the Secret `privacy.secret_name`
(referenced, never written). With no variable and `privacy.require_key` false (the one-command
demo), a random key is generated once under `artifacts.root` (`privacy.key_file`, mode 0600)
and reused by every stage and replica that shares the root. The environment is read when a
stage or a replica starts (`Pseudonymizer.from_config`), never at import or `.bind()` time.

Rotation. Put the new key first and keep the old one after it. Pseudonyms are one-way, so
shards written under the old key cannot be re-keyed from their contents: the next
`shopgraph data prepare` (which reads the raw sources) writes every history under the new
key, and the derived stages (splits, corpora, training, index) must be rerun after it, as
after any prepare. Until then, the ingress looks a raw id up under each configured key in turn
(current first), so histories written under the old key still serve. Tombstones are recorded under every configured key, and
`data prepare` re-records an erased user's tombstone under the current key when it meets their
rows, so an old key can be dropped after one prepare under the new one.

Tombstones. `TombstoneStore` keeps `privacy/tombstones.jsonl` under `artifacts.root`: one line
per erased user and key (`user_key`, `kid`, `erased_at`), never the raw id. `data prepare` drops
the rows of tombstoned users and counts them as `erased`; every later stage reads events through
`data.inputs.load_events`, which drops them again (shards prepared before the erasure).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import fsspec

if TYPE_CHECKING:
    import pyarrow as pa

    from core.config import ShopgraphConfig

KID = re.compile(r"^[a-z0-9]{1,12}$")
MIN_SECRET_CHARS = 16
HEX_DIGITS = 32  # 128 bits of the HMAC
PSEUDONYM = re.compile(rf"^u_([a-z0-9]{{1,12}})_([0-9a-f]{{{HEX_DIGITS}}})$")


class PrivacyError(ValueError):
    """The pseudonym keys cannot be used; the message says which setting to change."""


@dataclass(frozen=True)
class Key:
    kid: str
    secret: bytes

    def __repr__(self) -> str:  # never print the secret
        return f"Key(kid={self.kid!r})"


def parse_keys(text: str, source: str) -> list[Key]:
    """`kid:secret[,kid:secret...]` -> keys, first = current; errors name `source`."""
    keys: list[Key] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        kid, sep, secret = part.partition(":")
        kid = kid.strip()
        if not sep or not KID.match(kid):
            raise PrivacyError(
                f"{source}: each entry must be 'kid:secret' with a kid of 1-12 lowercase letters or digits "
                f"(e.g. 'k2:<64 hex digits>,k1:<old secret>'); got an entry starting {part[:4]!r}..."
            )
        if len(secret.strip()) < MIN_SECRET_CHARS:
            raise PrivacyError(
                f"{source}: the secret of key {kid!r} has {len(secret.strip())} characters; use at least "
                f"{MIN_SECRET_CHARS} (e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)"
            )
        if any(k.kid == kid for k in keys):
            raise PrivacyError(f"{source}: key id {kid!r} appears twice; give each key its own kid")
        keys.append(Key(kid, secret.strip().encode("utf-8")))
    if not keys:
        raise PrivacyError(f"{source} is empty; set it to 'kid:secret' (e.g. 'k1:<64 hex digits>')")
    return keys


class Pseudonymizer:
    """Raw user id -> pseudonym under the current key (`user_key`), or under every key.

    Pickles with its keys (it crosses into Ray Data tasks as an argument, never as a global).
    """

    def __init__(self, keys: list[Key]):
        if not keys:
            raise PrivacyError("a Pseudonymizer needs at least one key")
        self.keys = list(keys)
        self.current = keys[0]

    def __repr__(self) -> str:
        return f"Pseudonymizer(current={self.current.kid!r}, kids={[k.kid for k in self.keys]})"

    def __getstate__(self) -> dict:
        return {"keys": self.keys}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["keys"])

    @property
    def kids(self) -> list[str]:
        return [k.kid for k in self.keys]

    @staticmethod
    def _hash(key: Key, raw: str) -> str:
        digest = hmac.new(key.secret, raw.encode("utf-8"), hashlib.sha256).hexdigest()
        return f"u_{key.kid}_{digest[:HEX_DIGITS]}"

    def user_key(self, raw: str) -> str:
        """The pseudonym of `raw` under the current key: the only user id anything stores.

        Events written to the online store are keyed by this too. Nothing is memoized here,
        so a long-lived process (a Serve replica) holds no table of raw ids; batch callers dedupe
        per chunk (`column`, the readers' row builder)."""
        return self._hash(self.current, raw)

    def all_keys(self, raw: str) -> dict[str, str]:
        """kid -> pseudonym of `raw` under every configured key (current first): for tombstones and
        for lookups during a rotation."""
        return {k.kid: (self.user_key(raw) if k is self.current else self._hash(k, raw)) for k in self.keys}

    def is_pseudonym(self, value: str) -> bool:
        """`value` is shaped like a pseudonym of one of the configured keys."""
        m = PSEUDONYM.match(value)
        return bool(m) and m.group(1) in self.kids

    def column(self, raw: pa.Array | pa.ChunkedArray) -> pa.Array:
        """A string column of raw ids -> their pseudonyms (each distinct id hashed once)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        encoded = pc.dictionary_encode(raw)
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.combine_chunks()
        names = pa.array([None if v is None else self.user_key(v) for v in encoded.dictionary.to_pylist()], pa.string())
        return pc.take(names, encoded.indices)

    # -- construction

    @classmethod
    def from_config(cls, cfg: ShopgraphConfig) -> Pseudonymizer:
        """Keys from `privacy.key_env`, else (unless `privacy.require_key`) the generated demo key
        under `artifacts.root`, created on first use. Call when a stage or replica starts."""
        p = cfg.privacy
        text = os.environ.get(p.key_env)
        if text is not None and text.strip():
            return cls(parse_keys(text, f"${p.key_env}"))
        if p.require_key:
            raise PrivacyError(
                f"${p.key_env} is not set and privacy.require_key is true; put 'kid:secret' in it "
                f"(on Kubernetes: create the Secret '{p.secret_name}' with key '{p.secret_key}'), "
                "or set privacy.require_key=false to use a generated key under artifacts.root"
            )
        return cls(load_or_create_key_file(join(cfg.artifacts.root, p.key_file)))


def join(root: str, relative: str) -> str:
    return "/".join([root.rstrip("/"), relative.lstrip("/")])


def load_or_create_key_file(path: str) -> list[Key]:
    """The demo key at `path` (`kid:secret`), created once with a random 256-bit secret. A local file
    is created exclusively with mode 0600, so two processes starting together agree on one key."""
    fs, fpath = fsspec.core.url_to_fs(path)
    local = fs.protocol in ("file", "local", ("file", "local"))
    if not fs.exists(fpath):
        line = f"d1:{secrets.token_hex(32)}\n"
        if local:
            os.makedirs(os.path.dirname(fpath) or ".", exist_ok=True)
            try:
                fd = os.open(fpath, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process won the race: use its key
            else:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(line)
        else:  # object stores have no modes; access is the bucket's policy
            with fs.open(fpath, "w", encoding="utf-8") as f:
                f.write(line)
    with fs.open(fpath, "r", encoding="utf-8") as f:
        return parse_keys(f.read(), f"key file {path}")


@dataclass(frozen=True)
class IngestPrivacy:
    """What a parse task needs: the keys, and the tombstoned pseudonyms (any kid)."""

    pseudonymizer: Pseudonymizer
    tombstones: frozenset[str]

    def erased(self, raw: str) -> bool:
        return bool(self.tombstones) and any(k in self.tombstones for k in self.pseudonymizer.all_keys(raw).values())


# ------------------------------------------------------------------------------------- tombstones


_WRITE_LOCK = threading.Lock()  # flock is per open file: threads of one process take turns here first


class TombstoneStore:
    """Erased users by pseudonym (`privacy/tombstones.jsonl` under `artifacts.root`): one JSON line
    per user and key, `{"user_key", "kid", "erased_at"}`, never a raw id. Reads are cached and
    refreshed at most every `refresh_s` seconds (0 = on every call), so erasures recorded by
    another process show up."""

    RELATIVE = "privacy/tombstones.jsonl"

    def __init__(self, root: str, refresh_s: float = 0.0):
        self.path = join(root, self.RELATIVE)
        self.refresh_s = refresh_s
        self._keys: set[str] = set()  # the file's keys and this process's own, merged
        self._loaded_at = -1.0
        self._local: set[str] = set()  # recorded by this process (seen before any re-read)

    def _fs(self):
        return fsspec.core.url_to_fs(self.path)

    def _read(self) -> list[dict]:
        fs, path = self._fs()
        if not fs.exists(path):
            return []
        with fs.open(path, "r", encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def keys(self) -> set[str]:
        """Every tombstoned pseudonym (any kid)."""
        now = time.monotonic()
        if self._loaded_at < 0 or now - self._loaded_at >= self.refresh_s:
            self._keys = {r["user_key"] for r in self._read()} | self._local
            self._loaded_at = now
        return self._keys

    def erased(self, user_key: str) -> bool:
        return user_key in self.keys()

    def add(self, pseudonyms: dict[str, str] | Iterable[tuple[str, str]]) -> int:
        """Record kid -> pseudonym pairs not yet recorded; returns how many were new. The file is
        rewritten whole (object stores cannot append) through a temporary name."""
        pairs = list(pseudonyms.items() if isinstance(pseudonyms, dict) else pseudonyms)
        with self._writer():
            new = self._add(pairs)
        self._local |= {key for _, key in pairs}
        self._keys |= {key for _, key in pairs}
        return new

    @contextlib.contextmanager
    def _writer(self):
        """One writer at a time on a local or mounted root (an flock across processes and replicas
        on one filesystem): two erasures at the same instant would otherwise each rewrite the file
        from the same read and lose one line. Object stores have no lock: last writer wins there."""
        fs, path = self._fs()
        if "file" not in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
            yield
            return
        import fcntl

        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with _WRITE_LOCK, open(f"{path}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _add(self, pairs: list[tuple[str, str]]) -> int:
        rows = self._read()
        have = {r["user_key"] for r in rows}
        when = datetime.now(UTC).isoformat(timespec="seconds")
        new = [{"user_key": key, "kid": kid, "erased_at": when} for kid, key in pairs if key not in have]
        if new:
            fs, path = self._fs()
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            tmp = f"{path}.tmp-{secrets.token_hex(4)}"
            with fs.open(tmp, "w", encoding="utf-8") as f:
                for r in rows + new:
                    f.write(json.dumps(r) + "\n")
            fs.mv(tmp, path)
        return len(new)

    def status(self, pseudonyms: Iterable[str]) -> dict | None:
        """The tombstone row of the first of `pseudonyms` found, or None."""
        wanted = set(pseudonyms)
        return next((r for r in self._read() if r["user_key"] in wanted), None)


def erase_user(cfg: ShopgraphConfig, raw_user_id: str) -> dict:
    """`shopgraph data erase-user`: tombstone `raw_user_id` under every configured key. Returns what
    was recorded (pseudonyms only). Shards already written keep the rows until the next
    `data prepare`; every stage reading events (`data.inputs.load_events`) skips them at once."""
    raw = raw_user_id.strip()
    if not raw:
        raise ValueError("--user-id is empty; pass the raw user id to erase, e.g. --user-id jane.doe@example.com")
    pz = Pseudonymizer.from_config(cfg)
    keys = pz.all_keys(raw)
    new = TombstoneStore(cfg.artifacts.root).add(keys)
    return {"user_key": pz.user_key(raw), "kids": list(keys), "new_tombstones": new}


# ------------------------------------------------------------------------------------- online store seam


class UserDataStore:
    """The online database's part of erasure and export (seam for `core.store`).

    The ingress calls `erase(user_keys)` on `DELETE /v1/users/{id}` after recording the tombstone,
    and `export(user_keys)` on `GET /v1/users/{id}/export`; `user_keys` are the user's pseudonyms
    under every configured key (current first). This default holds nothing: until the store is
    wired in (`Ingress._setup(..., user_store=...)`), both say so in their answer."""

    name = "none"

    async def erase(self, user_keys: list[str]) -> dict:
        return {"store": self.name, "events_deleted": 0, "profile_deleted": False}

    async def export(self, user_keys: list[str]) -> dict:
        return {"store": self.name, "events": [], "profile": None}
