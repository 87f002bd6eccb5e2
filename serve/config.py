"""Typed config of the serving section (`serve:` in the YAML). Unknown keys are rejected."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class HttpConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Address the Serve HTTP proxy binds; 0.0.0.0 inside a cluster.")
    port: int = Field(8000, ge=1, le=65535, description="Port of the Serve HTTP proxy.")


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    http: HttpConfig = Field(default_factory=HttpConfig, description="Serve HTTP proxy address.")
