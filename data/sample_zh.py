"""The Chinese embedded shop (`data.sample.language: zh`): words only; the sampling is data/sample.py's.

    shopgraph data sample --out raw/sample-zh --set data.sample.language=zh

Apparel in the AdvertiseGen vocabulary (类型, 材质, 颜色, 风格, 图案, 版型, 领型, 袖长, 裙长 …),
shoes, bags and a few gadgets; brands are made-up Chinese names; prices in whole yuan ending in 9
(set `data.currency: CNY`, the default for this shop). Categories are three levels deep
("服饰 > 上衣 > T恤"): a department here is "服饰 > 上衣", so the leaf stays the last part as in
the English shop. Reviews name the aspects ml.aspects knows in Chinese: 尺码, 面料, 做工, 版型,
舒适, 电池, 音质, 物流 ….
"""

from __future__ import annotations

import numpy as np

_TOPS, _BOTTOMS, _DRESSES = "服饰 > 上衣", "服饰 > 裤装", "服饰 > 裙装"
_SHOES, _BAGS, _DIGITAL = "鞋靴 > 运动鞋靴", "箱包配饰 > 包袋配饰", "数码 > 手机周边"

# department -> brands, leaf -> (noun, CNY price range, {attribute: values}); the first attribute is
# the one the title names.
DEPARTMENTS: dict[str, tuple[list[str], dict[str, tuple[str, tuple[float, float], dict[str, list[str]]]]]] = {
    _TOPS: (
        ["森屿", "棉语", "青禾", "素衣坊"],
        {
            "T恤": ("T恤", (39, 199), {"材质": ["纯棉", "莫代尔", "冰丝", "涤纶"], "版型": ["宽松", "修身", "直筒"],
                                         "领型": ["圆领", "V领", "翻领"], "袖长": ["短袖", "长袖", "五分袖"]}),
            "衬衫": ("衬衫", (79, 399), {"材质": ["纯棉", "雪纺", "亚麻", "真丝"], "风格": ["简约", "通勤", "复古", "文艺"],
                                         "领型": ["翻领", "立领", "娃娃领"], "袖长": ["长袖", "短袖"]}),
            "卫衣": ("卫衣", (99, 459), {"图案": ["字母", "纯色", "印花", "条纹"], "材质": ["纯棉", "加绒", "涤纶"],
                                         "版型": ["宽松", "落肩", "直筒"]}),
            "外套": ("外套", (199, 1299), {"类型": ["夹克", "风衣", "牛仔外套", "西装外套"], "材质": ["牛仔布", "棉", "羊毛", "涤纶"],
                                           "风格": ["休闲", "通勤", "街头", "复古"]}),
        },
    ),
    _BOTTOMS: (
        ["蓝调", "牛仔坊", "简行", "拓野"],
        {
            "牛仔裤": ("牛仔裤", (99, 599), {"裤型": ["直筒裤", "阔腿裤", "小脚裤", "微喇裤"], "材质": ["牛仔布"],
                                              "裤长": ["九分裤", "长裤"], "版型": ["修身", "宽松", "高腰"]}),
            "休闲裤": ("休闲裤", (79, 399), {"裤型": ["束脚裤", "直筒裤", "工装裤"], "材质": ["棉", "亚麻", "涤纶"],
                                              "风格": ["休闲", "运动", "街头"]}),
            "短裤": ("短裤", (49, 199), {"材质": ["棉", "牛仔布", "速干面料"], "裤长": ["五分裤", "三分裤"]}),
            "腰带": ("腰带", (39, 299), {"材质": ["牛皮", "帆布", "合金扣"], "宽度": ["3厘米", "3.5厘米", "4厘米"]}),
        },
    ),
    _DRESSES: (
        ["花间", "初夏", "云裳", "茉莉"],
        {
            "连衣裙": ("连衣裙", (129, 899), {"裙长": ["中长裙", "短裙", "长裙"], "图案": ["碎花", "印花", "纯色", "格子"],
                                               "领型": ["圆领", "V领", "方领"], "风格": ["文艺", "甜美", "复古", "简约"]}),
            "半身裙": ("半身裙", (79, 459), {"裙型": ["A字裙", "百褶裙", "包臀裙"], "材质": ["雪纺", "针织", "牛仔布"],
                                              "裙长": ["短裙", "中长裙"]}),
            "针织开衫": ("针织开衫", (99, 499), {"材质": ["羊毛", "棉", "马海毛"], "袖长": ["长袖", "七分袖"],
                                                  "风格": ["温柔", "简约", "复古"]}),
            "丝巾": ("丝巾", (49, 399), {"材质": ["真丝", "雪纺", "棉麻"], "图案": ["印花", "格子", "纯色"]}),
        },
    ),
    _SHOES: (
        ["步云", "疾风", "轻跑", "远途"],
        {
            "跑步鞋": ("跑步鞋", (199, 1099), {"适用场景": ["路跑", "越野", "训练"], "鞋面材质": ["网布", "飞织", "合成革"],
                                                "鞋底": ["橡胶", "EVA"]}),
            "帆布鞋": ("帆布鞋", (89, 399), {"鞋帮高度": ["低帮", "高帮"], "鞋面材质": ["帆布"], "风格": ["休闲", "复古", "简约"]}),
            "运动袜": ("运动袜", (29, 99), {"数量": ["3双装", "5双装"], "材质": ["纯棉", "羊毛", "速干面料"]}),
            "鞋垫": ("鞋垫", (19, 129), {"功能": ["减震", "透气", "足弓支撑"], "材质": ["记忆棉", "硅胶"]}),
        },
    ),
    _BAGS: (
        ["行囊", "山野", "织梦", "暖阳"],
        {
            "双肩包": ("双肩包", (99, 899), {"容量": ["15升", "20升", "25升"], "材质": ["帆布", "尼龙", "牛皮"],
                                              "风格": ["通勤", "休闲", "户外"]}),
            "帽子": ("帽子", (39, 259), {"类型": ["棒球帽", "渔夫帽", "针织帽"], "材质": ["棉", "羊毛", "涤纶"]}),
            "围巾": ("围巾", (59, 499), {"材质": ["羊毛", "羊绒", "棉麻"], "图案": ["格子", "纯色", "条纹"]}),
            "钱包": ("钱包", (69, 599), {"类型": ["短款", "长款", "折叠款"], "材质": ["牛皮", "羊皮", "帆布"]}),
        },
    ),
    _DIGITAL: (
        ["星耀", "极光", "云帆", "声动"],
        {
            "手机": ("手机", (999, 6999), {"存储": ["128GB", "256GB", "512GB"], "屏幕尺寸": ["6.1英寸", "6.7英寸"]}),
            "手机壳": ("手机壳", (19, 129), {"材质": ["硅胶", "皮革", "TPU"], "防摔高度": ["1.2米", "2米"]}),
            "充电器": ("充电器", (49, 299), {"功率": ["20W", "33W", "65W"], "接口": ["USB-C", "USB-C和USB-A"]}),
            "耳机": ("耳机", (99, 1999), {"类型": ["入耳式", "头戴式", "半入耳式"], "降噪": ["支持", "不支持"]}),
            "充电宝": ("充电宝", (79, 399), {"容量": ["5000毫安", "10000毫安", "20000毫安"], "接口数量": ["2", "3"]}),
        },
    ),
}  # fmt: skip
COLORS = ["黑色", "白色", "灰色", "藏青色", "米色", "卡其色", "酒红色", "浅蓝色"]

