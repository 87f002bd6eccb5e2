"""Grounding check: is every claim in a shop text supported by the product's facts?

    from ml.grounding import check, catalog_for
    check("Made of 100% cotton, 50 cm wide.", facts).unsupported   # -> claims the facts lack
    shop = catalog_for(all_brands)                                 # compiled once, cached by version
    shop.check(text, facts).to_dict()                              # each flag: span, reason, fact

Pure Python, deterministic, no model: evaluation, the batch job, `shopgraph data check-copy`
and serving run this one checker. Facts are `core.facts.facts_of` dicts (title, brand,
category, price, currency, attributes) or their serialized JSON; an attribute value may be a
string or a list of strings (each element is one fact value: {"style": ["retro", "minimal"]}).

Claims extracted from the text, each marked supported or not, with a reason and `fact` (what
the facts say about that kind of claim, e.g. "brand: Keystone", "colour: silver",
"price: 35.99 USD"; None when the facts say nothing of that kind):

- quantities: a number with a unit (length, mass, volume, percent, price, count, power, ...).
  Units are normalized (cm/mm/m, g/kg, ml/l, inch/"), numbers compared numerically. Reasons:
  `numeric_mismatch` (the facts have this kind of quantity, but not this value),
  `unit_mismatch` (the facts have this number, but with another unit), `not_in_facts`.
  A bare number must appear among the facts' numbers; one that a fact attribute's name
  introduces in the same clause ("its weight is 1.2", "weighs 1200", "costs 39.9") must be a
  value of that attribute. A number glued to letters ("205Shade", "XYBOX5") is a code, not a claim.
- "key: value" phrases ("material: cotton", "材质：棉", also glued spec lists
  "Shape: RectangleColour: Blue"): the key must be a fact attribute (`unknown_attribute`) and
  the value must agree with it (`value_mismatch`); a value the facts state elsewhere
  ("Material: Porcelain" for a "Porcelain Mug") is supported.
- materials and colours from a bilingual lexicon (colours by family: "navy" and "blue" ground
  each other, "navy blue" is one claim): they must occur in the facts (`not_in_facts`).
  A one-character Chinese term counts only as a word: 白 in 显白/白皙 or 丝 in 丝毫/蕾丝 is none.
- brands: the product's brand is supported; any other catalog brand is `brand_mismatch`.
  Brands are matched as the catalog writes them (or in capitals), so a brand that is an
  ordinary word ("WITH", "ONLY", "CAT") is not read into every "with"; see `Catalog`.
- product types from a bilingual lexicon ("phone case", "t-shirt", "chinos", 夹克, 牛仔裤, ...):
  a type the text names must be a type the product's own facts name, a broader one (chinos ->
  "trousers"), or one of a family the facts name only generically (类型#裤 grounds 牛仔裤),
  else `type_mismatch`. A part named after a type ("shirt collar", "sock liner", a bra's
  "cups") and a garment in styling advice ("pair it with sneakers", 搭配小白鞋) are no claims.
- assurances (ratings, guarantees, offers, eco claims; "highly rated" and "highly-rated"
  alike): unsupported unless the facts say them.

A personalized reason also cites the shopper's profile (`profile=`: recent items, top
categories, top brands). The profile is evidence about the shopper, never a fact of this
product: a verbatim quote of a profile item or category is a reference, and the claims inside
it are not checked; outside a quote, brands and product types may also come from the profile,
but numbers, units, materials, colours, assurances and `key: value` claims must be facts of this
product.

CJK text is checked as strictly as English: no word boundaries are assumed there, keys are
matched as suffixes ("这款夹克材质：棉" has the key 材质), and Chinese units (毫升, 厘米, 千克,
元, 件...) normalize like their Latin forms.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
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
_add(
    "price",
    1.0,
    "usd",
    "eur",
    "gbp",
    "cny",
    "rmb",
    "jpy",
    "inr",
    "rs",
    "rupees",
    "元",
    "块",
    "美元",
    "欧元",
    "英镑",
    "人民币",
)

_CURRENCY_OF = {"$": "USD", "usd": "USD", "美元": "USD", "€": "EUR", "eur": "EUR", "欧元": "EUR", "£": "GBP", "gbp": "GBP", "英镑": "GBP",
                "¥": "CNY", "￥": "CNY", "cny": "CNY", "rmb": "CNY", "元": "CNY", "块": "CNY", "人民币": "CNY", "jpy": "JPY",
                "₹": "INR", "inr": "INR", "rs": "INR", "rupees": "INR"}  # fmt: skip
_UNIT_ALT = "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))
_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
# Not preceded by a Latin letter/digit/dot (CJK may touch the number: 容量500毫升), and never a
# prefix of a longer number or code: "205Shade" is no 20, "XYBOX5PCK" no 5.
_QUANTITY = re.compile(
    rf"(?=[$€£¥￥₹\s0-9])(?P<cur>[$€£¥￥₹])?\s?(?<![0-9A-Za-z.])(?P<num>{_NUM})(?![0-9])(?:\s?-\s?|\s?)(?P<unit>{_UNIT_ALT})?(?![A-Za-z0-9])",
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

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]")
_SEP = re.compile(r"[\s\-]+")


def _norm(s: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", s).lower().replace("_", " ").split())


def _tkey(term: str) -> str:
    """A lexicon key: "highly-rated", "highly rated" and "highlyrated" are one term."""
    return _SEP.sub("", term.lower())


_SEP_MARK, _SEP_RE = "\0", r"[\s\-]?"


def _trie(words: Iterable[str], *, capital_first: bool = False) -> str:
    """One regex alternation for many literal words, shared prefixes factored out (a trie), so
    matching costs one pass over the text whatever the number of words: Python's `re` tries an
    alternation's branches one by one, so 300 terms (or 1,000 brands) side by side cost 300 tests
    at every position, a trie one or two. Longest match first. `_SEP_MARK` in a word matches a
    space, a hyphen or nothing. `capital_first`: a word's first letter may also be a capital (see
    `_marked`)."""
    root: dict[str, Any] = {}
    for w in words:
        node = root
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def char(ch: str, first: bool) -> str:
        if ch == _SEP_MARK:
            return _SEP_RE
        if first and capital_first and ch.upper() != ch:
            return f"[{re.escape(ch)}{re.escape(ch.upper())}]"
        return re.escape(ch)

    def emit(node: dict[str, Any], first: bool = False) -> str:
        alts = [char(ch, first) + emit(child) for ch, child in sorted(node.items()) if ch]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        if "" in node:  # a word ends here, a longer one may go on: greedy, so the longer wins
            return "(?:" + body + ")?"
        return body

    return emit(root, True)


def _term_pattern(terms: Iterable[str]) -> re.Pattern[str]:
    # CJK terms match anywhere (no word boundaries in CJK); Latin terms on word boundaries, a
    # space or hyphen inside a term matching either or none ("t-shirt", "t shirt", "tshirt").
    # Longest first, so "stainless steel" wins over "steel"; the boundary checks sit outside
    # the alternation (one test per position, not one per term: this runs on every request).
    terms = set(terms)
    latin = [t for t in terms if not _CJK.search(t)]
    cjk = [t for t in terms if _CJK.search(t)]
    return re.compile(
        "|".join(
            p
            for p in (
                latin
                and rf"{_WORD_START}{_first_chars(latin, capital=True)}(?:{_trie((_SEP_MARK.join(_SEP.split(t)) for t in latin), capital_first=True)}){_WORD_END}",
                cjk and rf"{_first_chars(cjk)}(?:{_trie(cjk)})",
            )
            if p
        )
    )


# Word boundaries in `_marked` text: lower case but for the capital that starts a word scraped
# copy glued to the previous one ("detailSynthetic upper"). A word starts after a non-letter or
# at such a capital, and ends before a non-letter or such a capital. Case-sensitive patterns on
# lower-case text: `re.IGNORECASE` would cost three times as much on every request.
_WORD_START = r"(?:(?<![a-z0-9])|(?=[A-Z]))"
_WORD_END = r"(?![a-z0-9])"
_GLUED_CAPITAL = re.compile(r"(?<=[a-z])[A-Z]")


def _marked(text: str, low: str) -> str:
    """`low` with the capitals that start a glued word kept ("detailSynthetic" -> "detailSynthetic",
    "Navy Blue" -> "navy blue"): same length and offsets as `text`."""
    glued = [m.start() for m in _GLUED_CAPITAL.finditer(text)]
    if not glued:
        return low
    chars = list(low)
    for i in glued:
        chars[i] = text[i]
    return "".join(chars)


def _first_chars(words: Iterable[str], *, capital: bool = False) -> str:
    """A lookahead on the words' first characters: one set test rejects most positions before
    the alternation is tried at all."""
    firsts = {w[0] for w in words if w}
    if capital:
        firsts |= {c.upper() for c in firsts}
    return "(?=[" + "".join(sorted(re.escape(c) for c in firsts)) + "])"


def _lexicon(entries: Mapping[str, str | None]) -> tuple[dict[str, str | None], re.Pattern[str]]:
    return {_tkey(t): c for t, c in entries.items()}, _term_pattern(entries)


# term -> canonical concept (English and Chinese map to one concept, so either language grounds).
# None marks a word that contains a term but claims nothing (丝毫 "the slightest", 显白 "makes
# the skin look fair"): longest match first, so it swallows the one-character term inside it.
_MATERIAL_TERMS: dict[str, str | None] = {
    "cotton": "cotton", "棉": "cotton", "纯棉": "cotton", "全棉": "cotton", "棉质": "cotton", "denim": "denim", "牛仔布": "denim", "牛仔": "denim",
    "wool": "wool", "woollen": "wool", "羊毛": "wool", "merino": "merino", "cashmere": "cashmere", "羊绒": "cashmere",
    "silk": "silk", "真丝": "silk", "蚕丝": "silk", "丝绸": "silk", "桑蚕丝": "silk", "linen": "linen", "亚麻": "linen", "棉麻": "linen",
    "polyester": "polyester", "涤纶": "polyester", "聚酯纤维": "polyester", "nylon": "nylon", "尼龙": "nylon",
    "leather": "leather", "皮革": "leather", "真皮": "leather", "牛皮": "leather", "羊皮": "leather", "suede": "suede", "麂皮": "suede",
    "wood": "wood", "wooden": "wood", "木质": "wood", "实木": "wood", "beech": "beech", "beechwood": "beech", "榉木": "beech",
    "oak": "oak", "橡木": "oak", "bamboo": "bamboo", "竹子": "bamboo", "pine": "pine", "松木": "pine", "walnut": "walnut", "胡桃木": "walnut",
    "stainless steel": "stainless steel", "不锈钢": "stainless steel", "steel": "steel", "钢材": "steel",
    "aluminum": "aluminium", "aluminium": "aluminium", "铝合金": "aluminium", "iron": "iron", "铁艺": "iron", "copper": "copper", "brass": "brass",
    "titanium": "titanium", "钛合金": "titanium", "plastic": "plastic", "塑料": "plastic", "glass": "glass", "玻璃": "glass",
    "ceramic": "ceramic", "陶瓷": "ceramic", "porcelain": "porcelain", "瓷器": "porcelain", "rubber": "rubber", "橡胶": "rubber",
    "silicone": "silicone", "硅胶": "silicone", "spandex": "spandex", "elastane": "spandex", "lycra": "spandex", "氨纶": "spandex",
    "lace": "lace", "蕾丝": "lace", "satin": "satin", "缎面": "satin", "velvet": "velvet", "丝绒": "velvet", "天鹅绒": "velvet",
    "chiffon": "chiffon", "雪纺": "chiffon", "georgette": "georgette", "rayon": "viscose", "viscose": "viscose", "modal": "modal", "莫代尔": "modal",
    "fleece": "fleece", "抓绒": "fleece", "canvas": "canvas", "帆布": "canvas", "jute": "jute", "corduroy": "corduroy", "灯芯绒": "corduroy",
    "羽绒": "down", "down-filled": "down", "synthetic": "synthetic", "synthetic leather": "synthetic leather",
    "faux leather": "synthetic leather", "pu leather": "synthetic leather", "mesh": "mesh", "网纱": "mesh", "textile": "textile",
    "microfibre": "microfibre", "microfiber": "microfibre", "pu": "polyurethane", "polyurethane": "polyurethane", "acrylic": "acrylic", "腈纶": "acrylic", "苎麻": "linen", "绉绸": "silk",
    "lace up": None, "lace ups": None, "laces": None, "shoelace": None, "shoelaces": None, "lace closure": None,
    # words with a material character inside that name no material
    "一丝": None, "丝毫": None, "丝丝": None, "丝滑": None, "丝带": None, "粉丝": None, "木耳": None, "棉花糖": None, "铁定": None,
}  # fmt: skip
_MATERIAL_FAMILY = {
    "beech": "wood",
    "oak": "wood",
    "pine": "wood",
    "walnut": "wood",
    "merino": "wool",
    "stainless steel": "steel",
}

_COLOUR_TERMS: dict[str, str | None] = {
    "red": "red", "红色": "red", "红": "red", "maroon": "maroon", "burgundy": "maroon", "酒红": "maroon", "酒红色": "maroon",
    "blue": "blue", "蓝色": "blue", "蓝": "blue", "navy": "navy", "藏青": "navy", "藏青色": "navy", "藏蓝": "navy", "藏蓝色": "navy",
    "teal": "teal", "turquoise": "turquoise", "湖蓝": "turquoise",
    "green": "green", "绿色": "green", "绿": "green", "olive": "olive", "军绿": "olive", "军绿色": "olive", "墨绿": "olive", "墨绿色": "olive",
    "black": "black", "黑色": "black", "黑": "black", "white": "white", "白色": "white", "白": "white", "off white": "off white", "米白": "off white", "米白色": "off white",
    "yellow": "yellow", "黄色": "yellow", "黄": "yellow", "mustard": "mustard", "姜黄": "mustard", "姜黄色": "mustard",
    "orange": "orange", "橙色": "orange", "橘色": "orange", "purple": "purple", "紫色": "purple", "紫": "purple", "lavender": "lavender", "mauve": "lavender",
    "pink": "pink", "粉色": "pink", "粉红": "pink", "粉红色": "pink", "magenta": "magenta", "fuchsia": "magenta",
    "brown": "brown", "棕色": "brown", "咖啡色": "brown", "khaki": "khaki", "卡其": "khaki", "卡其色": "khaki", "驼色": "khaki",
    "grey": "grey", "gray": "grey", "灰色": "grey", "灰": "grey", "charcoal": "charcoal", "深灰": "charcoal",
    "beige": "beige", "米色": "beige", "杏色": "beige", "silver": "silver", "银色": "silver", "gold": "gold", "golden": "gold", "金色": "gold",
    # words with a colour character inside that name no colour of the product
    "显白": None, "肤白": None, "白皙": None, "美白": None, "白领": None, "白天": None, "明白": None, "空白": None, "留白": None, "黄金": None,
    "黑科技": None, "网红": None, "走红": None, "红人": None, "红毯": None, "红包": None, "黑马": None, "蓝天": None, "白云": None,
    "绿叶": None, "灰尘": None, "青春": None, "黄昏": None, "蛋白": None, "红润": None, "绯红": None, "黑夜": None,
}  # fmt: skip
# A shade and its family ground each other ("navy blue" copy for a "Blue" product, "blue" copy
# for a "Navy" one); two shades of one family do not (teal copy for a navy product).
_COLOUR_FAMILY = {"maroon": "red", "navy": "blue", "teal": "blue", "turquoise": "blue", "olive": "green", "off white": "white",
                  "mustard": "yellow", "lavender": "purple", "magenta": "pink", "khaki": "brown", "charcoal": "grey", "beige": "brown"}  # fmt: skip

_ATTR_SYNONYMS = {
    "material": "material", "materials": "material", "fabric": "material", "材质": "material", "材料": "material", "面料": "material",
    "color": "color", "colour": "color", "颜色": "color", "size": "size", "尺寸": "size", "尺码": "size", "weight": "weight", "重量": "weight",
    "capacity": "capacity", "volume": "capacity", "容量": "capacity", "price": "price", "价格": "price", "brand": "brand", "品牌": "brand",
    "dimensions": "size", "规格": "size", "age": "age", "年龄": "age", "warranty": "warranty", "保修": "warranty",
}  # fmt: skip
_MATERIAL_LEX, _MATERIAL_RE = _lexicon(_MATERIAL_TERMS)
_COLOUR_LEX, _COLOUR_RE = _lexicon(_COLOUR_TERMS)

# Claims a shop is liable for that no catalog fact here backs unless it says so itself:
# ratings and rankings, certifications, eco claims, guarantees, offers. Small models add
# them freely ("a top-rated, eco-friendly mug"); each is unsupported unless the facts use it.
# Spaces and hyphens are interchangeable ("highly rated" = "highly-rated"), see `_term_pattern`.
_ASSURANCES = (
    "top rated", "best selling", "bestseller", "best seller", "award winning", "#1", "number one", "no. 1", "most popular",
    "5 star", "five star", "highly rated", "customer favorite", "customer favourite", "eco friendly", "environmentally friendly",
    "sustainable", "sustainably", "recycled", "biodegradable", "organic", "non toxic", "bpa free", "hypoallergenic", "certified",
    "fda approved", "clinically proven", "dermatologist tested", "waterproof", "water resistant", "shockproof", "dishwasher safe",
    "microwave safe", "lifetime", "warranty", "guarantee", "guaranteed", "money back", "free shipping", "free delivery",
    "limited time", "limited edition", "limited supply", "on sale", "discount", "lowest price", "best price", "handmade", "hand made", "made in",
    "好评", "畅销", "热销", "销量第一", "爆款", "环保", "有机", "防水", "保修", "包邮", "限时", "正品保证", "无毒", "最低价", "全网最低",
)  # fmt: skip
_ASSURANCE_LEX, _ASSURANCE_RE = _lexicon({a: a for a in _ASSURANCES})

# Product types: (concept, family, names). Only nouns that name a kind of product and rarely mean
# anything else in shop copy: no "case", "set", "bag", "train", "watch", "battery", "top" (a
# tracker's "battery life", a camera's own lens, "top quality"). A family groups the kinds a
# shopper files under one word (a family's generic concept is the one named like the family):
# chinos are trousers, a bra is innerwear; 类型#裤 (a generic "trousers") grounds 牛仔裤.
_PRODUCT_TYPES: list[tuple[str, str | None, tuple[str, ...]]] = [
    ("smartphone", None, ("smartphone", "phone", "mobile phone", "cell phone", "cellphone", "手机", "智能手机")),
    ("phone case", None, ("phone case", "phone cover", "手机壳", "手机套", "保护壳")),
    ("screen protector", None, ("screen protector", "屏幕保护膜", "钢化膜", "贴膜")),
    ("charger", None, ("charger", "wall charger", "charging adapter", "充电器", "充电头")),
    ("power bank", None, ("power bank", "powerbank", "充电宝", "移动电源")),
    ("headphones", None, ("headphones", "headphone", "earphones", "earbuds", "headset", "耳机")),
    ("camera", None, ("camera", "相机", "照相机", "摄像机")),
    ("camera lens", None, ("camera lens", "镜头")),
    ("memory card", None, ("memory card", "sd card", "microsd card", "存储卡", "内存卡")),
    ("tripod", None, ("tripod", "三脚架")),
    ("camera bag", None, ("camera bag", "相机包", "摄影包")),
    ("laptop", None, ("laptop", "notebook computer", "笔记本电脑")),
    ("laptop sleeve", None, ("laptop sleeve", "电脑内胆包")),
    ("mouse", None, ("mouse", "mice", "wireless mouse", "鼠标")),
    ("keyboard", None, ("keyboard", "键盘")),
    ("usb hub", None, ("usb-c hub", "usb hub", "hub", "docking station", "集线器", "扩展坞")),
    ("coffee maker", None, ("coffee maker", "coffee machine", "espresso machine", "咖啡机")),
    ("coffee beans", None, ("coffee beans", "coffee bean", "咖啡豆")),
    ("milk frother", None, ("milk frother", "frother", "奶泡器")),
    ("cup", None, ("mug", "cup", "tumbler", "马克杯", "杯子", "水杯", "保温杯")),
    ("water bottle", None, ("water bottle", "bottle", "水瓶")),
    ("fitness tracker", None, ("fitness tracker", "activity tracker", "手环")),
    ("remote control car", None, ("remote control car", "rc car", "遥控车")),
    ("batteries", None, ("batteries", "rechargeable batteries", "充电电池")),
    ("building set", None, ("building set", "building blocks", "积木")),
    ("jigsaw puzzle", None, ("jigsaw puzzle", "jigsaw", "puzzle", "拼图")),
    ("socks", None, ("socks", "sock", "袜子")),
    ("wallet", None, ("wallet", "钱包")),
    ("backpack", "bag", ("backpack", "背包", "双肩包")),
    ("handbag", "bag", ("handbag", "手提包")),
    ("bag", "bag", ("包包",)),
    ("yoga mat", None, ("yoga mat", "瑜伽垫")),
    ("vase", None, ("vase", "花瓶")),
    ("lamp", None, ("lamp", "台灯", "灯具")),
    ("cutting board", None, ("cutting board", "chopping board", "砧板", "菜板")),
    ("television", None, ("television", "tv", "电视", "电视机")),
    (
        "wristwatch",
        None,
        ("wristwatch", "wrist watch", "analogue watch", "analog watch", "digital watch", "smartwatch", "手表", "腕表"),
    ),
    ("sunglasses", None, ("sunglasses", "太阳镜", "墨镜")),
    ("belt", None, ("belt", "腰带", "皮带")),
    ("earrings", None, ("earrings", "earring", "jhumkas", "jhumka", "ear studs", "耳环", "耳钉")),
    ("necklace", None, ("necklace", "项链")),
    ("bracelet", None, ("bracelet", "bangle", "手链", "手镯")),
    ("cufflinks", None, ("cufflinks",)),
    ("perfume", None, ("perfume", "eau de toilette", "eau de parfum", "香水")),
    ("lipstick", None, ("lipstick", "口红")),
    ("cushion cover", None, ("cushion cover", "pillow cover", "抱枕套")),
    ("scarf", None, ("scarf", "scarves", "stole", "围巾")),
    ("saree", None, ("saree", "sari")),
    ("dupatta", None, ("dupatta",)),
    # tops (上衣): a generic top grounds any of them, a named one only itself
    ("top", "top", ("上衣", "topwear")),
    ("t-shirt", "top", ("t-shirt", "tee", "t恤", "短袖", "t恤衫")),
    ("shirt", "top", ("shirt", "衬衫", "衬衣")),
    ("polo", "top", ("polo shirt", "polo衫")),
    ("kurta", "top", ("kurta", "kurti", "tunic")),
    ("jacket", "top", ("jacket", "夹克", "bomber jacket", "bomber", "denim jacket")),
    ("blazer", "top", ("blazer", "西装", "西服")),
    ("coat", "top", ("coat", "overcoat", "trench coat", "外套", "大衣", "风衣")),
    ("hoodie", "top", ("hoodie", "sweatshirt", "卫衣")),
    ("sweater", "top", ("sweater", "jumper", "pullover", "毛衣", "针织衫", "开衫", "cardigan")),
    ("waistcoat", "top", ("waistcoat", "马甲")),
    ("vest top", "top", ("camisole", "吊带衫", "背心", "打底衫", "雪纺衫")),
    # bottoms (裤)
    (
        "trousers",
        "trousers",
        ("trousers", "pants", "bottomwear", "jodhpuris", "jodhpurs", "裤子", "长裤", "裤装", "休闲裤", "西裤"),
    ),
    ("jeans", "trousers", ("jeans", "牛仔裤")),
    ("chinos", "trousers", ("chinos", "chino trousers")),
    ("cargos", "trousers", ("cargos", "cargo pants", "工装裤")),
    ("joggers", "trousers", ("joggers", "track pants", "trackpants", "sweatpants", "运动裤", "哈伦裤")),
    ("shorts", "trousers", ("shorts", "短裤", "五分裤")),
    ("leggings", "trousers", ("leggings", "legging", "jeggings", "jegging", "打底裤", "小脚裤", "铅笔裤")),
    ("pyjamas", "trousers", ("pyjamas", "pajamas", "churidar", "salwar", "dhoti", "睡裤")),
    (
        "wide-leg trousers",
        "trousers",
        ("palazzos", "palazzo", "阔腿裤", "直筒裤", "喇叭裤", "微喇裤", "烟管裤", "九分裤", "七分裤"),
    ),
    ("jumpsuit", "trousers", ("jumpsuit", "dungarees", "连体裤", "背带裤")),
    # dresses and skirts (裙)
    ("dress or skirt", "dress or skirt", ("裙子", "裙装")),
    ("dress", "dress or skirt", ("dress", "gown", "连衣裙", "长裙", "衬衫裙", "吊带裙", "公主裙", "小黑裙", "抹胸裙")),
    (
        "skirt",
        "dress or skirt",
        (
            "skirt",
            "半身裙",
            "短裙",
            "半裙",
            "百褶裙",
            "a字裙",
            "包臀裙",
            "鱼尾裙",
            "直筒裙",
            "伞裙",
            "蓬蓬裙",
            "牛仔裙",
            "网纱裙",
            "背带裙",
        ),
    ),
    ("lehenga", "dress or skirt", ("lehenga",)),
    # footwear (鞋)
    ("shoes", "shoes", ("shoes", "shoe", "footwear", "slip-ons", "slip-on shoes", "鞋", "鞋子")),
    (
        "sneakers",
        "shoes",
        ("sneakers", "trainers", "running shoes", "sports shoes", "跑鞋", "运动鞋", "小白鞋", "板鞋"),
    ),
    ("sandals", "shoes", ("sandals", "flip-flops", "flip flops", "slippers", "凉鞋", "拖鞋")),
    ("heels", "shoes", ("heels", "pumps", "高跟鞋")),
    ("boots", "shoes", ("boots", "ankle boots", "靴子", "短靴", "长靴")),
    ("loafers", "shoes", ("loafers", "mules", "flats", "ballerinas", "ballet flats", "乐福鞋", "单鞋")),
    # innerwear
    ("innerwear", "innerwear", ("innerwear", "undergarment", "undergarments", "underwear", "lingerie", "内衣")),
    ("bra", "innerwear", ("bra", "t-shirt bra", "sports bra", "文胸")),
    ("briefs", "innerwear", ("briefs", "brief", "panties", "panty", "内裤")),
    ("boxers", "innerwear", ("boxers", "boxer", "trunks")),
]
_PRODUCT_TYPES += [
    ("suit", None, ("suit", "suits", "tuxedo", "套装")),
    ("night suit", None, ("night suit", "nightsuit", "pyjama set", "nightwear", "睡衣")),
]
# A set names what it is made of: a suit's blazer and trousers, a night suit's top and pyjamas.
_INCLUDES = {
    "suit": {"blazer", "trousers", "waistcoat"},
    "night suit": {"pyjamas", "shirt", "t-shirt", "top", "shorts", "trousers"},
}
_TYPE_FAMILY = {concept: family for concept, family, _ in _PRODUCT_TYPES}
_GENERIC_TYPES = {family for _, family, _ in _PRODUCT_TYPES if family}  # a family's own concept
# A cut, not a kind: wide-leg or straight trousers may be jeans, chinos or joggers, so a facts
# cut leaves every kind of its family open (裤型#直筒裤 grounds 牛仔裤).
_CUTS = {"wide-leg trousers"}
# A catalog's category value of one character names a family (类型#裤, 类型#裙): in copy these
# characters are parts of words (裙摆 "hem", 裤腰 "waistband"), so only a whole value counts.
_GENERIC_VALUES = {"裤": "trousers", "裙": "dress or skirt", "衣": "top", "鞋": "shoes", "包": "bag"}


def _plurals(term: str) -> list[str]:
    if _CJK.search(term) or term.endswith("s"):
        return [term]
    if term.endswith(("x", "ch", "sh")):
        return [term, term + "es"]
    if term.endswith("y") and term[-2:-1] not in "aeiou":
        return [term, term[:-1] + "ies"]
    return [term, term + "s"]


_TYPE_FORMS = {form: concept for concept, _, terms in _PRODUCT_TYPES for t in terms for form in _plurals(t)}
_TYPE_LEX, _TYPE_RE = _lexicon(_TYPE_FORMS)
# A name grounds every type named inside it ("phone case" -> {phone case, smartphone}, 手机壳 ->
# {phone case, smartphone}, "t-shirt" -> {t-shirt, shirt}; "phone" grounds only "smartphone"),
# and the generic type of its family (chinos -> trousers, 牛仔裤 -> trousers).
_TYPE_CLOSURE: dict[str, set[str]] = {}
for _form, _concept in _TYPE_FORMS.items():
    _inside = {_TYPE_LEX[_tkey(m.group(0))] for i in range(len(_form)) if (m := _TYPE_RE.match(_form, i))}
    _TYPE_CLOSURE[_tkey(_form)] = {c for c in _inside | {_concept} if c} | _INCLUDES.get(_concept, set())
    _TYPE_CLOSURE[_tkey(_form)] |= {f for c in list(_TYPE_CLOSURE[_tkey(_form)]) if (f := _TYPE_FAMILY.get(c))}
# A product type followed by one of these names a part or a style, not the product: "shirt
# collar", "sock liner", "belt loops", "jacket-style", 衬衫领, 西装领. One followed by another
# type only modifies it ("shirt dress", "dhoti pants"): the last one is the claim.
_PART_AFTER = re.compile(
    r"[\s\-]?(?:collars?|liners?|lining|sleeves?|cuffs?|hems?|plackets?|pockets?|style[ds]?|fit|length|neck(?:line)?|structure|"
    r"like|shaped|inspired|silhouette|details?|loops?|straps?|soles?|insoles?|buckles?|buttons?|closure|hooks?|dial|box|holders?|"
    r"compartments?|cut|panel|trim|print|pattern)(?![a-z])|[领袖摆扣式型样边口腰身款风感裤裙衫鞋装]"
)
# Chinese words whose last character starts a type name: 袖口|红 "red cuffs", 松紧|腰带 "an
# elastic waistband".
_CJK_PART_WORDS = frozenset(
    {"袖口", "领口", "裤口", "开口", "胸口", "门口", "出口", "路口", "入口", "腰口", "裙口", "紧腰"}
)
# Parts that carry a product type's name: a bra's "cups", a shoe's "sock" fit.
_PART_OF = {"cup": {"innerwear", "bra"}, "socks": {"shoes"}}
# Styling advice names other garments: "pair it with white sneakers", 搭配一双小白鞋. Types,
# colours and materials in it describe those, not this product (brands and numbers still count);
# so do items the copy says are not part of it ("It does not come with a belt").
_ADVICE = re.compile(
    r"(?:(?<![a-z])(?:pair|team|style|wear|match|combine|layer|complete the look|goes well|go well)(?:s|ed|d|ing)?"
    r"(?:\s+[a-z]+){0,4}?\s+(?:with|over|under)(?![a-z])[^.;!?\n]*)"
    r"|(?:(?<![a-z])(?:does not|doesn't|do not|don't|not) come with[^.;!?\n]*)"
    r"|(?:搭配|配上|搭上|配以|内搭|外搭|叠穿|混搭|搭一|配一|搭个|配个|踩上|踩一双|背上|拎上)[^。！？；;!?\n]*",
    re.IGNORECASE,
)
# A sentence about what is not sold with the product, or about the photo ("The model is wearing
# heels from our stylist's collection"), names other items: the whole sentence is advice.
_OTHER_ITEMS = re.compile(
    r"(?<![a-z])(?:sold separately|not included|stylist'?s?|the model is|model is wearing|mock-up)(?![a-z])"
)
_CLAUSE_START = re.compile(r"[.;!?\n]")
_CLAUSE_END = re.compile(r"[.;!?\n](?:\s|$)|\n")


def _advice_spans(low: str) -> list[tuple[int, int]]:
    spans = [(m.start(), m.end()) for m in _ADVICE.finditer(low)]
    for m in _OTHER_ITEMS.finditer(low):  # "(the belt is) sold separately": the sentence around it
        starts = [c.end() for c in _CLAUSE_START.finditer(low, max(0, m.start() - 200), m.start())]
        end = _CLAUSE_END.search(low, m.end())
        spans.append((starts[-1] if starts else max(0, m.start() - 200), end.start() if end else len(low)))
    return spans


# A type named as what the product holds or fits is no claim about what it is: "a pocket for
# your bottle", "compatible with 15.6 inch laptops", "an organizer for charger, pen".
_PURPOSE_BEFORE = re.compile(r"(?:\bfor|\bfits|\bholds|compatible with|room for)\s+(?:your\s+|a\s+|an\s+|the\s+)?$")
# Cups of a bra, a swimsuit or a dress: "padded cups", "non-wired cups".
_CUP_PART = re.compile(
    r"(?:padded|moulded|molded|wired|underwired|seamless|removable|lined|non-padded|non-wired)[\s\-]*$"
)


# Ordinary English words: a brand spelled like one ("WITH", "ONLY", "Simply") is read as the
# brand only where the copy writes it as the catalog does and not where any writer would put the
# word (lower case, the start of a sentence, a line in capitals). See `Catalog`.
_COMMON_WORDS = frozenset(
    """a about above after again against all also always an and any are as at away back be because been before being below
    best better between both but by can come could day did do does down each even every few first for free from full get
    go good great had has have he her here high his how i if in into is it its just keep know last less life like little
    long look love made make many may me more most much must my never new next no not now of off old on once one only or
    other our out over own part people perfect plus pure real right same see set she should simply since so some still such
    take than that the their them then there these they this those through time to too top true two under up us use very
    want was way we well were what when where which while who why will with without work would year you young your""".split()
)
# "key: value" — a short key (≤3 Latin words or ≤8 CJK chars) before ':' / '：' / '='. The value
# ends at a clause break, or where the next key of a glued spec list starts ("6 table matsShape:
# RectangleColour: Blue", as scraped catalogs often write them).
_KV = re.compile(
    r"(?P<key>(?:(?<![A-Za-z\-])|(?<=[a-z])(?=[A-Z]))[A-Za-z][A-Za-z\-]*(?: [A-Za-z][A-Za-z\-]*){0,2}|[\u3400-\u9fff]{1,8})\s*[:：=]\s*"
    r"(?P<value>[^,;，；。!?！？\n:：]+?)"
    r"(?=\s*(?:[,;，；。!?！？\n]|\.\s|\.$|$)|(?<=[a-z0-9])\s*[A-Z][a-z\-]*(?: [A-Za-z][a-z\-]*){0,2}\s*[:：])"
)
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")


def _glued_break(value: str) -> re.Match[str] | None:
    """Where a scraped value runs into the next field ("2 yearsWarranty"), ignoring the capitals of
    a unit ("5000 mAh", "2.4 GHz", "1 kWh" are one token, not "5000 m" + "Ah")."""
    for m in _CAMEL.finditer(value):
        start = max(value.rfind(" ", 0, m.start()), 0)
        end = value.find(" ", m.start())
        token = value[start : len(value) if end < 0 else end].strip().lstrip("0123456789.,").lower()
        if token not in _UNITS:
            return m
    return None


# ----------------------------------------------------------------------------- result types


@dataclass(frozen=True)
class Claim:
    text: str
    kind: str  # quantity | number | attribute | material | colour | brand | product_type | assurance
    supported: bool
    reason: str | None = None  # None when supported
    start: int = 0
    end: int = 0
    fact: str | None = None  # what the facts say about this kind of claim ("colour: silver"); None: nothing

    def to_dict(self) -> dict[str, Any]:
        return {
            "span": self.text,
            "kind": self.kind,
            "reason": self.reason,
            "fact": self.fact,
            "start": self.start,
            "end": self.end,
        }


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
            "unsupported": [{"text": c.text, **c.to_dict()} for c in self.unsupported],
            "rate": self.rate,
        }


# ----------------------------------------------------------------------------- facts index


@dataclass
class _Facts:
    attributes: dict[str, tuple[str, str]]  # normalized key -> (original key, normalized value(s), " | "-joined)
    shown: dict[str, str]  # normalized key -> "key: value" as the catalog writes it
    canon_keys: dict[str, str]  # synonym concept -> normalized key
    text: str  # every fact key and value, normalized
    quantities: list[Quantity]
    quantities_by_key: dict[str, list[Quantity]]
    materials: set[str]
    colours: set[str]
    brand: str | None
    brand_shown: str | None
    currency: str | None
    types: set[str] = field(default_factory=set)  # product-type concepts the facts name, with their broader ones
    generic_families: set[str] = field(default_factory=set)  # families named only generically (类型#裤)


_INSTRUCTION = re.compile(
    r"ignore (?:all |any )?(?:the )?(?:previous|prior|above)|disregard|system prompt|you are now|忽略|无视|指令|提示词",
    re.IGNORECASE,
)
# A point ends a sentence after a word of two letters or more ("instructions. Warranty"), not
# after an initial or an abbreviation ("U.S. Polo Assn. Kids", "No. 5", "Co. Ltd").
_POINT = re.compile(r"(\S*)[.](?=\s+\S)")
_ABBREVIATIONS = frozenset(
    "assn corp bros intl dept approx incl co no st jr sr dr mr ms mrs vs ltd inc est vol pvt".split()
)


def _has_sentence_break(v: str) -> bool:
    if re.search(r"[!?](?=\s+\S)|[。！？](?=\s*\S)", v):
        return True
    for m in _POINT.finditer(v):
        word = re.sub(r"^.*[^A-Za-z]", "", m.group(1))
        if len(word) >= 2 and word.lower() not in _ABBREVIATIONS and not word.isupper():
            return True
    return False


def is_plain_value(value: str) -> bool:
    """A catalog value that can ground a claim: one short phrase. Prose, embedded "key: value"
    pairs and instructions inside a value ("Ignore previous instructions. Warranty: 99 years")
    are catalog text, not facts, so they support nothing (the prompt-injection defence)."""
    v = value.strip()
    # a colon between digits is a ratio or a time ("1:16", "2:30"), not an embedded "key: value"
    return (
        len(v) <= 160
        and not re.search(r"(?<!\d)[:：]|[:：](?!\d)", v)
        and not _has_sentence_break(v)
        and not _INSTRUCTION.search(v)
    )


def _values(value: Any) -> list[str]:
    """One attribute's fact values: a list (multi-valued attribute) or one scalar."""
    items = value if isinstance(value, list | tuple | set | frozenset) else [value]
    return [str(v).strip() for v in items if v is not None and not isinstance(v, Mapping) and str(v).strip()]


