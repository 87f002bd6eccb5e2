"""Recipe: train the SASRec recommender with Ray Train, evaluate it, export the serving artifact.

    shopgraph train recommender --config configs/local.yaml
    python -m train.recommender --config configs/local.yaml          # ray job submit entry point
    shopgraph train recommender --warm-start                         # continue from the exported model

Reads the leave-one-out split written by `shopgraph data split` (`<artifacts>/data/splits/loo.parquet`)
through Ray Data, trains with `TorchTrainer` (DDP: gloo on CPU, NCCL on GPU), validates every
`eval_every` epochs under both protocols (`select_on` picks the model: full-ranking NDCG@10 by default), checkpoints through Ray Train (best kept, resume
after a worker failure), then evaluates the best checkpoint on the test items under both
protocols with baselines and exports:

    <artifacts>/models/recommender/
        model.pt             state dict
        model_config.json    SASRecConfig
        item_vectors.npy     (num_items, hidden [+ 1: item bias]) float32, row i-1 = item i: the FAISS index input
        item_index.faiss     the index main retrieval searches (train.recommender.item_index; ml.index.ItemIndex)
        item_ids.parquet     the item id map it was trained with (product_id, item_idx): what --warm-start maps from
        metrics.json         evaluation (both protocols, baselines) + training curves
        report.html, curves.png
        shopgraph-manifest.json

Warm start (`--warm-start`): the new model starts from the exported one instead of from random
weights. Every weight is copied; item rows are matched by product_id through the two id maps, so a
known item starts from its trained vector (and bias) whatever its index, and items new since then
get rows initialised as a fresh model initialises them (bias: log-frequency, as cold). With
`data.splits.keep_item_ids` the split keeps every known item's index, so the matrix only grows.
Shapes must agree (hidden, blocks, heads, max_len, item_bias); a mismatch, or no export, stops before
Ray starts. The export's manifest records `warm_start` (parent version = the parent's files digest).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ml.index import write_item_index
from ml.metrics import sample_negatives
from ml.sasrec import SASRec, SASRecConfig, load_exported, pad_left, sequence_loss
from train.evaluate import LooData, ModelScorer, evaluate_with_baselines, item_counts, write_report

# ----------------------------------------------------------------------------- setup


def training_rows(batch: dict[str, Any], max_len: int, prefixes: bool = False) -> dict[str, np.ndarray]:
    """Ray Data `map_batches` fn: each user's train items -> (inputs, targets), left-padded.

    Inputs are items[:-1], targets items[1:] (next-item at every position), as in SASRec.
    With `prefixes`, one row per training target instead: the items before it as input and
    the target at the last position only, where serving reads the user vector (every target
    counted once; a user with n items gives n - 1 rows).
    """
    histories = [np.asarray(h, dtype=np.int64) for h in batch["train_items"]]
    keep = [h for h in histories if len(h) >= 2]
    if not prefixes:
        return {
            "inputs": pad_left([h[:-1] for h in keep], max_len),
            "targets": pad_left([h[1:] for h in keep], max_len),
        }
    inputs = pad_left([h[: k - 1] for h in keep for k in range(2, len(h) + 1)], max_len)
    targets = np.zeros_like(inputs)
    targets[:, -1] = [h[k - 1] for h in keep for k in range(2, len(h) + 1)]
    return {"inputs": inputs, "targets": targets}


def attribute_table(
    item_attributes: dict[int, list[int]] | list[list[int]], num_items: int, max_attributes: int
) -> tuple[np.ndarray, int]:
    """Item -> attribute ids as a (num_items + 1, slots) int64 table, row 0 and padding = 0.

    `item_attributes` maps dense item ids (1..num_items) to attribute ids (1-based, 0 reserved
    for padding); items without attributes keep an all-zero row (their ID embedding alone).
    Returns the table and the number of attribute ids.
    """
    pairs = item_attributes.items() if isinstance(item_attributes, dict) else enumerate(item_attributes)
    rows = {
        int(i): [int(a) for a in attrs][:max_attributes]
        for i, attrs in pairs
        if 1 <= int(i) <= num_items and len(attrs)
    }
    if not rows:
        raise ValueError(
            "train.recommender.item_attributes=true but no item has attributes; set it to false or give the products a category/brand"
        )
    bad = [a for attrs in rows.values() for a in attrs if a < 1]
    if bad:
        raise ValueError(f"attribute ids must be >= 1 (0 is padding), got {bad[:5]}")
    slots = max(len(a) for a in rows.values())
    table = np.zeros((num_items + 1, slots), dtype=np.int64)
    for i, attrs in rows.items():
        table[i, : len(attrs)] = attrs
    return table, int(table.max())


def catalog_attributes(layout, num_items: int) -> dict[int, list[int]]:
    """Attributes of the catalog's items: brand and every level of the category path
    ("a", "a > b", ...), so items of a sub-category also share their parent's embedding."""
    import pyarrow.parquet as pq

    from core.runtime import local_dir
    from data.inputs import load_products

    ids_path = local_dir(layout.id_maps) / "items.parquet"
    try:
        products = load_products(layout).to_pydict()
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"train.recommender.item_attributes=true needs the product catalog: {e}; run `shopgraph data prepare` or set it to false"
        ) from e
    ids = pq.read_table(ids_path, columns=["product_id", "item_idx"]).to_pydict()
    idx_of = dict(zip(ids["product_id"], ids["item_idx"]))
    vocab: dict[str, int] = {}
    out: dict[int, list[int]] = {}
    for pid, category, brand in zip(products["product_id"], products["category"], products["brand"]):
        idx = idx_of.get(pid)
        if idx is None or idx > num_items:
            continue
        parts = [p.strip() for p in (category or "").split(">") if p.strip()]
        names = [f"category:{' > '.join(parts[: n + 1])}" for n in range(len(parts))] + (
            [f"brand:{brand}"] if brand else []
        )
        out[idx] = [vocab.setdefault(name, len(vocab) + 1) for name in names]
    return out


