"""The embedded sample: a seeded, realistic catalog and users whose behaviour has planted structure.

    shopgraph data sample --out raw/sample          # write products.jsonl + events.csv
    python -m data.sample --out raw/sample --set data.sample.num_events=20000
    shopgraph data sample --out raw/sample-zh --set data.sample.language=zh   # a Chinese shop (data/sample_zh.py)

What a recommender should be able to recover (and what the tests check is there):

- sequential complements: after a phone comes a case, a screen protector or a charger; after a
  camera a lens, a memory card or a tripod (`COMPLEMENTS`), often of the same brand;
- category and brand affinity: each user favours one or two departments and a brand in each;
- popularity skew: items within a category follow a Zipf law, categories differ in traffic;
- noise: some steps jump to a globally popular item.

About 45% of steps follow a complement of the previous item and 15% stay in its category, so
roughly 60% of next items are predictable from the previous one: a sequential model beats
popularity by a wide margin on this data. Everything is vectorized numpy over users, one step at
a time; only the catalog's text is built in Python. Same config + seed -> identical tables.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from core.config.ingest import SampleConfig
from core.schemas import EVENTS, PRODUCTS

BASE_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z, fixed: no wall clock in generated data
DAY_MS = 86_400_000

# department -> brands, leaf category -> (singular noun, price range, {attribute: values})
DEPARTMENTS: dict[str, tuple[list[str], dict[str, tuple[str, tuple[float, float], dict[str, list[str]]]]]] = {
    "Electronics": (
        ["Voltix", "Lumio", "Zentro", "Kairo", "Nuvia"],
        {
            "Smartphones": (
                "smartphone",
                (150, 1200),
                {"storage": ["64 GB", "128 GB", "256 GB", "512 GB"], "screen size": ["6.1 in", "6.4 in", "6.7 in"]},
            ),
            "Phone Cases": (
                "phone case",
                (8, 45),
                {
                    "material": ["silicone", "leather", "TPU", "recycled plastic"],
                    "drop protection": ["1.2 m", "2 m", "3 m"],
                },
            ),
            "Screen Protectors": (
                "screen protector",
                (6, 30),
                {"material": ["tempered glass", "PET film"], "pack size": ["1", "2", "3"]},
            ),
            "Chargers": (
                "charger",
                (12, 60),
                {"power": ["20 W", "30 W", "45 W", "65 W"], "connector": ["USB-C", "USB-C and USB-A"]},
            ),
            "Power Banks": (
                "power bank",
                (18, 90),
                {"capacity": ["5000 mAh", "10000 mAh", "20000 mAh"], "ports": ["2", "3"]},
            ),
            "Headphones": (
                "pair of headphones",
                (25, 400),
                {"type": ["in-ear", "over-ear", "on-ear"], "noise cancelling": ["yes", "no"]},
            ),
        },
    ),
    "Cameras": (
        ["Optika", "Fotex", "Shutterly", "Lensmark"],
        {
            "Cameras": (
                "camera",
                (300, 2500),
                {
                    "sensor": ["APS-C", "full frame", "Micro Four Thirds"],
                    "resolution": ["20 MP", "24 MP", "33 MP", "45 MP"],
                },
            ),
            "Camera Lenses": (
                "lens",
                (150, 1800),
                {
                    "focal length": ["24 mm", "35 mm", "50 mm", "85 mm", "70-200 mm"],
                    "aperture": ["f/1.4", "f/1.8", "f/2.8", "f/4"],
                },
            ),
            "Memory Cards": (
                "memory card",
                (10, 120),
                {"capacity": ["64 GB", "128 GB", "256 GB"], "speed class": ["V30", "V60", "V90"]},
            ),
            "Tripods": (
                "tripod",
                (30, 350),
                {"material": ["aluminium", "carbon fibre"], "max height": ["150 cm", "165 cm", "180 cm"]},
            ),
            "Camera Bags": (
                "camera bag",
                (35, 220),
                {"style": ["backpack", "sling", "shoulder bag"], "capacity": ["10 L", "16 L", "22 L"]},
            ),
        },
    ),
    "Computers": (
        ["Corebyte", "Nexa", "Arcline", "Keystone"],
        {
            "Laptops": (
                "laptop",
                (400, 3000),
                {"memory": ["8 GB", "16 GB", "32 GB"], "screen size": ["13.3 in", "14 in", "15.6 in", "16 in"]},
            ),
            "Laptop Sleeves": (
                "laptop sleeve",
                (15, 60),
                {"fits": ["13 in", "14 in", "15-16 in"], "material": ["neoprene", "felt", "canvas"]},
            ),
            "Wireless Mice": (
                "wireless mouse",
                (12, 120),
                {"connection": ["Bluetooth", "2.4 GHz receiver"], "buttons": ["3", "5", "7"]},
            ),
            "Keyboards": (
                "keyboard",
                (25, 220),
                {
                    "switch type": ["membrane", "mechanical, brown", "mechanical, red"],
                    "layout": ["full size", "tenkeyless", "75%"],
                },
            ),
            "USB-C Hubs": (
                "USB-C hub",
                (20, 110),
                {"ports": ["4", "7", "10"], "display output": ["HDMI 4K", "two HDMI", "none"]},
            ),
        },
    ),
    "Home & Kitchen": (
        ["Brewly", "Hearthline", "Kettleworks", "Morrow"],
        {
            "Coffee Makers": (
                "coffee maker",
                (40, 900),
                {"type": ["drip", "espresso", "pour-over", "French press"], "capacity": ["0.35 L", "1 L", "1.5 L"]},
            ),
            "Coffee Beans": (
                "bag of coffee beans",
                (8, 35),
                {"roast": ["light", "medium", "dark"], "origin": ["Ethiopia", "Colombia", "Brazil", "Guatemala"]},
            ),
            "Milk Frothers": (
                "milk frother",
                (15, 150),
                {"power source": ["battery", "mains"], "capacity": ["150 ml", "300 ml"]},
            ),
            "Coffee Mugs": (
                "coffee mug",
                (6, 40),
                {"material": ["ceramic", "stoneware", "double-wall glass"], "capacity": ["250 ml", "350 ml", "450 ml"]},
            ),
        },
    ),
    "Sports & Outdoors": (
        ["Stride", "Peakform", "Trailborn", "Aquafit"],
        {
            "Running Shoes": (
                "pair of running shoes",
                (50, 250),
                {"surface": ["road", "trail"], "drop": ["4 mm", "8 mm", "10 mm"]},
            ),
            "Running Socks": (
                "pack of running socks",
                (8, 30),
                {"pack size": ["2", "3", "5"], "material": ["merino wool", "synthetic"]},
            ),
            "Water Bottles": (
                "water bottle",
                (8, 45),
                {"capacity": ["500 ml", "750 ml", "1 L"], "insulated": ["yes", "no"]},
            ),
            "Fitness Trackers": (
                "fitness tracker",
                (40, 400),
                {"battery life": ["5 days", "10 days", "14 days"], "GPS": ["built-in", "connected"]},
            ),
        },
    ),
    "Toys & Games": (
        ["Blockwise", "Playfort", "Tinker & Twig", "Zoomster"],
        {
            "Remote Control Cars": (
                "remote control car",
                (25, 200),
                {"scale": ["1:10", "1:16", "1:24"], "top speed": ["20 km/h", "35 km/h", "50 km/h"]},
            ),
            "Rechargeable Batteries": (
                "pack of rechargeable batteries",
                (10, 40),
                {"size": ["AA", "AAA"], "pack size": ["4", "8"]},
            ),
            "Building Sets": (
                "building set",
                (15, 250),
                {"pieces": ["250", "600", "1200", "3000"], "age": ["6+", "9+", "12+", "18+"]},
            ),
            "Jigsaw Puzzles": (
                "jigsaw puzzle",
                (10, 45),
                {"pieces": ["500", "1000", "2000"], "theme": ["landscape", "city", "animals", "art"]},
            ),
        },
    ),
}
COLORS = ["black", "white", "graphite", "silver", "navy blue", "forest green", "red", "sand"]

COMPLEMENTS: dict[str, list[str]] = {
    "Smartphones": ["Phone Cases", "Screen Protectors", "Chargers"],
    "Phone Cases": ["Screen Protectors", "Chargers"],
    "Screen Protectors": ["Chargers", "Power Banks"],
    "Chargers": ["Power Banks", "Headphones"],
    "Headphones": ["Power Banks"],
    "Cameras": ["Camera Lenses", "Memory Cards", "Tripods"],
    "Camera Lenses": ["Camera Bags", "Tripods"],
    "Memory Cards": ["Camera Bags"],
    "Tripods": ["Camera Bags"],
    "Laptops": ["Laptop Sleeves", "Wireless Mice", "USB-C Hubs"],
    "Laptop Sleeves": ["Wireless Mice"],
    "Wireless Mice": ["Keyboards"],
    "Keyboards": ["USB-C Hubs"],
    "Coffee Makers": ["Coffee Beans", "Milk Frothers", "Coffee Mugs"],
    "Milk Frothers": ["Coffee Beans"],
    "Coffee Beans": ["Coffee Mugs"],
    "Running Shoes": ["Running Socks", "Water Bottles", "Fitness Trackers"],
    "Fitness Trackers": ["Water Bottles"],
    "Running Socks": ["Water Bottles"],
    "Remote Control Cars": ["Rechargeable Batteries"],
    "Building Sets": ["Jigsaw Puzzles"],
}
# Share of steps by transition kind (the rest is global-popularity noise).
P_COMPLEMENT, P_SAME_LEAF, P_AFFINITY = 0.45, 0.15, 0.25
P_SAME_BRAND = 0.6  # a complement of the same brand as the previous item (a Voltix phone -> Voltix case)
EVENT_MIX = (("view", 0.62), ("cart", 0.18), ("purchase", 0.12), ("rating", 0.08))
RATING_P = (0.05, 0.07, 0.15, 0.33, 0.40)


class Shop:
    """One embedded shop: departments, complements, colours, review lines and how its copy reads.
    `en` is the original sample; `zh` (data/sample_zh.py) a Chinese apparel-and-gadgets shop
    with the same planted structure (same shapes, same sampling), only its words differ."""

    def __init__(self, language, departments, complements, colors, review_aspects, delivery, product_text, prices):
        self.language = language
        self.departments, self.complements, self.colors = departments, complements, colors
        self.review_aspects, self.delivery = review_aspects, delivery
        self.product_text = product_text  # (leaf_i, brand_i, rng, shop) -> (title, attributes, description)
        self.prices = prices  # (lo, hi, rng) -> price per product
        self.leaves = [(dept, leaf) for dept, (_, leaves) in departments.items() for leaf in leaves]
        self.leaf_index = {leaf: i for i, (_, leaf) in enumerate(self.leaves)}
        self.brands = [b for dept, (brands, _) in departments.items() for b in brands]
        self.depts = list(departments)


class _GroupSampler:
    """Sample one item per row from a given group, weighted, vectorized over rows.

    Items are sorted by group; `cum[i]` is group + the cumulative weight share of items up to i
    within its group, so searchsorted(cum, g + u) with u in (0, 1) lands inside group g.
    """

    def __init__(self, groups: np.ndarray, weights: np.ndarray, num_groups: int):
        order = np.lexsort((np.arange(len(groups)), groups))
        self.items = order
        g, w = groups[order], weights[order]
        totals = np.bincount(g, weights=w, minlength=num_groups)
        self.count = np.bincount(g, minlength=num_groups)
        within = np.cumsum(w) - np.repeat(np.cumsum(totals) - totals, self.count)
        self.cum = g + within / np.where(totals[g] > 0, totals[g], 1)

    def sample(self, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        u = rng.uniform(1e-9, 1.0, size=len(groups))
        pos = np.searchsorted(self.cum, groups + u, side="left")
        return self.items[np.minimum(pos, len(self.items) - 1)]


def _catalog(n: int, rng: np.random.Generator, shop: Shop) -> dict[str, np.ndarray | list]:
    """Which leaf and brand each product is, with its price, stock and popularity."""
    leaf_traffic = rng.lognormal(0.0, 0.6, size=len(shop.leaves))  # some categories draw more visits
    leaf = (
        np.concatenate(
            [
                np.arange(len(shop.leaves)),
                rng.choice(len(shop.leaves), size=n - len(shop.leaves), p=leaf_traffic / leaf_traffic.sum()),
            ]
        )
        if n >= len(shop.leaves)
        else rng.choice(len(shop.leaves), size=n)
    )
    dept_of_leaf = np.array([shop.depts.index(d) for d, _ in shop.leaves])
    brand_start = np.cumsum([0] + [len(shop.departments[d][0]) for d in shop.depts])
    dept = dept_of_leaf[leaf]
    n_brands = brand_start[dept + 1] - brand_start[dept]
    brand = brand_start[dept] + (rng.random(n) * n_brands).astype(np.int64)
    # Zipf popularity within each leaf: rank by a random permutation
    rank = np.empty(n, dtype=np.float64)
    for g in range(len(shop.leaves)):
        idx = np.flatnonzero(leaf == g)
        rank[idx] = rng.permutation(len(idx)) + 1
    popularity = rank**-1.07
    return {"leaf": leaf, "brand": brand, "dept": dept, "popularity": popularity, "leaf_traffic": leaf_traffic}


def _product_text(
    leaf_i: int, brand_i: int, rng: np.random.Generator, shop: Shop
) -> tuple[str, dict[str, str], str | None]:
    dept, leaf = shop.leaves[leaf_i]
    noun, _, attrs = shop.departments[dept][1][leaf]
    brand = shop.brands[brand_i]
    values = {k: v[int(rng.integers(len(v)))] for k, v in attrs.items()}
    color = shop.colors[int(rng.integers(len(shop.colors)))]
    values["color"] = color
    model = f"{'AXKLMPRSTVZ'[int(rng.integers(11))]}{int(rng.integers(1, 99))}"
    main_key = next(iter(attrs))
    title_noun = noun.removeprefix("pair of ").removeprefix("pack of ").removeprefix("bag of ")
    title = f"{brand} {model} {title_noun.title() if title_noun.islower() else title_noun}, {values[main_key]}, {color.title()}"
    if rng.random() < 0.06:  # some real catalogs have no description for an item
        return title, values, None
    facts = [(k, v) for k, v in values.items() if k != "color"]
    openers = [
        f"The {brand} {model} is a {noun} in {color}.",
        f"Meet the {model} from {brand}: a {color} {noun}.",
        f"This {color} {noun} from {brand} is the {model}.",
    ]
    fact_lines = [
        [f"The {k} is {v}.", f"Its {k} is {v}.", f"{k.capitalize()}: {v}."][int(rng.integers(3))] for k, v in facts
    ]
    closers = [f"It belongs to our {leaf.lower()} range.", f"Part of the {dept.lower()} collection.", ""]
    sentences = [openers[int(rng.integers(3))], *fact_lines, closers[int(rng.integers(3))]]
    return title, values, " ".join(s for s in sentences if s)


def _usd_prices(lo: np.ndarray, hi: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.floor(np.exp(rng.uniform(np.log(lo), np.log(hi)))) + 0.99


def _products_table(cat: dict, rng: np.random.Generator, shop: Shop) -> pa.Table:
    n = len(cat["leaf"])
    lo_hi = np.array([shop.departments[d][1][leaf][1] for d, leaf in shop.leaves])
    lo, hi = lo_hi[cat["leaf"], 0], lo_hi[cat["leaf"], 1]
    price = shop.prices(lo, hi, rng)
    text = [shop.product_text(int(li), int(bi), rng, shop) for li, bi in zip(cat["leaf"], cat["brand"], strict=True)]
    categories = [f"{d} > {leaf}" for d, leaf in shop.leaves]
    return pa.table(
        {
            "product_id": [f"P{k:06d}" for k in range(n)],
            "title": [t for t, _, _ in text],
            "category": [categories[li] for li in cat["leaf"].tolist()],
            "brand": [shop.brands[b] for b in cat["brand"].tolist()],
            "price": price,
            "attributes": [list(v.items()) for _, v, _ in text],
            "description": [d for _, _, d in text],
            "in_stock": rng.random(n) >= 0.08,
            "updated_at": pa.array(BASE_MS + rng.integers(0, 90, size=n) * DAY_MS, pa.timestamp("ms", tz="UTC")),
        },
        schema=PRODUCTS,
    )


def _lengths(cfg: SampleConfig, rng: np.random.Generator) -> np.ndarray:
    weights = rng.lognormal(0.0, 0.8, size=cfg.num_users)
    extra = cfg.num_events - 3 * cfg.num_users
    lengths = 3 + np.floor(extra * weights / weights.sum()).astype(np.int64)
    short = cfg.num_events - int(lengths.sum())
    np.add.at(lengths, rng.choice(cfg.num_users, size=short, replace=True), 1)
    return lengths


def _events_table(cfg: SampleConfig, cat: dict, rng: np.random.Generator, shop: Shop) -> pa.Table:
    n_leaves, n_brands, n_users = len(shop.leaves), len(shop.brands), cfg.num_users
    leaf, brand, pop = cat["leaf"], cat["brand"], cat["popularity"]
    by_leaf = _GroupSampler(leaf, pop, n_leaves)
    by_leaf_brand = _GroupSampler(leaf * n_brands + brand, pop, n_leaves * n_brands)
    global_weight = pop * cat["leaf_traffic"][leaf]
    global_cum = np.cumsum(global_weight) / global_weight.sum()

    # complement table: leaf -> up to 3 complement leaves (leaves without any: itself)
    comp = np.tile(np.arange(n_leaves)[:, None], (1, 3))
    comp_n = np.ones(n_leaves, dtype=np.int64)
    for name, targets in shop.complements.items():
        comp[shop.leaf_index[name], : len(targets)] = [shop.leaf_index[t] for t in targets]
        comp_n[shop.leaf_index[name]] = len(targets)
    anchors = np.array(
        [shop.leaf_index[name] for name in shop.complements if all(name not in t for t in shop.complements.values())]
    )
    dept_of_leaf = np.array([shop.depts.index(d) for d, _ in shop.leaves])
    anchors_of_dept = [anchors[dept_of_leaf[anchors] == d] for d in range(len(shop.depts))]
    anchor_table = np.array([[a[k % len(a)] for k in range(4)] for a in anchors_of_dept])
    leaves_of_dept = [np.flatnonzero(dept_of_leaf == d) for d in range(len(shop.depts))]
    dept_leaf_n = np.array([len(x) for x in leaves_of_dept])
    dept_leaf_table = np.array([[x[k % len(x)] for k in range(dept_leaf_n.max())] for x in leaves_of_dept])

    # user tastes: a favourite department (and a second one), a favourite brand in each
    fav_dept = rng.integers(0, len(shop.depts), size=(n_users, 2))
    brand_start = np.cumsum([0] + [len(shop.departments[d][0]) for d in shop.depts])
    fav_brand = np.zeros((n_users, len(shop.depts)), dtype=np.int64)
    for d in range(len(shop.depts)):
        fav_brand[:, d] = rng.integers(brand_start[d], brand_start[d + 1], size=n_users)

    def pick(leaves: np.ndarray, brands: np.ndarray, prefer: np.ndarray) -> np.ndarray:
        """An item of `leaves`, of `brands` where `prefer` and that (leaf, brand) exists."""
        key = leaves * n_brands + brands
        use_brand = prefer & (by_leaf_brand.count[key] > 0)
        out = by_leaf.sample(leaves, rng)
        if use_brand.any():
            out[use_brand] = by_leaf_brand.sample(key[use_brand], rng)
        return out

    def new_anchor(users: np.ndarray) -> np.ndarray:
        which = (rng.random(len(users)) < 0.3).astype(np.int64)  # second-favourite department 30%
        dept = fav_dept[users, which]
        leaves = anchor_table[dept, rng.integers(0, 4, size=len(users))]
        # sometimes browse a non-anchor leaf of that department
        other = rng.random(len(users)) < 0.3
        leaves[other] = dept_leaf_table[
            dept[other], (rng.random(int(other.sum())) * dept_leaf_n[dept[other]]).astype(np.int64)
        ]
        return pick(leaves, fav_brand[users, dept_of_leaf[leaves]], rng.random(len(users)) < 0.5)

    lengths = _lengths(cfg, rng)
    max_len = int(lengths.max())
    items = np.zeros((n_users, max_len), dtype=np.int64)
    users = np.arange(n_users)
    items[:, 0] = new_anchor(users)
    for t in range(1, max_len):
        active = users[lengths > t]
        prev = items[active, t - 1]
        r = rng.random(len(active))
        nxt = np.empty(len(active), dtype=np.int64)
        m = r < P_COMPLEMENT
        if m.any():
            pl = leaf[prev[m]]
            target = comp[pl, (rng.random(int(m.sum())) * comp_n[pl]).astype(np.int64)]
            nxt[m] = pick(target, brand[prev[m]], rng.random(int(m.sum())) < P_SAME_BRAND)
        m2 = (r >= P_COMPLEMENT) & (r < P_COMPLEMENT + P_SAME_LEAF)
        if m2.any():
            pl = leaf[prev[m2]]
            nxt[m2] = pick(pl, fav_brand[active[m2], dept_of_leaf[pl]], rng.random(int(m2.sum())) < 0.5)
        m3 = (r >= P_COMPLEMENT + P_SAME_LEAF) & (r < P_COMPLEMENT + P_SAME_LEAF + P_AFFINITY)
        if m3.any():
            nxt[m3] = new_anchor(active[m3])
        m4 = r >= P_COMPLEMENT + P_SAME_LEAF + P_AFFINITY
        if m4.any():
            nxt[m4] = np.minimum(np.searchsorted(global_cum, rng.random(int(m4.sum()))), len(leaf) - 1)
        items[active, t] = nxt

    mask = np.arange(max_len)[None, :] < lengths[:, None]
    user_of = np.repeat(users, lengths)
    item_of = items[mask]
    n = len(item_of)
    # time: sessions of minutes apart, sessions days apart
    gaps = (
        np.where(rng.random(n) < 0.15, rng.exponential(3 * DAY_MS, n), rng.exponential(20 * 60_000, n)).astype(np.int64)
        + 1000
    )
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    gaps[starts == np.arange(n)] = 0
    csum = np.cumsum(gaps)
    ts = (
        BASE_MS
        + np.repeat(rng.integers(0, 120 * DAY_MS, size=n_users), lengths)
        + csum
        - np.repeat(csum[np.cumsum(lengths) - lengths], lengths)
    )
    names = np.array([e for e, _ in EVENT_MIX])
    kind = rng.choice(len(EVENT_MIX), size=n, p=[p for _, p in EVENT_MIX])
    value = np.where(kind == 3, rng.choice(5, size=n, p=RATING_P) + 1.0, np.nan)
    user_ids = np.array([f"U{k:06d}" for k in range(n_users)])
    product_ids = np.array([f"P{k:06d}" for k in range(len(leaf))])
    return pa.table(
        {
            "user_id": user_ids[user_of],
            "product_id": product_ids[item_of],
            "event": names[kind],
            "ts": pa.array(ts, pa.timestamp("ms", tz="UTC")),
            "value": pa.array(value, pa.float64(), from_pandas=True),
            "text": pa.nulls(n, pa.string()),
        },
        schema=EVENTS,
    )


# Review text of the sample's ratings: what a reviewer says about the aspects shoppers of each
# department care about, positive or negative as the rating goes (ml.aspects summarizes them).
REVIEW_ASPECTS: dict[str, list[tuple[str, str]]] = {
    "Electronics": [("The battery lasts all day", "The battery drains within hours"),
                    ("Sound is clear and loud", "The sound is tinny and quiet"),
                    ("Charging is quick", "Charging is painfully slow")],
    "Cameras": [("Build quality feels solid", "The build quality feels flimsy"),
                ("The battery lasts a whole shoot", "The battery dies after a few shots"),
                ("The size is compact enough to carry", "The size is too bulky to carry")],
    "Computers": [("The screen is sharp and bright", "The screen is dim and washed out"),
                  ("Build quality is excellent", "The quality is poor, a key broke"),
                  ("The battery lasts a full workday", "The battery barely lasts two hours")],
    "Home & Kitchen": [("The material feels sturdy", "The material feels cheap and thin"),
                       ("The size is just right", "The size is smaller than expected"),
                       ("Great value for the price", "Not worth the price")],
    "Sports & Outdoors": [("The fit is perfect", "The fit is awkward"),
                          ("Very comfortable on long runs", "Not comfortable after a mile"),
                          ("The material is soft and breathable", "The fabric is scratchy")],
    "Toys & Games": [("Sturdy quality, survived my kids", "Poor quality, it broke in a day"),
                     ("Great value for the price", "Too expensive for what it is"),
                     ("The size is perfect for small hands", "The size is too small, pieces get lost")],
}  # fmt: skip
DELIVERY = ("Delivery was fast and the packaging was neat", "Delivery was late and the package was dented")


def _review_texts(events: pa.Table, cat: dict, rng: np.random.Generator, shop: Shop) -> pa.Table:
    """The ratings' text column filled: one or two aspects of the product's department, said the
    way the rating goes (4-5 positive, 1-2 negative, 3 one of each), sometimes the delivery too."""
    rated = np.flatnonzero(events["event"].to_numpy(zero_copy_only=False) == "rating")
    if not len(rated):
        return events
    pids = events["product_id"].to_numpy(zero_copy_only=False)[rated]
    values = events["value"].to_numpy(zero_copy_only=False)[rated]
    texts: list[str | None] = [None] * events.num_rows
    for row, pid, value in zip(rated.tolist(), pids.tolist(), values.tolist(), strict=True):
        lines = shop.review_aspects[shop.depts[int(cat["dept"][int(pid[1:])])]]
        picks = rng.permutation(len(lines))[: 1 + int(rng.random() < 0.5)]
        sides = [value >= 4] * len(picks) if value != 3 else [True, False][: len(picks)]
        said = [lines[k][0 if good else 1] for k, good in zip(picks.tolist(), sides)]
        if rng.random() < 0.3:
            said.append(shop.delivery[0 if rng.random() < 0.8 else 1])
        texts[row] = "。".join(said) + "。" if shop.language == "zh" else ". ".join(said) + "."
    return events.set_column(events.schema.get_field_index("text"), "text", pa.array(texts, pa.string()))


@functools.cache
def shop(language: str = "en") -> Shop:
    """The embedded shop of `language` (data.sample.language)."""
    if language == "zh":
        from data import sample_zh

        return sample_zh.shop(Shop)
    return Shop("en", DEPARTMENTS, COMPLEMENTS, COLORS, REVIEW_ASPECTS, DELIVERY, _product_text, _usd_prices)


@functools.lru_cache(maxsize=2)
def _generate(
    num_products: int, num_users: int, num_events: int, seed: int, language: str = "en"
) -> tuple[pa.Table, pa.Table]:
    cfg = SampleConfig(num_products=num_products, num_users=num_users, num_events=num_events, language=language)
    which = shop(language)
    rng = np.random.default_rng(seed)
    cat = _catalog(cfg.num_products, rng, which)
    events = _events_table(cfg, cat, np.random.default_rng([seed, 1]), which)
    events = _review_texts(events, cat, np.random.default_rng([seed, 3]), which)  # own stream: the rest is unchanged
    products = _products_table(cat, np.random.default_rng([seed, 2]), which)
    return products, events


def generate(cfg: SampleConfig, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    """(products, events) in the contract schemas; identical for the same config and seed."""
    return _generate(cfg.num_products, cfg.num_users, cfg.num_events, seed, cfg.language)


def leaf_category(category: str) -> str:
    return category.rsplit(" > ", 1)[-1]


def transition_share(products: pa.Table, events: pa.Table) -> float:
    """Share of consecutive same-user steps that go to a complement or stay in the same leaf category."""
    leaf_of = dict(
        zip(
            products["product_id"].to_pylist(),
            (leaf_category(c) for c in products["category"].to_pylist()),
            strict=True,
        )
    )
    users, items = events["user_id"].to_pylist(), events["product_id"].to_pylist()
    hits = total = 0
    for k in range(1, len(items)):
        if users[k] != users[k - 1]:
            continue
        a, b = leaf_of[items[k - 1]], leaf_of[items[k]]
        total += 1
        hits += a == b or b in COMPLEMENTS.get(a, ()) or b in shop("zh").complements.get(a, ())
    return hits / max(total, 1)


def write_sample_files(out: Path, cfg: SampleConfig, seed: int = 0) -> tuple[Path, Path]:
    """Write the sample as raw files (products.jsonl, events.csv) that `data.sources` can read."""
    import pyarrow.csv as pacsv

    products, events = generate(cfg, seed)
    out.mkdir(parents=True, exist_ok=True)
    products_path, events_path = out / "products.jsonl", out / "events.csv"
    with products_path.open("w", encoding="utf-8") as f:
        for row in products.to_pylist():
            row["attributes"] = dict(row["attributes"])
            row["updated_at"] = row["updated_at"].isoformat().replace("+00:00", "Z")
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    ms = events.set_column(3, "ts", events["ts"].cast(pa.int64()))
    pacsv.write_csv(ms, events_path)
    return products_path, events_path


def main(argv: list[str] | None = None) -> int:
    """`python -m data.sample --out DIR` and `shopgraph data sample --out DIR`."""
    from core.cli import stage_main

    def options(parser) -> None:
        parser.add_argument("--out", required=True, type=Path, help="Directory for products.jsonl and events.csv.")

    def run(cfg, out: Path) -> list[str]:
        products, events = write_sample_files(out, cfg.data.sample, cfg.data.seed)
        return [
            f"wrote {products} and {events}; read them back with data.sources:",
            f"  - {{name: products, format: jsonl, path: {products}, table: products}}",
            f"  - {{name: events, format: csv, path: {events}, table: events, timestamp_unit: ms}}",
        ]

    return stage_main(argv, run, prog="python -m data.sample", description=__doc__, options=options, show="\n".join)


if __name__ == "__main__":
    import sys

    sys.exit(main())