def _concepts(pattern: re.Pattern[str], lex: Mapping[str, str | None], text: str) -> set[str]:
    return {c for m in pattern.finditer(text) if (c := lex[_tkey(m.group(0))])}


def _type_matches(text: str, cased: str | None = None) -> list[tuple[re.Match[str], str]]:
    """Product-type names in `text` (lower case, or `_marked`) with their concept, parts and
    modifiers left out (`cased`: the text as written, where a glued next word shows: "belt loopsOur")."""
    out = []
    for m in _TYPE_RE.finditer(text):
        if text[max(0, m.start() - 1) : m.start() + 1] in _CJK_PART_WORDS:
            continue  # 袖口红 is a red cuff, not a lipstick (口红)
        nxt = _TYPE_RE.match(text, m.end() + (1 if text[m.end() : m.end() + 1] in (" ", "-") else 0))
        if nxt or _PART_AFTER.match(cased or text, m.end()):
            continue  # "shirt collar", "dhoti pants" (the pants are the claim), 西装领
        before = text[max(0, m.start() - 24) : m.start()].lower()
        concept = _TYPE_LEX[_tkey(m.group(0))]
        if _PURPOSE_BEFORE.search(before) or (concept == "cup" and _CUP_PART.search(before)):
            continue  # "a pocket for your bottle"; "padded cups"
        out.append((m, concept))
    return out


