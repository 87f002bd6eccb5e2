"""serve.http.proxy: the Serve settings Ray reads at start-up, for local Ray and KubeRay pods."""

from __future__ import annotations

import pytest

from core.config import ConfigError, load_config
from core.runtime import use_serve_env

HA_KEYS = {"RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_THROUGHPUT_OPTIMIZED"}


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


def test_local_ray_gets_the_env_and_the_users_own_values_win(monkeypatch):
    for key in (*HA_KEYS, "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "12")
    use_serve_env(load_config(overrides=[]))
    import os

    assert os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert os.environ["RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"] == "12"


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