# Every department needs at least one anchor (a leaf with complements that is no one's complement).
COMPLEMENTS: dict[str, list[str]] = {
    "T恤": ["短裤", "帆布鞋", "帽子"],
    "外套": ["围巾", "卫衣", "休闲裤"],
    "卫衣": ["休闲裤", "运动袜"],
    "衬衫": ["腰带", "休闲裤"],
    "牛仔裤": ["腰带", "帆布鞋"],
    "休闲裤": ["腰带"],
    "连衣裙": ["丝巾", "针织开衫"],
    "半身裙": ["针织开衫", "丝巾"],
    "跑步鞋": ["运动袜", "鞋垫"],
    "运动袜": ["鞋垫"],
    "双肩包": ["钱包", "帽子"],
    "手机": ["手机壳", "充电器", "耳机"],
    "手机壳": ["充电器"],
    "充电器": ["充电宝"],
    "耳机": ["充电宝"],
}

# What reviewers say per department (positive, negative), in ml.aspects' Chinese aspect words.
REVIEW_ASPECTS: dict[str, list[tuple[str, str]]] = {
    _TOPS: [("尺码很标准，穿着正合适", "尺码偏小，建议买大一码"),
            ("面料柔软透气", "面料很薄，还有点起球"),
            ("做工精细，没有线头", "做工粗糙，线头很多")],
    _BOTTOMS: [("版型很好，穿着显瘦", "版型不好，穿着显胖"),
               ("尺码标准，长度刚好", "尺码偏大，腰围太松"),
               ("面料厚实有弹性", "面料很硬，没有弹性")],
    _DRESSES: [("版型好看，很显气质", "版型奇怪，一点也不显瘦"),
               ("面料垂感很好", "面料有异味，洗了还有"),
               ("做工精致，走线整齐", "做工一般，有开线")],
    _SHOES: [("穿着很舒服，跑步不累", "穿着不舒服，有点磨脚"),
             ("尺码正好，不挤脚", "尺码偏小，挤脚"),
             ("质量很好，鞋底耐磨", "质量很差，一个月就开胶")],
    _BAGS: [("做工扎实，拉链顺滑", "做工很差，拉链坏了"),
            ("大小合适，很能装", "大小不合适，装不下东西"),
            ("性价比很高", "价格偏贵，不值这个价")],
    _DIGITAL: [("电池很耐用，续航一整天", "电池不耐用，半天就没电"),
               ("音质清晰，声音很大", "音质很差，杂音很大"),
               ("充电很快", "充电太慢了")],
}  # fmt: skip
DELIVERY = ("物流很快，包装完好", "物流太慢，包装破损")