def _validation_arrays(
    loo: LooData, max_len: int, max_users: int, seed: int, num_negatives: int
) -> dict[str, np.ndarray]:
    rows, histories, targets = loo.stage("valid")
    if len(rows) > max_users:
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), max_users, replace=False))
        histories, targets = [histories[i] for i in keep], targets[keep]
    lengths = np.array([len(h) for h in histories])
    flat = np.concatenate(histories) if histories else np.zeros(0, np.int64)
    # The sampled protocol's negatives, drawn once so every validation ranks the same lists.
    seen = [set(h.tolist()) | {int(t)} for h, t in zip(histories, targets)]
    negatives = sample_negatives(loo.num_items, seen, num_negatives, np.random.default_rng(seed))
    return {
        "inputs": pad_left(histories, max_len),
        "targets": targets,
        "flat": flat,
        "lengths": lengths,
        "negatives": negatives,
    }


# ----------------------------------------------------------------------------- train loop (runs on every worker)

# `train.recommender.select_on` -> the validation metric that picks the model and stops training
VALID_SCORE_KEYS = {
    "full_ndcg@10": "valid_ndcg@10",
    "full_mrr": "valid_mrr",
    "sampled_ndcg@10": "valid_sampled_ndcg@10",
    "sampled_mrr": "valid_sampled_mrr",
}


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist

    from ml.metrics import full_ranking_ranks, metrics_from_ranks, sampled_ranks

    hp = config["hp"]
    rank = ray.train.get_context().get_world_rank()
    torch.manual_seed(config["seed"] + rank)
    device = ray.train.torch.get_device()
    core = SASRec(SASRecConfig(**config["model"]))
    if config.get("item_attrs") is not None:
        core.set_item_attributes(torch.as_tensor(config["item_attrs"]))
    if config.get("item_bias_init") is not None:
        core.set_item_bias(torch.as_tensor(config["item_bias_init"], dtype=torch.float32))
    if config.get("init_state") is not None:  # --warm-start: the exported model, grown to the new items
        core.load_state_dict({k: torch.as_tensor(v) for k, v in config["init_state"].items()})
    # DDP only with 2+ workers (Ray Train leaves a single worker's model unwrapped). SASRec's
    # buffers (causal mask, item -> attribute table) never change, so DDP need not broadcast
    # them from rank 0 before every forward.
    model = ray.train.torch.prepare_model(core, parallel_strategy_kwargs={"broadcast_buffers": False})
    optimizer = torch.optim.AdamW(core.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    use_amp = hp["amp"] and device.type == "cuda"

    start_epoch, best, bad_rounds, curves = 0, -1.0, 0, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / "state.pt", map_location=device, weights_only=False)
        core.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, best, bad_rounds, curves = state["epoch"] + 1, state["best"], state["bad_rounds"], state["curves"]

    valid = config["valid"]
    histories = np.split(valid["flat"], np.cumsum(valid["lengths"])[:-1]) if len(valid["lengths"]) else []
    shard = ray.train.get_dataset_shard("train")
    fail_at = config.get("fail_once_at_epoch")

    for epoch in range(start_epoch, hp["epochs"]):
        if fail_at is not None and epoch == fail_at and rank == 0 and not checkpoint:
            # Fault-injection hook for the fault-tolerance test: the first attempt dies here;
            # Ray Train restarts the workers, which resume from the last checkpoint.
            raise RuntimeError(f"injected worker failure at epoch {epoch}")
        model.train()
        losses, samples, data_wait = [], 0, 0.0
        started = fetch_started = time.perf_counter()
        cpu_started = time.process_time()
        for batch in shard.iter_torch_batches(
            batch_size=hp["batch_size"],
            dtypes=torch.long,
            device=device,
            local_shuffle_buffer_size=4 * hp["batch_size"],
        ):
            data_wait += time.perf_counter() - fetch_started  # time the step waited on Ray Data
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                states = model(batch["inputs"])
                loss = sequence_loss(
                    core.query(states.float()),
                    batch["targets"],
                    core.output_table().float(),
                    loss=hp["loss"],
                    num_negatives=hp["num_negatives"],
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            samples += len(batch["inputs"])
            fetch_started = time.perf_counter()
        # Throughput figures of this worker (bench/train_overhead.py): epoch_seconds covers
        # the training steps and the data iterator, not validation or checkpointing.
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "epoch_seconds": time.perf_counter() - started,
            "train_samples": samples,
            "data_wait_seconds": data_wait,
            "cpu_seconds": time.process_time() - cpu_started,  # this worker process, all threads
            "epoch_ended_at": time.time(),
        }

        if (epoch + 1) % hp["eval_every"] == 0 or epoch + 1 == hp["epochs"]:
            core.eval()
            with torch.no_grad():
                scores = (
                    core.to(device).score_all(torch.as_tensor(valid["inputs"], device=device)).float().cpu().numpy()
                )
            # Both protocols on the same scores; `select_on` names the one that picks the model.
            full = metrics_from_ranks(
                full_ranking_ranks(
                    scores, valid["targets"], [set(h.tolist()) for h in histories], np.random.default_rng(0)
                ),
                (10,),
            )
            sampled = metrics_from_ranks(
                sampled_ranks(scores, valid["targets"], valid["negatives"], np.random.default_rng(0)), (10,)
            )
            for name in ("ndcg@10", "hr@10", "mrr"):
                metrics[f"valid_{name}"], metrics[f"valid_sampled_{name}"] = full[name], sampled[name]
            score = metrics[VALID_SCORE_KEYS[hp["select_on"]]]
            metrics["valid_score"] = score
            improved = score > best
            best, bad_rounds = (score, 0) if improved else (best, bad_rounds + 1)
            curves.append(
                {
                    k: metrics[k]
                    for k in (
                        "epoch",
                        "train_loss",
                        *VALID_SCORE_KEYS.values(),
                        "valid_hr@10",
                        "valid_sampled_hr@10",
                        "epoch_seconds",
                        "train_samples",
                        "data_wait_seconds",
                        "cpu_seconds",
                        "epoch_ended_at",
                    )
                }
            )
            stop = torch.tensor([bad_rounds >= hp["patience"]], dtype=torch.int32)
            if dist.is_initialized():
                dist.broadcast(stop, src=0)  # rank 0's view decides, so all ranks stop together
            with tempfile.TemporaryDirectory() as tmp:
                saved = None
                if rank == 0:
                    torch.save(
                        {
                            "model": core.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "epoch": epoch,
                            "best": best,
                            "bad_rounds": bad_rounds,
                            "curves": curves,
                        },
                        Path(tmp) / "state.pt",
                    )
                    saved = ray.train.Checkpoint.from_directory(tmp)
                ray.train.report(metrics, checkpoint=saved)
            if bool(stop.item()):
                break
        else:
            ray.train.report(metrics)


