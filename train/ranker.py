"""Recipe: the second-stage ranker over retrieval candidates, trained with Ray Train.

    shopgraph train ranker --config configs/local.yaml
    python -m train.ranker --config configs/local.yaml               # ray job submit entry point

Candidates are the top-K items of a FAISS inner-product index over the recommender's item
vectors, queried with the recommender's user vector — exactly what the Serve retriever
returns (history items included: coming back to an item is common, the ranker decides). Each (user, candidate) gets the request-time features of
`ml.ranker_features`. A small MLP learns a listwise softmax over each user's K candidates
on the **validation** targets (history = train items); it is evaluated on the **test** targets
(history = train + validation items), against the retrieval order on the same candidates.
Items outside the candidates count as misses for both, so the comparison is fair.

Export under `<artifacts>/models/ranker/`: model.pt, ranker.json (features, normalization,
sizes), items.npz + items.json (the item table the featurizer needs), cooccurrence.npz,
metrics.json, shopgraph-manifest.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ml.index import inner_product_index
from ml.metrics import metrics_from_ranks
from ml.ranker import ranker_mlp, unwrap
from ml.ranker_features import FEATURES, Featurizer, ItemTable, cooccurrence_matrix
from ml.sasrec import load_exported, pad_left
from train.evaluate import LooData, item_counts

# ----------------------------------------------------------------------------- setup: items, candidates, features


def build_item_table(layout, num_items: int, loo: LooData) -> ItemTable:
    """Item metadata by dense id from the committed data artifacts; unknowns stay unknown."""
    import pyarrow.parquet as pq

    from core.runtime import local_dir
    from data.inputs import load_products

    table = ItemTable.empty(num_items)
    table.popularity = item_counts(loo.interactions(include_valid=False), num_items).astype(np.float64)
    ids_path = local_dir(layout.id_maps) / "items.parquet"
    if not ids_path.exists():
        return table
    ids = pq.read_table(ids_path).to_pydict()
    idx_of = dict(zip(ids["product_id"], ids["item_idx"]))
    table.product_ids = [""] * (num_items + 1)
    table.titles = [""] * (num_items + 1)
    for pid, idx in idx_of.items():
        if idx <= num_items:
            table.product_ids[idx] = pid
    try:
        products = load_products(layout).to_pydict()
    except FileNotFoundError:
        products = None
    if products:
        cats = sorted({c for c in products["category"] if c})
        brands = sorted({b for b in products["brand"] if b})
        cat_code, brand_code = {c: i for i, c in enumerate(cats)}, {b: i for i, b in enumerate(brands)}
        table.category_names, table.brand_names = cats, brands
        for pid, title, cat, brand, price in zip(
            products["product_id"], products["title"], products["category"], products["brand"], products["price"]
        ):
            idx = idx_of.get(pid)
            if idx is None or idx > num_items:
                continue
            table.titles[idx] = title
            table.category[idx] = cat_code.get(cat, -1)
            table.brand[idx] = brand_code.get(brand, -1)
            table.log_price[idx] = np.log1p(price) if price is not None and price > 0 else np.nan
    pop_path = local_dir(layout.features) / "item_popularity.parquet"
    if pop_path.exists():
        pop = pq.read_table(pop_path).to_pydict()
        for idx, rec in zip(pop["item_idx"], pop["recency_score"]):
            if idx is not None and idx <= num_items:
                table.recency[idx] = rec
    try:
        from ml.index import load_embeddings, vectors_of

        emb, _ = load_embeddings(layout)
        vectors = vectors_of(emb)
        text = np.zeros((num_items + 1, vectors.shape[1]), dtype=np.float32)
        for pid, vec in zip(emb.column("product_id").to_pylist(), vectors):
            idx = idx_of.get(pid)
            if idx is not None and idx <= num_items:
                text[idx] = vec
        table.text = text
    except Exception as e:  # no embeddings yet: the text features stay 0, and we say so
        print(f"ranker: no product embeddings ({e}); text-similarity features are 0")
    return table


def retrieve(model, item_index, histories: list[np.ndarray], k: int, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (ids, scores) per user from the FAISS index.

    History items are *not* excluded here: in e-commerce logs users come back to items (view,
    then cart, then purchase), and whether a seen item should be shown again is the ranker's
    call (its `in_history` feature) and the business rules' (never what was purchased).
    """
    import torch

    with torch.no_grad():
        queries = model.predict(torch.from_numpy(pad_left(histories, max_len))).float().numpy()
    scores, rows = item_index.search(np.ascontiguousarray(queries), k)
    return (rows + 1).astype(np.int64), scores.astype(np.float32)  # faiss row i = item i + 1


def listwise_examples(
    featurizer: Featurizer, histories, targets, cand_ids, cand_scores
) -> tuple[np.ndarray, np.ndarray]:
    """(users, K, F) features and the target's position among the candidates (-1 = not retrieved)."""
    feats = np.stack([featurizer.features(h, c, s) for h, c, s in zip(histories, cand_ids, cand_scores)])
    labels = np.array([int(np.nonzero(c == t)[0][0]) if t in c else -1 for c, t in zip(cand_ids, targets)])
    return feats, labels


