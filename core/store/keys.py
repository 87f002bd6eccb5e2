"""Bearer API keys for the write routes: only the sha256 of each token is configured.

    python -m core.store.keys --name shop --scopes events:write,catalog:write

prints a new token (give it to the client, once) and the `online.api_keys` entry with its hash
(or the `SHOPGRAPH_API_KEYS` form). A presented token is hashed and compared with every
configured hash with `hmac.compare_digest`.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass

SCOPES = ("events:write", "catalog:write", "users:erase", "admin")
HOW_TO = (
    "mint a key with `python -m core.store.keys --name <who> --scopes <scope,...>` and add the printed entry "
    "to online.api_keys in the config (or to the SHOPGRAPH_API_KEYS environment variable of the Serve processes)"
)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def mint() -> str:
    return "sgk_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ApiKey:
    name: str
    sha256: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


def parse_env_keys(text: str, env_name: str) -> list[ApiKey]:
    """'name:sha256:scope+scope,name2:...' -> keys; a malformed entry is an error naming it."""
    keys = []
    for n, entry in enumerate(p.strip() for p in text.split(",")):
        if not entry:
            continue
        parts = entry.split(":", 2)
        bad = len(parts) != 3 or len(parts[1]) != 64 or any(c not in "0123456789abcdef" for c in parts[1])
        scopes = parts[2].split("+") if len(parts) == 3 else []
        if bad or not scopes or any(s not in SCOPES for s in scopes):
            raise ValueError(
                f"{env_name} entry {n + 1} is not 'name:<64 hex sha256>:scope+scope' with scopes from {', '.join(SCOPES)}"
            )
        keys.append(ApiKey(parts[0], parts[1], frozenset(scopes)))
    return keys


class KeyRing:
    """The keys one replica accepts: config first, then the environment (read at replica start)."""

    def __init__(self, keys: list[ApiKey]):
        self.keys = keys

    @classmethod
    def from_config(cls, online) -> KeyRing:
        keys = [ApiKey(k.name, k.sha256, frozenset(k.scopes)) for k in online.api_keys]
        keys += parse_env_keys(os.environ.get(online.api_keys_env, ""), online.api_keys_env)
        return cls(keys)

    def find(self, token: str) -> ApiKey | None:
        """The key whose hash matches; every configured hash is compared (constant time each)."""
        digest = token_hash(token)
        found = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.sha256):
                found = key
        return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Mint a shopgraph API key and print the hash to configure.")
    parser.add_argument("--name", required=True, help="who holds the key, e.g. shop-frontend")
    parser.add_argument("--scopes", required=True, help=f"comma-separated, from {', '.join(SCOPES)}")
    args = parser.parse_args(argv)
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        parser.error(f"--scopes {args.scopes!r}: use one or more of {', '.join(SCOPES)}")
    if not args.name or any(c in args.name for c in ":,"):
        parser.error("--name must be non-empty without ':' or ','")
    token = mint()
    digest = token_hash(token)
    print(f"token (give it to the client; it is not stored anywhere): {token}")
    print("config (online.api_keys):")
    print(f"  - {{name: {args.name}, sha256: {digest}, scopes: [{', '.join(scopes)}]}}")
    print(f"or environment: SHOPGRAPH_API_KEYS={args.name}:{digest}:{'+'.join(scopes)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