def _index(facts: Mapping[str, Any] | str) -> _Facts:
    if isinstance(facts, str):
        facts = json.loads(facts)
    if not isinstance(facts, Mapping):
        raise ValueError(f"facts must be an object (title, brand, price, attributes, ...), got {type(facts).__name__}")
    currency = facts.get("currency")
    raw_attrs = facts.get("attributes") or {}
    if not isinstance(raw_attrs, Mapping):
        raise ValueError(f"facts.attributes must be an object of name -> value(s), got {type(raw_attrs).__name__}")
    attributes: dict[str, tuple[str, str]] = {}
    shown: dict[str, str] = {}
    per_value: dict[str, list[str]] = {}
    for k, v in raw_attrs.items():
        vals = [x for x in _values(v) if is_plain_value(x)]
        if vals and str(k).strip():
            nk = _norm(str(k))
            attributes[nk] = (str(k), " | ".join(_norm(x) for x in vals))
            shown[nk] = f"{k}: {', '.join(vals)}"
            per_value[nk] = vals
    extra = {
        k: _norm(str(facts[k]))
        for k in ("title", "brand", "category")
        if facts.get(k)
        and not isinstance(facts[k], Mapping | list)
        and is_plain_value(str(facts[k]).replace(str(facts.get("brand") or "\0"), ""))
    }
    for k, v in extra.items():
        if k not in attributes:
            attributes[k] = (k, v)
            shown[k] = f"{k}: {facts[k]}"
            per_value[k] = [str(facts[k])]
    canon = {}
    for nk in attributes:
        for suffix_len in range(len(nk), 0, -1):
            if (c := _ATTR_SYNONYMS.get(nk[-suffix_len:])) and c not in canon:
                canon[c] = nk
                break
    values = [*extra.values(), *attributes.keys(), *(v for _, v in attributes.values())]
    text = " | ".join(values)
    qs, by_key = [], {}
    for nk, vals in per_value.items():
        found = [q for v in vals for q, _, _ in quantities(v, default_currency=currency)]
        # a bare number whose key names the unit ("weight_kg": "1.2") takes that unit
        key_unit = next((u for u in re.split(r"[\s()（）\[\]]+", nk) if u in _UNITS), None)
        if key_unit:
            dim, factor = _UNITS[key_unit]
            found = [Quantity(q.raw, dim, q.raw * factor, key_unit) if q.dimension is None else q for q in found]
        by_key[nk] = found
        qs += found
    price = facts.get("price")
    if price is not None:
        try:
            price = float(price)
        except (TypeError, ValueError):
            raise ValueError(f"facts.price must be a number, got {facts['price']!r}") from None
    if price is not None:
        q = Quantity(price, "price", price, currency)
        by_key.setdefault("price", []).append(q)
        qs.append(q)
        # "Price: 12.99 USD" names a fact too (checked as a quantity in _kv_claims).
        attributes.setdefault("price", ("price", _norm(f"{price:g}")))
        shown.setdefault("price", f"price: {facts['price']}{' ' + str(currency) if currency else ''}")
        canon.setdefault("price", "price")  # so 价格 names it too
    named = _type_matches(text)
    direct = {c for _, c in named} | {
        _GENERIC_VALUES[v] for vals in per_value.values() for v in vals if v in _GENERIC_VALUES
    }
    generic = {c for c in direct if c in _GENERIC_TYPES or c in _CUTS}
    brand = facts.get("brand")
    return _Facts(
        attributes=attributes,
        shown=shown,
        canon_keys=canon,
        text=text,
        quantities=qs,
        quantities_by_key=by_key,
        materials=_concepts(_MATERIAL_RE, _MATERIAL_LEX, text),
        colours=_concepts(_COLOUR_RE, _COLOUR_LEX, text),
        brand=_norm(str(brand)) if brand and not isinstance(brand, Mapping | list) else None,
        brand_shown=str(brand) if brand and not isinstance(brand, Mapping | list) else None,
        currency=currency,
        types=direct | {c for m, _ in named for c in _TYPE_CLOSURE[_tkey(m.group(0))]},
        generic_families={
            _TYPE_FAMILY[g]
            for g in generic
            if not any(_TYPE_FAMILY[c] == _TYPE_FAMILY[g] and c not in generic for c in direct)
        },
    )


