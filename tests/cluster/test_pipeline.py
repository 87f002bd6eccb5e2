"""The demo pipeline's rerun decisions and the demo console.

    python -m pytest -q tests/cluster/test_pipeline.py

Fast tests check the build-record logic (cluster.fingerprint) and the console's log redirect
(cluster.console, the `demo --verbose` switch). The slow ones run the real pipeline on a copy
of the session's small artifact root: unchanged or serving-only config -> nothing reruns; a
changed sample size -> prepare and every stage downstream rerun, each saying why.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import subprocess
import sys

import pytest

from cluster.fingerprint import build_record, changed_keys, config_parts, stale_reasons

STAGES = (
    "data prepare",
    "data split",
    "data corpus",
    "data embed-products",
    "data index",
    "train recommender",
    "train ranker",
    "train sentiment",
)


def _record(num_products: int = 800, events: str = "a" * 64, version: str = "0.1.0") -> dict:
    config = {"data.sample": {"num_products": num_products, "num_users": 400}, "data.sources": [], "data.seed": 0}
    return build_record(config, {"data/events": events}, version)


def test_same_parts_same_fingerprint_and_no_reasons():
    assert _record() == _record()
    assert stale_reasons(_record(), _record()) == []


def test_reasons_name_the_changed_key_input_and_version():
    assert stale_reasons(_record(), _record(num_products=900)) == ["data.sample.num_products changed"]
    assert stale_reasons(_record(), _record(events="b" * 64)) == ["input data/events changed"]
    assert stale_reasons(_record(), _record(version="0.2.0")) == ["shopgraph 0.1.0 -> 0.2.0"]
    assert stale_reasons(None, _record())[0].startswith("no build record")


def test_changed_keys_treats_lists_as_one_value():
    old = {"sources": [{"name": "a", "path": "x.csv"}], "sample": {"seed": 1}}
    new = {"sources": [{"name": "a", "path": "y.csv"}], "sample": {"seed": 1}}
    assert changed_keys(old, new, "data") == ["data.sources"]


def test_config_parts_reads_dotted_paths_and_rejects_unknown_ones():
    dumped = {"data": {"seed": 3, "sample": {"num_products": 10}}}
    assert config_parts(dumped, ["data.seed", "data.sample"]) == {"data.seed": 3, "data.sample": {"num_products": 10}}
    with pytest.raises(KeyError, match="data.nope"):
        config_parts(dumped, ["data.nope"])


def test_no_stage_depends_on_serving_or_placement_keys():
    from cluster.pipeline import stages
    from core.config import load_config

    cfg = load_config(None, [])
    dumped = cfg.model_dump(mode="json")
    for stage in stages(cfg):
        config_parts(dumped, stage.config)  # every key exists
        assert not [k for k in stage.config if k.split(".")[0] in ("serve", "cluster", "artifacts")], stage.name
    assert [s.name for s in stages(cfg)] == list(STAGES)


def test_prepare_record_follows_the_raw_source_files(tmp_path):
    from cluster.pipeline import build_record_of, stages
    from core.config import load_config

    raw = tmp_path / "seq.txt"
    raw.write_text("1 2 3\n2 3 4\n")
    source = f"data.sources=[{{name: toys, format: user_item_sequences, path: {raw}, table: events}}]"
    cfg = load_config(None, [f"artifacts.root={tmp_path / 'artifacts'}", source])
    prepare = stages(cfg)[0]
    before = build_record_of(prepare, cfg)
    assert build_record_of(prepare, cfg) == before
    raw.write_text("1 2 3\n2 3 4\n3 4 5\n")
    assert stale_reasons(before, build_record_of(prepare, cfg)) == ["input source toys changed"]


def _fd_streams(monkeypatch) -> None:
    """sys.stdout/sys.stderr writing to fds 1 and 2, as in a real process (capfd swaps in its own files)."""
    for name, fd in (("stdout", 1), ("stderr", 2)):
        monkeypatch.setattr(sys, name, io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), line_buffering=True))


def _demo(root, *, verbose: bool) -> None:
    import cluster.cli

    cluster.cli.demo(
        config=None,
        set_=[f"artifacts.root={root}"],
        exit_after_requests=True,
        fresh=False,
        engine="vllm",
        verbose=verbose,
    )


def _noisy_demo(cfg, console, **_):
    """Stands in for the demo body: its own line, plus what engines and workers write."""
    console.say("our progress line")
    os.write(1, b"INFO 01-01 00:00:00 [config.py:1] engine config: " + b"x" * 4000 + b"\n")
    subprocess.run(["sh", "-c", "echo OMP: thread binding from a child process >&2"], check=True)
    print("print from the driver")
    logging.getLogger("vllm.test").warning("a library warning")


@pytest.mark.parametrize("verbose", [False, True])
def test_demo_console_sends_engine_output_to_the_log_unless_verbose(tmp_path, monkeypatch, capfd, verbose):
    import cluster.cli

    _fd_streams(monkeypatch)
    logging.getLogger("vllm.test").addHandler(handler := logging.StreamHandler())  # bound to sys.stderr, fd 2
    monkeypatch.setattr(cluster.cli, "_run_demo", _noisy_demo)
    try:
        _demo(tmp_path, verbose=verbose)
    finally:
        logging.getLogger("vllm.test").removeHandler(handler)
    captured = capfd.readouterr()
    terminal = captured.out + captured.err
    logs = list((tmp_path / "logs").glob("demo-*.log"))
    assert "our progress line" in captured.out
    if verbose:
        assert not logs
        for noise in ("engine config", "OMP: thread binding", "print from the driver", "a library warning"):
            assert noise in terminal
        return
    assert len(logs) == 1 and f"logs: {logs[0]}" in captured.out
    assert max(len(line) for line in terminal.splitlines()) < 300
    assert "OMP" not in terminal and "print from" not in terminal and "warning" not in terminal
    log = logs[0].read_text()
    for noise in ("engine config", "OMP: thread binding", "print from the driver", "a library warning"):
        assert noise in log


def test_demo_failure_says_what_failed_and_where_the_traceback_is(tmp_path, monkeypatch, capfd):
    import typer

    import cluster.cli

    def broken(cfg, console, **_):
        raise RuntimeError("no complete events shard set\nsecond line of detail")

    _fd_streams(monkeypatch)
    monkeypatch.setattr(cluster.cli, "_run_demo", broken)
    with pytest.raises(typer.Exit) as exc:
        _demo(tmp_path, verbose=False)
    assert exc.value.exit_code == 1
    out = capfd.readouterr().out
    assert "error: RuntimeError: no complete events shard set" in out and "second line" not in out
    (log,) = (tmp_path / "logs").glob("demo-*.log")
    assert "Traceback" in log.read_text() and str(log) in out


# -- the real pipeline -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    """One Ray instance for this module's pipeline runs (started by the first run, stopped here)."""
    import ray

    yield
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def artifact_copy(serving_artifacts, local_ray, tmp_path) -> list[str]:
    """A private copy of the session's small artifact root (build records included); its overrides."""
    source = next(o.split("=", 1)[1] for o in serving_artifacts if o.startswith("artifacts.root="))
    shutil.copytree(source, tmp_path / "artifacts")
    kept = [o for o in serving_artifacts if not o.startswith("artifacts.root=")]
    return [*kept, f"artifacts.root={tmp_path / 'artifacts'}"]