def product_text(leaf_i: int, brand_i: int, rng: np.random.Generator, shop) -> tuple[str, dict[str, str], str | None]:
    """(title, attributes, description) of one product; the description states only its facts."""
    dept, leaf = shop.leaves[leaf_i]
    noun, _, attrs = shop.departments[dept][1][leaf]
    brand = shop.brands[brand_i]
    values = {k: v[int(rng.integers(len(v)))] for k, v in attrs.items()}
    color = shop.colors[int(rng.integers(len(shop.colors)))]
    values["颜色"] = color
    model = f"{'AXKLMPRSTVZ'[int(rng.integers(11))]}{int(rng.integers(1, 99))}"
    main = values[next(iter(attrs))]
    if main.endswith(noun) or (noun.endswith("子") and main.endswith(noun[0])):  # 西装外套, 棒球帽 (帽子)
        named = main
    elif main[-1] == noun[-1]:  # 直筒裤 + 牛仔裤 -> 直筒牛仔裤
        named = main[:-1] + noun
    else:
        named = main + noun
    title = f"{brand} {model} {named} {color}"
    if rng.random() < 0.06:  # some real catalogs have no description for an item
        return title, values, None
    facts = [(k, v) for k, v in values.items() if k != "颜色"]
    openers = [f"{brand}{model}是一款{color}的{noun}。", f"这款{color}{noun}来自{brand}，型号{model}。",
               f"{brand}推出的{model}，一款{color}{noun}。"]  # fmt: skip
    fact_lines = [[f"{k}为{v}。", f"{k}：{v}。", f"{k}是{v}。"][int(rng.integers(3))] for k, v in facts]
    closers = [f"属于{leaf}系列。", f"来自{dept.rsplit(' > ', 1)[-1]}专区。", ""]
    return title, values, "".join([openers[int(rng.integers(3))], *fact_lines, closers[int(rng.integers(3))]])


def cny_prices(lo: np.ndarray, hi: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Log-uniform in the leaf's range, in whole yuan ending in 9 (39, 129, 1299)."""
    raw = np.exp(rng.uniform(np.log(lo), np.log(hi)))
    return np.maximum(np.floor(raw / 10) * 10 + 9, 9.0)


def shop(cls):
    """The Chinese shop as a `data.sample.Shop`."""
    return cls("zh", DEPARTMENTS, COMPLEMENTS, COLORS, REVIEW_ASPECTS, DELIVERY, product_text, cny_prices)
