"""The typed config: shipped profiles parse, bad keys and values fail early and say what to change."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from core.config import CONFIG_DIR, PROFILES, ConfigError, ShopgraphConfig, load_config, profile_path


@pytest.mark.parametrize("profile", PROFILES)
def test_every_shipped_profile_parses(profile):
    config = load_config(profile_path(profile))
    assert config.profile == profile


def test_every_yaml_in_configs_is_a_shipped_profile():
    assert sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")) == sorted(PROFILES)


def test_local_profile_equals_the_defaults():
    # An installed wheel has no configs/ and runs on the defaults; they must be the same thing.
    assert load_config(profile_path("local")) == ShopgraphConfig()


def test_profiles_write_every_key_explicitly():
    """A reader of configs/*.yaml sees every setting; nothing hides in code defaults."""

    def keys(model: type[BaseModel], prefix: str = "") -> set[str]:
        out = set()
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                out |= keys(ann, f"{prefix}{name}.")
            else:
                out.add(prefix + name)
        return out

    def flatten(tree: dict, prefix: str = "") -> set[str]:
        out = set()
        for k, v in tree.items():
            out |= flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
        return out

    local = flatten(yaml.safe_load(profile_path("local").read_text()))
    assert keys(ShopgraphConfig) - local == {"models.engine.gpu_memory_utilization"}


def _all_fields(model: type[BaseModel], seen: set | None = None):
    seen = seen if seen is not None else set()
    if model in seen:
        return
    seen.add(model)
    for name, field in model.model_fields.items():
        yield model, name, field
        for arg in (field.annotation, *typing.get_args(field.annotation)):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                yield from _all_fields(arg, seen)


def test_every_field_has_a_description_and_models_reject_unknown_keys():
    for model, name, field in _all_fields(ShopgraphConfig):
        assert field.description, f"{model.__name__}.{name} has no description"
        assert model.model_config.get("extra") == "forbid", f"{model.__name__} accepts unknown keys"


def test_unknown_key_in_yaml_names_key_file_and_valid_keys(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  embedding:\n    batch_sise: 8\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "data.embedding.batch_sise: unknown key" in msg
    assert str(path) in msg
    assert "batch_size" in msg  # the key the user probably meant


def test_wrong_value_names_key_value_and_flag():
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["serve.http.port=0"])
    msg = str(err.value)
    assert "serve.http.port" in msg and "got 0" in msg and "--set serve.http.port" in msg


def test_several_errors_are_reported_together():
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["train.scaling.num_workers=0", "models.engine.dtype=int8"])
    msg = str(err.value)
    assert "train.scaling.num_workers" in msg and "models.engine.dtype" in msg


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.seed", "expected KEY=VALUE"),
        ("=3", "expected KEY=VALUE"),
        ("train.seed=[1", "not valid YAML"),
        ("train.seed.x=1", "is a value, not a section"),
        ("artifacts.root=nosuchproto://bucket/x", "unknown storage protocol"),
        ("artifacts.root=", "must not be empty"),
        ("models.dir=s3://bucket/models", "local or mounted path"),
        ("cluster.namespace=Not_A_DNS_Label", "cluster.namespace"),
    ],
)
def test_bad_overrides_fail_with_a_clear_message(override, expected):
    with pytest.raises(ConfigError, match=None) as err:
        load_config(overrides=[override])
    assert expected in str(err.value)


def test_overrides_parse_yaml_values():
    config = load_config(
        overrides=["train.scaling.use_gpu=true", "data.embedding.num_cpus=0.25", "cluster.ray.address=auto"]
    )
    assert config.train.scaling.use_gpu is True
    assert config.data.embedding.num_cpus == 0.25
    assert config.cluster.ray.address == "auto"


def test_artifact_root_accepts_uris():
    assert load_config(overrides=["artifacts.root=s3://bucket/shopgraph"]).artifacts.root == "s3://bucket/shopgraph"
    assert load_config(overrides=["artifacts.root=memory://x"]).artifacts.root == "memory://x"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("data: [1, 2", "not valid YAML"),
        ("- a\n- b\n", "must hold a mapping"),
        ("data: 3\n", "data: Input should be a valid dictionary"),
    ],
)
def test_malformed_files(tmp_path: Path, text, expected):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert expected in str(err.value)


def test_missing_file_says_what_to_pass(tmp_path: Path):
    with pytest.raises(ConfigError, match="--config"):
        load_config(tmp_path / "nope.yaml")


def test_unicode_in_config_is_kept(tmp_path: Path):
    path = tmp_path / "zh.yaml"
    path.write_text("artifacts:\n  root: 产物/商店\n", encoding="utf-8")
    assert load_config(path).artifacts.root == "产物/商店"
