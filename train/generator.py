"""Recipe: fine-tune the generator LM (SFT) with Ray Train + DeepSpeed, export a vLLM-ready model.

    shopgraph train generator --config configs/local.yaml
    python -m train.generator --config configs/local.yaml            # ray job submit entry point

Reads the corpora written by `shopgraph data corpus` (`<artifacts>/data/corpora/{pdp,reasons}.jsonl`,
`split == "train"` examples with an assistant turn) and trains the base model `models.generator`
(any local HF causal-LM directory; default the embedded SmolLM2-135M-Instruct) on both tasks at
once: the task is stated in each prompt (ml/prompts.py), so one model serves both.

- `TorchTrainer` starts the workers and the process group (gloo on CPU, NCCL on GPU);
  `deepspeed.initialize` wraps the HF model with a config built from `train.generator`:
  ZeRO stage + offload, bf16 on GPU, AdamW, cosine schedule with linear warm-up, gradient
  accumulation and clipping. On CPU DeepSpeed runs its CPU accelerator (`DS_ACCELERATOR=cpu`,
  set in the worker before DeepSpeed is imported) over the gloo group Ray Train made; fp32,
  since this CPU has no AVX-512 bf16. DeepSpeed's CPU shared-memory allreduce is a C++ op
  JIT-compiled on first use (minutes on 2 cores), so it is off unless
  `train.generator.cpu_shm_comm=true`; gloo does the allreduce instead.
- The loss covers answer tokens only: prompt tokens (system + user turn + the assistant
  header) get label -100. Examples are chat-templated with the model's own template.
- Length bucketing instead of packing: shuffled, then sorted by length within windows of
  `bucket_window` micro-batches, so a micro-batch pads little and no example attends across
  another (packing would need per-example attention masks to keep the prompt masking exact).
- Gradient checkpointing (HF, non-reentrant). Optional LoRA (peft), merged on export.
- Every epoch: eval loss on held-out examples, then a Ray Train checkpoint holding the
  DeepSpeed checkpoint of every rank (model, optimizer partitions, scheduler, step). After a
  worker failure Ray Train restarts the workers, which resume from the last checkpoint.

Export (driver, CPU): fp32 weights consolidated from the best checkpoint (DeepSpeed's
`zero_to_fp32` for ZeRO >= 1), LoRA merged, saved as safetensors with the tokenizer and chat
template, committed with a manifest (base model, corpus file hashes, hyper-parameters,
DeepSpeed config, metrics, model_version):

    <artifacts>/models/generator/      vLLM loads it directly: `--set models.generator=<that dir>`
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

IGNORE_INDEX = -100
DS_TAG = "ds"  # DeepSpeed checkpoint tag (sub-directory) inside each Ray Train checkpoint
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")

# ----------------------------------------------------------------------------- setup (driver and workers)


def corpus_files(corpora_dir: str | Path, tasks: list[str]) -> list[Path]:
    files = [Path(corpora_dir) / f"{task}.jsonl" for task in tasks]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"corpus file(s) {', '.join(missing)} not found; run `shopgraph data corpus` first, or set --set train.generator.tasks=[...] to the corpora you have"
        )
    return files


def load_examples(files: list[str | Path], split: str) -> list[list[dict[str, str]]]:
    """Chat conversations of `split` that end in an assistant answer (the SFT target)."""
    out = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                ex = json.loads(line)
                messages = ex.get("messages") or []
                if ex.get("split") == split and messages and messages[-1]["role"] == "assistant":
                    out.append(messages)
    return out


def tokenize_example(tokenizer, messages: list[dict[str, str]], max_seq_len: int) -> dict[str, list[int]] | None:
    """input_ids + labels with the prompt masked; None when the example does not fit."""
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise ValueError(
            "the chat template renders the prompt differently with and without the answer; prompt masking needs a prefix-stable template"
        )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
    if len(prompt_ids) + len(answer_ids) > max_seq_len:
        return None  # a truncated answer would teach the model to stop mid-JSON
    return {"input_ids": prompt_ids + answer_ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + answer_ids}


def bucketed_batches(lengths: list[int], micro_batch_size: int, window: int, seed: int) -> list[list[int]]:
    """Indices grouped into micro-batches of similar length, in a seeded random order."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    span = micro_batch_size * window
    batches = []
    for i in range(0, len(order), span):
        chunk = sorted(order[i : i + span], key=lambda j: lengths[j])
        batches += [chunk[k : k + micro_batch_size] for k in range(0, len(chunk), micro_batch_size)]
    rng.shuffle(batches)
    return batches


