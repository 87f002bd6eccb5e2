"""serve.http.proxy: the Serve settings Ray reads at start-up, for local Ray and KubeRay pods."""

from __future__ import annotations

import pytest

from core.config import ConfigError, load_config
from core.runtime import use_serve_env

HA_KEYS = {"RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_THROUGHPUT_OPTIMIZED"}


@pytest.fixture
def serve_env():
    """This process's environment and what `use_serve_env` recorded, put back as they were after the test."""
    import os

    from core import runtime

    environ, ours = dict(os.environ), dict(runtime._SERVE_ENV_SET)
    for key in (*HA_KEYS, "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "RAY_SERVE_HAPROXY_RETRY_ON"):
        os.environ.pop(key, None)
    runtime._SERVE_ENV_SET.clear()
    yield
    os.environ.clear()
    os.environ.update(environ)
    runtime._SERVE_ENV_SET.clear()
    runtime._SERVE_ENV_SET.update(ours)


def test_haproxy_is_the_default_and_sets_throughput_mode():
    env = load_config(overrides=[]).serve.http.ray_env()
    assert {k: env[k] for k in HA_KEYS} == {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}


def test_ray_proxy_leaves_serve_defaults():
    env = load_config(overrides=["serve.http.proxy=ray"]).serve.http.ray_env()
    assert not HA_KEYS & set(env)
    assert env["RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"] == "30"


def test_unknown_proxy_is_a_config_error():
    with pytest.raises(ConfigError, match="serve.http.proxy"):
        load_config(overrides=["serve.http.proxy=nginx"])


def test_local_ray_gets_the_env_and_the_users_own_values_win(serve_env, monkeypatch):
    monkeypatch.setenv("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "12")
    use_serve_env(load_config(overrides=[]))
    import os

    assert os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert os.environ["RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"] == "12"


def test_a_second_config_replaces_what_the_first_set_but_never_the_users(serve_env, monkeypatch, tmp_path):
    """One process starting Ray twice (a test session, a benchmark's several clusters): the
    HAProxy settings the first config put there must not pass for the user's own and turn the
    second cluster's Serve proxies into HAProxies; a value the user exported still wins."""
    import os

    from cluster.local import head_env
    from core.runtime import user_environ

    use_serve_env(load_config(overrides=[]))  # haproxy
    assert os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert "RAY_SERVE_ENABLE_HA_PROXY" not in user_environ()
    ray_proxy = load_config(overrides=["serve.http.proxy=ray"])
    nodes = head_env(ray_proxy.serve.http.ray_env(), "disabled", tmp_path)
    assert not set(HA_KEYS) & set(nodes)  # the nodes of a ray-proxy cluster get no HAProxy settings
    use_serve_env(ray_proxy)
    assert not set(HA_KEYS) & set(os.environ)  # removed, not left behind
    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "1")  # the user's choice, over the config's
    use_serve_env(ray_proxy)
    assert os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert head_env(ray_proxy.serve.http.ray_env(), "disabled", tmp_path)["RAY_SERVE_ENABLE_HA_PROXY"] == "1"


def test_rendered_pods_carry_the_env():
    from cluster.manifests import ray_service

    spec = ray_service(load_config("configs/gpu-cluster.yaml", []))["spec"]["rayClusterConfig"]
    for template in [spec["headGroupSpec"]["template"], *(g["template"] for g in spec["workerGroupSpecs"])]:
        env = template["spec"]["containers"][0]["env"]
        assert {"name": "RAY_SERVE_ENABLE_HA_PROXY", "value": "1"} in env
        assert {"name": "RAY_SERVE_HAPROXY_RETRY_ON", "value": "conn-failure empty-response"} in env


def test_haproxy_replays_requests_whose_replica_died_unless_told_otherwise():
    assert load_config(overrides=[]).serve.http.ray_env()["RAY_SERVE_HAPROXY_RETRY_ON"] == "conn-failure empty-response"
    env = load_config(overrides=["serve.http.retry_on=conn-failure  503"]).serve.http.ray_env()
    assert env["RAY_SERVE_HAPROXY_RETRY_ON"] == "conn-failure 503"
    assert "RAY_SERVE_HAPROXY_RETRY_ON" not in load_config(overrides=["serve.http.proxy=ray"]).serve.http.ray_env()


@pytest.mark.parametrize("value", ["", "conn-failure bogus", "none conn-failure", "418"])
def test_a_retry_on_haproxy_would_reject_is_a_config_error(value):
    with pytest.raises(ConfigError, match="serve.http.retry_on"):
        load_config(overrides=[f"serve.http.retry_on={value}"])


def test_a_stopping_replica_drains_2_s_on_one_machine_and_30_s_on_the_cluster_profile():
    """Ray's 30 s direct-ingress drain made every `serve shutdown`, redeploy and scale-down on one
    machine wait 30 s for a load balancer that is Serve's own HAProxy."""
    from core.config import profile_path

    key = "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"
    assert load_config(overrides=[]).serve.http.ray_env()[key] == "2"
    assert load_config(profile_path("gpu-cluster")).serve.http.ray_env()[key] == "30"
    assert load_config(overrides=["serve.http.drain_s=0.5"]).serve.http.ray_env()[key] == "0.5"
    assert key not in load_config(overrides=["serve.http.proxy=ray"]).serve.http.ray_env()


@pytest.mark.parametrize("value", ["0", "-1", "soon", "601"])
def test_a_drain_time_serve_cannot_use_is_a_config_error(value):
    with pytest.raises(ConfigError, match="serve.http.drain_s"):
        load_config(overrides=[f"serve.http.drain_s={value}"])
