"""Grounding check: is every claim in a generated text supported by the product's facts?

    from ml.grounding import check, check_batch, remove_unsupported
    check("Made of 100% cotton, 50 cm wide.", facts).unsupported   # -> claims the facts lack

Pure Python, deterministic, no model: evaluation uses it offline and serving runs it on every
generated text. Facts are `core.facts.facts_of` dicts (title, brand, category, price,
currency, attributes) or their serialized JSON.

Claims extracted from the text, each marked supported or not, with a reason:

- quantities: a number with a unit (length, mass, volume, percent, price, count, power, ...).
  Units are normalized (cm/mm/m, g/kg, ml/l, inch/"), numbers compared numerically. Reasons:
  `numeric_mismatch` (the facts have this kind of quantity, but not this value),
  `unit_mismatch` (the facts have this number, but with another unit), `not_in_facts`.
  A bare number must appear among the facts' numbers; one that a fact attribute's name
  introduces in the same clause ("its weight is 1.2", "a capacity of 500", "weighs 1200",
  "costs 39.9") must be a value of that attribute, in any unit of its dimension
  (`numeric_mismatch` for "its weight is 39.9" when 39.9 is the price).
- "key: value" phrases ("material: cotton", "材质：棉"): the key must be a fact attribute
  (`unknown_attribute`) and the value must agree with it (`value_mismatch`, or the numeric
  reasons above when both carry quantities).
- materials and colours from a small bilingual lexicon: the material/colour (or its
  translation) must occur in the facts (`not_in_facts`).
- brands: the product's brand is supported; any other known brand is `brand_mismatch`.
- product types from a bilingual lexicon ("phone case", "charger", "t-shirt", "jacket", 手机壳,
  夹克, ...): a type the text names must be a type the product's own facts name (its title,
  category or attributes), else `type_mismatch` ("this charger" for a phone case). A longer
  type grounds the shorter ones inside it: a "phone case" supports "phone", not the reverse.

A personalized reason also cites the shopper's profile (`profile=`: recent items, top
categories, top brands). The profile is evidence about the shopper, never a fact of this
product: a verbatim quote of a profile item or category ("the Blockwise P4 Building Set, 600,
Navy Blue you viewed") is a reference, and the claims inside it are not checked; outside a
quote, brands and product types may also come from the profile ("since you like Hearthline
mugs"), but numbers, units, materials, colours, assurances and `key: value` claims must be
facts of this product (a "600-piece" borrowed from a recently viewed set is `not_in_facts`).

CJK text is checked as strictly as English: no word boundaries are assumed there, keys are
matched as suffixes ("这款夹克材质：棉" has the key 材质), and Chinese units (毫升, 厘米, 千克,
元, 件...) normalize like their Latin forms.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# ----------------------------------------------------------------------------- units

# unit -> (dimension, factor to the dimension's base unit)
_UNITS: dict[str, tuple[str, float]] = {}


def _add(dimension: str, factor: float, *names: str) -> None:
    for name in names:
        _UNITS[name] = (dimension, factor)


_add("length", 1.0, "mm", "millimeter", "millimeters", "millimetre", "millimetres", "毫米")
_add("length", 10.0, "cm", "centimeter", "centimeters", "centimetre", "centimetres", "厘米", "公分")
_add("length", 1000.0, "m", "meter", "meters", "metre", "metres", "米")
_add("length", 25.4, "inch", "inches", '"', "″", "英寸", "寸")
_add("length", 304.8, "ft", "foot", "feet", "英尺")
_add("mass", 1.0, "g", "gram", "grams", "gr", "克")
_add("mass", 1000.0, "kg", "kilogram", "kilograms", "kilo", "kilos", "千克", "公斤")
_add("mass", 0.001, "mg", "milligram", "milligrams", "毫克")
_add("mass", 453.592, "lb", "lbs", "pound", "pounds", "磅")
_add("mass", 28.3495, "oz", "ounce", "ounces", "盎司")
_add("mass", 500.0, "斤")
_add("volume", 1.0, "ml", "milliliter", "milliliters", "millilitre", "millilitres", "毫升")
_add("volume", 10.0, "cl")
_add("volume", 1000.0, "l", "liter", "liters", "litre", "litres", "升")
_add("percent", 1.0, "%", "percent", "％")
_add("power", 1.0, "w", "watt", "watts", "瓦")
_add("charge", 1.0, "mah", "毫安时")
_add("storage", 1.0, "gb")
_add("storage", 1024.0, "tb")
_add("time", 1.0, "h", "hr", "hrs", "hour", "hours", "小时")
_add("time", 1 / 60, "min", "mins", "minute", "minutes", "分钟")
_add("count", 1.0, "pcs", "pc", "piece", "pieces", "pack", "packs", "件", "个", "只", "片", "套", "支", "双")
_add("age", 1.0, "years", "year", "yrs", "岁")
_add("price", 1.0, "usd", "eur", "gbp", "cny", "rmb", "jpy", "元", "块", "美元", "欧元", "英镑", "人民币")

_CURRENCY_OF = {"$": "USD", "usd": "USD", "美元": "USD", "€": "EUR", "eur": "EUR", "欧元": "EUR", "£": "GBP", "gbp": "GBP", "英镑": "GBP",
                "¥": "CNY", "￥": "CNY", "cny": "CNY", "rmb": "CNY", "元": "CNY", "块": "CNY", "人民币": "CNY", "jpy": "JPY"}  # fmt: skip
_UNIT_ALT = "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))
_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
# Not preceded by a Latin letter/digit/dot (CJK may touch the number: 容量500毫升).
_QUANTITY = re.compile(
    rf"(?P<cur>[$€£¥￥])?\s?(?<![0-9A-Za-z.])(?P<num>{_NUM})(?:\s?-\s?|\s?)(?P<unit>{_UNIT_ALT})?(?![A-Za-z])",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Quantity:
    raw: float  # the number as written
    dimension: str | None  # None = a bare number
    value: float  # in the dimension's base unit
    unit: str | None  # normalized unit (currency code for prices)


def _to_float(num: str) -> float:
    return float(num.replace(",", ""))


def quantities(text: str, *, default_currency: str | None = None) -> list[tuple[Quantity, int, int]]:
    """Every number in `text`, with its unit normalized, and its span."""
    out = []
    for m in _QUANTITY.finditer(text):
        raw = _to_float(m["num"])
        cur, unit = m["cur"], (m["unit"] or "").lower() or None
        start = m.start("cur") if cur else m.start("num")
        if cur:
            out.append((Quantity(raw, "price", raw, _CURRENCY_OF.get(cur, default_currency)), start, m.end()))
        elif unit:
            dim, factor = _UNITS[unit]
            norm_unit = _CURRENCY_OF.get(unit, unit) if dim == "price" else unit
            out.append((Quantity(raw, dim, raw * factor, norm_unit), start, m.end()))
        else:
            out.append((Quantity(raw, None, raw, None), m.start("num"), m.end("num")))
    return out


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 + 1e-3 * max(abs(a), abs(b))


# ----------------------------------------------------------------------------- lexicons

# term -> canonical concept (English and Chinese map to one concept, so either language grounds).
_MATERIALS = {
    "cotton": "cotton", "棉": "cotton", "纯棉": "cotton", "全棉": "cotton", "denim": "denim", "牛仔布": "denim", "牛仔": "denim",
    "wool": "wool", "羊毛": "wool", "merino": "merino", "cashmere": "cashmere", "羊绒": "cashmere", "silk": "silk", "丝": "silk", "真丝": "silk",
    "linen": "linen", "亚麻": "linen", "polyester": "polyester", "涤纶": "polyester", "聚酯纤维": "polyester", "nylon": "nylon", "尼龙": "nylon",
    "leather": "leather", "皮革": "leather", "真皮": "leather", "牛皮": "leather", "suede": "suede", "麂皮": "suede",
    "wood": "wood", "wooden": "wood", "木": "wood", "木质": "wood", "实木": "wood", "beech": "beech", "beechwood": "beech", "榉木": "beech",
    "oak": "oak", "橡木": "oak", "bamboo": "bamboo", "竹": "bamboo", "pine": "pine", "松木": "pine", "walnut": "walnut", "胡桃木": "walnut",
    "stainless steel": "stainless steel", "不锈钢": "stainless steel", "steel": "steel", "钢": "steel", "aluminum": "aluminium", "aluminium": "aluminium", "铝": "aluminium",
    "iron": "iron", "铁": "iron", "copper": "copper", "铜": "copper", "titanium": "titanium", "钛": "titanium",
    "plastic": "plastic", "塑料": "plastic", "glass": "glass", "玻璃": "glass", "ceramic": "ceramic", "陶瓷": "ceramic", "porcelain": "porcelain", "瓷": "porcelain",
    "rubber": "rubber", "橡胶": "rubber", "silicone": "silicone", "硅胶": "silicone", "spandex": "spandex", "elastane": "spandex", "氨纶": "spandex",
}  # fmt: skip
_COLOURS = {
    "red": "red", "红色": "red", "红": "red", "blue": "blue", "蓝色": "blue", "蓝": "blue", "navy": "navy", "藏青": "navy",
    "green": "green", "绿色": "green", "绿": "green", "black": "black", "黑色": "black", "黑": "black", "white": "white", "白色": "white", "白": "white",
    "yellow": "yellow", "黄色": "yellow", "黄": "yellow", "orange": "orange", "橙色": "orange", "purple": "purple", "紫色": "purple", "紫": "purple",
    "pink": "pink", "粉色": "pink", "粉红": "pink", "brown": "brown", "棕色": "brown", "咖啡色": "brown", "grey": "grey", "gray": "grey", "灰色": "grey", "灰": "grey",
    "beige": "beige", "米色": "beige", "silver": "silver", "银色": "silver", "gold": "gold", "金色": "gold",
}  # fmt: skip
_ATTR_SYNONYMS = {
    "material": "material", "materials": "material", "fabric": "material", "材质": "material", "材料": "material", "面料": "material",
    "color": "color", "colour": "color", "颜色": "color", "size": "size", "尺寸": "size", "尺码": "size", "weight": "weight", "重量": "weight",
    "capacity": "capacity", "volume": "capacity", "容量": "capacity", "price": "price", "价格": "price", "brand": "brand", "品牌": "brand",
    "dimensions": "size", "规格": "size", "age": "age", "年龄": "age", "warranty": "warranty", "保修": "warranty",
}  # fmt: skip

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]")


def _norm(s: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", s).lower().replace("_", " ").split())


def _term_pattern(terms: Iterable[str]) -> re.Pattern[str]:
    # CJK terms match anywhere (no word boundaries in CJK); Latin terms on word boundaries.
    # Longest first, so "stainless steel" wins over "steel"; the boundary checks sit outside
    # the alternation (one test per position, not one per term: this runs on every request).
    ordered = sorted(terms, key=len, reverse=True)
    latin = "|".join(re.escape(t) for t in ordered if not _CJK.search(t))
    cjk = "|".join(re.escape(t) for t in ordered if _CJK.search(t))
    return re.compile("|".join(p for p in (latin and rf"(?<![a-z])(?:{latin})(?![a-z])", cjk) if p))


_MATERIAL_RE = _term_pattern(_MATERIALS)
_COLOUR_RE = _term_pattern(_COLOURS)
# Claims a shop is liable for that no catalog fact here backs unless it says so itself:
# ratings and rankings, certifications, eco claims, guarantees, offers. Small models add
# them freely ("a top-rated, eco-friendly mug"); each is unsupported unless the facts use it.
_ASSURANCES = (
    "top-rated",
    "top rated",
    "best-selling",
    "best selling",
    "bestseller",
    "best seller",
    "award-winning",
    "award winning",
    "#1",
    "number one",
    "no. 1",
    "most popular",
    "5-star",
    "five-star",
    "highly rated",
    "customer favorite",
    "customer favourite",
    "eco-friendly",
    "eco friendly",
    "environmentally friendly",
    "sustainable",
    "sustainably",
    "recycled",
    "biodegradable",
    "organic",
    "non-toxic",
    "bpa-free",
    "bpa free",
    "hypoallergenic",
    "certified",
    "fda-approved",
    "clinically proven",
    "dermatologist tested",
    "waterproof",
    "water-resistant",
    "water resistant",
    "shockproof",
    "dishwasher safe",
    "dishwasher-safe",
    "microwave safe",
    "lifetime",
    "warranty",
    "guarantee",
    "guaranteed",
    "money-back",
    "free shipping",
    "free delivery",
    "limited time",
    "limited edition",
    "limited supply",
    "on sale",
    "discount",
    "handmade",
    "hand-made",
    "made in",
    "好评",
    "畅销",
    "环保",
    "有机",
    "防水",
    "保修",
    "包邮",
    "限时",
    "正品保证",
    "无毒",
)
_ASSURANCE_RE = _term_pattern(_ASSURANCES)
# Product types: concept -> names (singular; Latin plurals are derived). Only nouns that name a
# kind of product and rarely mean anything else in shop copy: no "case", "set", "bag", "train",
# "watch", "battery" (a tracker's "battery life"), "lens" (a camera's own lens).
_PRODUCT_TYPES: dict[str, tuple[str, ...]] = {
    "smartphone": ("smartphone", "phone", "mobile phone", "cell phone", "cellphone", "手机", "智能手机"),
    "phone case": ("phone case", "phone cover", "手机壳", "手机套", "保护壳"),
    "screen protector": ("screen protector", "屏幕保护膜", "钢化膜", "贴膜"),
    "charger": ("charger", "wall charger", "charging adapter", "充电器", "充电头"),
    "power bank": ("power bank", "powerbank", "充电宝", "移动电源"),
    "headphones": ("headphones", "headphone", "earphones", "earbuds", "headset", "耳机"),
    "camera": ("camera", "相机", "照相机", "摄像机"),
    "camera lens": ("camera lens", "镜头"),
    "memory card": ("memory card", "sd card", "microsd card", "存储卡", "内存卡"),
    "tripod": ("tripod", "三脚架"),
    "camera bag": ("camera bag", "相机包", "摄影包"),
    "laptop": ("laptop", "notebook computer", "笔记本电脑"),
    "laptop sleeve": ("laptop sleeve", "电脑内胆包"),
    "mouse": ("mouse", "mice", "wireless mouse", "鼠标"),
    "keyboard": ("keyboard", "键盘"),
    "usb hub": ("usb-c hub", "usb hub", "hub", "docking station", "集线器", "扩展坞"),
    "coffee maker": ("coffee maker", "coffee machine", "espresso machine", "咖啡机"),
    "coffee beans": ("coffee beans", "coffee bean", "咖啡豆"),
    "milk frother": ("milk frother", "frother", "奶泡器"),
    "cup": ("mug", "cup", "tumbler", "马克杯", "杯子", "水杯", "保温杯"),
    "water bottle": ("water bottle", "bottle", "水瓶"),
    "shoes": ("shoes", "shoe", "sneakers", "trainers", "鞋", "跑鞋", "运动鞋"),
    "socks": ("socks", "sock", "袜子"),
    "fitness tracker": ("fitness tracker", "activity tracker", "手环"),
    "remote control car": ("remote control car", "rc car", "遥控车"),
    "batteries": ("batteries", "rechargeable batteries", "充电电池"),
    "building set": ("building set", "building blocks", "积木"),
    "jigsaw puzzle": ("jigsaw puzzle", "jigsaw", "puzzle", "拼图"),
    "t-shirt": ("t-shirt", "tshirt", "tee", "t恤", "短袖"),
    "shirt": ("shirt", "衬衫"),
    "jacket": ("jacket", "夹克"),
    "coat": ("coat", "外套", "大衣"),
    "hoodie": ("hoodie", "sweatshirt", "卫衣"),
    "sweater": ("sweater", "jumper", "毛衣"),
    "dress": ("dress", "连衣裙"),
    "jeans": ("jeans", "牛仔裤"),
    "trousers": ("trousers", "pants", "裤子"),
    "scarf": ("scarf", "scarves", "围巾"),
    "wallet": ("wallet", "钱包"),
    "backpack": ("backpack", "背包", "双肩包"),
    "handbag": ("handbag", "手提包"),
    "yoga mat": ("yoga mat", "瑜伽垫"),
    "vase": ("vase", "花瓶"),
    "lamp": ("lamp", "台灯", "灯具"),
    "cutting board": ("cutting board", "chopping board", "砧板", "菜板"),
    "television": ("television", "tv", "电视", "电视机"),
}


def _plurals(term: str) -> list[str]:
    if _CJK.search(term) or term.endswith("s"):
        return [term]
    if term.endswith(("x", "ch", "sh")):
        return [term, term + "es"]
    if term.endswith("y") and term[-2:-1] not in "aeiou":
        return [term, term[:-1] + "ies"]
    return [term, term + "s"]


_TYPE_OF = {form: concept for concept, terms in _PRODUCT_TYPES.items() for t in terms for form in _plurals(t)}
_TYPE_RE = _term_pattern(_TYPE_OF)
# A name grounds every type named inside it: "phone case" -> {phone case, smartphone}, 手机壳 ->
# {phone case, smartphone}, "t-shirt" -> {t-shirt, shirt}; "phone" grounds only "smartphone".
_TYPE_CLOSURE = {
    form: {_TYPE_OF[m.group(0)] for i in range(len(form)) if (m := _TYPE_RE.match(form, i))} | {concept}
    for form, concept in _TYPE_OF.items()
}


def _types_in(text: str) -> set[str]:
    return {c for m in _TYPE_RE.finditer(text) for c in _TYPE_CLOSURE[m.group(0)]}


# "key: value" — a short key (≤3 Latin words or ≤8 CJK chars) before ':' / '：' / '='.
_KV = re.compile(
    r"(?P<key>[A-Za-z][A-Za-z\-]*(?: [A-Za-z][A-Za-z\-]*){0,2}|[\u3400-\u9fff]{1,8})\s*[:：=]\s*(?P<value>[^,;，；。!?！？\n:：]+?)(?=\s*(?:[,;，；。!?！？\n]|\.\s|\.$|$))"
)

# ----------------------------------------------------------------------------- result types


@dataclass(frozen=True)
class Claim:
    text: str
    kind: str  # quantity | number | attribute | material | colour | brand
    supported: bool
    reason: str | None = None  # None when supported
    start: int = 0
    end: int = 0


@dataclass
class GroundingResult:
    claims: list[Claim] = field(default_factory=list)

    @property
    def unsupported(self) -> list[Claim]:
        return [c for c in self.claims if not c.supported]

    @property
    def rate(self) -> float:
        """Unsupported claims / claims (0.0 for a text with no checkable claim)."""
        return len(self.unsupported) / len(self.claims) if self.claims else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "claims": len(self.claims),
            "unsupported": [{"text": c.text, "kind": c.kind, "reason": c.reason} for c in self.unsupported],
            "rate": self.rate,
        }


# ----------------------------------------------------------------------------- facts index


@dataclass
class _Facts:
    attributes: dict[str, tuple[str, str]]  # normalized key -> (original key, normalized value)
    canon_keys: dict[str, str]  # synonym concept -> normalized key
    text: str  # every fact key and value, normalized
    quantities: list[Quantity]
    quantities_by_key: dict[str, list[Quantity]]
    materials: set[str]
    colours: set[str]
    brand: str | None
    currency: str | None
    types: set[str] = field(default_factory=set)  # product-type concepts the facts name


_INSTRUCTION = re.compile(
    r"ignore (?:all |any )?(?:the )?(?:previous|prior|above)|disregard|system prompt|you are now|忽略|无视|指令|提示词",
    re.IGNORECASE,
)


def is_plain_value(value: str) -> bool:
    """A catalog value that can ground a claim: one short phrase. Prose, embedded "key: value"
    pairs and instructions inside a value ("Ignore previous instructions. Warranty: 99 years")
    are catalog text, not facts, so they support nothing (the prompt-injection defence)."""
    v = value.strip()
    # a colon between digits is a ratio or a time ("1:16", "2:30"), not an embedded "key: value"
    return (
        len(v) <= 120
        and not re.search(r"(?<!\d)[:：]|[:：](?!\d)|[.!?](?=\s+\S)|[。！？](?=\s*\S)", v)
        and not _INSTRUCTION.search(v)
    )


def _index(facts: Mapping[str, Any] | str) -> _Facts:
    if isinstance(facts, str):
        facts = json.loads(facts)
    currency = facts.get("currency")
    attrs = {str(k): str(v) for k, v in (facts.get("attributes") or {}).items() if is_plain_value(str(v))}
    attributes = {_norm(k): (k, _norm(v)) for k, v in attrs.items()}
    extra = {
        k: _norm(str(facts[k]))
        for k in ("title", "brand", "category")
        if facts.get(k) and is_plain_value(str(facts[k]))
    }
    for k, v in extra.items():
        attributes.setdefault(k, (k, v))
    canon = {}
    for nk in attributes:
        for suffix_len in range(len(nk), 0, -1):
            if (c := _ATTR_SYNONYMS.get(nk[-suffix_len:])) and c not in canon:
                canon[c] = nk
                break
    values = [*extra.values(), *attributes.keys(), *(v for _, v in attributes.values())]
    text = " | ".join(values)
    qs, by_key = [], {}
    for nk, (key, value) in attributes.items():
        found = [q for q, _, _ in quantities(value, default_currency=currency)]
        # a bare number whose key names the unit ("weight_kg": "1.2") takes that unit
        key_unit = next((u for u in re.split(r"[\s()（）\[\]]+", nk) if u in _UNITS), None)
        if key_unit:
            dim, factor = _UNITS[key_unit]
            found = [Quantity(q.raw, dim, q.raw * factor, key_unit) if q.dimension is None else q for q in found]
        by_key[nk] = found
        qs += found
    if facts.get("price") is not None:
        price = float(facts["price"])
        q = Quantity(price, "price", price, currency)
        by_key.setdefault("price", []).append(q)
        qs.append(q)
        # "Price: 12.99 USD" names a fact too (checked as a quantity in _kv_claims).
        attributes.setdefault("price", ("price", _norm(str(facts["price"]))))
        canon.setdefault("price", "price")  # so 价格 names it too
    return _Facts(
        attributes=attributes,
        canon_keys=canon,
        text=text,
        quantities=qs,
        quantities_by_key=by_key,
        materials={_MATERIALS[m.group(0)] for m in _MATERIAL_RE.finditer(text)},
        colours={_COLOURS[m.group(0)] for m in _COLOUR_RE.finditer(text)},
        brand=_norm(str(facts["brand"])) if facts.get("brand") else None,
        currency=currency,
        types=_types_in(text),
    )


# A caller may pass the profile merged into the facts as "profile <key>" attributes ("; "-joined);
# they are split back out, so the profile never grounds a product claim.
_PROFILE_ATTR = "profile "


@dataclass
class _Profile:
    quotes: list[str]  # item titles and categories (and category leaves) a reason may quote verbatim
    text: str  # everything in the profile, normalized: grounds brands and product types only
    types: set[str]


def _split_profile(
    facts: Mapping[str, Any] | str, profile: Mapping[str, Any] | None
) -> tuple[Mapping[str, Any], Mapping[str, Any] | None]:
    if isinstance(facts, str):
        facts = json.loads(facts)
    attrs = facts.get("attributes") or {}
    legacy = {
        str(k)[len(_PROFILE_ATTR) :]: str(v).split("; ") for k, v in attrs.items() if str(k).startswith(_PROFILE_ATTR)
    }
    if not legacy:
        return facts, profile
    own = {k: v for k, v in attrs.items() if not str(k).startswith(_PROFILE_ATTR)}
    return {**facts, "attributes": own}, {**legacy, **(profile or {})}


def _profile_index(profile: Mapping[str, Any] | None) -> _Profile | None:
    if not profile:
        return None
    entries: list[tuple[str, str]] = []
    for key, value in profile.items():
        for v in value if isinstance(value, list | tuple) else [value]:
            if v is not None and str(v).strip():
                entries.append((str(key), unicodedata.normalize("NFKC", str(v)).lower().strip()))
    quotes = set()
    for key, v in entries:
        if "brand" in key:
            continue  # a brand is a name, not a quotable item: it grounds brand claims only
        quotes.add(v)
        if ">" in v:
            quotes.add(v.split(">")[-1].strip())  # "home & kitchen > coffee mugs" is cited as "coffee mugs"
    text = " | ".join(v for _, v in entries)
    return _Profile(quotes=sorted((q for q in quotes if q), key=len, reverse=True), text=text, types=_types_in(text))


def _quote_spans(low: str, prof: _Profile | None) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for q in prof.quotes if prof else []:
        start = low.find(q)
        while start >= 0:
            spans.append((start, start + len(q)))
            start = low.find(q, start + 1)
    return spans


# ----------------------------------------------------------------------------- checks


def _quantity_reason(q: Quantity, pool: list[Quantity]) -> str | None:
    """None when `q` is supported by `pool`; else why not."""
    if q.dimension is None:
        if any(_close(q.raw, f.raw) for f in pool):
            return None
        return "numeric_mismatch" if pool else "not_in_facts"
    same_dim = [f for f in pool if f.dimension == q.dimension]
    for f in same_dim:
        if _close(q.value, f.value):
            if q.dimension == "price" and q.unit and f.unit and q.unit != f.unit:
                return "unit_mismatch"  # 39.9 EUR is not 39.9 USD
            return None
    # the facts hold a bare number equal to this one: the text added a unit the facts lack
    if any(f.dimension is None and _close(q.raw, f.raw) for f in pool):
        return None
    if same_dim:
        # 50 mm vs the facts' 50 cm is a wrong unit; 60 cm vs 50 cm a wrong number
        return "unit_mismatch" if any(_close(q.raw, f.raw) for f in same_dim) else "numeric_mismatch"
    # no quantity of this kind in the facts: the number is there with another unit (500 g vs 500 ml)?
    return "unit_mismatch" if any(_close(q.raw, f.raw) for f in pool) else "not_in_facts"


def _match_key(key: str, idx: _Facts) -> str | None:
    """The fact attribute a claimed key names: exact, a suffix of it (CJK/long keys), or a synonym."""
    nk = _norm(key)
    words = nk.split(" ")
    candidates = (
        [" ".join(words[i:]) for i in range(len(words))] if not _CJK.search(nk) else [nk[i:] for i in range(len(nk))]
    )
    for cand in candidates:
        if cand in idx.attributes:
            return cand
        if (c := _ATTR_SYNONYMS.get(cand)) and c in idx.canon_keys:
            return idx.canon_keys[c]
    return None


# A bare number that an attribute's name introduces claims that attribute: "its weight is 39.9"
# is wrong even when 39.9 is the price. Only a few words inside one clause bind ("weight is N",
# "weight of N", "weight N", "weighs N"; "weight: N" is a key: value claim), only through words
# that keep the value ("about", "under", "up to" do not), and only a number that ends its phrase:
# in "a capacity of 4 cups" the 4 counts cups.
_CLAUSE_BREAK = re.compile(r"[,;:!?()\[\]，；：。！？（）\n]|\.(?:\s|$)")
_HEAD_TOKEN = re.compile(r"[a-z][a-z\-]*|[\u3400-\u9fff]+|\S")
_HEAD_WINDOW = 48  # characters before the number: room for three words and their links
_LINKS = {"is", "are", "was", "of", "at", "only", "just", "="}
_CJK_LINKS = ("为", "是")
_BINDING_VERBS = {"weighs": "weight", "weighing": "weight", "costs": "price", "priced": "price"}
_ENDS_PHRASE = re.compile(r"[^\S\n]*(?:$|[^\w\s-]|\n|(?:and|or|but|with|so|which|while)(?![a-z]))", re.IGNORECASE)
_FACTORS = {dim: {f for d, f in _UNITS.values() if d == dim} for dim, _ in _UNITS.values()}


def _bound_pool(text: str, start: int, end: int, idx: _Facts) -> list[Quantity] | None:
    """The quantities of the fact attribute whose name introduces the bare number at
    `text[start:end]`; None when no attribute with a number does (any fact number then grounds it)."""
    if not _ENDS_PHRASE.match(text, end):
        return None
    lo = max(0, start - _HEAD_WINDOW)
    clauses = _CLAUSE_BREAK.split(text[lo:start].lower())
    words = _HEAD_TOKEN.findall(clauses[-1])
    if lo and len(clauses) == 1:
        words = words[1:]  # the window starts inside the clause, maybe inside a word
    while words and words[-1] in _LINKS:
        words.pop()
    if words and _CJK.search(words[-1]) and words[-1].endswith(_CJK_LINKS):
        words[-1] = words[-1][:-1]  # 重量为 1.2
    if not words or not words[-1]:
        return None
    matched = _match_key(_BINDING_VERBS.get(words[-1]) or " ".join(words[-3:]), idx)
    return idx.quantities_by_key.get(matched) if matched else None


def _bound_reason(q: Quantity, pool: list[Quantity]) -> str | None:
    """None when the bare number `q` is a value of one attribute's `pool`, as written or in any
    unit of its dimension ("weight is 1200" for 1.2 kg); else `numeric_mismatch`."""
    for f in pool:
        if _close(q.raw, f.raw) or (f.dimension and any(_close(q.raw * k, f.value) for k in _FACTORS[f.dimension])):
            return None
    return "numeric_mismatch"


# A "key" that opens with a function word is a phrase, not an attribute name: "from Nuvia: a
# black smartphone" introduces, it does not claim an attribute "from nuvia".
_NOT_KEY_START = {
    "a",
    "an",
    "the",
    "from",
    "by",
    "with",
    "for",
    "of",
    "in",
    "on",
    "at",
    "to",
    "and",
    "or",
    "meet",
    "here",
    "this",
    "it",
    "its",
}


def _looks_like_key(key: str) -> bool:
    nk = _norm(key)
    if nk.split(" ")[0] in _NOT_KEY_START:
        return False
    if _CJK.search(nk):
        return any(nk.endswith(s) for s in _ATTR_SYNONYMS if _CJK.search(s)) or len(nk) <= 4
    return any(nk.split(" ")[-1] == s for s in _ATTR_SYNONYMS) or len(nk.split(" ")) <= 2


def _kv_claims(text: str, idx: _Facts, spans: list[tuple[int, int]]) -> list[Claim]:
    out = []
    for m in _KV.finditer(text):
        key, value = m["key"], m["value"].strip()
        if not value or not _looks_like_key(key) or (idx.brand and _norm(key) in idx.brand):
            continue  # "Tinker & Twig: a red car" names the brand, not an attribute "twig"
        matched = _match_key(key, idx)
        spans.append((m.start("value"), m.end("value")))
        span = text[m.start("key") : m.end("value")]
        if matched is None:
            out.append(Claim(span, "attribute", False, "unknown_attribute", m.start(), m.end()))
            continue
        fact_value = idx.attributes[matched][1]
        nv = _norm(value)
        claimed = [q for q, _, _ in quantities(value, default_currency=idx.currency)]
        pool = idx.quantities_by_key.get(matched, [])
        # Numbers are compared as quantities first: "12.99 EUR" contains the fact "12.99" as a
        # substring but is a unit mismatch against 12.99 USD.
        if nv and not (claimed and pool) and (nv in fact_value or fact_value in nv):
            out.append(Claim(span, "attribute", True, None, m.start(), m.end()))
            continue
        reasons = [_quantity_reason(q, pool) for q in claimed]
        if claimed and pool and all(r is None for r in reasons):
            out.append(Claim(span, "attribute", True, None, m.start(), m.end()))
        else:
            reason = next((r for r in reasons if r), None) if claimed and pool else "value_mismatch"
            out.append(Claim(span, "attribute", False, reason or "value_mismatch", m.start(), m.end()))
    return out


def _inside(spans: list[tuple[int, int]], start: int, end: int) -> bool:
    return any(s <= start and end <= e for s, e in spans)


_JSON_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"?')


def _flatten(text: str) -> str:
    """A PDP JSON answer is checked on its visible text, not its JSON syntax."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError:
            # cut-off JSON: check its string values, not its quotes (`"2022"` is no 2022-inch claim)
            values = [
                m.group(1) for m in _JSON_STRING.finditer(stripped) if not stripped[m.end() :].lstrip().startswith(":")
            ]
            return "\n".join(values)
        if isinstance(obj, dict):
            return pdp_visible_text(obj)
    return text