def collate(examples: list[dict[str, list[int]]], pad_id: int):
    import torch

    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"])
        labels[i, :n] = torch.tensor(e["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def deepspeed_config(hp: dict[str, Any], *, on_gpu: bool, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config dict, built from `train.generator` (never a hand-written JSON)."""
    zero: dict[str, Any] = {"stage": hp["zero_stage"]}
    if hp["offload_optimizer"]:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
    if hp["offload_params"]:
        zero["offload_param"] = {"device": "cpu", "pin_memory": on_gpu}
    return {
        "train_micro_batch_size_per_gpu": hp["micro_batch_size"],
        "gradient_accumulation_steps": hp["grad_accum_steps"],
        "train_batch_size": hp["micro_batch_size"] * hp["grad_accum_steps"] * world_size,
        "gradient_clipping": hp["grad_clip"],
        "zero_optimization": zero,
        "bf16": {"enabled": bool(on_gpu and hp["bf16"])},
        # torch's AdamW needs no compiled op; with offload DeepSpeed's CPU Adam does the step.
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": hp["lr"],
                "weight_decay": hp["weight_decay"],
                "betas": [0.9, 0.95],
                "torch_adam": not hp["offload_optimizer"],
            },
        },
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def build_model(base_dir: str, hp: dict[str, Any]):
    """The HF model to train: the base weights in fp32, LoRA-wrapped when enabled."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True, dtype=torch.float32)
    model.config.use_cache = False  # the KV cache is useless in training and clashes with checkpointing
    if hp["lora"]["enabled"]:
        from peft import LoraConfig, get_peft_model

        lora = hp["lora"]
        model = get_peft_model(
            model,
            LoraConfig(
                task_type="CAUSAL_LM",
                r=lora["r"],
                lora_alpha=lora["alpha"],
                lora_dropout=lora["dropout"],
                target_modules=lora["target_modules"],
            ),
        )
        if hp["gradient_checkpointing"]:
            model.enable_input_require_grads()  # frozen embeddings would cut the checkpointed graph
    if hp["gradient_checkpointing"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


# ----------------------------------------------------------------------------- train loop (runs on every worker)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    hp = config["hp"]
    if not config["use_gpu"]:
        os.environ["DS_ACCELERATOR"] = "cpu"  # read once, when DeepSpeed picks its accelerator

    import deepspeed
    import ray.train
    import torch
    import torch.distributed as dist
    from transformers import AutoTokenizer, get_cosine_schedule_with_warmup

    if not config["use_gpu"] and not hp["cpu_shm_comm"]:
        # DeepSpeed keeps this dict for the process; marking the op incompatible skips its JIT build.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(config["seed"])  # same init everywhere (LoRA adapters are random)
    tokenizer = AutoTokenizer.from_pretrained(config["base_dir"], local_files_only=True)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def tokenized(split: str, limit: int | None = None) -> list[dict[str, list[int]]]:
        rows = [
            tokenize_example(tokenizer, m, hp["max_seq_len"])
            for m in load_examples(config["corpus_files"], split)[:limit]
        ]
        return [r for r in rows if r is not None]

    train_rows = tokenized("train")
    eval_rows = tokenized("eval", hp["eval_max_examples"]) if hp["eval_max_examples"] else []
    lengths = [len(r["input_ids"]) for r in train_rows]
    per_rank = len(train_rows) // hp["micro_batch_size"] // world
    steps_per_epoch = per_rank // hp["grad_accum_steps"]
    total_steps = hp["epochs"] * steps_per_epoch
    if hp["max_steps"]:
        total_steps = min(total_steps, hp["max_steps"])

    if total_steps == 0:
        raise ValueError(
            f"{len(train_rows)} training examples fit train.generator.max_seq_len={hp['max_seq_len']}: too few for one optimizer step; raise max_seq_len or lower micro_batch_size / grad_accum_steps"
        )
    model = build_model(config["base_dir"], hp)
    ds_config = deepspeed_config(hp, on_gpu=config["use_gpu"], world_size=world)
    warmup = math.ceil(hp["warmup_ratio"] * total_steps)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=ds_config,
        lr_scheduler=lambda opt: get_cosine_schedule_with_warmup(opt, warmup, total_steps),
    )
    device = engine.device

    start_epoch, step, curves = 0, 0, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            _, client = engine.load_checkpoint(d, tag=DS_TAG)
        start_epoch, step, curves = client["epoch"] + 1, client["step"], client["curves"]

    def mean_over_ranks(total: float, count: float) -> float:
        t = torch.tensor([total, count], dtype=torch.float64)
        if dist.is_initialized():
            dist.all_reduce(t)
        return float(t[0] / t[1]) if t[1] else float("nan")

    def eval_loss() -> float | None:
        if not eval_rows:
            return None
        engine.eval()
        total = count = 0.0
        with torch.no_grad():
            # every rank runs the same batches: ZeRO-3 forwards are collective
            for i in range(0, len(eval_rows), hp["micro_batch_size"]):
                batch = collate(eval_rows[i : i + hp["micro_batch_size"]], pad_id)
                n = float((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
                total += float(engine(**{k: v.to(device) for k, v in batch.items()}).loss) * n
                count += n
        engine.train()
        return total / count if count else None

    if not checkpoint:
        curves.append({"epoch": -1, "step": 0, "eval_loss": eval_loss()})  # the base model's loss, the bar to beat

    fail_at = config.get("fail_once_at_epoch")
    for epoch in range(start_epoch, hp["epochs"]):
        if step >= total_steps:
            break
        if fail_at is not None and epoch == fail_at and rank == 0 and not checkpoint:
            # Fault-injection hook for the resume test: the first attempt dies here; Ray Train
            # restarts the workers, which resume from the last checkpoint.
            raise RuntimeError(f"injected worker failure at epoch {epoch}")
        batches = bucketed_batches(lengths, hp["micro_batch_size"], hp["bucket_window"], config["seed"] + epoch)
        mine = batches[rank::world][: steps_per_epoch * hp["grad_accum_steps"]]  # whole steps, same count on every rank
        engine.train()
        started, loss_sum, loss_n, tokens = time.perf_counter(), 0.0, 0, 0
        for b in mine:
            batch = {k: v.to(device) for k, v in collate([train_rows[i] for i in b], pad_id).items()}
            loss = engine(**batch).loss
            engine.backward(loss)
            boundary = engine.is_gradient_accumulation_boundary()
            engine.step()
            loss_sum, loss_n, tokens = (
                loss_sum + float(loss.detach()),
                loss_n + 1,
                tokens + int(batch["attention_mask"].sum()),
            )
            if boundary:
                step += 1
                if step >= total_steps:
                    break
        seconds = time.perf_counter() - started
        metrics = {
            "epoch": epoch,
            "step": step,
            "train_loss": mean_over_ranks(loss_sum, loss_n),
            "eval_loss": eval_loss(),
            "lr": engine.get_lr()[0],
            "epoch_seconds": seconds,
            "tokens_per_second": mean_over_ranks(tokens / seconds if seconds else 0.0, 1.0) * world,
            "resumed": bool(checkpoint),
        }
        curves.append({k: metrics[k] for k in ("epoch", "step", "train_loss", "eval_loss", "resumed")})
        with tempfile.TemporaryDirectory() as tmp:
            # Collective: every rank writes its own optimizer partition under one tag; Ray
            # Train merges the ranks' files into one checkpoint directory.
            engine.save_checkpoint(tmp, tag=DS_TAG, client_state={"epoch": epoch, "step": step, "curves": curves})
            if rank == 0:
                (Path(tmp) / "trainer_state.json").write_text(
                    json.dumps(
                        {"epoch": epoch, "step": step, "curves": curves, "deepspeed_config": ds_config}, indent=2
                    )
                )
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


# ----------------------------------------------------------------------------- driver


def model_context(base_dir: Path) -> int | None:
    config = json.loads((base_dir / "config.json").read_text())
    config = {**config.get("text_config", {}), **config}
    return next((int(config[k]) for k in _CONTEXT_KEYS if isinstance(config.get(k), int)), None)


def check_setup(cfg) -> Path:
    """Everything that can be wrong before a worker starts: base model, context length, resources.

    Returns the base model directory.
    """
    from core.manifest import IncompleteDirError
    from ml.base_model import check_generator_dir, resolve_generator_dir

    base = resolve_generator_dir(cfg.models.dir, cfg.models.generator)
    if not base.is_dir():
        raise FileNotFoundError(
            f"generator base model directory {base} does not exist (models.generator={cfg.models.generator!r}, models.dir={cfg.models.dir!r}); "
            "run `shopgraph models prepare` for the embedded model, or set --set models.generator=/path/to/a/local/hf-model"
        )
    try:
        check_generator_dir(base)
    except (IncompleteDirError, FileNotFoundError) as e:
        raise FileNotFoundError(f"{e}; fix models.generator (or rerun `shopgraph models prepare`)") from e
    hp = cfg.train.generator
    context = model_context(base)
    if context is not None and hp.max_seq_len > context:
        raise ValueError(
            f"train.generator.max_seq_len={hp.max_seq_len} exceeds the context of {base.name} ({context} tokens); set --set train.generator.max_seq_len={context} or lower"
        )
    return base


def train_generator(
    cfg, *, corpora_dir: str | Path | None = None, run_name: str = "generator", fail_once_at_epoch: int | None = None
) -> dict[str, Any]:
    """Run the recipe with the root config `cfg`; returns the exported manifest's meta."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from core.layout import ArtifactLayout
    from train.recommender import _check_resources, init_ray

    layout = ArtifactLayout(cfg.artifacts.root)
    hp, scaling = cfg.train.generator, cfg.train.scaling
    base = check_setup(cfg)
    files = corpus_files(corpora_dir or layout.corpora, hp.tasks)
    n_train = sum(1 for _ in load_examples(files, "train"))
    need = hp.micro_batch_size * hp.grad_accum_steps * scaling.num_workers
    if n_train < need:
        raise ValueError(
            f"{n_train} training examples cannot fill one optimizer step of {need} (micro_batch_size x grad_accum_steps x workers); "
            "lower train.generator.micro_batch_size / grad_accum_steps or train.scaling.num_workers"
        )
    init_ray(cfg)
    _check_resources(scaling)

    storage = str(Path(f"{layout.reports}/ray-train").resolve())
    has_eval = hp.eval_max_examples > 0 and any(True for _ in load_examples(files, "eval"))
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "hp": hp.model_dump(),
            "base_dir": str(base.resolve()),
            "corpus_files": [str(f.resolve()) for f in files],
            "seed": cfg.train.seed,
            "use_gpu": scaling.use_gpu,
            "fail_once_at_epoch": fail_once_at_epoch,
        },
        scaling_config=ScalingConfig(
            num_workers=scaling.num_workers,
            use_gpu=scaling.use_gpu,
            resources_per_worker={"CPU": scaling.cpus_per_worker},
            placement_strategy=scaling.placement_strategy,
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage,
            checkpoint_config=CheckpointConfig(
                num_to_keep=hp.num_to_keep,
                checkpoint_score_attribute="eval_loss" if has_eval else None,
                checkpoint_score_order="min",
            ),
            failure_config=FailureConfig(max_failures=hp.max_failures),
        ),
    )
    result = trainer.fit()
    if result.error is not None and result.checkpoint is None:
        raise RuntimeError(f"generator training failed before its first checkpoint: {result.error}")
    best = _best_checkpoint(result, has_eval)
    return export_checkpoint(cfg, best, base, files, Path(layout.generator))