# ----------------------------------------------------------------------------- driver


def build_trainer(
    cfg,
    *,
    loo_path: str | None = None,
    num_items: int | None = None,
    item_attributes: dict[int, list[int]] | None = None,
    run_name: str | None = None,
    fail_once_at_epoch: int | None = None,
    warm_start: bool = False,
):
    """Validate the inputs, join Ray and build the `TorchTrainer` (not yet fitted).

    Returns (trainer, model config, the split in memory, warm-start record or None). Shared by
    `train_recommender` and bench/train_overhead.py, so the benchmark times exactly this recipe.
    """
    import ray
    import ray.data
    from ray.train import CheckpointConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from core.layout import ArtifactLayout

    layout = ArtifactLayout(cfg.artifacts.root)
    hp = cfg.train.recommender
    scaling = cfg.train.scaling
    if loo_path is None:  # a catalog-only shop has no behaviour to learn from: say so before Ray starts
        from data.splits import require_events

        require_events(layout, "recommender")
    loo_path = loo_path or f"{layout.splits}/loo.parquet"
    if not Path(loo_path).exists():
        raise FileNotFoundError(
            f"no leave-one-out split at {loo_path}; run `shopgraph data split` first (or set --set artifacts.root)"
        )
    if num_items is None:
        num_items = _num_items(layout)
    loo = LooData.from_parquet(loo_path, num_items)
    ev = cfg.train.evaluation
    if ev.num_negatives >= num_items:
        raise ValueError(
            f"train.evaluation.num_negatives={ev.num_negatives} needs more than that many items, the catalog has {num_items}; lower it"
        )
    if not len(loo.stage("valid")[0]):
        raise ValueError(
            f"{loo_path} has no user with 3+ interactions, so there is nothing to validate on; check the data split"
        )
    item_attrs, num_attributes = None, 0
    if hp.item_attributes:
        item_attrs, num_attributes = attribute_table(
            item_attributes if item_attributes is not None else catalog_attributes(layout, num_items),
            num_items,
            hp.max_attributes,
        )
    model_cfg = SASRecConfig(
        num_items=num_items,
        max_len=hp.max_len,
        hidden=hp.hidden,
        num_blocks=hp.num_blocks,
        num_heads=hp.num_heads,
        dropout=hp.dropout,
        item_bias=hp.item_bias,
        attribute_pooling=hp.attribute_pooling,
        num_attributes=num_attributes,
        max_attributes=item_attrs.shape[1] if item_attrs is not None else 0,
    )
    bias_init = _log_counts(loo) if hp.item_bias else None
    init_state, warm = None, None
    if warm_start:  # checked before Ray starts: a wrong model or config fails here
        init_state, warm = warm_start_state(
            layout.recommender, model_cfg, _item_ids(layout), bias_init=bias_init, seed=cfg.train.seed
        )
    init_ray(cfg)
    _check_resources(scaling)
    # Materialized once: the padded rows are small (2 x max_len int64 per user, ~0.8 KB; 1M
    # users ~0.8 GB, spilled to disk past the object store), and without it every epoch
    # re-runs the parquet read and padding as Ray tasks that compete with the training step
    # for the same cores (bench/train_overhead.py measured the difference).
    train_ds = ray.data.read_parquet(loo_path, columns=["train_items"]).map_batches(
        training_rows, fn_kwargs={"max_len": hp.max_len, "prefixes": hp.prefixes}, batch_format="numpy"
    )
    if hp.prefixes:
        # a user's prefix rows come out side by side; spread them once, or a batch (drawn from
        # a small local shuffle buffer) would hold a few users many times over
        train_ds = train_ds.random_shuffle(seed=cfg.train.seed)
    train_ds = train_ds.materialize()
    storage = str(Path(f"{layout.reports}/ray-train").resolve())
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "hp": hp.model_dump(),
            "model": model_cfg.to_dict(),
            "seed": cfg.train.seed,
            "valid": _validation_arrays(loo, hp.max_len, hp.eval_users, cfg.train.seed, ev.num_negatives),
            "fail_once_at_epoch": fail_once_at_epoch,
            "item_attrs": item_attrs,
            "item_bias_init": bias_init,
            "init_state": init_state,
        },
        scaling_config=ScalingConfig(
            num_workers=scaling.num_workers,
            use_gpu=scaling.use_gpu,
            resources_per_worker={"CPU": scaling.cpus_per_worker},
            placement_strategy=scaling.placement_strategy,
        ),
        datasets={"train": train_ds},
        run_config=fresh_run_config(
            "recommender",
            run_name,
            storage,
            CheckpointConfig(
                num_to_keep=hp.num_to_keep, checkpoint_score_attribute="valid_score", checkpoint_score_order="max"
            ),
            hp.max_failures,
        ),
    )
    return trainer, model_cfg, loo, warm


