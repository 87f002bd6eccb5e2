"""Typed config of the privacy section (`privacy:` in the YAML): pseudonym keys and erasure.

    shopgraph cluster show-config --set privacy.key_env=MY_KEYS

See core/privacy.py for what the keys do and how rotation works.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class PrivacyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key_env: str = Field(
        "SHOPGRAPH_PSEUDONYM_KEYS",
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="Environment variable holding the pseudonym keys as 'kid:secret[,kid:secret...]' (first = current, the rest only for rotation). Read when a stage or a Serve replica starts, never at import.",
    )
    key_file: str = Field(
        "privacy/pseudonym.key",
        description="Path under artifacts.root of the generated demo key, used only when the environment variable is unset and require_key is false: created once (mode 0600) and reused by every stage and replica that shares artifacts.root.",
    )
    require_key: bool = Field(
        False,
        description="Refuse to start when the environment variable is unset (no generated key); true on clusters, where the key comes from a Kubernetes Secret.",
    )
    secret_name: str = Field(
        "shopgraph-pseudonym-keys",
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="Kubernetes Secret whose `secret_key` entry rendered manifests put into key_env (referenced with secretKeyRef, never written).",
    )
    secret_key: str = Field("keys", description="Key inside secret_name whose value is the key list.")
    accept_pseudonyms: bool = Field(
        True,
        description="The API takes an id already shaped like a pseudonym of a configured key ('u_<kid>_<32 hex>') as that pseudonym instead of hashing it again: evaluation and operators' tools replay users from shards, which hold only pseudonyms.",
    )
    tombstone_refresh_s: float = Field(
        5.0,
        ge=0,
        description="How often an ingress replica re-reads the tombstone file, so an erasure recorded by another replica or by `shopgraph data erase-user` takes effect there too; 0 = on every request.",
    )
    allow_unauthenticated_admin: bool = Field(
        False,
        description="Let requests without credentials call the admin routes (DELETE /v1/users/{id}, GET /v1/users/{id}/export). Off: they answer 401 until API keys are configured. Only for a demo on a trusted machine.",
    )