def pdp_visible_text(obj: Mapping[str, Any]) -> str:
    parts = [str(obj.get("title") or "")]
    parts += [str(h) for h in obj.get("highlights") or [] if isinstance(h, str | int | float)]
    parts.append(str(obj.get("description") or ""))
    return "\n".join(p for p in parts if p)


def check(
    text: str,
    facts: Mapping[str, Any] | str,
    *,
    known_brands: Iterable[str] = (),
    profile: Mapping[str, Any] | None = None,
) -> GroundingResult:
    """Extract the claims of `text` and mark each supported or not by `facts`.

    `known_brands` (e.g. every brand of the catalog) lets the check catch a wrong brand; the
    product's own brand is always known. `profile` (a personalized reason's shopper data:
    lists of recent items, top categories, top brands) may be quoted and may ground brands and
    product types, never a number, unit, material, colour or attribute of this product.
    """
    facts, profile = _split_profile(facts, profile)
    idx = _index(facts)
    prof = _profile_index(profile)
    text = unicodedata.normalize("NFKC", _flatten(text))
    low = text.lower()
    quoted = _quote_spans(low, prof)  # the shopper's own items: references, not claims
    kv_spans: list[tuple[int, int]] = []
    claims: list[Claim] = [c for c in _kv_claims(text, idx, kv_spans) if not _inside(quoted, c.start, c.end)]
    skip = kv_spans + quoted

    for q, s, e in quantities(text, default_currency=idx.currency):
        if _inside(skip, s, e):
            continue
        pool = _bound_pool(text, s, e, idx) if q.dimension is None else None
        reason = _bound_reason(q, pool) if pool else _quantity_reason(q, idx.quantities)
        claims.append(Claim(text[s:e].strip(), "quantity" if q.dimension else "number", reason is None, reason, s, e))

    for pattern, lexicon, known, kind in (
        (_MATERIAL_RE, _MATERIALS, idx.materials, "material"),
        (_COLOUR_RE, _COLOURS, idx.colours, "colour"),
    ):
        for m in pattern.finditer(low):
            if _inside(skip, m.start(), m.end()):
                continue
            ok = lexicon[m.group(0)] in known or m.group(0) in idx.text
            claims.append(
                Claim(text[m.start() : m.end()], kind, ok, None if ok else "not_in_facts", m.start(), m.end())
            )

    kv_claims = [(c.start, c.end) for c in claims if c.kind == "attribute"]  # "Warranty: 3 years" is one claim
    for m in _ASSURANCE_RE.finditer(low):
        if _inside(kv_claims + quoted, m.start(), m.end()):
            continue
        ok = m.group(0) in idx.text
        claims.append(
            Claim(text[m.start() : m.end()], "assurance", ok, None if ok else "not_in_facts", m.start(), m.end())
        )

    for m in _TYPE_RE.finditer(low):
        if _inside(skip, m.start(), m.end()):
            continue
        concept = _TYPE_OF[m.group(0)]
        ok = (
            concept in idx.types
            or m.group(0) in idx.text
            or bool(prof and (concept in prof.types or m.group(0) in prof.text))
        )
        claims.append(
            Claim(text[m.start() : m.end()], "product_type", ok, None if ok else "type_mismatch", m.start(), m.end())
        )

    brands = {_norm(b) for b in known_brands if b and str(b).strip()}
    if idx.brand:
        brands.add(idx.brand)
    for brand in sorted(brands, key=len, reverse=True):
        pat = re.escape(brand) if _CJK.search(brand) else rf"(?<![a-z0-9]){re.escape(brand)}(?![a-z0-9])"
        for m in re.finditer(pat, low):
            if _inside(skip, m.start(), m.end()):
                continue
            ok = brand == idx.brand or brand in idx.text or bool(prof and brand in prof.text)
            claims.append(
                Claim(text[m.start() : m.end()], "brand", ok, None if ok else "brand_mismatch", m.start(), m.end())
            )
    claims.sort(key=lambda c: (c.start, c.end))
    return GroundingResult(claims)