def ndcg_of_orders(orders: np.ndarray, labels: np.ndarray, k_total: int, ks=(5, 10, 20)) -> dict[str, float]:
    """Metrics where `orders[i]` ranks user i's candidates and `labels[i]` is the target's slot."""
    ranks = np.full(len(labels), k_total, dtype=np.int64)  # not retrieved: beyond every cut-off
    hit = labels >= 0
    ranks[hit] = orders[hit, labels[hit]]  # orders[i, slot] = rank of that slot
    return metrics_from_ranks(ranks, ks)


# ----------------------------------------------------------------------------- train loop (every worker)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import tempfile

    import ray.train
    import ray.train.torch
    import torch
    import torch.nn.functional as F

    hp = config["hp"]
    torch.manual_seed(config["seed"])
    model = ray.train.torch.prepare_model(ranker_mlp(len(FEATURES), hp["hidden"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=hp["lr"], weight_decay=1e-4)
    start = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / "state.pt", weights_only=False)
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["epoch"] + 1
    shard = ray.train.get_dataset_shard("train")
    for epoch in range(start, hp["epochs"]):
        losses = []
        for batch in shard.iter_torch_batches(
            batch_size=hp["batch_size"], local_shuffle_buffer_size=4 * hp["batch_size"]
        ):
            x = batch["features"].float()  # (B, K, F), already normalized
            logits = model(x).squeeze(-1)
            loss = F.cross_entropy(logits, batch["label"].long())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        with tempfile.TemporaryDirectory() as tmp:
            saved = None
            if ray.train.get_context().get_world_rank() == 0:
                torch.save(
                    {"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch},
                    Path(tmp) / "state.pt",
                )
                saved = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(
                {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan")}, checkpoint=saved
            )


# ----------------------------------------------------------------------------- driver


def train_ranker(cfg, *, loo_path: str | None = None, run_name: str | None = None) -> dict[str, Any]:
    import ray.data
    import torch
    from ray.train import CheckpointConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from core.layout import ArtifactLayout
    from core.manifest import staged_dir, write_manifest
    from train.recommender import _check_resources, fresh_run_config, init_ray

    layout = ArtifactLayout(cfg.artifacts.root)
    if loo_path is None:  # catalog-only shop: no recommender either; name the real cause
        from data.splits import require_events

        require_events(layout, "ranker")
    hp = cfg.train.ranker
    rec_dir = Path(layout.recommender)
    try:
        rec, model_cfg, vectors = load_exported(rec_dir)
    except Exception as e:
        raise FileNotFoundError(
            f"no trained recommender at {rec_dir} ({e}); run `shopgraph train recommender` first"
        ) from None
    loo = LooData.from_parquet(loo_path or f"{layout.splits}/loo.parquet", model_cfg.num_items)
    if hp.candidates >= model_cfg.num_items:
        raise ValueError(
            f"train.ranker.candidates={hp.candidates} must be below the catalog size {model_cfg.num_items}; lower it"
        )

    started = time.perf_counter()
    index = inner_product_index(vectors)
    items = build_item_table(layout, model_cfg.num_items, loo)
    cooc = cooccurrence_matrix(
        loo.interactions(include_valid=False), model_cfg.num_items, window=hp.cooccurrence_window
    )
    featurizer = Featurizer(items, cooc, recent=hp.recent_items)

    # Training examples: validation targets, train-only histories.
    _, hist_v, tgt_v = loo.stage("valid")
    ids_v, sc_v = retrieve(rec, index, hist_v, hp.candidates, model_cfg.max_len)
    x_v, y_v = listwise_examples(featurizer, hist_v, tgt_v, ids_v, sc_v)
    keep = y_v >= 0
    if keep.sum() < 10:
        raise ValueError(
            f"only {int(keep.sum())} validation targets are among the top-{hp.candidates} candidates; raise train.ranker.candidates or train the recommender longer"
        )
    flat = x_v[keep].reshape(-1, len(FEATURES))
    mean, std = flat.mean(axis=0), flat.std(axis=0) + 1e-6
    normalize = lambda x: ((x - mean) / std).astype(np.float32)  # noqa: E731
    x_train = normalize(x_v[keep])
    train_ds = ray.data.from_items([{"features": f, "label": int(y)} for f, y in zip(x_train, y_v[keep])])

    init_ray(cfg)
    _check_resources(cfg.train.scaling)
    scaling = cfg.train.scaling
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"hp": hp.model_dump(), "seed": cfg.train.seed},
        scaling_config=ScalingConfig(
            num_workers=scaling.num_workers,
            use_gpu=False,
            resources_per_worker={"CPU": scaling.cpus_per_worker},
            placement_strategy=scaling.placement_strategy,
        ),
        datasets={"train": train_ds},
        run_config=fresh_run_config(
            "ranker",
            run_name,
            str(Path(f"{layout.reports}/ray-train").resolve()),
            CheckpointConfig(num_to_keep=1),
            cfg.train.recommender.max_failures,
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"ranker training produced no checkpoint: {result.error}")
    with result.checkpoint.as_directory() as d:
        state = torch.load(Path(d) / "state.pt", weights_only=False)
    mlp = ranker_mlp(len(FEATURES), hp.hidden)
    mlp.load_state_dict(state["model"])
    mlp.eval()

    ks = tuple(cfg.train.evaluation.ks)
    metrics = {
        # held-out evaluation: test targets, histories with the validation item
        **heldout_metrics(rec, index, featurizer, mlp, (mean, std), loo, hp.candidates, model_cfg.max_len, ks=ks),
        "train_users": int(keep.sum()),
        "seconds": round(time.perf_counter() - started, 1),
    }
    meta = {"model": "listwise-mlp", "features": list(FEATURES), "hyperparameters": hp.model_dump(), "test": metrics}
    with staged_dir(Path(layout.ranker)) as staging:
        torch.save(mlp.state_dict(), staging / "model.pt")
        (staging / "ranker.json").write_text(
            json.dumps(
                {
                    "features": list(FEATURES),
                    "mean": mean.tolist(),
                    "std": std.tolist(),
                    "hidden": hp.hidden,
                    "recent_items": hp.recent_items,
                    "candidates": hp.candidates,
                },
                indent=2,
            )
        )
        np.savez_compressed(
            staging / "items.npz",
            category=items.category,
            brand=items.brand,
            log_price=items.log_price,
            popularity=items.popularity,
            recency=items.recency,
            text=items.text if items.text is not None else np.zeros((0, 0), np.float32),
        )
        (staging / "items.json").write_text(
            json.dumps(
                {
                    "product_ids": items.product_ids,
                    "titles": items.titles,
                    "categories": items.category_names,
                    "brands": items.brand_names,
                },
                ensure_ascii=False,
            )
        )
        sp.save_npz(staging / "cooccurrence.npz", cooc)
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2))
        write_manifest(staging, meta)
    return meta


