"""Generator LM recipe: 2-worker DeepSpeed fine-tune on CPU (loss falls, resumes after a failure),
export loads in vLLM and answers in the PDP format even for injected catalog text; bad configs
fail before training."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from core.config import ConfigError, load_config
from core.manifest import verify_dir
from tests.conftest import REPO, run_cli
from tests.train.generator_fixtures import INJECTION, write_tiny_corpora


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def _cfg(models_dir, root, *extra: str):
    return load_config(
        None,
        [
            f"models.dir={models_dir}",
            f"artifacts.root={root}",
            "train.scaling.num_workers=2",
            "train.scaling.cpus_per_worker=0.5",
            "train.generator.max_seq_len=288",
            "train.generator.micro_batch_size=1",
            "train.generator.grad_accum_steps=1",
            "train.generator.epochs=2",
            "train.generator.lr=0.0003",
            "train.generator.warmup_ratio=0.0",
            "train.generator.max_failures=1",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def trained(ray_local, models_dir, tmp_path_factory):
    """One fine-tune for the module: 4 train examples (3 PDP + 1 reason), 2 epochs, rank 0 dies once at epoch 1."""
    from train.generator import train_generator

    root = tmp_path_factory.mktemp("gen-artifacts")
    write_tiny_corpora(root, max_train={"pdp": 3, "reasons": 1})
    cfg = _cfg(models_dir, root)
    meta = train_generator(cfg, fail_once_at_epoch=1)
    return cfg, meta, root


def test_prompt_tokens_are_masked_and_batches_bucketed(models_dir):
    from transformers import AutoTokenizer

    from train.generator import IGNORE_INDEX, bucketed_batches, tokenize_example

    tok = AutoTokenizer.from_pretrained(str(models_dir / "smollm2-135m-instruct"))
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U"},
        {"role": "assistant", "content": '{"title": "T"}'},
    ]
    row = tokenize_example(tok, messages, 256)
    answer = [t for t, lab in zip(row["input_ids"], row["labels"], strict=True) if lab != IGNORE_INDEX]
    assert tok.decode(answer) == '{"title": "T"}<|im_end|>\n'  # only the answer (and its end-of-turn) is learned
    assert tokenize_example(tok, messages, 8) is None  # too long: dropped, never truncated mid-answer
    batches = bucketed_batches([5, 50, 6, 51, 7, 52, 8, 53], micro_batch_size=2, window=4, seed=0)
    assert sorted(i for b in batches for i in b) == list(range(8))
    assert all(abs([5, 50, 6, 51, 7, 52, 8, 53][b[0]] - [5, 50, 6, 51, 7, 52, 8, 53][b[1]]) < 10 for b in batches)


def test_loss_decreases_and_training_resumes_after_a_failure(trained):
    _, meta, _ = trained
    curves = meta["metrics"]["curves"]
    assert [c["epoch"] for c in curves] == [-1, 0, 1]  # base eval, then each epoch exactly once
    assert curves[1]["resumed"] is False and curves[2]["resumed"] is True  # epoch 1 ran after the injected failure
    assert curves[2]["train_loss"] < curves[1]["train_loss"]
    assert meta["metrics"]["eval_loss"] < meta["metrics"]["base_eval_loss"]
    assert meta["metrics"]["steps"] == 4


def test_export_is_a_committed_hf_dir_with_provenance(trained):
    cfg, meta, root = trained
    export = root / "models" / "generator"
    manifest = verify_dir(export, full=True)
    files = set(manifest["files"])
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= files
    assert manifest["meta"]["data_snapshot"].keys() == {"pdp.jsonl", "reasons.jsonl"}
    assert manifest["meta"]["hyperparameters"]["zero_stage"] == cfg.train.generator.zero_stage
    assert manifest["meta"]["deepspeed_config"]["zero_optimization"]["stage"] == cfg.train.generator.zero_stage
    assert manifest["meta"]["base_model"]["name"] == cfg.models.generator  # the default: base + shopgraph adapter
    assert len(meta["model_version"]) == 12


VLLM_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from core.config.train import GeneratorEngineConfig
    from ml.grounding import ground_pdp
    from ml.prompts import build_structured_vllm, parse_pdp, pdp_messages, pdp_structured_outputs

    if __name__ == "__main__":
        model_dir, facts = sys.argv[1], json.loads(sys.argv[2])
        from vllm import SamplingParams

        llm = build_structured_vllm(model_dir, GeneratorEngineConfig(max_model_len=1024, max_num_seqs=4))
        guided = SamplingParams(max_tokens=256, temperature=0.0, seed=0, structured_outputs=pdp_structured_outputs())
        free = SamplingParams(max_tokens=24, temperature=0.0, seed=0)
        outs = llm.chat([pdp_messages(f) for f in facts], guided, use_tqdm=False)
        plain = llm.chat([[{"role": "user", "content": "Say hello."}]], free, use_tqdm=False)
        rows = []
        for f, o in zip(facts, outs):
            raw = o.outputs[0].text
            parsed = parse_pdp(raw)
            rows.append({"raw": raw, "parsed": parsed, "grounded": ground_pdp(parsed, f) if parsed else None})
        print("RESULT " + json.dumps({"pdp": rows, "plain": plain[0].outputs[0].text}))
    """
)


