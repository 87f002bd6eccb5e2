"""The grounding check on real human copy: false flags, planted errors caught, hand-label
precision/recall, and checks per second with a 1,000-brand catalog. Prints one JSON object.

    .venv/bin/python bench/grounding.py [--data-dir ../shared/data] [--planted 200] [--seed 0]

Data (read from `--data-dir`, default ../shared/data; never copied into the repository):
- `myntra-dev/myntra_dev3000.csv`: Myntra products with human descriptions (English). Facts:
  title, brand, price (INR) and the primary colour; the catalog's brands are the known brands.
- `advertisegen-dev/advertisegen_dev300.json`: AdvertiseGen attribute sets (类型#裤*材质#牛仔布)
  with human ad copy (Chinese). Facts: the attributes, a repeated key as a list value.

Every text goes through the code path of `shopgraph data check-copy` (`data.check_copy.check_record`)
with one compiled catalog. Figures:
- `human`: share of all human texts with a flag, and the flags by kind/reason (much human copy
  states what these thin facts lack: "4 pockets", "Warranty: 3 months"; those flags are right).
- `labels`: the hand labels (tests/ml/fixtures/grounding_labels.tsv: source, row, span, label),
  made by reading each sampled text and its facts: every claim the checker extracted, and every
  claim it missed that a reader finds unsupported (colours, materials, types outside the
  lexicons). Claim-level precision and recall of the flags, and `clean_flagged`: the share of
  labeled texts whose claims are all in the facts that still get a flag (target <= 5%), with
  each such false flag listed.
- `planted`: texts the checker passes (`planted_in_labeled_clean`: only the labeled texts whose
  claims are all in the facts, a smaller base that does not depend on the checker) get one
  deterministic (seeded) error per kind: a colour,
  material, number with unit, brand or product type changed to one the facts do not support, or
  an unsupported assurance added ("lifetime warranty", "highly-rated", 终身保修 ...). Caught = a
  flag on the planted span. Target >= 95% per kind and language. Where a text has no such word
  to change (AdvertiseGen facts have no numbers or brands), the error is inserted, and `mode`
  says so.
- `speed`: checks/s over the Myntra texts with a 1,000-brand catalog (the dev brands plus
  generated names), one process, after the catalog is built (target >= 1,000/s on 2 cores).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from data.check_copy import check_record  # noqa: E402
from ml.grounding import Catalog, catalog_for, check  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data"
MYNTRA = Path("myntra-dev") / "myntra_dev3000.csv"
ADVERTISEGEN = Path("advertisegen-dev") / "advertisegen_dev300.json"
LABELS = REPO / "tests" / "ml" / "fixtures" / "grounding_labels.tsv"
# Brand names for the Chinese copy (AdvertiseGen has none): well-known apparel brands.
ZH_BRANDS = ["优衣库", "李宁", "安踏", "森马", "太平鸟", "波司登", "海澜之家", "美特斯邦威", "江南布衣", "七匹狼"]


def _nfkc(s: str) -> str:
    return unicodedata.normalize("NFKC", s)


def load_myntra(data_dir: Path) -> list[dict[str, Any]]:
    """[{"source", "row", "facts", "text"}] for every Myntra row with a description."""
    path = Path(data_dir) / MYNTRA
    out = []
    with path.open(encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            text = (r.get("Description") or "").strip()
            if not text:
                continue
            attributes = {"colour": (r.get("Primary_Color") or "").strip(), "gender": (r.get("Gender") or "").strip()}
            facts = {
                "title": r["Product_Name"].strip(),
                "brand": r["Product_Brand"].strip(),
                "price": float(r["Price"]) if r.get("Price") else None,
                "currency": "INR",
                "attributes": {k: v for k, v in attributes.items() if v},
            }
            out.append({"source": "myntra", "row": r["Product_ID"], "facts": facts, "text": _nfkc(text)})
    return out


def load_advertisegen(data_dir: Path) -> list[dict[str, Any]]:
    """[{"source", "row", "facts", "text"}]; row = the line number (1-based)."""
    path = Path(data_dir) / ADVERTISEGEN
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        obj = json.loads(line)
        attributes: dict[str, list[str]] = {}
        for pair in obj["content"].split("*"):
            key, _, value = pair.partition("#")
            if key and value:
                attributes.setdefault(key, []).append(value)
        facts = {"attributes": {k: v[0] if len(v) == 1 else v for k, v in attributes.items()}}
        out.append({"source": "advertisegen", "row": str(n), "facts": facts, "text": _nfkc(obj["summary"])})
    return out


def catalog_brands(rows: Iterable[dict[str, Any]]) -> list[str]:
    return sorted({r["facts"]["brand"] for r in rows if r["facts"].get("brand")})


def padded_brands(brands: list[str], size: int = 1000, seed: int = 0) -> list[str]:
    """`brands` plus generated brand-like names (seeded) up to `size`: a 1,000-brand catalog."""
    rnd = random.Random(seed)
    syllables = [
        "ka",
        "ro",
        "vel",
        "mi",
        "tra",
        "zen",
        "lo",
        "qua",
        "bri",
        "sto",
        "nex",
        "ar",
        "dal",
        "fen",
        "gor",
        "lux",
    ]
    out = list(dict.fromkeys(brands))
    seen = {b.lower() for b in out}
    while len(out) < size:
        name = "".join(rnd.choice(syllables) for _ in range(rnd.randint(2, 3))).capitalize()
        if name.lower() not in seen:
            seen.add(name.lower())
            out.append(name)
    return out


# ----------------------------------------------------------------------------- human copy


def human_figures(rows: list[dict[str, Any]], cat: Catalog) -> dict[str, Any]:
    flagged, claims, flags = 0, 0, Counter()
    for r in rows:
        rec = check_record(r["facts"], r["text"], cat)
        claims += rec["claims"]
        flagged += bool(rec["flags"])
        flags.update(f"{f['kind']}:{f['reason']}" for f in rec["flags"])
    return {
        "texts": len(rows),
        "flagged_share": round(flagged / len(rows), 4) if rows else None,
        "claims": claims,
        "unsupported": sum(flags.values()),
        "flags_by_kind": dict(flags.most_common()),
    }


# ----------------------------------------------------------------------------- hand labels


def load_labels(path: Path = LABELS) -> dict[tuple[str, str], dict[str, str]]:
    """(source, row) -> {span (lower case): "supported" | "unsupported"}."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        source, row, span, label = line.split("\t")[:4]
        if label not in ("supported", "unsupported"):
            raise ValueError(f"{path}: label must be supported or unsupported, got {label!r} in {line!r}")
        out.setdefault((source, row), {})[span.strip().lower()] = label
    return out