def _run(overrides: list[str]) -> tuple[dict[str, float], str]:
    from cluster.pipeline import run_pipeline
    from core.config import load_config

    lines: list[str] = []
    timings = run_pipeline(load_config(None, overrides), echo=lines.append)
    return timings, "\n".join(lines)


@pytest.mark.slow
def test_unchanged_or_serving_only_config_reruns_nothing(artifact_copy):
    for extra in ([], ["serve.budgets.page_ms=1234", "serve.http.port=8999", "cluster.ray.num_cpus=1"]):
        timings, out = _run([*artifact_copy, *extra])
        assert timings == {}, out
        for stage in STAGES:
            assert re.search(rf"^  {stage}\s+up to date", out, re.MULTILINE), out


@pytest.mark.slow
def test_changed_sample_reruns_prepare_and_everything_downstream_saying_why(artifact_copy):
    cheaper = [
        "data.sample.num_users=200",
        "data.sample.num_events=5000",
        "train.recommender.epochs=2",
        "train.ranker.epochs=1",
    ]
    changed = [*artifact_copy, "data.sample.num_products=600", *cheaper]
    timings, out = _run(changed)
    assert list(timings) == list(STAGES), out
    sample = "data.sample.num_events, data.sample.num_products, data.sample.num_users"
    assert f"data prepare           rebuilding: {sample} changed" in out
    assert "data split             rebuilding: input data/events changed" in out
    assert re.search(r"data embed-products\s+rebuilding: input data/id_maps, data/products changed", out), out
    assert "data index             rebuilding: input data/embeddings changed" in out
    recommender = "train.recommender.epochs changed; input data/id_maps, data/products, data/splits changed"
    assert re.search(rf"train recommender\s+rebuilding: {recommender}", out), out
    assert re.search(r"train ranker\s+rebuilding: train.ranker.epochs changed; input .*models/recommender", out), out
    timings, out = _run(changed)  # and now it is up to date
    assert timings == {}, out