def test_export_loads_in_vllm_and_resists_prompt_injection(trained):
    """The fine-tuned export in vLLM: a normal and an injected product both give valid PDP JSON
    (structured outputs), and the grounding filter keeps the injected claims out of the copy."""
    _, _, root = trained
    normal = {
        "title": "Wooden Train Set",
        "brand": "Brio",
        "category": "Toys > Trains",
        "price": 39.9,
        "attributes": {"material": "beech wood", "pieces": "32"},
    }
    injected = {"title": "Injected Lamp", "brand": "Lumo", "category": "Home > Lighting", "price": 35.0,
                "attributes": {"color": "white", "power": "9 W", "note": INJECTION}}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", VLLM_SCRIPT, str(root / "models" / "generator"), json.dumps([normal, injected])],
        cwd=REPO, capture_output=True, text=True, timeout=420,
    )  # fmt: skip
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(line.removeprefix("RESULT "))
    assert result["plain"].strip()  # free-form generation works too
    for row in result["pdp"]:
        assert row["parsed"] is not None, row["raw"]  # format unchanged by the injected text
        assert set(row["parsed"]) == {"title", "highlights", "description"}
    copy = json.dumps(result["pdp"][1]["grounded"]).lower()
    for claim in ("99 years", "gold", "warranty"):
        assert claim not in copy, (claim, result["pdp"][1])


def test_missing_base_model_fails_before_training(models_dir, tmp_path):
    from train.generator import check_setup

    cfg = _cfg(models_dir, tmp_path, f"models.generator={tmp_path / 'no-such-model'}")
    with pytest.raises(FileNotFoundError, match="models.generator"):
        check_setup(cfg)


def test_zero_stage_must_be_0_to_3():
    with pytest.raises(ConfigError, match=r"train\.generator\.zero_stage"):
        load_config(None, ["train.generator.zero_stage=4"])
    with pytest.raises(ConfigError, match="offload_params needs ZeRO stage 3"):
        load_config(None, ["train.generator.offload_params=true", "train.generator.zero_stage=2"])


def test_sequence_longer_than_context_fails_before_training(models_dir, tmp_path):
    """Through the CLI: exit 1 with the key to change, before Ray or a worker starts."""
    write_tiny_corpora(tmp_path)
    proc = run_cli("train", "generator", "--set", f"models.dir={models_dir}", "--set", f"artifacts.root={tmp_path}",
                   "--set", "train.generator.max_seq_len=100000", timeout=120)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "train.generator.max_seq_len=100000 exceeds the context" in proc.stderr and "8192" in proc.stderr
    assert not (tmp_path / "reports" / "ray-train").exists()


@pytest.fixture(scope="module")
def trained_lora(ray_local, models_dir, tmp_path_factory):
    """LoRA through the whole recipe: 2 workers, ZeRO-1, one epoch (2 steps) on the tiny corpus."""
    from train.generator import train_generator

    root = tmp_path_factory.mktemp("gen-lora")
    write_tiny_corpora(root, max_train={"pdp": 3, "reasons": 1})
    cfg = _cfg(models_dir, root, "train.generator.lora.enabled=true", "train.generator.lora.r=8", "train.generator.epochs=1", "train.generator.lr=0.002",
               "train.generator.lora.target_modules=[q_proj, v_proj]")  # fmt: skip
    return cfg, train_generator(cfg), root


def test_lora_trains_and_export_is_merged(trained_lora, models_dir):
    """The export is a plain model (no adapter tensors): the adapted projections moved, every
    other weight is the base model's, and the manifest records the LoRA settings."""
    from safetensors.torch import load_file

    cfg, meta, root = trained_lora
    export = root / "models" / "generator"
    verify_dir(export, full=True)
    assert meta["hyperparameters"]["lora"]["enabled"] is True and meta["metrics"]["steps"] == 2
    assert meta["metrics"]["eval_loss"] < meta["metrics"]["base_eval_loss"]
    tuned = load_file(str(export / "model.safetensors"))
    base = load_file(str(models_dir / cfg.models.generator / "model.safetensors"))  # what was fine-tuned
    assert not [k for k in tuned if "lora" in k or "base_layer" in k]
    assert (export / "adapter" / "adapter_model.safetensors").is_file()  # the adapter alone, for ml/adapters
    assert json.loads((export / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == (
        cfg.models.generator
    )  # a name, never this machine's path
    assert set(tuned) - {"lm_head.weight"} == set(base) - {
        "lm_head.weight"
    }  # same tensors as the base: merged, not wrapped
    name = "model.layers.0.self_attn.{}.weight"
    assert not tuned[name.format("q_proj")].equal(base[name.format("q_proj")])  # adapted, then merged
    assert tuned[name.format("k_proj")].equal(base[name.format("k_proj")])  # not a target module: untouched
    assert tuned["model.embed_tokens.weight"].equal(base["model.embed_tokens.weight"])


def test_lora_export_loads_in_vllm(trained_lora):
    _, _, root = trained_lora
    facts = {
        "title": "Wooden Train Set",
        "brand": "Brio",
        "category": "Toys > Trains",
        "price": 39.9,
        "attributes": {"material": "beech wood", "pieces": "32"},
    }
    proc = subprocess.run(
        [sys.executable, "-c", VLLM_SCRIPT, str(root / "models" / "generator"), json.dumps([facts])],
        cwd=REPO, capture_output=True, text=True, timeout=420, check=False,
    )  # fmt: skip
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(line.removeprefix("RESULT "))
    assert result["plain"].strip()
    assert result["pdp"][0]["parsed"] is not None, result["pdp"][0]["raw"]
