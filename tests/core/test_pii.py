"""Personal data is scrubbed from free text (core.pii), and product facts survive it; prompts,
corpora and logs get the scrubbed text.

    pytest -q tests/core/test_pii.py
"""

from __future__ import annotations

import json
import logging

import pytest

from core.facts import facts_of, serialize_facts
from core.pii import cn_id_ok, install_log_filter, luhn_ok, scrub, scrub_counts

# (text, what must be gone, how many of each kind)
PERSONAL = [
    ("Questions? Write to maria.lopez+shop@example.org today.", ["maria.lopez+shop@example.org"], {"email": 1}),
    ("Call me on (415) 555-2671 after six.", ["555-2671"], {"phone": 1}),
    ("London office: +44 20 7946 0958.", ["7946 0958"], {"phone": 1}),
    ("Berlin: Tel. 030 12345678, mobil +49 151 23456789", ["12345678", "23456789"], {"phone": 2}),
    ("Mumbai desk +91 98765 43210 or 098765 43210", ["98765 43210"], {"phone": 2}),
    ("international 0044 20 7946 0958", ["7946 0958"], {"phone": 1}),
    ("paid with 4111 1111 1111 1111, refund to 5500-0000-0000-0004", ["1111 1111", "0000-0004"], {"card": 2}),
    ("amex 378282246310005 on file", ["378282246310005"], {"card": 1}),
    ("ship to 221B Baker Street, London NW1", ["221B Baker"], {"address": 1}),
    ("Deliver to 1600 Pennsylvania Avenue NW, Apt 4", ["1600 Pennsylvania"], {"address": 1}),
    ("手机13912345678，微信同号", ["13912345678"], {"phone": 1}),
    ("联系电话 +86 139 1234 5678", ["139 1234 5678"], {"phone": 1}),
    ("座机 010-12345678 工作日可打", ["12345678"], {"phone": 1}),
    ("身份证号 11010519491231002X 请核对", ["11010519491231002X"], {"id": 1}),
    ("收货地址：广东省深圳市南山区科技园路100号3栋201室", ["科技园路100号", "201室"], {"address": 1}),
    ("寄到上海市浦东新区世纪大道100号，谢谢", ["世纪大道100号"], {"address": 1}),
    ("邮箱 li.wei@example.cn，电话 13812345678", ["li.wei@example.cn", "13812345678"], {"email": 1, "phone": 1}),
]

# Product text that must come out unchanged: units, resolutions, versions, prices, sizes, years,
# model numbers, pack counts, barcodes and part numbers.
PRODUCT_FACTS = [
    "Battery 5000 mAh, 6.2 inch 1080p display, USB 3.0, model SM-G991B, released 2021",
    "Pack of 12, $1,299.99, 120 x 80 x 45 mm, 2.5 kg, size 42, EAN 4006381333931",
    "ISBN 978-0-306-40615-7; resolution 2560x1440; 3840 x 2160 at 60 Hz; 220-240V 50/60Hz",
    "RAM 16GB DDR4-3200, SKU 123456789012, UPC 036000291452, part 0306406152, WH-1000XM4",
    "Released 2024-05-12; fits 2019-2023 models; 12/05/2024 batch; 100 % cotton; 3-pack",
    "4 Way Switch, 2 Hard Drive bays, 12 Pack Small Plates, 3 Speed Fan",
    "5号电池 4节装，AX3000路由器，续航5000毫安，屏幕6.7英寸，2023款，尺码XL，价格199元",
    "材质：纯棉；型号：HUAWEI P60 Pro；容量 256GB；产地：广东省深圳市",
    # model and part numbers in phone-like groups, and switch/shade names in address-like shapes
    "Drill bit set 2 417 630 058, spare blade 57-214-09, runner 731204-115, horn HZ 9152 118 dB",
    "Battery for Vantage 4180 3920 8 cell; cabinet 3815.046.271; 10 One Way Switch; 02 Harbor Street Blush",
]