def label_figures(
    rows: list[dict[str, Any]], labels: dict[tuple[str, str], dict[str, str]], cat: Catalog
) -> dict[str, Any]:
    """Claim-level precision/recall of the flags on the labeled rows of these rows, and the
    share of labeled texts whose claims are all supported that still get a flag."""
    tp = fp = fn = unlabeled = 0
    clean = clean_flagged = 0
    false_flags, missed = [], []
    by_row = {(r["source"], r["row"]): r for r in rows}
    for key, spans in sorted(labels.items()):
        r = by_row.get(key)
        if r is None:
            continue
        rec = check_record(r["facts"], r["text"], cat)
        flagged = {f["span"].lower() for f in rec["flags"]}
        for f in rec["flags"]:
            label = spans.get(f["span"].lower())
            if label == "unsupported":
                tp += 1
            elif label == "supported":
                fp += 1
                false_flags.append({"row": key[1], "span": f["span"], "reason": f["reason"], "fact": f["fact"]})
            else:
                unlabeled += 1
        for span, label in spans.items():
            if label == "unsupported" and span not in flagged:
                fn += 1
                missed.append({"row": key[1], "span": span})
        if all(label == "supported" for label in spans.values()):
            clean += 1
            clean_flagged += bool(rec["flags"])
    return {
        "labeled_texts": sum(1 for k in labels if k in by_row),
        "labeled_claims": sum(len(v) for k, v in labels.items() if k in by_row),
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "recall": round(tp / (tp + fn), 4) if tp + fn else None,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "unlabeled_flags": unlabeled,
        "clean_texts": clean,
        "clean_flagged": round(clean_flagged / clean, 4) if clean else None,
        "false_flags": false_flags,
        "missed": missed,
    }