def train_recommender(
    cfg,
    *,
    loo_path: str | None = None,
    num_items: int | None = None,
    item_attributes: dict[int, list[int]] | None = None,
    run_name: str | None = None,
    fail_once_at_epoch: int | None = None,
    warm_start: bool = False,
) -> dict[str, Any]:
    """Run the recipe with the root config `cfg`; returns the exported manifest's meta.

    With `train.recommender.item_attributes`, attributes come from `item_attributes` (dense
    item id -> attribute ids, e.g. a public dataset's attribute file) or else the catalog.
    `warm_start`: start from the exported model (`warm_start_state`) instead of random weights.
    """
    import pyarrow.parquet as pq

    from core.layout import ArtifactLayout
    from core.manifest import staged_dir, write_manifest

    layout = ArtifactLayout(cfg.artifacts.root)
    hp = cfg.train.recommender
    ev = cfg.train.evaluation
    scaling = cfg.train.scaling
    trainer, model_cfg, loo, warm = build_trainer(
        cfg,
        loo_path=loo_path,
        num_items=num_items,
        item_attributes=item_attributes,
        run_name=run_name,
        fail_once_at_epoch=fail_once_at_epoch,
        warm_start=warm_start,
    )
    result = trainer.fit()
    best = _best_checkpoint(result)

    import torch

    with best.as_directory() as d:
        state = torch.load(Path(d) / "state.pt", map_location="cpu", weights_only=False)
    curves = state["curves"]
    if result.checkpoint is not None and result.checkpoint.path != best.path:
        with result.checkpoint.as_directory() as d:  # the latest holds the whole training curve
            curves = torch.load(Path(d) / "state.pt", map_location="cpu", weights_only=False)["curves"]
    model = SASRec(model_cfg)
    model.load_state_dict(state["model"])
    model.eval()
    results = evaluate_with_baselines(
        ModelScorer(model, hp.max_len),
        loo,
        ks=tuple(ev.ks),
        num_negatives=ev.num_negatives,
        seed=cfg.train.seed,
        max_users=ev.max_users,
    )

    out = Path(layout.recommender)
    meta = {
        "model": "sasrec",
        "model_config": model_cfg.to_dict(),
        "hyperparameters": hp.model_dump(),
        "scaling": scaling.model_dump(),
        "best_epoch": state["epoch"],
        "selected_on": f"validation {hp.select_on}",
        "best_valid_score": state["best"],
        "test": results,
        "warm_start": warm,  # None: trained from random weights
    }
    item_ids = _item_ids(layout)
    vectors = model.item_vectors().detach().float().numpy()
    item_index, meta["item_index"] = export_item_index(model, vectors, loo, hp, seed=cfg.train.seed)
    with staged_dir(out) as staging:
        torch.save(model.state_dict(), staging / "model.pt")
        if item_ids is not None:
            pq.write_table(item_ids, staging / "item_ids.parquet")
        (staging / "model_config.json").write_text(json.dumps(model_cfg.to_dict(), indent=2))
        np.save(staging / "item_vectors.npy", vectors)
        write_item_index(staging, item_index)
        write_report(staging, results, curves, title="shopgraph recommender (SASRec) — test set")
        write_manifest(staging, meta)
    return meta