def heldout_metrics(
    rec,
    item_index,
    featurizer: Featurizer,
    mlp,
    normalization: tuple[np.ndarray, np.ndarray],
    loo: LooData,
    candidates: int,
    max_len: int,
    *,
    ks: tuple[int, ...],
) -> dict[str, Any]:
    """The ranker's order vs the retrieval order on the test targets (histories with the validation item).

    The same candidates for both; a target outside them is a miss for both. Used at the end of
    training and by `shopgraph train evaluate` (`evaluate_exported_ranker`) on the exported ranker.
    """
    import torch

    mean, std = normalization
    _, hist_t, tgt_t = loo.stage("test")
    ids_t, sc_t = retrieve(rec, item_index, hist_t, candidates, max_len)
    x_t, y_t = listwise_examples(featurizer, hist_t, tgt_t, ids_t, sc_t)
    with torch.no_grad():
        ranker_scores = mlp(torch.from_numpy(((x_t - mean) / std).astype(np.float32))).squeeze(-1).numpy()
    retrieval_order = np.tile(np.arange(candidates), (len(y_t), 1))
    ranker_order = np.argsort(np.argsort(-ranker_scores, axis=1), axis=1)
    return {
        "users": int(len(y_t)),
        "candidates": candidates,
        "recall_at_candidates": float((y_t >= 0).mean()),
        "retrieval_order": ndcg_of_orders(retrieval_order, y_t, candidates, ks),
        "ranker": ndcg_of_orders(ranker_order, y_t, candidates, ks),
    }


def evaluate_exported_ranker(cfg, *, loo_path: str | None = None) -> dict[str, Any]:
    """Re-evaluate the exported ranker (with the exported recommender's candidates) on the test targets.

    Same numbers as the end of `train_ranker` for the same exports and split; raises
    `core.manifest.IncompleteDirError` when either export is missing or incomplete.
    """
    from core.layout import ArtifactLayout
    from ml.ranker import load_ranker

    layout = ArtifactLayout(cfg.artifacts.root)
    ranker_dir = Path(layout.ranker)
    rec, model_cfg, vectors = load_exported(layout.recommender)
    mlp, featurizer, normalization = load_ranker(ranker_dir)
    spec = json.loads((ranker_dir / "ranker.json").read_text())
    index = inner_product_index(vectors)
    loo = LooData.from_parquet(loo_path or f"{layout.splits}/loo.parquet", model_cfg.num_items)
    candidates, ks = int(spec["candidates"]), tuple(cfg.train.evaluation.ks)
    return heldout_metrics(rec, index, featurizer, mlp, normalization, loo, candidates, model_cfg.max_len, ks=ks)


def main(argv: list[str] | None = None) -> int:
    """`python -m train.ranker` (a `ray job submit` / RayJob entry point) and `shopgraph train ranker`."""
    from core.cli import as_json, stage_main

    return stage_main(
        argv,
        lambda cfg: train_ranker(cfg),
        prog="python -m train.ranker",
        description=__doc__,
        show=lambda meta: as_json(meta["test"]),
    )


if __name__ == "__main__":
    import sys

    sys.exit(main())