def labeled_clean(rows: list[dict[str, Any]], labels: dict[tuple[str, str], dict[str, str]]) -> list[dict[str, Any]]:
    """The labeled texts whose claims are all in the facts (by the hand labels)."""
    clean = {k for k, spans in labels.items() if all(v == "supported" for v in spans.values())}
    return [r for r in rows if (r["source"], r["row"]) in clean]


# ----------------------------------------------------------------------------- planted errors

EN_SWAPS = {
    "colour": ["purple", "orange", "yellow", "pink", "green", "red", "white", "black", "brown", "grey", "blue"],
    "material": ["leather", "silk", "wool", "polyester", "denim", "linen", "nylon", "cashmere", "velvet", "cotton"],
    "product_type": [
        "jacket",
        "dress",
        "sneakers",
        "trousers",
        "handbag",
        "sweater",
        "skirt",
        "jeans",
        "shirt",
        "boots",
    ],
}
ZH_SWAPS = {
    "colour": ["紫色", "橙色", "黄色", "粉色", "绿色", "红色", "白色", "黑色", "棕色", "灰色", "蓝色"],
    "material": ["真皮", "真丝", "羊毛", "涤纶", "牛仔布", "亚麻", "尼龙", "羊绒", "雪纺", "纯棉"],
    "product_type": ["夹克", "连衣裙", "运动鞋", "牛仔裤", "手提包", "毛衣", "半身裙", "衬衫", "卫衣", "短裤"],
}
EN_ASSURANCES = ["lifetime warranty", "free shipping", "highly-rated", "top-rated", "award-winning", "best-selling",
                 "eco-friendly", "money-back guarantee", "highly rated"]  # fmt: skip
ZH_ASSURANCES = ["终身保修", "包邮", "好评如潮", "销量第一", "正品保证", "全网最低价", "限时特惠", "爆款"]
KINDS = ("colour", "material", "number", "brand", "product_type", "assurance")


def _replace(text: str, start: int, end: int, new: str) -> tuple[str, int, int]:
    return text[:start] + new + text[end:], start, start + len(new)


def _swap(r: dict[str, Any], kind: str, rnd: random.Random, zh: bool, cat: Catalog) -> tuple[str, int, int, str] | None:
    """Change one supported claim of `kind` to a value the facts do not support."""
    claims = [c for c in check(r["text"], r["facts"], catalog=cat).claims if c.kind == kind and c.supported]
    if not claims:
        return None
    c = rnd.choice(claims)
    for new in rnd.sample((ZH_SWAPS if zh else EN_SWAPS)[kind], k=len((ZH_SWAPS if zh else EN_SWAPS)[kind])):
        text, s, e = _replace(r["text"], c.start, c.end, new if zh or not c.text[:1].isupper() else new.capitalize())
        probe = check(new, r["facts"], catalog=cat)
        if probe.claims and probe.unsupported:  # the facts really do not support the new value
            return text, s, e, "changed"
    return None


