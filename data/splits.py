"""Sequences, dense ids, leave-one-out and temporal splits, item popularity.

    python -m data.splits --config configs/local.yaml      # same as `shopgraph data split`

Reads the prepared events (`data.inputs.load_events`) and writes, each directory committed
with a checksum manifest:

- `id_maps/`   users.parquet (USER_IDS), items.parquet (ITEM_IDS): dense ids 1..N, 0 = padding
- `sequences/` sequences.parquet (SEQUENCES): every interaction per user in time order
- `splits/`    loo.parquet (LOO_SPLIT); temporal/train.parquet, temporal/test.parquet (SEQUENCES)
- `features/`  item_popularity.parquet: counts overall and per event type, recency score

Pipeline (everything deterministic; the same input and config give byte-identical tables):

1. event-type filter (`data.splits.interaction_events`). Default: every type, views included.
   Views are most of any real log and are what session-based papers (GRU4Rec, SR-GNN on
   YooChoose, Diginetica, RetailRocket) train on; the recommender answers "what will this
   user look at next", so dropping them would throw away the densest signal. Their noise
   (refreshes, back-button) is mostly consecutive repeats, which step 2 removes. Amazon-style
   review data has only `rating` events, so the filter is a no-op there. Set
   `[cart, purchase]` for a "buy next" model.
2. order per user by timestamp, ties broken by input row order (stable); optionally drop
   consecutive repeats of the same item.
3. iterative k-core: drop users and items with fewer than k interactions, re-dedup, repeat
   until nothing changes (one pass is not enough: dropping an item can push a user below k).
4. dense ids 1..N in the ids' natural order (numeric when every id is an integer string,
   else by code point), so public datasets whose ids are already 1..N keep them.
5. leave-one-out exactly as SASRec (Kang & McAuley 2018): last item test, second-to-last
   validation, the rest train; users with fewer than 3 interactions keep all in train with
   null valid/test. Global temporal split: cut at the (1 - temporal_test_fraction)
   timestamp quantile; interactions before the cut are train, at or after it test.

A catalog-only shop (products, no events) is a supported mode: the stage writes every table
empty, with `catalog_only: true` in each manifest, and the stages that learn from behaviour
(`shopgraph train recommender` / `train ranker`) stop at once saying so (`require_events`).

This runs as vectorized Arrow/NumPy in the driver rather than as a Ray Data shuffle: k-core and
dense ids need a global view, and one pass over 10M events takes seconds on one core, where
a distributed sort on a 2-core node costs more than it saves. `splits_from_sequences` runs
the same code on "user item item ..." lines so evaluation on public data splits identically.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.config.data import SplitsConfig
from core.layout import ArtifactLayout
from core.manifest import staged_dir, write_manifest
from core.runtime import local_dir
from core.schemas import EVENT_TYPES, EVENTS, ITEM_IDS, LOO_SPLIT, SEQUENCES, USER_IDS
from data.inputs import conform, load_events_counted

_TS = pa.timestamp("ms", tz="UTC")
_MS_PER_DAY = 86_400_000
_INT_ID = re.compile(r"^[0-9]+$")

POPULARITY = pa.schema(
    [
        pa.field("product_id", pa.string(), nullable=False),
        pa.field("item_idx", pa.int64()),  # null: filtered out of the recommender's vocabulary
        pa.field("count", pa.int64(), nullable=False),
        *[pa.field(f"count_{e}", pa.int64(), nullable=False) for e in EVENT_TYPES],
        pa.field("recency_score", pa.float64(), nullable=False),
    ]
)


@dataclass
class Splits:
    user_ids: pa.Table  # USER_IDS
    item_ids: pa.Table  # ITEM_IDS
    sequences: pa.Table  # SEQUENCES
    loo: pa.Table  # LOO_SPLIT
    temporal_train: pa.Table  # SEQUENCES, interactions before the cut
    temporal_test: pa.Table  # SEQUENCES, interactions at or after the cut
    popularity: pa.Table  # POPULARITY
    stats: dict[str, Any] = field(default_factory=dict)


def _natural_order(ids: list[str]) -> list[str]:
    if ids and all(_INT_ID.match(x) for x in ids):
        return sorted(ids, key=lambda x: (int(x), x))
    return sorted(ids)


def _dedup_consecutive(keep: np.ndarray, u: np.ndarray, i: np.ndarray) -> np.ndarray:
    """Among kept rows (already in per-user time order), drop a row that repeats the previous kept one."""
    idx = np.flatnonzero(keep)
    if len(idx) < 2:
        return keep
    repeat = (u[idx[1:]] == u[idx[:-1]]) & (i[idx[1:]] == i[idx[:-1]])
    out = keep.copy()
    out[idx[1:][repeat]] = False
    return out


def _k_core(keep: np.ndarray, u: np.ndarray, i: np.ndarray, k: int, dedup: bool) -> tuple[np.ndarray, int]:
    rounds = 0
    while True:
        rounds += 1
        uc = np.bincount(u[keep], minlength=u.max(initial=0) + 1)
        ic = np.bincount(i[keep], minlength=i.max(initial=0) + 1)
        new = keep & (uc[u] >= k) & (ic[i] >= k)
        if dedup:
            new = _dedup_consecutive(new, u, i)
        if np.array_equal(new, keep):
            return keep, rounds
        keep = new


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    encoded = pc.dictionary_encode(column).combine_chunks()
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary.to_pylist()


def _dense(codes: np.ndarray, dictionary: list[str]) -> tuple[np.ndarray, list[str]]:
    """Map dictionary codes of kept rows to dense ids 1..N in natural id order."""
    used = np.unique(codes)
    names = _natural_order([dictionary[c] for c in used])
    rank = {name: r + 1 for r, name in enumerate(names)}
    lookup = np.zeros(len(dictionary), dtype=np.int64)
    for c in used:
        lookup[c] = rank[dictionary[c]]
    return lookup[codes], names


def _dense_keeping(codes: np.ndarray, dictionary: list[str], base: pa.Table) -> tuple[np.ndarray, pa.Table]:
    """As `_dense`, but every item of `base` (a previous ITEM_IDS map) keeps its index, whether it
    occurs now or not; new items get the next indices, in natural id order. Returns the kept rows'
    dense ids and the whole new map."""
    known = dict(zip(base["product_id"].to_pylist(), base["item_idx"].to_pylist(), strict=True))
    top = max(known.values(), default=0)
    used = np.unique(codes)
    new = _natural_order([dictionary[c] for c in used if dictionary[c] not in known])
    index = {**known, **{name: top + 1 + r for r, name in enumerate(new)}}
    lookup = np.zeros(len(dictionary), dtype=np.int64)
    for c in used:
        lookup[c] = index[dictionary[c]]
    names = sorted(index, key=index.__getitem__)
    item_ids = pa.table({"product_id": names, "item_idx": [index[n] for n in names]}, schema=ITEM_IDS)
    return lookup[codes], item_ids


def _list_table(users: np.ndarray, items: np.ndarray, ts: np.ndarray) -> pa.Table:
    """Rows sorted by user then time -> one SEQUENCES row per user."""
    if len(users) == 0:
        return SEQUENCES.empty_table()
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    offsets = pa.array(np.r_[starts, len(users)].astype(np.int32))
    return pa.table(
        {
            "user_idx": pa.array(users[starts], pa.int64()),
            "items": pa.ListArray.from_arrays(offsets, pa.array(items, pa.int64())),
            "ts": pa.ListArray.from_arrays(offsets, pa.array(ts, pa.int64()).cast(_TS)),
        },
        schema=SEQUENCES,
    )


def _loo(users: np.ndarray, items: np.ndarray) -> pa.Table:
    if len(users) == 0:
        return LOO_SPLIT.empty_table()
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    lengths = np.diff(np.r_[starts, len(users)])
    has_eval = lengths >= 3
    train_len = np.where(has_eval, lengths - 2, lengths)
    pos = np.arange(len(users)) - np.repeat(starts, lengths)
    in_train = pos < np.repeat(train_len, lengths)
    train_offsets = np.r_[0, np.cumsum(train_len)].astype(np.int32)
    ends = starts + lengths
    return pa.table(
        {
            "user_idx": pa.array(users[starts], pa.int64()),
            "train_items": pa.ListArray.from_arrays(pa.array(train_offsets), pa.array(items[in_train], pa.int64())),
            "valid_item": pa.array(np.where(has_eval, items[np.maximum(ends - 2, 0)], 0), pa.int64(), mask=~has_eval),
            "test_item": pa.array(np.where(has_eval, items[ends - 1], 0), pa.int64(), mask=~has_eval),
        },
        schema=LOO_SPLIT,
    )


def _popularity(events: pa.Table, item_ids: pa.Table, half_life_days: float) -> pa.Table:
    """Counts over every event (all types, before filters) and an exponentially decayed score."""
    if events.num_rows == 0:
        return POPULARITY.empty_table()
    ts = events["ts"].cast(pa.int64()).to_numpy()
    # Relative to the data's last event, not the wall clock, so reruns give the same scores.
    age_days = (ts.max() - ts) / _MS_PER_DAY
    cols = {
        "product_id": events["product_id"],
        "one": pa.array(np.ones(len(ts), np.int64)),
        "w": pa.array(0.5 ** (age_days / half_life_days)),
    }
    for e in EVENT_TYPES:
        cols[f"is_{e}"] = pc.cast(pc.equal(events["event"], e), pa.int64())
    grouped = (
        pa.table(cols)
        .group_by("product_id")
        .aggregate([("one", "sum"), ("w", "sum"), *[(f"is_{e}", "sum") for e in EVENT_TYPES]])
    )
    idx = pc.index_in(grouped["product_id"], value_set=item_ids["product_id"])
    out = pa.table(
        {
            "product_id": grouped["product_id"],
            "item_idx": pc.take(item_ids["item_idx"], idx),
            "count": grouped["one_sum"],
            **{f"count_{e}": grouped[f"is_{e}_sum"] for e in EVENT_TYPES},
            "recency_score": grouped["w_sum"],
        },
        schema=POPULARITY,
    )
    return out.sort_by([("count", "descending"), ("product_id", "ascending")])


def build_splits(
    cfg: SplitsConfig, events: pa.Table, *, filter_event_types: bool = True, base_items: pa.Table | None = None
) -> Splits:
    """Every derived table from an EVENTS table (row order breaks timestamp ties). With `base_items`
    (a previous ITEM_IDS map, `keep_item_ids`), its items keep their indices and new ones follow."""
    events = conform(events, EVENTS, "events")
    if events.num_rows == 0:
        raise ValueError(
            "the events table is empty: nothing to split; check the events shard set (`shopgraph data prepare`)"
        )
    stats: dict[str, Any] = {"events": events.num_rows}

    inter = events.filter(pc.is_in(events["event"], pa.array(cfg.interaction_events))) if filter_event_types else events
    stats["interactions"] = inter.num_rows
    if inter.num_rows == 0:
        raise ValueError(
            f"no events of the interaction types {cfg.interaction_events}; change data.splits.interaction_events (types present: {sorted(set(events['event'].to_pylist()))})"
        )

    u, user_dict = _codes(inter["user_id"])
    i, item_dict = _codes(inter["product_id"])
    ts = inter["ts"].cast(pa.int64()).to_numpy()
    order = np.lexsort((np.arange(len(u)), ts, u))  # per user, by time, ties by input order
    u, i, ts = u[order], i[order], ts[order]

    keep = np.ones(len(u), dtype=bool)
    if cfg.dedup_consecutive:
        keep = _dedup_consecutive(keep, u, i)
    stats["after_dedup"] = int(keep.sum())
    rounds = 0
    if cfg.k_core > 1:
        keep, rounds = _k_core(keep, u, i, cfg.k_core, cfg.dedup_consecutive)
    stats |= {"after_k_core": int(keep.sum()), "k_core_rounds": rounds}
    if not keep.any():
        raise ValueError(f"no interactions survive the {cfg.k_core}-core filter; lower data.splits.k_core (0 = off)")
    u, i, ts = u[keep], i[keep], ts[keep]

    user_idx, user_names = _dense(u, user_dict)
    if base_items is None:
        item_idx, item_names = _dense(i, item_dict)
        item_ids = pa.table({"product_id": item_names, "item_idx": np.arange(1, len(item_names) + 1)}, schema=ITEM_IDS)
    else:
        item_idx, item_ids = _dense_keeping(i, item_dict, base_items)
        stats["items_kept_index"] = base_items.num_rows
        stats["items_new"] = item_ids.num_rows - base_items.num_rows
    by_user = np.argsort(user_idx, kind="stable")  # keeps the time order inside each user
    user_idx, item_idx, ts = user_idx[by_user], item_idx[by_user], ts[by_user]

    user_ids = pa.table({"user_id": user_names, "user_idx": np.arange(1, len(user_names) + 1)}, schema=USER_IDS)

    q = min(int(np.floor(len(ts) * (1 - cfg.temporal_test_fraction))), len(ts) - 1)
    cut = int(np.sort(ts, kind="stable")[q])
    before = ts < cut
    stats |= {
        "users": len(user_names),
        "items": item_ids.num_rows,
        "temporal_cut": pa.scalar(cut, pa.int64()).cast(_TS).as_py().isoformat(),
        "temporal_train": int(before.sum()),
        "temporal_test": int((~before).sum()),
    }
    return Splits(
        user_ids=user_ids,
        item_ids=item_ids,
        sequences=_list_table(user_idx, item_idx, ts),
        loo=_loo(user_idx, item_idx),
        temporal_train=_list_table(user_idx[before], item_idx[before], ts[before]),
        temporal_test=_list_table(user_idx[~before], item_idx[~before], ts[~before]),
        popularity=_popularity(events, item_ids, cfg.popularity_half_life_days),
        stats=stats,
    )


def empty_splits() -> Splits:
    """Every table empty: the splits of a catalog-only shop (products, no events)."""
    return Splits(
        user_ids=USER_IDS.empty_table(),
        item_ids=ITEM_IDS.empty_table(),
        sequences=SEQUENCES.empty_table(),
        loo=LOO_SPLIT.empty_table(),
        temporal_train=SEQUENCES.empty_table(),
        temporal_test=SEQUENCES.empty_table(),
        popularity=POPULARITY.empty_table(),
        stats={"events": 0, "catalog_only": True},
    )


def require_events(layout: ArtifactLayout, stage: str) -> None:
    """Stop a stage that learns from behaviour when the splits say the shop is catalog-only.

    Raises ValueError (the CLI's exit 1, no traceback) naming the stage and what still runs.
    Splits written before this flag existed, or missing ones, are left to the stage's own checks.
    """
    from core.manifest import IncompleteDirError, read_manifest

    try:
        meta = read_manifest(local_dir(layout.splits)).get("meta", {})
    except IncompleteDirError:
        return
    if meta.get("catalog_only"):
        raise ValueError(
            f"`shopgraph train {stage}` needs user events, and this shop is catalog-only (the events table is empty, "
            "see the split manifest); add an events source to data.sources and rerun `shopgraph data prepare` and "
            "`shopgraph data split`. Without events run prepare, embed, index, corpus, train generator and "
            "data generate-content (README: A catalog-only shop)"
        )


def events_from_sequences(lines: Iterable[str], event: str = "rating") -> pa.Table:
    """An EVENTS table from "user item item ..." lines (one user per line, items in time order).

    Such files carry no timestamps: an item's position in its line becomes its timestamp (in
    ms), which preserves each user's order; a global temporal split is meaningless on them.
    """
    users: list[str] = []
    items: list[str] = []
    ts: list[int] = []
    for n, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2:
            raise ValueError(f"line {n}: expected 'user item [item ...]', got {line.strip()!r}")
        users.extend([parts[0]] * (len(parts) - 1))
        items.extend(parts[1:])
        ts.extend(range(len(parts) - 1))
    table = pa.table(
        {"user_id": users, "product_id": items, "event": [event] * len(users), "ts": pa.array(ts, pa.int64()).cast(_TS)}
    )
    return conform(table, EVENTS, "events")


def splits_from_sequences(cfg: SplitsConfig, lines: Iterable[str]) -> Splits:
    """`build_splits` on "user item item ..." lines; the event-type filter does not apply."""
    return build_splits(cfg, events_from_sequences(lines), filter_event_types=False)


def _digest(*tables: pa.Table) -> str:
    h = hashlib.sha256()
    for t in tables:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, t.schema) as w:
            w.write_table(t)
        h.update(sink.getvalue().to_pybytes())
    return h.hexdigest()


def write_splits(layout: ArtifactLayout, splits: Splits, cfg: SplitsConfig) -> dict[str, Path]:
    """Write every table under the layout; each directory is staged and committed with a manifest.

    Every manifest records `id_maps_sha256`, so a consumer can tell that sequences, splits and
    features were built with the same id maps it loaded.
    """
    meta = {
        "stage": "split",
        "catalog_only": bool(splits.stats.get("catalog_only", False)),
        "config": cfg.model_dump(mode="json"),
        "stats": splits.stats,
        "id_maps_sha256": _digest(splits.user_ids, splits.item_ids),
    }
    outputs = {
        layout.id_maps: {"users.parquet": splits.user_ids, "items.parquet": splits.item_ids},
        layout.sequences: {"sequences.parquet": splits.sequences},
        layout.splits: {
            "loo.parquet": splits.loo,
            "temporal/train.parquet": splits.temporal_train,
            "temporal/test.parquet": splits.temporal_test,
        },
        layout.features: {"item_popularity.parquet": splits.popularity},
    }
    written = {}
    for uri, files in outputs.items():
        final = local_dir(uri)
        with staged_dir(final) as staging:
            for rel, table in files.items():
                (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(table, staging / rel)
            write_manifest(staging, meta)
        written[uri] = final
    return written


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)  # stdout carries the stage's JSON summary


def run(config, *, log=_stderr) -> dict[str, Any]:
    """The `shopgraph data split` stage: read events from the layout, write every split table.

    No events at all (a catalog-only shop) writes empty tables flagged `catalog_only: true`.
    """
    layout = ArtifactLayout(config.artifacts.root)
    events, erased = load_events_counted(layout)  # less the rows of erased users (core.privacy)
    if events.num_rows:
        splits = build_splits(config.data.splits, events, base_items=_previous_items(layout, config.data.splits, log))
    else:
        products = _product_rows(layout)
        if not products:
            raise ValueError(
                "the products and events tables are both empty: nothing to split; check data.sources and the "
                "quarantine of `shopgraph data prepare`"
            )
        log(
            f"catalog-only shop: {products} products and no events; writing empty splits (catalog_only: true). "
            "The recommender and ranker need events and will not train; prepare, embed, index, corpus, "
            "train generator and data generate-content run as usual."
        )
        splits = empty_splits()
        splits.stats["products"] = products
    splits.stats["erased"] = erased
    write_splits(layout, splits, config.data.splits)
    return splits.stats


def _previous_items(layout: ArtifactLayout, cfg: SplitsConfig, log) -> pa.Table | None:
    """The item map to keep (`data.splits.keep_item_ids`): the last split's, checked complete."""
    if not cfg.keep_item_ids:
        return None
    from core.manifest import IncompleteDirError, verify_dir

    root = local_dir(layout.id_maps)
    try:
        verify_dir(root)
    except IncompleteDirError:
        log(f"data.splits.keep_item_ids: no previous id map at {root}; items get dense ids 1..N")
        return None
    base = pq.read_table(root / "items.parquet").cast(ITEM_IDS)
    idx = np.sort(base["item_idx"].to_numpy())
    if not np.array_equal(idx, np.arange(1, len(idx) + 1)):
        raise ValueError(
            f"{root / 'items.parquet'} is not a map onto 1..{len(idx)}; rerun with --set data.splits.keep_item_ids=false"
        )
    return base


def _product_rows(layout: ArtifactLayout) -> int:
    """Rows of the committed products shard set, from its manifest (no need to read the catalog)."""
    from core.manifest import IncompleteDirError
    from core.shards import verify_shard_set

    try:
        return int(verify_shard_set(layout.products)["meta"]["rows"])
    except IncompleteDirError as e:
        raise FileNotFoundError(f"no complete products shard set ({e})") from None


def main(argv: list[str] | None = None) -> int:
    """`python -m data.splits` (a `ray job submit` / RayJob entry point) and its `shopgraph data` command."""
    from core.cli import stage_main

    return stage_main(argv, run, prog="python -m data.splits", description=__doc__)


if __name__ == "__main__":
    import sys

    sys.exit(main())