def export_item_index(model, vectors: np.ndarray, loo, hp, *, seed: int):
    """The index main retrieval will search (train.recommender.item_index), and its manifest record:
    effective params, build seconds, recall@10 against exact search on the query vectors of a
    seeded sample of test users."""
    import torch

    from ml.index import ItemIndex, build_item_index, inner_product_index

    t0 = time.perf_counter()
    index, params = build_item_index(vectors, hp.item_index, seed=seed)
    record: dict[str, Any] = params | {
        "overfetch": hp.item_index.overfetch,
        "items": len(vectors),
        "build_s": round(time.perf_counter() - t0, 3),
    }
    _, histories, _ = loo.stage("test")
    n = min(hp.item_index.recall_sample, len(histories))
    if n and params["type"] != "flat":
        pick = np.sort(np.random.default_rng(seed).choice(len(histories), n, replace=False))
        with torch.inference_mode():
            q = model.predict(torch.from_numpy(pad_left([histories[i] for i in pick], hp.max_len))).numpy()
        k = min(10, len(vectors))
        _, got = ItemIndex(index, vectors, params, hp.item_index.overfetch).search(q, k)
        _, truth = inner_product_index(vectors).search(np.ascontiguousarray(q, dtype=np.float32), k)
        record["recall@10"] = round(float(np.mean([len(set(g) & set(t)) / k for g, t in zip(got, truth)])), 4)
        record["recall_queries"] = n
    return index, record


