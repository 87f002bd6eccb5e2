"""Generation throughput: vLLM vs HF `generate` on the same model and prompts; fine-tuning tokens/s on GPU.

    nice .venv/bin/python bench/generation_throughput.py [--config configs/local.yaml] [--concurrency 1 16] [--max-new-tokens 64]
    .venv/bin/python bench/generation_throughput.py --config configs/gpu-cluster.yaml --finetune   # GPU node

Prompts are PDP prompts (ml/prompts.py) for synthetic products, chat-templated by each
engine. Decoding is greedy with exactly `--max-new-tokens` new tokens per prompt (EOS ignored),
so both engines produce the same number of tokens. Concurrency c = c prompts submitted
together: one `LLM.generate` call for vLLM, one left-padded batch for HF. A warm-up call is
not timed; model loading is not timed. dtype = models.engine.dtype for vLLM (float32 on this
CPU) and float32 for HF on CPU (bf16 on GPU).

`--finetune` (only when CUDA is available): DeepSpeed SFT steps of the generator recipe
(train/generator.py: same model wrapper and DeepSpeed config, bf16, ZeRO stage from
train.generator) on one GPU, reporting trained tokens/s (padding excluded).

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import load_config  # noqa: E402
from ml.base_model import resolve_generator_dir  # noqa: E402
from ml.prompts import pdp_messages  # noqa: E402

ITEMS = [("Wooden Train Set", "Brio", {"material": "beech wood", "pieces": "32"}), ("Cotton T-Shirt", "Basics", {"material": "cotton", "color": "blue"}),
         ("Steel Water Bottle", "Hydra", {"capacity": "500 ml"}), ("Denim Jacket", "Levis", {"material": "denim", "color": "black"}),
         ("Ceramic Mug", "Homey", {"capacity": "350 ml"}), ("Yoga Mat", "Flex", {"length": "183 cm"}), ("Wool Scarf", "Nordic", {"color": "red"}),
         ("Glass Vase", "Homey", {"height": "30 cm"})]  # fmt: skip


def conversations(n: int) -> list[list[dict[str, str]]]:
    out = []
    for i in range(n):
        title, brand, attrs = ITEMS[i % len(ITEMS)]
        out.append(
            pdp_messages(
                {"title": f"{title} #{i}", "brand": brand, "category": "Catalog", "price": 10 + i, "attributes": attrs}
            )
        )
    return out


def bench_vllm(model_dir: Path, engine_cfg, levels: list[int], max_new: int) -> dict[str, float]:
    from vllm import SamplingParams

    from ml.llm import build_vllm

    llm = build_vllm(model_dir, engine_cfg)
    params = SamplingParams(max_tokens=max_new, min_tokens=max_new, ignore_eos=True, temperature=0.0, seed=0)
    llm.chat(conversations(2), params, use_tqdm=False)  # warm-up
    out = {}
    for c in levels:
        started = time.perf_counter()
        results = llm.chat(conversations(c), params, use_tqdm=False)
        seconds = time.perf_counter() - started
        out[f"c{c}_tok_s"] = sum(len(r.outputs[0].token_ids) for r in results) / seconds
    return out


def bench_hf(model_dir: Path, levels: list[int], max_new: int) -> dict[str, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True, dtype=dtype).to(device).eval()

    def run(n: int) -> int:
        prompts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations(n)]
        batch = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        with torch.inference_mode():
            out = model.generate(
                **batch, max_new_tokens=max_new, min_new_tokens=max_new, do_sample=False, pad_token_id=tok.pad_token_id
            )
        return int((out.shape[1] - batch["input_ids"].shape[1]) * n)

    run(1)  # warm-up
    res = {}
    for c in levels:
        started = time.perf_counter()
        n_tokens = run(c)
        res[f"c{c}_tok_s"] = n_tokens / (time.perf_counter() - started)
    return res


def bench_finetune(model_dir: Path, hp: dict, steps: int, seq_len: int) -> dict[str, float]:
    """DeepSpeed bf16 SFT steps on one GPU with the recipe's own model and config builders."""
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": os.environ.get("MASTER_PORT", "29511"),
            "RANK": "0",
            "WORLD_SIZE": "1",
            "LOCAL_RANK": "0",
        }
    )
    import deepspeed
    import torch
    from transformers import AutoTokenizer

    from train.generator import build_model, collate, deepspeed_config, tokenize_example

    deepspeed.init_distributed("nccl")
    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    convs = [
        c
        + [
            {
                "role": "assistant",
                "content": json.dumps({"title": "x " * 20, "highlights": ["y " * 10] * 4, "description": "z " * 120}),
            }
        ]
        for c in conversations(64)
    ]
    rows = [r for r in (tokenize_example(tok, c, seq_len) for c in convs) if r]
    model = build_model(str(model_dir), hp)
    engine, *_ = deepspeed.initialize(
        model=model,
        model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=deepspeed_config(hp, on_gpu=True, world_size=1),
    )
    mb = hp["micro_batch_size"]

    def step(i: int) -> int:
        batch = collate([rows[(i * mb + k) % len(rows)] for k in range(mb)], tok.pad_token_id)
        batch = {k: v.cuda() for k, v in batch.items()}
        loss = engine(**batch).loss
        engine.backward(loss)
        engine.step()
        return int(batch["attention_mask"].sum())

    for i in range(3):
        step(i)  # warm-up
    torch.cuda.synchronize()
    started, tokens = time.perf_counter(), 0
    for i in range(steps):
        tokens += step(i)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {
        "tokens_per_s": tokens / seconds,
        "micro_batches": steps,
        "micro_batch_size": mb,
        "zero_stage": hp["zero_stage"],
        "gpu": torch.cuda.get_device_name(0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--engines", nargs="+", default=["vllm", "hf"], choices=["vllm", "hf"])
    parser.add_argument(
        "--finetune", action="store_true", help="Also measure DeepSpeed bf16 fine-tuning tokens/s (needs a GPU)."
    )
    parser.add_argument("--finetune-steps", type=int, default=20)
    args = parser.parse_args()

    cfg = load_config(args.config, args.overrides)
    model_dir = resolve_generator_dir(cfg.models.dir, cfg.models.generator)
    import torch

    report: dict = {"model": str(model_dir), "max_new_tokens": args.max_new_tokens, "greedy": True, "vllm_dtype": cfg.models.engine.dtype,
                    "hf_dtype": "bfloat16" if torch.cuda.is_available() else "float32", "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count()}  # fmt: skip
    if "hf" in args.engines:
        report["hf"] = bench_hf(model_dir, args.concurrency, args.max_new_tokens)
    if "vllm" in args.engines:
        report["vllm"] = bench_vllm(model_dir, cfg.models.engine, args.concurrency, args.max_new_tokens)
    if "hf" in report and "vllm" in report:
        report["vllm_over_hf"] = {k: report["vllm"][k] / report["hf"][k] for k in report["vllm"]}
    if args.finetune:
        if not torch.cuda.is_available():
            report["finetune"] = "skipped: no CUDA device (DeepSpeed bf16 fine-tuning throughput is a GPU measurement)"
        else:
            report["finetune"] = bench_finetune(
                model_dir, cfg.train.generator.model_dump(), args.finetune_steps, cfg.train.generator.max_seq_len
            )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
