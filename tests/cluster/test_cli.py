"""The `shopgraph` console script: every subcommand documents itself, bad input exits cleanly."""

from __future__ import annotations

import pytest
import typer.main
from typer.testing import CliRunner

from cluster.cli import app

runner = CliRunner()
REQUIRED_GROUPS = {"data", "models", "cluster", "demo"}


def _command_paths(cmd, prefix: tuple[str, ...] = ()):
    yield prefix
    if hasattr(cmd, "commands"):
        for name, sub in cmd.commands.items():
            yield from _command_paths(sub, (*prefix, name))


ALL_PATHS = list(_command_paths(typer.main.get_command(app)))


def test_top_level_lists_the_components():
    names = {p[0] for p in ALL_PATHS if len(p) == 1}
    assert REQUIRED_GROUPS <= names


@pytest.mark.parametrize("path", ALL_PATHS, ids=lambda p: " ".join(p) or "shopgraph")
def test_help_on_every_command(path):
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    # Something beyond the usage line: a description of what the command does.
    assert len(result.output.strip().splitlines()) > 3


def test_commands_that_load_config_accept_config_and_set():
    for path in [
        ("models", "prepare"),
        ("models", "verify"),
        ("models", "generate"),
        ("cluster", "show-config"),
        ("demo",),
    ]:
        out = runner.invoke(app, [*path, "--help"]).output
        assert "--config" in out and "--set" in out, path


def test_show_config_prints_resolved_yaml():
    result = runner.invoke(app, ["cluster", "show-config", "--set", "train.seed=7"])
    assert result.exit_code == 0, result.output
    assert "seed: 7" in result.output and "profile: local" in result.output


def test_bad_config_key_exits_2_naming_the_key():
    result = runner.invoke(app, ["cluster", "show-config", "--set", "train.sead=7"])
    assert result.exit_code == 2
    assert "train.sead: unknown key" in result.output


def test_missing_config_file_exits_2(tmp_path):
    result = runner.invoke(app, ["models", "prepare", "--config", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2 and "not found" in result.output


def test_unknown_engine_is_rejected_before_loading_anything():
    result = runner.invoke(app, ["models", "generate", "hi", "--engine", "llama.cpp"])
    assert result.exit_code == 2 and "--engine" in result.output


def test_max_tokens_out_of_range_is_rejected():
    result = runner.invoke(app, ["models", "generate", "hi", "--max-tokens", "0"])
    assert result.exit_code == 2


def test_generate_without_prepared_models_says_what_to_run(tmp_path):
    result = runner.invoke(app, ["models", "generate", "hi", "--set", f"models.dir={tmp_path}"])
    assert result.exit_code == 1
    assert "shopgraph models prepare" in result.output


def test_verify_reports_broken_models(tmp_path):
    result = runner.invoke(app, ["models", "verify", "--set", f"models.dir={tmp_path}"])
    assert result.exit_code == 1
    assert "models prepare" in result.output


@pytest.mark.slow
def test_models_prepare_is_idempotent_and_verify_passes(models_dir):
    result = runner.invoke(app, ["models", "prepare", "--set", f"models.dir={models_dir}"])
    assert result.exit_code == 0, result.output
    # the base generator, the default one (base + shopgraph adapter) and the encoder
    assert result.output.count("up to date") == 3 and "smollm2-135m-shopgraph" in result.output
    assert runner.invoke(app, ["models", "verify", "--set", f"models.dir={models_dir}"]).exit_code == 0


@pytest.mark.slow
def test_data_embed_prints_similarities(models_dir):
    result = runner.invoke(app, ["data", "embed", "toy train", "wooden railway", "--set", f"models.dir={models_dir}"])
    assert result.exit_code == 0, result.output
    assert "384-d" in result.output


def test_erase_user_records_pseudonyms_only_and_refuses_bad_input(tmp_path, monkeypatch):
    import json

    monkeypatch.delenv("SHOPGRAPH_PSEUDONYM_KEYS", raising=False)
    root = f"artifacts.root={tmp_path}"
    result = runner.invoke(app, ["data", "erase-user", "--user-id", "jane.doe@example.com", "--set", root])
    assert result.exit_code == 0, result.output
    assert "jane" not in result.output and json.loads(result.output)["user_key"].startswith("u_d1_")
    stored = (tmp_path / "privacy" / "tombstones.jsonl").read_text()
    assert "jane" not in stored and json.loads(stored)["kid"] == "d1"
    blank = runner.invoke(app, ["data", "erase-user", "--user-id", " ", "--set", root])
    assert blank.exit_code == 1 and "--user-id is empty" in blank.output
    assert runner.invoke(app, ["data", "erase-user", "--set", root]).exit_code == 2  # --user-id is required
    monkeypatch.setenv("SHOPGRAPH_PSEUDONYM_KEYS", "k1:short")
    bad_key = runner.invoke(app, ["data", "erase-user", "--user-id", "x", "--set", root])
    assert bad_key.exit_code == 2 and "SHOPGRAPH_PSEUDONYM_KEYS" in bad_key.output