def _number(r: dict[str, Any], rnd: random.Random, zh: bool, cat: Catalog) -> tuple[str, int, int, str] | None:
    claims = [c for c in check(r["text"], r["facts"], catalog=cat).claims if c.kind == "quantity" and c.supported]
    for c in rnd.sample(claims, k=len(claims)):
        digits = "".join(ch for ch in c.text if ch.isdigit() or ch == ".").strip(".")
        if not digits:
            continue
        try:
            value = float(digits)
        except ValueError:
            continue
        new_value = value * 2 + 1 if value < 1000 else value + 100
        new_num = f"{new_value:g}"
        i = r["text"].find(digits, c.start, c.end)
        if i < 0:
            continue
        text, s, e = _replace(r["text"], i, i + len(digits), new_num)
        return text, s, e + (c.end - i - len(digits)), "changed"
    # nothing to change: add a quantity the facts do not state, at the end of the first sentence
    phrase = rnd.choice(
        ["，腰围68厘米", "，衣长75厘米", "，重量350克"]
        if zh
        else [", 68 cm long", ", weighing 350 g", ", 2 l capacity"]
    )
    cut = next((i for i, ch in enumerate(r["text"]) if ch in ("。，,.;" if zh else ",.;")), len(r["text"]))
    text = r["text"][:cut] + phrase + r["text"][cut:]
    return text, cut + 1, cut + len(phrase), "inserted"


def _brand(
    r: dict[str, Any], rnd: random.Random, zh: bool, cat: Catalog, brands: list[str]
) -> tuple[str, int, int, str] | None:
    own = (r["facts"].get("brand") or "").lower()
    others = [b for b in brands if b.lower() != own and b.lower() not in r["text"].lower() and len(b) >= 3]
    other = rnd.choice(others)
    result = check(r["text"], r["facts"], catalog=cat)
    mention = next((c for c in result.claims if c.kind == "brand" and c.supported), None)
    if mention:
        text, s, e = _replace(r["text"], mention.start, mention.end, other)
        return text, s, e, "changed"
    product = next((c for c in result.claims if c.kind == "product_type" and c.supported), None)
    if product is None:
        return None
    if zh:  # 这款李宁裤子
        text, s, e = _replace(r["text"], product.start, product.start, other)
        return text, s, e, "inserted"
    text, s, e = _replace(r["text"], product.end, product.end, f" by {other}")
    return text, s + 4, e, "inserted"


def _assurance(r: dict[str, Any], rnd: random.Random, zh: bool) -> tuple[str, int, int, str]:
    phrase = rnd.choice(ZH_ASSURANCES if zh else EN_ASSURANCES)
    text = r["text"].rstrip()
    if zh:
        return text + phrase + "。", len(text), len(text) + len(phrase), "inserted"
    sentence = rnd.choice(["It comes with {} service.", "A {} pick.", "Enjoy {} on this one."]).format(phrase)
    lead = text + (" " if text.endswith((".", "!", "?")) else ". ")
    i = lead.__len__() + sentence.index(phrase)
    return lead + sentence, i, i + len(phrase), "inserted"


def plant(
    r: dict[str, Any], kind: str, rnd: random.Random, cat: Catalog, brands: list[str]
) -> tuple[str, int, int, str] | None:
    """(new text, start, end of the planted span, "changed" | "inserted"), or None when this text
    has nothing of this kind to change."""
    zh = r["source"] == "advertisegen"
    if kind in ("colour", "material", "product_type"):
        return _swap(r, kind, rnd, zh, cat)
    if kind == "number":
        return _number(r, rnd, zh, cat)
    if kind == "brand":
        return _brand(r, rnd, zh, cat, brands)
    return _assurance(r, rnd, zh)