def _best_checkpoint(result, has_eval: bool):
    ranked = [(c, m) for c, m in (getattr(result, "best_checkpoints", None) or []) if m.get("eval_loss") is not None]
    if has_eval and ranked:
        return min(ranked, key=lambda cm: cm[1]["eval_loss"])[0]
    if result.checkpoint is None:
        raise RuntimeError(f"training produced no checkpoint: {result.error}")
    return result.checkpoint


def consolidated_state_dict(ckpt_dir: Path, zero_stage: int) -> dict[str, Any]:
    """fp32 weights from a DeepSpeed checkpoint, on CPU, without a process group."""
    import torch

    if zero_stage == 0:
        states = torch.load(ckpt_dir / DS_TAG / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
        return {k: v.float() for k, v in states["module"].items()}
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=DS_TAG)


def export_checkpoint(cfg, checkpoint, base: Path, files: list[Path], out: Path) -> dict[str, Any]:
    """Merge (LoRA) and save the checkpoint as a vLLM-loadable HF dir with a manifest."""
    import torch
    from transformers import AutoTokenizer

    from core.manifest import read_manifest, sha256_file, staged_dir, write_manifest

    hp = cfg.train.generator
    with checkpoint.as_directory() as d:
        state = consolidated_state_dict(Path(d), hp.zero_stage)
        trainer_state = json.loads((Path(d) / "trainer_state.json").read_text())
    model = build_model(str(base), {**hp.model_dump(), "gradient_checkpointing": False})
    missing, unexpected = model.load_state_dict(state, strict=False)
    # ZeRO's consolidated state holds the trained parameters only. Frozen ones (the base weights
    # under LoRA) never changed, and the freshly built model already holds them.
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    if unexpected or [k for k in missing if not k.endswith("lm_head.weight") and k not in frozen]:
        raise RuntimeError(f"checkpoint does not fit {base}: missing={missing[:5]} unexpected={unexpected[:5]}")
    adapter = None
    if hp.lora.enabled:
        from peft import get_peft_model_state_dict

        # the adapter alone (fp16: a few MB) travels where the merged model cannot: `ml/adapters`
        adapter = ({k: v.detach().to(torch.float16).contiguous() for k, v in get_peft_model_state_dict(model).items()},
                   model.peft_config["default"])  # fmt: skip
        model = model.merge_and_unload()
    model.config.use_cache = True
    model.tie_weights()
    model.to(torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    try:
        base_meta = read_manifest(base).get("meta", {})
    except Exception:  # a user's own HF dir has no shopgraph manifest
        base_meta = {}
    curves = trainer_state["curves"]
    last = next((c for c in reversed(curves) if c["epoch"] >= 0), {})
    with staged_dir(out) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        weights = sorted(staging.glob("*.safetensors"))
        if adapter is not None:
            from safetensors.torch import save_file

            (staging / "adapter").mkdir()
            save_file(adapter[0], str(staging / "adapter" / "adapter_model.safetensors"))
            adapter[1].base_model_name_or_path = base.name  # a name, not this machine's path
            adapter[1].save_pretrained(str(staging / "adapter"))
        version = sha256_file(weights[0])[:12] if len(weights) == 1 else str(int(time.time()))
        meta = {
            "model": "generator",
            "model_version": version,
            "base_model": {
                "path": str(base),
                "name": base.name,
                **{k: base_meta[k] for k in ("name", "source", "source_sha256") if k in base_meta},
            },
            "data_snapshot": {f.name: sha256_file(f) for f in files},
            "hyperparameters": hp.model_dump(mode="json"),
            "scaling": cfg.train.scaling.model_dump(mode="json"),
            "deepspeed_config": trainer_state["deepspeed_config"],
            "metrics": {
                "epochs_trained": trainer_state["epoch"] + 1,
                "steps": trainer_state["step"],
                "train_loss": last.get("train_loss"),
                "eval_loss": last.get("eval_loss"),
                "base_eval_loss": curves[0].get("eval_loss") if curves and curves[0]["epoch"] == -1 else None,
                "curves": curves,
            },  # fmt: skip
        }
        (staging / "training_config.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
        write_manifest(staging, meta)
    return meta


def main(argv: list[str] | None = None) -> int:
    """`python -m train.generator` (a `ray job submit` / RayJob entry point) and `shopgraph train generator`."""
    from core.cli import as_json, stage_main

    def show(meta: dict) -> str:
        return as_json(
            {"model_version": meta["model_version"], **{k: v for k, v in meta["metrics"].items() if k != "curves"}}
        )

    return stage_main(
        argv, lambda cfg: train_generator(cfg), prog="python -m train.generator", description=__doc__, show=show
    )


if __name__ == "__main__":
    import sys

    sys.exit(main())