def _types_in(text: str) -> set[str]:
    """The product-type concepts `text` names, with the broader ones each grounds."""
    return {c for m, _ in _type_matches(text) for c in _TYPE_CLOSURE[_tkey(m.group(0))]}


def _fact_of(idx: _Facts, kind: str, concepts: set[str] | None = None) -> str | None:
    """What the facts say about one kind of claim, for an explanation ("colour: navy")."""
    canon = {"colour": "color", "material": "material"}.get(kind)
    if canon and canon in idx.canon_keys:
        return idx.shown.get(idx.canon_keys[canon])
    if concepts:
        return f"{kind}: {', '.join(sorted(concepts))}"
    return None


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
    if not isinstance(attrs, Mapping):
        return facts, profile  # `_index` says what is wrong with it
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


# ----------------------------------------------------------------------------- catalog (brands)


def _sentence_start(text: str, start: int) -> bool:
    before = text[:start].rstrip()
    return not before or before[-1] in ".!?:;\n•*-–—\"'(["


def _in_capitals(text: str, start: int, end: int) -> bool:
    """A word inside a line written in capitals ("PERFORMANCE DENIM WITH LAID BACK CONTROL")."""
    before = re.findall(r"[A-Za-z]{2,}", text[max(0, start - 24) : start])
    after = re.findall(r"[A-Za-z]{2,}", text[end : end + 24])
    near = before[-1:] + after[:1]
    return any(w.isupper() for w in near)