def _item_ids(layout):
    """The split's item id map (product_id, item_idx), or None where there is none (a bare split)."""
    import pyarrow.parquet as pq

    from core.schemas import ITEM_IDS

    path = Path(f"{layout.id_maps}/items.parquet")
    return pq.read_table(path).select(ITEM_IDS.names).cast(ITEM_IDS) if path.exists() else None


# What must match between the exported model and the config for --warm-start (weight shapes).
WARM_FIXED = ("hidden", "num_blocks", "num_heads", "max_len", "item_bias")


def warm_start_state(
    parent: str | Path, new_cfg: SASRecConfig, new_items, *, bias_init: np.ndarray | None, seed: int
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The initial weights for a warm start: the exported model at `parent`, its item rows moved to
    the new id map `new_items` (ITEM_IDS) by product_id, new items initialised as a fresh model is.

    Returns (state dict as numpy arrays, the `warm_start` record for the manifest). Raises
    FileNotFoundError without an export, ValueError when its shapes differ from `new_cfg`.
    """
    import pyarrow.parquet as pq
    import torch

    from core.manifest import IncompleteDirError, files_digest, read_manifest

    parent = Path(parent)
    try:
        old_model, old_cfg, _ = load_exported(parent)
    except (IncompleteDirError, FileNotFoundError) as e:
        raise FileNotFoundError(
            f"--warm-start needs an exported recommender at {parent} ({e}); train once without --warm-start"
        ) from None
    differ = [k for k in WARM_FIXED if getattr(old_cfg, k) != getattr(new_cfg, k)]
    if differ:
        shown = ", ".join(f"{k} {getattr(old_cfg, k)} (config: {getattr(new_cfg, k)})" for k in differ)
        raise ValueError(
            f"--warm-start: the exported model has {shown}; set "
            + " ".join(f"--set train.recommender.{k}={json.dumps(getattr(old_cfg, k))}" for k in differ)
            + " or train without --warm-start"
        )
    if old_cfg.num_attributes or new_cfg.num_attributes:
        raise ValueError(
            "--warm-start does not carry attribute embeddings yet (their ids are not stable across catalogs); "
            "set --set train.recommender.item_attributes=false or train without --warm-start"
        )
    old_map = parent / "item_ids.parquet"
    if not old_map.exists():
        raise FileNotFoundError(
            f"--warm-start: {parent} has no item_ids.parquet (exported before warm starts existed), so its rows "
            "cannot be matched to items; train once without --warm-start"
        )
    if new_items is None:
        raise FileNotFoundError(
            "--warm-start needs the split's item id map (data/id_maps/items.parquet); run `shopgraph data split`"
        )
    old = pq.read_table(old_map).to_pydict()
    old_idx = dict(zip(old["product_id"], old["item_idx"], strict=True))
    new = new_items.to_pydict()
    pairs = [(n, old_idx[p]) for p, n in zip(new["product_id"], new["item_idx"], strict=True) if p in old_idx]
    if not pairs:
        raise ValueError(
            f"--warm-start: no item of the new split is known to the exported model at {parent}; train without --warm-start"
        )

    torch.manual_seed(seed)
    fresh = SASRec(new_cfg)  # new items' rows: the model's own initialisation
    if bias_init is not None:
        fresh.set_item_bias(torch.as_tensor(bias_init, dtype=torch.float32))
    state = {k: v.detach().clone() for k, v in fresh.state_dict().items()}
    old_state = old_model.state_dict()
    rows_new = torch.as_tensor([n for n, _ in pairs], dtype=torch.long)
    rows_old = torch.as_tensor([o for _, o in pairs], dtype=torch.long)
    for key, value in old_state.items():
        if key == "item_emb.weight" or key == "item_bias":
            state[key][rows_new] = value[rows_old].to(state[key].dtype)
        else:
            state[key] = value.detach().clone()
    record = {
        "parent_version": files_digest(read_manifest(parent))[:12],
        "parent_created_at": read_manifest(parent).get("created_at"),
        "items_known": len(pairs),
        "items_same_index": sum(1 for n, o in pairs if n == o),
        "items_new": new_cfg.num_items - len(pairs),
        "items_dropped": old_cfg.num_items - len(pairs),
    }
    return {k: v.numpy() for k, v in state.items()}, record


def _log_counts(loo: LooData) -> np.ndarray:
    """log(1 + how often each item occurs in the training sequences); row 0 = padding."""
    return np.log1p(item_counts(loo.train_items, loo.num_items)).astype(np.float32)


def _best_checkpoint(result):
    best = getattr(result, "best_checkpoints", None) or []
    if best:
        return max(best, key=lambda cm: cm[1].get("valid_score", float("-inf")))[0]
    if result.checkpoint is None:
        raise RuntimeError(f"training produced no checkpoint: {result.error}")
    return result.checkpoint


def _num_items(layout) -> int:
    import pyarrow.parquet as pq

    path = f"{layout.id_maps}/items.parquet"
    if not Path(path).exists():
        raise FileNotFoundError(f"no item id map at {path}; run `shopgraph data split` first")
    return int(pq.read_table(path, columns=["item_idx"]).column("item_idx").to_numpy().max())


def _check_resources(scaling) -> None:
    """Fail before training when the workers can never be scheduled (they would hang pending)."""
    import ray

    if not ray.is_initialized():
        return
    total = ray.cluster_resources()
    need_cpu = scaling.num_workers * scaling.cpus_per_worker
    if need_cpu > total.get("CPU", 0):
        raise ValueError(
            f"train.scaling asks for {scaling.num_workers} workers x {scaling.cpus_per_worker} CPU = {need_cpu} CPUs, "
            f"but the Ray cluster has {total.get('CPU', 0)}; lower --set train.scaling.num_workers or train.scaling.cpus_per_worker"
        )
    if scaling.use_gpu and scaling.num_workers > total.get("GPU", 0):
        raise ValueError(
            f"train.scaling.use_gpu=true needs {scaling.num_workers} GPUs, the Ray cluster has {total.get('GPU', 0)}; "
            "set --set train.scaling.use_gpu=false or fewer workers"
        )


def evaluate_exported(cfg, *, loo_path: str | None = None) -> dict[str, Any]:
    """Re-evaluate the exported recommender (both protocols, baselines) into reports/recommender."""
    from core.layout import ArtifactLayout

    layout = ArtifactLayout(cfg.artifacts.root)
    model, model_cfg, _ = load_exported(layout.recommender)
    loo = LooData.from_parquet(loo_path or f"{layout.splits}/loo.parquet", model_cfg.num_items)
    ev = cfg.train.evaluation
    results = evaluate_with_baselines(
        ModelScorer(model, model_cfg.max_len),
        loo,
        ks=tuple(ev.ks),
        num_negatives=ev.num_negatives,
        seed=cfg.train.seed,
        max_users=ev.max_users,
    )
    write_report(Path(layout.reports) / "recommender", results, title="shopgraph recommender (SASRec) — test set")
    return results


def fresh_run_config(kind: str, run_name: str | None, storage_path: str, checkpoint_config, max_failures: int):
    """Ray Train's RunConfig for a new run of `kind` (recommender, ranker).

    A fresh run name each call: Ray Train resumes a run *name* from its storage, and a finished
    run of an older config must not be picked up as this run's state.
    """
    from ray.train import FailureConfig, RunConfig

    return RunConfig(
        name=run_name or f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
        storage_path=storage_path,
        checkpoint_config=checkpoint_config,
        failure_config=FailureConfig(max_failures=max_failures),
    )


def init_ray(cfg) -> None:
    """Join the configured Ray cluster, or start a local one sized by the config."""
    from core.runtime import ensure_ray

    ensure_ray(cfg)


def main(argv: list[str] | None = None) -> int:
    """`python -m train.recommender` (a `ray job submit` / RayJob entry point) and `shopgraph train recommender`."""
    from core.cli import as_json, stage_main

    def show(meta: dict) -> str:
        keep = ("best_epoch", "selected_on", "best_valid_score", "test", "warm_start")
        return as_json({k: meta[k] for k in keep})

    def options(parser) -> None:
        parser.add_argument(
            "--warm-start",
            action="store_true",
            help="Start from the exported model (<artifacts>/models/recommender): known items keep their vectors, new items get new rows.",
        )

    return stage_main(
        argv,
        lambda cfg, warm_start: train_recommender(cfg, warm_start=warm_start),
        prog="python -m train.recommender",
        description=__doc__,
        options=options,
        show=show,
    )


if __name__ == "__main__":
    import sys

    sys.exit(main())