@pytest.mark.parametrize("text,gone,kinds", PERSONAL)
def test_personal_data_is_replaced(text, gone, kinds):
    out, counts = scrub_counts(text)
    for piece in gone:
        assert piece not in out, out
    assert dict(counts) == kinds, (out, counts)
    for kind in kinds:
        assert f"[{kind}]" in out


@pytest.mark.parametrize("text", PRODUCT_FACTS)
def test_product_facts_survive(text):
    assert scrub(text) == text


def test_card_numbers_need_luhn_and_a_network_prefix():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert scrub("order 4111 1111 1111 1112") == "order 4111 1111 1111 1112"  # fails Luhn: a SKU
    assert scrub("sku 9111111111111111") == "sku 9111111111111111"  # no card network starts with 9
    assert scrub("card 4111-1111-1111-1111") == "card [card]"


def test_chinese_id_needs_its_check_digit():
    assert cn_id_ok("11010519491231002X") and not cn_id_ok("110105194912310021")
    assert "[id]" not in scrub("批号 110105194912310021")


def test_bare_digit_runs_need_a_phone_cue():
    assert scrub("part 4155552671") == "part 4155552671"
    assert scrub("phone 4155552671") == "phone [phone]"


def test_scrub_is_idempotent_and_keeps_empty_text():
    once = scrub(PERSONAL[-1][0] + " " + PERSONAL[1][0])
    assert scrub(once) == once
    assert scrub("") == "" and scrub_counts("")[1] == {}


def test_facts_are_scrubbed_and_clean_facts_keep_their_hash():
    product = {
        "title": "Brewly Mug - call 13912345678",
        "brand": "Brewly",
        "price": 12.99,
        "attributes": {"seller": "ann@example.com", "capacity": "350 ml", "colors": ["green", "tel 030 12345678"]},
    }
    facts = facts_of(product, "USD")
    text = json.dumps(facts, ensure_ascii=False)
    assert "13912345678" not in text and "ann@example.com" not in text and "12345678" not in text
    assert facts["attributes"]["capacity"] == "350 ml" and facts["title"] == "Brewly Mug - call [phone]"
    clean = {"title": "Brewly Mug", "brand": "Brewly", "price": 12.99, "attributes": {"capacity": "350 ml"}}
    assert serialize_facts(clean, "USD") == (
        '{"title": "Brewly Mug", "brand": "Brewly", "price": 12.99, "currency": "USD", '
        '"attributes": {"capacity": "350 ml"}}'
    )


def test_prompts_hold_no_personal_data():
    from ml.prompts import pdp_messages, reason_messages

    facts = {"title": "Mug, questions to bob@example.com", "attributes": {"note": "寄到北京市朝阳区建国路88号"}}
    profile = {"recent_items": ["Lamp from 4111 1111 1111 1111"], "top_brands": ["call (415) 555-2671"]}
    prompt = json.dumps(pdp_messages(facts) + reason_messages(profile, facts), ensure_ascii=False)
    for raw in ("bob@example.com", "建国路88号", "4111 1111", "555-2671"):
        assert raw not in prompt
    assert "[email]" in prompt and "[card]" in prompt and "[phone]" in prompt and "[address]" in prompt


def test_log_filter_scrubs_messages_args_and_tracebacks(caplog):
    install_log_filter()
    log = logging.getLogger("shopgraph.serve")
    with caplog.at_level(logging.INFO, logger="shopgraph"):
        log.info("user wrote %s from %s", "jo@example.com", "+44 20 7946 0958")
        try:
            raise ValueError("bad card 4111 1111 1111 1111")
        except ValueError:
            log.exception("failed for 13912345678")
    text = caplog.text
    assert "jo@example.com" not in text and "7946 0958" not in text and "4111 1111" not in text
    assert "13912345678" not in text and "[email]" in text and "[card]" in text


def test_log_filter_reaches_child_loggers_created_before_install():
    child = logging.getLogger("shopgraph.somewhere.deep")
    install_log_filter()
    assert any(type(f).__name__ == "ScrubFilter" for f in child.filters)