def _brand_forms(brands: Iterable[str]) -> dict[str, frozenset[str]]:
    """Normalized (NFKC, lower-case) brand -> the spellings the catalog uses."""
    forms: dict[str, set[str]] = {}
    for b in brands:
        if b is None or isinstance(b, Mapping | list):
            continue
        s = " ".join(unicodedata.normalize("NFKC", str(b)).split())
        if s:
            forms.setdefault(s.lower(), set()).add(s)
    return {k: frozenset(v) for k, v in forms.items()}


def _catalog_version(forms: Mapping[str, frozenset[str]]) -> str:
    """A hash of the catalog's brand spellings (casing included: it decides what is a mention)."""
    spellings = sorted(f for fs in forms.values() for f in fs)
    return hashlib.sha256("\n".join(spellings).encode("utf-8")).hexdigest()[:16]


class Catalog:
    """The brands of one catalog, compiled once into one matcher and shared (see `catalog_for`).

    A mention counts where the copy writes the brand as the catalog does (or in capitals; a
    brand the catalog writes in lower case also capitalized): "Roadster", "ROADSTER", but not
    "roadster". The catalog is the authority on a brand's spelling, and the rule costs nothing
    for a real mention while ruling out the common words a catalog's brands include ("WITH",
    "AND", "ONLY" and "CAT" no longer read into every "with", "and", "only" and "cat"). A brand
    spelled like an ordinary English word ("Simply", "People") is, in addition, no mention at
    the start of a sentence nor inside a line in capitals, where any writer capitalizes the
    word. Latin brands of one or two characters ("W", "ID") are never read from the copy: they are
    initials and abbreviations far more often than brands. The product's own brand follows the
    same rule (it only adds supported claims).
    """

    def __init__(self, brands: Iterable[str] = ()) -> None:
        self.forms: dict[str, frozenset[str]] = _brand_forms(brands)
        self.brands: tuple[str, ...] = tuple(sorted(self.forms))
        self.version: str = _catalog_version(self.forms)
        readable = [b for b in self.brands if len(b) >= (2 if _CJK.search(b) else 3)]
        latin = [b for b in readable if not _CJK.search(b)]
        cjk = [b for b in readable if _CJK.search(b)]
        parts = (
            [rf"{_WORD_START}{_first_chars(latin, capital=True)}(?:{_trie(latin, capital_first=True)}){_WORD_END}"]
            if latin
            else []
        ) + ([_first_chars(cjk) + _trie(cjk)] if cjk else [])
        self._re = re.compile("|".join(parts)) if parts else None

    def __len__(self) -> int:
        return len(self.brands)

    def __repr__(self) -> str:
        return f"Catalog({len(self.brands)} brands, version={self.version})"

    def mentions(
        self, text: str, low: str, own: str | None = None, own_shown: str | None = None
    ) -> list[tuple[int, int, str]]:
        """(start, end, normalized brand) of every brand the copy names (`low` = `text` lower-cased)."""
        found = []
        if self._re is not None:
            marked = _marked(text, low)
            # in lower case ("OddCroft" is one word), then where the copy glued a brand to the next
            # word ("by BeliBlack solid suit": the brand ends at the capital)
            matches = list(self._re.finditer(low))
            if marked is not low:
                taken = [(m.start(), m.end()) for m in matches]
                matches += [
                    m for m in self._re.finditer(marked) if not any(s < m.end() and m.start() < e for s, e in taken)
                ]
            for m in matches:
                b = low[m.start() : m.end()]
                if b in self.forms and self._reads_as_brand(text, m.start(), m.end(), self.forms[b], b):
                    found.append((m.start(), m.end(), b))
        if own and own not in self.forms and len(own) >= 2:
            forms = frozenset({own_shown or own})
            start = low.find(own)
            while start >= 0:
                end = start + len(own)
                bounded = _CJK.search(own) or (
                    not (start and low[start - 1].isalnum()) and not (end < len(low) and low[end].isalnum())
                )
                if bounded and self._reads_as_brand(text, start, end, forms, own):
                    found.append((start, end, own))
                start = low.find(own, start + 1)
        return found

    @staticmethod
    def _reads_as_brand(text: str, start: int, end: int, forms: frozenset[str], brand: str) -> bool:
        surface = text[start:end]
        if _CJK.search(surface):
            return True
        if not any(
            surface in (f, f.upper()) or (f.islower() and surface in (f.capitalize(), f.title())) for f in forms
        ):
            return False
        if all(w in _COMMON_WORDS for w in re.findall(r"[a-z]+", brand)):
            if _sentence_start(text, start) and not surface.isupper():
                return False  # "Simply put, ..."
            if surface.isupper() and _in_capitals(text, start, end):
                return False  # "MADE WITH LOVE"
        return True

    def check(
        self, text: str, facts: Mapping[str, Any] | str, *, profile: Mapping[str, Any] | None = None
    ) -> GroundingResult:
        return check(text, facts, profile=profile, catalog=self)


