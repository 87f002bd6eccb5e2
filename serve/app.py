"""The shopgraph Serve application: HTTP ingress -> retriever -> ranker -> generator.

    serve run serve.app:build_app config_path=configs/local.yaml
    shopgraph serve run                                  # the same, with a printed URL

`build_app(args)` is the only entry point (serve run, serve deploy, the demo, the RayService
manifest): it validates `args`, loads and validates the shopgraph config, logs the merged
deployment options once, and binds Ingress(Retriever, Ranker, Generator).

The package by role: `serve.app` (this: arguments and the builder), `serve.http` (the FastAPI
app, OpenAI-style errors, body limits), `serve.deployments` (retriever and ranker deployments
with their typed payloads), `serve.ingress` (the HTTP routes and the request flow),
`serve.generator` / `serve.engine` (the generator deployment and its engines),
`serve.content` (content cache, precomputed pages and reasons), `serve.resilience` (circuit
breakers, health probes, the background generation queue), `serve.catalog`,
`serve.recommend` (the retrieval and ranking cores), `serve.page` (the demo HTML page).
"""

from __future__ import annotations

import json
import logging
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from ray import serve

log = logging.getLogger("shopgraph.serve")


class AppArgs(BaseModel):
    """What `serve run serve.app:build_app key=value ...` and serveConfigV2 `args` may pass."""

    model_config = ConfigDict(extra="forbid")

    config_path: str | None = Field(None, description="shopgraph YAML config; default configs/local.yaml.")
    overrides: list[str] = Field(default_factory=list, description="`dotted.key=value` overrides, as --set on the CLI.")
    engine: Literal["vllm", "fake", "none"] = Field(
        "vllm", description="Generator engine: vllm (production), fake (tests), none (template copy only)."
    )
    fake_respond: str = Field(
        "serve.testing:echo_facts", description="module:function producing fake completions (engine=fake)."
    )
    fake_delay_s: float = Field(0.0, ge=0, description="Per-completion delay of the fake engine.")
    fake_fail: bool = Field(False, description="Make the fake engine fail every call.")

    def load_config(self):
        """The validated shopgraph config these arguments name (each replica loads its own)."""
        from core.config import load_config

        return load_config(self.config_path, self.overrides)


def build_app(args: dict) -> serve.Application:
    """Validate args and config, then bind Ingress(Retriever, Ranker, Generator)."""
    from serve.content import generator_model_dir, generator_version
    from serve.deployments import Ranker, Retriever
    from serve.ingress import Ingress

    parsed = AppArgs(**args)
    cfg = parsed.load_config()
    deps = cfg.serve.deployments
    plain = parsed.model_dump()
    log.info(
        "shopgraph serve: %s",
        json.dumps({name: getattr(deps, name).options() for name in ("ingress", "retriever", "ranker", "generator")}),
    )
    retriever = Retriever.options(**deps.retriever.options()).bind(plain)
    ranker = Ranker.options(**deps.ranker.options()).bind(plain)
    generator = None
    if parsed.engine != "none" and cfg.serve.generation.enabled:
        from serve.catalog import load_catalog
        from serve.generator import Generator

        if parsed.engine == "vllm":
            model_dir = generator_model_dir(cfg)
            spec = {
                "kind": "vllm",
                "model_dir": str(model_dir),
                "model_version": generator_version(cfg),
                "config_path": parsed.config_path,
                "overrides": parsed.overrides,
            }
        else:
            spec = {
                "kind": "fake",
                "respond": parsed.fake_respond,
                "delay_s": parsed.fake_delay_s,
                "fail": parsed.fake_fail,
                "model_version": generator_version(cfg),
            }
        brands = sorted({p.brand for p in load_catalog(cfg).products.values() if p.brand})
        generator = Generator.options(**deps.generator.options()).bind(spec, cfg.serve.generation.model_dump(), brands)
    return Ingress.options(**deps.ingress.options()).bind(plain, retriever, ranker, generator)