def check_batch(
    texts: list[str],
    facts: list[Mapping[str, Any] | str],
    *,
    known_brands: Iterable[str] = (),
    profiles: list[Mapping[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """Per-output results and the overall unsupported-claim rate (unsupported / all claims).

    `profiles`: one shopper profile per text for personalized reasons (None = no profile)."""
    if len(texts) != len(facts) or (profiles is not None and len(profiles) != len(texts)):
        raise ValueError(
            f"{len(texts)} texts, {len(facts)} facts, {'no' if profiles is None else len(profiles)} profiles; pass one facts entry per text (and one profile per text, or none)"
        )
    brands = list(known_brands)
    profiles = profiles if profiles is not None else [None] * len(texts)
    results = [check(t, f, known_brands=brands, profile=p) for t, f, p in zip(texts, facts, profiles, strict=True)]
    claims = sum(len(r.claims) for r in results)
    unsupported = sum(len(r.unsupported) for r in results)
    return {
        "per_output": [r.to_dict() for r in results],
        "claims": claims,
        "unsupported": unsupported,
        "overall_rate": unsupported / claims if claims else 0.0,
        "mean_output_rate": sum(r.rate for r in results) / len(results) if results else 0.0,
        "outputs_with_unsupported": sum(bool(r.unsupported) for r in results) / len(results) if results else 0.0,
    }


# A sentence ends at . ! ? followed by a space or the end, or at a CJK stop, ; or a newline. A
# point inside a token ("$75.99", "2.5 kg", "v1.2") does not end one: before, it stopped the
# match and the rest of the text became one "sentence", so grounding kept or dropped it whole.
_SENTENCE = re.compile(r"(?:[^.!?。！？；;\n]|[.!?](?!\s|$))*(?:[.!?]+(?=\s|$)|[。！？；;\n]|$)")


def sentences(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text):
        m = _SENTENCE.match(text, pos)
        end = m.end() if m and m.end() > pos else len(text)
        if end == pos:
            end = pos + 1
        out.append(text[pos:end])
        pos = end
    return [s for s in out if s]


def remove_unsupported(
    text: str,
    facts: Mapping[str, Any] | str,
    *,
    known_brands: Iterable[str] = (),
    profile: Mapping[str, Any] | None = None,
) -> str:
    """`text` without the sentences that carry an unsupported claim (serving runs this).

    `profile`: the shopper data a personalized reason was written from (see `check`)."""
    brands = list(known_brands)
    facts, profile = _split_profile(facts, profile)
    kept = [s for s in sentences(text) if not check(s, facts, known_brands=brands, profile=profile).unsupported]
    return "".join(kept).strip()


def ground_pdp(
    obj: Mapping[str, Any], facts: Mapping[str, Any] | str, *, known_brands: Iterable[str] = ()
) -> dict[str, Any]:
    """A PDP object with unsupported claims removed: bad highlights dropped, description filtered,
    and a title that claims something unsupported replaced by the catalog title."""
    f = json.loads(facts) if isinstance(facts, str) else facts
    brands = list(known_brands)
    title = str(obj.get("title") or "")
    if not title or check(title, f, known_brands=brands).unsupported:
        title = str(f.get("title") or "")
    highlights = [
        h
        for h in obj.get("highlights") or []
        if isinstance(h, str) and h.strip() and not check(h, f, known_brands=brands).unsupported
    ]
    return {
        "title": title,
        "highlights": highlights,
        "description": remove_unsupported(str(obj.get("description") or ""), f, known_brands=brands),
    }