_CATALOGS: dict[Any, Catalog] = {}
_CATALOG_LOCK = threading.Lock()
_CATALOG_CACHE_SIZE = 8


def catalog_for(brands: Iterable[str] | Catalog = ()) -> Catalog:
    """The compiled `Catalog` of these brands, built once per brand list and shared (the batch
    job, serving and check-copy pass the same list and get the same object). Keyed by the list
    itself (cheap to look up on every call) and by the catalog's version (a hash of its brand
    spellings), so the same brands in another list or order share one matcher too."""
    if isinstance(brands, Catalog):
        return brands
    key = brands if isinstance(brands, tuple) else tuple(brands)
    try:
        hit = _CATALOGS.get(key)
    except TypeError:  # unhashable entries
        key = tuple(str(b) for b in key)
        hit = _CATALOGS.get(key)
    if hit is not None:
        return hit
    version = _catalog_version(_brand_forms(key))  # the same brands in another list: no recompiling
    cat = _CATALOGS.get(version) or Catalog(key)
    with _CATALOG_LOCK:
        cat = _CATALOGS.get(cat.version, cat)
        while len(_CATALOGS) >= 2 * _CATALOG_CACHE_SIZE:
            _CATALOGS.pop(next(iter(_CATALOGS)))
        _CATALOGS[key] = _CATALOGS[cat.version] = cat
    return cat


# ----------------------------------------------------------------------------- checks