def planted_figures(
    rows: list[dict[str, Any]],
    cat: Catalog,
    brands: list[str],
    per_kind: int,
    seed: int,
    base: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Per kind: planted texts, share caught (a flag overlapping the planted span), modes, misses.
    `base`: the texts to plant into (default: every text the checker passes)."""
    if base is None:
        base = [r for r in rows if not check_record(r["facts"], r["text"], cat)["flags"]]
    out: dict[str, Any] = {"base_texts": len(base)}
    for kind in KINDS:
        rnd = random.Random(f"{seed}:{kind}")
        caught, n, modes, misses = 0, 0, Counter(), []
        for r in rnd.sample(base, k=len(base)):
            if n >= per_kind:
                break
            planted = plant(r, kind, rnd, cat, brands)
            if planted is None:
                continue
            text, s, e, mode = planted
            n += 1
            modes[mode] += 1
            rec = check(text, r["facts"], catalog=cat)
            if any(c.start < e and c.end > s for c in rec.unsupported):
                caught += 1
            elif len(misses) < 5:
                misses.append({"row": r["row"], "planted": text[s:e], "context": text[max(0, s - 30) : e + 20]})
        out[kind] = {
            "planted": n,
            "caught": round(caught / n, 4) if n else None,
            "modes": dict(modes),
            "missed": misses,
        }
    return out


# ----------------------------------------------------------------------------- speed


def speed(rows: list[dict[str, Any]], brands: list[str], n: int = 3000) -> dict[str, Any]:
    t0 = time.perf_counter()
    cat = Catalog(brands)
    build_s = time.perf_counter() - t0
    sample = (rows * (n // max(1, len(rows)) + 1))[:n]
    for r in sample[:200]:  # warm-up
        check_record(r["facts"], r["text"], cat)
    t0, c0 = time.perf_counter(), time.process_time()
    for r in sample:
        check_record(r["facts"], r["text"], cat)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    for r in sample[:1000]:  # the old call style: the brand list on every call (a cached matcher)
        check(r["text"], r["facts"], known_brands=brands)
    per_call_list = time.perf_counter() - t0
    return {
        "brands": len(cat),
        "catalog_build_ms": round(build_s * 1000, 1),
        "checks": len(sample),
        "checks_per_s": round(len(sample) / elapsed),
        # CPU time of this process: on a shared box wall time also counts waiting for a core
        "checks_per_cpu_s": round(len(sample) / cpu) if cpu else None,
        "ms_per_check": round(elapsed / len(sample) * 1000, 3),
        "checks_per_s_known_brands_list": round(min(1000, len(sample)) / per_call_list),
        "mean_text_chars": round(sum(len(r["text"]) for r in sample) / len(sample)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA, help="Folder holding myntra-dev/ and advertisegen-dev/."
    )
    parser.add_argument("--planted", type=int, default=200, help="Planted errors per kind and language.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labels", type=Path, default=LABELS)
    args = parser.parse_args(argv)
    for rel in (MYNTRA, ADVERTISEGEN):
        if not (args.data_dir / rel).is_file():
            print(
                f"error: {args.data_dir / rel} not found; pass --data-dir with myntra-dev/ and advertisegen-dev/",
                file=sys.stderr,
            )
            return 1
    en, zh = load_myntra(args.data_dir), load_advertisegen(args.data_dir)
    en_brands = catalog_brands(en)
    en_cat, zh_cat = catalog_for(en_brands), catalog_for(ZH_BRANDS)
    labels = load_labels(args.labels)
    report = {
        "data_dir": str(args.data_dir),
        "seed": args.seed,
        "myntra": {
            "human": human_figures(en, en_cat),
            "labels": label_figures(en, labels, en_cat),
            "planted": planted_figures(en, en_cat, en_brands, args.planted, args.seed),
            "planted_in_labeled_clean": planted_figures(
                en, en_cat, en_brands, args.planted, args.seed, base=labeled_clean(en, labels)
            ),
        },
        "advertisegen": {
            "human": human_figures(zh, zh_cat),
            "labels": label_figures(zh, labels, zh_cat),
            "planted": planted_figures(zh, zh_cat, ZH_BRANDS, args.planted, args.seed),
            "planted_in_labeled_clean": planted_figures(
                zh, zh_cat, ZH_BRANDS, args.planted, args.seed, base=labeled_clean(zh, labels)
            ),
        },
        "speed": speed(en, padded_brands(en_brands, 1000, args.seed)),
    }
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