_UNITLESS_OK = {"count", "age", "percent", "time", "power", "charge", "storage"}


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
    # the facts hold a bare number equal to this one: the text added a unit the facts lack. A
    # count, age, share or duration may ("1000 pieces" for "pieces: 1000"); a size, weight or
    # volume may not ("2 l" is no fact of a "Pack of 2")
    if q.dimension in _UNITLESS_OK and any(f.dimension is None and _close(q.raw, f.raw) for f in pool):
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


def _bound_pool(text: str, start: int, end: int, idx: _Facts) -> tuple[str, list[Quantity]] | None:
    """The quantities of the fact attribute whose name introduces the bare number at
    `text[start:end]` (its key and quantities); None when no attribute with a number does (any
    fact number then grounds it)."""
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
    pool = idx.quantities_by_key.get(matched) if matched else None
    return (matched, pool) if matched and pool else None


def _bound_reason(q: Quantity, pool: list[Quantity]) -> str | None:
    """None when the bare number `q` is a value of one attribute's `pool`, as written or in any
    unit of its dimension ("weight is 1200" for 1.2 kg); else `numeric_mismatch`."""
    for f in pool:
        if _close(q.raw, f.raw) or (f.dimension and any(_close(q.raw * k, f.value) for k in _FACTORS[f.dimension])):
            return None
    return "numeric_mismatch"


# A "key" that opens with a function word is a phrase, not an attribute name: "from Nuvia: a
# black smartphone" introduces, it does not claim an attribute "from nuvia".
_NOT_KEY_START = {"a", "an", "the", "from", "by", "with", "for", "of", "in", "on", "at", "to", "and", "or", "meet", "here", "this", "it", "its",
                  "about", "disclaimer", "note", "nb", "tip", "tips", "how", "why", "what", "注意", "温馨提示", "提示"}  # fmt: skip


def _looks_like_key(key: str) -> bool:
    nk = _norm(key)
    if nk.split(" ")[0] in _NOT_KEY_START:
        return False
    if _CJK.search(nk):
        return any(nk.endswith(s) for s in _ATTR_SYNONYMS if _CJK.search(s)) or len(nk) <= 4
    return any(nk.split(" ")[-1] == s for s in _ATTR_SYNONYMS) or len(nk.split(" ")) <= 2


def _colour_ok(c: str, known: set[str]) -> bool:
    fam = _COLOUR_FAMILY.get(c)
    return c in known or fam in known or (fam is None and any(_COLOUR_FAMILY.get(k) == c for k in known))


def _material_ok(c: str, known: set[str]) -> bool:
    fam = _MATERIAL_FAMILY.get(c)
    return c in known or fam in known or (fam is None and any(_MATERIAL_FAMILY.get(k) == c for k in known))


def _key_concept(key: str) -> str | None:
    nk = _norm(key)
    if _CJK.search(nk):
        return next((c for s, c in _ATTR_SYNONYMS.items() if _CJK.search(s) and nk.endswith(s)), None)
    return _ATTR_SYNONYMS.get(nk.split(" ")[-1])


def _value_supported(key: str, value: str, idx: _Facts) -> tuple[bool, str | None]:
    """A "key: value" whose colour or material value the facts state ("Colour: Navy Blue" for a
    navy product, "Material: Porcelain" for a "Porcelain Mug"), or whose value the facts say
    word for word. Returns (supported, what the facts say)."""
    nv = _norm(value)
    concept = _key_concept(key)
    for kind, pattern, lex, known, ok in (
        ("colour", _COLOUR_RE, _COLOUR_LEX, idx.colours, _colour_ok),
        ("material", _MATERIAL_RE, _MATERIAL_LEX, idx.materials, _material_ok),
    ):
        if concept == {"colour": "color"}.get(kind, kind):
            claimed = _concepts(pattern, lex, nv)
            if claimed:
                return all(ok(c, known) for c in claimed), _fact_of(idx, kind, known)
    if len(nv) >= 3 and re.search(rf"(?<![a-z0-9]){re.escape(nv)}(?![a-z0-9])", idx.text):
        where = next((s for k, s in idx.shown.items() if nv in idx.attributes.get(k, ("", ""))[1]), None)
        return True, where
    # every word of the value is a word of the facts ("Set content: 1 tissue holder" for a
    # "Printed Tissue Holder"; a lone "1" is the one item the facts describe)
    words = re.findall(r"[a-z]+|\d+(?:\.\d+)?|[\u3400-\u9fff]", nv)
    fact_words = set(re.findall(r"[a-z]+|\d+(?:\.\d+)?|[\u3400-\u9fff]", idx.text))
    content = [w for w in words if w not in _FUNCTION_WORDS]
    if (
        any(not w[0].isdigit() for w in content)
        and not _CJK.search(nv)
        and all(w in fact_words or w == "1" or _plural_of(w) in fact_words for w in content)
    ):
        return True, idx.shown.get("title")
    return False, None


_FUNCTION_WORDS = frozenset("a an the of with and or for in on to by at from".split())


def _plural_of(word: str) -> str:
    return word[:-1] if word.endswith("s") else word + "s"


def _kv_claims(text: str, idx: _Facts, spans: list[tuple[int, int]]) -> list[Claim]:
    out: list[Claim] = []
    if ":" not in text and "：" not in text and "=" not in text:
        return out  # most copy has no "key: value" at all; the scan for one is the costly part
    for m in _KV.finditer(text):
        key, kstart = m["key"], m.start("key")
        if not _CJK.search(key) and (glued := list(_CAMEL.finditer(key))):
            kstart += glued[-1].start()  # "closureBack style: Regular" -> the key is "Back style"
            key = text[kstart : m.end("key")]
        words = key.split(" ")
        if not _CJK.search(key) and (
            cut := [i for i in range(1, len(words)) if words[i][:1].isupper() and words[i - 1][:1].islower()]
        ):
            kstart += len(" ".join(words[: cut[-1]])) + 1  # "2 patch pockets Length: regular" -> "Length"
            key = text[kstart : m.end("key")]
        value = m["value"]
        if not _CJK.search(value) and (glued_value := _glued_break(value)):
            value = value[: glued_value.start()]  # "2 yearsWarranty provided by ..." -> "2 years"
        value = value.strip()
        vstart = m.start("value")
        vend = vstart + len(m["value"]) - len(m["value"].lstrip()) + len(value)
        if not value or not _looks_like_key(key) or (idx.brand and _norm(key) in idx.brand):
            continue  # "Tinker & Twig: a red car" names the brand, not an attribute "twig"
        matched = _match_key(key, idx)
        spans.append((vstart, vend))
        span = text[kstart:vend]
        if matched is None:
            ok, fact = _value_supported(key, value, idx)
            out.append(Claim(span, "attribute", ok, None if ok else "unknown_attribute", kstart, vend, fact))
            continue
        fact = idx.shown.get(matched)
        fact_value = idx.attributes[matched][1]
        nv = _norm(value)
        claimed = [q for q, _, _ in quantities(value, default_currency=idx.currency)]
        pool = idx.quantities_by_key.get(matched, [])
        # Numbers are compared as quantities first: "12.99 EUR" contains the fact "12.99" as a
        # substring but is a unit mismatch against 12.99 USD.
        if nv and not (claimed and pool) and (nv in fact_value or fact_value in nv):
            out.append(Claim(span, "attribute", True, None, kstart, vend, fact))
            continue
        reasons = [_quantity_reason(q, pool) for q in claimed]
        if claimed and pool and all(r is None for r in reasons):
            out.append(Claim(span, "attribute", True, None, kstart, vend, fact))
            continue
        if not (claimed and pool) and _key_concept(key) in ("color", "material"):
            ok, _ = _value_supported(key, value, idx)
            if ok:
                out.append(Claim(span, "attribute", True, None, kstart, vend, fact))
                continue
        reason = next((r for r in reasons if r), None) if claimed and pool else "value_mismatch"
        out.append(Claim(span, "attribute", False, reason or "value_mismatch", kstart, vend, fact))
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


def _lower(text: str) -> str:
    low = text.lower()
    if len(low) == len(text):
        return low
    return "".join(ch if len(ch.lower()) != 1 else ch.lower() for ch in text)  # keep offsets ("İ")


def _quantity_fact(idx: _Facts, q: Quantity, bound: str | None) -> str | None:
    if bound:
        return idx.shown.get(bound)
    keys = [
        k
        for k, qs in idx.quantities_by_key.items()
        if qs and (q.dimension is None or any(f.dimension == q.dimension for f in qs))
    ]
    return "; ".join(idx.shown[k] for k in keys[:3] if k in idx.shown) or None


def _check(text: str, idx: _Facts, prof: _Profile | None, cat: Catalog) -> GroundingResult:
    text = unicodedata.normalize("NFKC", _flatten(text))
    low = _lower(text)
    marked = _marked(text, low)
    quoted = _quote_spans(low, prof)  # the shopper's own items: references, not claims
    advice = _advice_spans(low)  # other garments: "pair it with ...", "a belt, sold separately"
    kv_spans: list[tuple[int, int]] = []
    claims: list[Claim] = [c for c in _kv_claims(text, idx, kv_spans) if not _inside(quoted, c.start, c.end)]
    skip = kv_spans + quoted
    described = skip + advice

    for q, s, e in quantities(text, default_currency=idx.currency):
        if _inside(skip, s, e):
            continue
        bound = _bound_pool(text, s, e, idx) if q.dimension is None else None
        reason = _bound_reason(q, bound[1]) if bound else _quantity_reason(q, idx.quantities)
        fact = _quantity_fact(idx, q, bound[0] if bound else None)
        kind = "quantity" if q.dimension else "number"
        claims.append(Claim(text[s:e].strip(), kind, reason is None, reason, s, e, fact))

    colours: list[tuple[int, int, set[str]]] = []
    for m in _COLOUR_RE.finditer(marked):
        concept = _COLOUR_LEX[_tkey(m.group(0))]
        if concept is None or _inside(described, m.start(), m.end()):
            continue
        prev = colours[-1] if colours else None
        if prev and not _CJK.search(m.group(0)) and re.fullmatch(r"[\s\-]+", low[prev[1] : m.start()]):
            colours[-1] = (prev[0], m.end(), prev[2] | {concept})  # "navy blue", "teal-green": one colour
        else:
            colours.append((m.start(), m.end(), {concept}))
    for s, e, concepts in colours:
        ok = any(_colour_ok(c, idx.colours) for c in concepts) or low[s:e] in idx.text
        claims.append(
            Claim(text[s:e], "colour", ok, None if ok else "not_in_facts", s, e, _fact_of(idx, "colour", idx.colours))
        )

    for m in _MATERIAL_RE.finditer(marked):
        concept = _MATERIAL_LEX[_tkey(m.group(0))]
        if concept is None or _inside(described, m.start(), m.end()):
            continue
        ok = _material_ok(concept, idx.materials) or low[m.start() : m.end()] in idx.text
        fact = _fact_of(idx, "material", idx.materials)
        claims.append(
            Claim(text[m.start() : m.end()], "material", ok, None if ok else "not_in_facts", m.start(), m.end(), fact)
        )

    kv_claims = [(c.start, c.end) for c in claims if c.kind == "attribute"]  # "Warranty: 3 years" is one claim
    kv_keys = {_tkey(c.text.split(":")[0].split("：")[0]) for c in claims if c.kind == "attribute"}
    for m in _ASSURANCE_RE.finditer(marked):
        if _inside(kv_claims + quoted, m.start(), m.end()) or _tkey(m.group(0)) in kv_keys:
            continue  # "Warranty: 1 month. Warranty provided by the brand" says it once
        ok = low[m.start() : m.end()] in idx.text
        claims.append(
            Claim(text[m.start() : m.end()], "assurance", ok, None if ok else "not_in_facts", m.start(), m.end())
        )

    type_fact = f"type: {', '.join(sorted(idx.types - _GENERIC_TYPES) or sorted(idx.types))}" if idx.types else None
    for m, concept in _type_matches(marked, text):
        if _inside(described, m.start(), m.end()) or (_PART_OF.get(concept, set()) & idx.types):
            continue  # a garment in styling advice; a bra's "cups"
        ok = (
            concept in idx.types
            or _TYPE_FAMILY[concept] in idx.generic_families
            or low[m.start() : m.end()] in idx.text
            or bool(prof and (concept in prof.types or low[m.start() : m.end()] in prof.text))
        )
        claims.append(
            Claim(
                text[m.start() : m.end()],
                "product_type",
                ok,
                None if ok else "type_mismatch" if idx.types else "not_in_facts",
                m.start(),
                m.end(),
                type_fact,
            )
        )

    brand_fact = f"brand: {idx.brand_shown}" if idx.brand_shown else None
    for s, e, brand in cat.mentions(text, low, idx.brand, idx.brand_shown):
        if _inside(skip, s, e):
            continue
        ok = brand == idx.brand or brand in idx.text or bool(prof and brand in prof.text)
        claims.append(Claim(text[s:e], "brand", ok, None if ok else "brand_mismatch", s, e, brand_fact))
    claims.sort(key=lambda c: (c.start, c.end))
    return GroundingResult(claims)


def check(
    text: str,
    facts: Mapping[str, Any] | str,
    *,
    known_brands: Iterable[str] = (),
    profile: Mapping[str, Any] | None = None,
    catalog: Catalog | None = None,
) -> GroundingResult:
    """Extract the claims of `text` and mark each supported or not by `facts`.

    `catalog` (a `Catalog`, see `catalog_for`) or `known_brands` (every brand of the catalog; the
    compiled matcher is cached per brand list) lets the check catch a wrong brand; the product's
    own brand is always known. `profile` (a personalized reason's shopper data: lists of recent
    items, top categories, top brands) may be quoted and may ground brands and product types,
    never a number, unit, material, colour or attribute of this product.
    """
    facts, profile = _split_profile(facts, profile)
    return _check(text, _index(facts), _profile_index(profile), catalog or catalog_for(known_brands))


def check_batch(
    texts: list[str],
    facts: list[Mapping[str, Any] | str],
    *,
    known_brands: Iterable[str] = (),
    profiles: list[Mapping[str, Any] | None] | None = None,
    catalog: Catalog | None = None,
) -> dict[str, Any]:
    """Per-output results and the overall unsupported-claim rate (unsupported / all claims).

    `profiles`: one shopper profile per text for personalized reasons (None = no profile)."""
    if len(texts) != len(facts) or (profiles is not None and len(profiles) != len(texts)):
        raise ValueError(
            f"{len(texts)} texts, {len(facts)} facts, {'no' if profiles is None else len(profiles)} profiles; pass one facts entry per text (and one profile per text, or none)"
        )
    cat = catalog or catalog_for(known_brands)
    profiles = profiles if profiles is not None else [None] * len(texts)
    results = [check(t, f, profile=p, catalog=cat) for t, f, p in zip(texts, facts, profiles, strict=True)]
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
# point inside a token ("$75.99", "2.5 kg", "v1.2") does not end one, nor one after an initial or
# an abbreviation ("U.S. Polo Assn. Kids", "No. 5"): before, "U.S. Polo Assn." was cut at its dots.
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)|[。！？；;\n]")


def _abbreviation_point(text: str, i: int) -> bool:
    m = re.search(r"([A-Za-z]+)$", text[max(0, i - 12) : i])
    if not m:
        return False
    word = m.group(1)
    before = text[: i - len(word)]
    return word.lower() in _ABBREVIATIONS or (len(word) == 1 and word.isupper() and before.endswith("."))


def sentences(text: str) -> list[str]:
    out, pos = [], 0
    for m in _SENTENCE_END.finditer(text):
        if m.group(0) == "." and _abbreviation_point(text, m.start()) and m.end() < len(text):
            continue
        out.append(text[pos : m.end()])
        pos = m.end()
    if pos < len(text):
        out.append(text[pos:])
    return [s for s in out if s]


def remove_unsupported(
    text: str,
    facts: Mapping[str, Any] | str,
    *,
    known_brands: Iterable[str] = (),
    profile: Mapping[str, Any] | None = None,
    catalog: Catalog | None = None,
) -> str:
    """`text` without the sentences that carry an unsupported claim (serving runs this).

    `profile`: the shopper data a personalized reason was written from (see `check`)."""
    facts, profile = _split_profile(facts, profile)
    idx, prof, cat = _index(facts), _profile_index(profile), catalog or catalog_for(known_brands)
    kept = [s for s in sentences(text) if not _check(s, idx, prof, cat).unsupported]
    return "".join(kept).strip()


def ground_pdp(
    obj: Mapping[str, Any],
    facts: Mapping[str, Any] | str,
    *,
    known_brands: Iterable[str] = (),
    catalog: Catalog | None = None,
) -> dict[str, Any]:
    """A PDP object with unsupported claims removed: bad highlights dropped, description filtered,
    and a title that claims something unsupported replaced by the catalog title."""
    f = json.loads(facts) if isinstance(facts, str) else facts
    cat = catalog or catalog_for(known_brands)
    idx = _index(f)
    title = str(obj.get("title") or "")
    if not title or _check(title, idx, None, cat).unsupported:
        title = str(f.get("title") or "")
    highlights = [
        h
        for h in obj.get("highlights") or []
        if isinstance(h, str) and h.strip() and not _check(h, idx, None, cat).unsupported
    ]
    return {
        "title": title,
        "highlights": highlights,
        "description": remove_unsupported(str(obj.get("description") or ""), f, catalog=cat),
    }
