"""The reason gate: what a shopper may read, from generated text judged against the ranker's evidence."""

from __future__ import annotations

import pytest

from ml.reasons import (
    accept_reason,
    degenerate,
    degenerate_description,
    names_evidence,
    reason_key,
    reason_profile,
    template_reason,
)

SLEEVE = {
    "title": "Keystone M13 Laptop Sleeve, 13 in, Silver",
    "brand": "Keystone",
    "category": "Electronics > Laptop Accessories",
    "price": 35.99,
    "currency": "USD",
    "attributes": {"color": "silver", "size": "13 in"},
}
VIEWED = {
    "type": "because_you_interacted",
    "product_id": "P7",
    "title": "Keystone Wireless Mouse",
    "detail": "often bought next",
}
BRAND = {"type": "same_brand", "brand": "Keystone", "product_id": "P7", "title": "Keystone Wireless Mouse"}
CATEGORY = {"type": "favourite_category", "category": "Electronics > Laptop Accessories", "share": 0.5}
POPULAR = {"type": "popular", "category": "Electronics > Laptop Accessories"}
BRANDS = ["Keystone", "Lumio", "Hearthline"]


def test_profile_holds_only_the_primary_evidence():
    assert reason_profile([VIEWED, BRAND]) == {
        "recent_items": ["Keystone Wireless Mouse"],
        "top_categories": [],
        "top_brands": [],
    }
    assert reason_profile([BRAND]) == {"recent_items": [], "top_categories": [], "top_brands": ["Keystone"]}
    assert reason_profile([CATEGORY])["top_categories"] == ["Electronics > Laptop Accessories"]
    # "popular" says nothing about the shopper: the template states it, the generator is not asked
    assert reason_profile([POPULAR]) is None
    assert reason_profile([]) is None
    assert reason_profile([{"type": "because_you_interacted"}]) is None  # no title: nothing to cite


def test_key_is_the_generator_input():
    assert reason_key([VIEWED, BRAND]) == reason_key([VIEWED]) == reason_key([VIEWED, CATEGORY])
    assert reason_key([VIEWED]) != reason_key([{**VIEWED, "detail": "similar product"}])
    assert reason_key([BRAND]) == "same_brand:Keystone"
    assert reason_key([]) == "none"


@pytest.mark.parametrize(
    "text",
    [
        "Since you viewed the Keystone Wireless Mouse, this silver laptop sleeve is a good next pick.",
        '"Since you viewed the Keystone Wireless Mouse, you may like this sleeve for your laptop too." It also ...',
    ],
)
def test_accepts_a_faithful_sentence_to_the_shopper(text):
    kept, why = accept_reason(text, SLEEVE, reason_profile([VIEWED]), known_brands=BRANDS)
    assert why is None
    assert kept.startswith("Since you viewed") and kept.endswith(".")
    assert "It also" not in kept  # only the first sentence is ever shown


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("The item", "non_answer"),
        ("The item.", "non_answer"),
        ("Keystone M13 Laptop Sleeve, 13 in, Silver", "title_repeated"),
        ("You may like it.", "too_short"),
        ("Lenseskine made this sleeve for the Keystone Wireless Mouse you viewed.", "unknown_name"),
        ("Since you viewed the Keystone Wireless Mouse, you may like this sleeve and the company has a", "cut_off"),
        ("The shopper is interested in the Keystone Wireless Mouse, so this sleeve fits.", "third_person"),
        ("They're also looking for a sleeve like the Keystone Wireless Mouse they viewed.", "third_person"),
        ("This silver sleeve by Keystone protects a laptop of 13 in.", "not_addressed"),
        ("You will love this silver sleeve for your 13 in laptop every day.", "evidence_not_named"),
        ("Since you viewed the Keystone Wireless Mouse, this sleeve is free with Amazon Prime.", "unknown_name"),
        ("Since you viewed the Keystone Wireless Mouse, this gold sleeve suits you.", "unsupported"),
        ("Since you viewed the Keystone Wireless Mouse, this Lumio sleeve suits you.", "unsupported"),
        # words from outside the facts and the evidence (a hand review's finds, on our own facts)
        ("Since you viewed the Keystone Wireless Mouse, this sleeve comes with a zip pocket.", "novel_word"),
        ("Since you viewed the Keystone Wireless Mouse, try the keystonee sleeve.", "novel_word"),
        (
            "Since you viewed the Keystone Wireless Mouse, you may enjoy the Electronics > Laptop Accessories.",
            "field_in_prose",
        ),
        (
            "Since you viewed the Keystone Wireless Mouse, you write product detail page content for an online shop.",
            "leaked_prompt",
        ),
        ("you like it you like it you like it you like it.", "loop"),
    ],
)
def test_rejects_what_a_shopper_must_not_read(text, why):
    kept, got = accept_reason(text, SLEEVE, reason_profile([VIEWED]), known_brands=BRANDS)
    assert kept is None and got == why


def test_brand_and_category_evidence_are_named():
    ok, why = accept_reason(
        "Because you often choose Keystone, this laptop sleeve is a natural next pick.",
        SLEEVE,
        reason_profile([BRAND]),
        known_brands=BRANDS,
    )
    assert why is None, why
    ok, why = accept_reason(
        "You have been looking at laptop accessories, and you may like this sleeve too.",
        SLEEVE,
        reason_profile([CATEGORY]),
        known_brands=BRANDS,
    )
    assert why is None, why


def test_templates_are_faithful_grounded_and_pass_the_gate():
    for ev in ([VIEWED], [{**VIEWED, "detail": "similar product"}], [BRAND], [CATEGORY]):
        text = template_reason(ev, SLEEVE["title"])
        assert names_evidence(text, ev), text
        kept, why = accept_reason(text, SLEEVE, reason_profile(ev), known_brands=BRANDS)
        assert why is None, (text, why)
    assert names_evidence(template_reason([POPULAR], SLEEVE["title"]), [POPULAR])
    assert template_reason([], SLEEVE["title"]) == f"Recommended for you: {SLEEVE['title']}."


def test_faithfulness_is_about_the_primary_evidence():
    assert names_evidence("It goes well with the Keystone Wireless Mouse you viewed.", [VIEWED, CATEGORY])
    assert not names_evidence("A pick from laptop accessories, one of your favourite categories.", [VIEWED, CATEGORY])
    assert not names_evidence("anything", [])


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("Keystone M13 Laptop Sleeve, 13 in, Silver.", "title_repeated"),
        ("The Keystone M13 Laptop Sleeve, 13 in, Silver is great.", "title_repeated"),
        ("A sleeve. A sleeve. A sleeve. A sleeve for a laptop.", "loop"),
        ("A silver sleeve that fits laptops of 13 in and closes with a", "cut_off"),
        ("这款 包 很 好", "too_short"),
    ],
)
def test_degenerate_descriptions(text, why):
    assert degenerate_description(text, SLEEVE) == why


def test_good_descriptions_pass_in_both_languages():
    assert degenerate_description("A silver sleeve by Keystone that fits laptops of 13 in.", SLEEVE) is None
    assert degenerate("这款牛仔夹克采用牛仔布面料，蓝色的设计简洁大方。") is None


def test_repeated_sentences_are_dropped():
    from ml.reasons import drop_repeats

    assert drop_repeats("A silver sleeve. It fits 13 in laptops. A silver sleeve.") == (
        "A silver sleeve. It fits 13 in laptops."
    )


ZH_JACKET = {"title": "牛仔夹克", "brand": "李维斯", "category": "服装 > 夹克", "price": 299.0, "currency": "CNY",
             "attributes": {"材质": "牛仔布"}}  # fmt: skip


@pytest.mark.parametrize(
    "evidence",
    [
        [VIEWED],
        [{**VIEWED, "detail": "similar product"}],
        [{"type": "similar_new_item", "product_id": "P8", "title": "Lumio Desk Lamp"}],
        [BRAND],
        [CATEGORY],
    ],
)
def test_every_variant_passes_the_gate_and_names_its_evidence(evidence):
    from ml.reasons import reason_variants

    for text in reason_variants(evidence, SLEEVE["title"]):
        assert accept_reason(text, SLEEVE, reason_profile(evidence), known_brands=BRANDS) == (text, None)
        assert names_evidence(text, evidence)


def test_chinese_products_get_chinese_reasons_that_pass_the_gate():
    from ml.reasons import reason_variants

    for ev in (
        [{"type": "because_you_interacted", "product_id": "p1", "title": "蓝色牛仔裤", "detail": "often bought next"}],
        [{"type": "same_brand", "brand": "李维斯"}],
        [{"type": "favourite_category", "category": "服装 > 夹克"}],
    ):
        for text in reason_variants(ev, ZH_JACKET["title"]):
            assert "你" in text
            assert accept_reason(text, ZH_JACKET, reason_profile(ev), known_brands=["李维斯"]) == (text, None), text


def test_placeholders_are_degenerate():
    text = "This product is available at [address] and is available for purchase at [website]."
    assert degenerate_description(text, SLEEVE) == "placeholder"
    assert degenerate("Buy it from {brand name} today, you will love it.") == "placeholder"


def test_the_prefix_speaks_to_you_and_names_the_evidence():
    from ml.reasons import reason_prefix

    assert reason_prefix(reason_profile([VIEWED]), SLEEVE["title"]) == "Since you viewed the Keystone Wireless Mouse,"
    assert reason_prefix(reason_profile([BRAND]), SLEEVE["title"]) == "Since you often choose Keystone,"
    assert reason_prefix(reason_profile([CATEGORY]), SLEEVE["title"]) == "Since you like Laptop Accessories,"
    assert (
        reason_prefix(reason_profile([{"type": "same_brand", "brand": "李维斯"}]), "牛仔夹克") == "因为你常选李维斯，"
    )
    assert reason_prefix(None, "x") == ""
    # the corpus trains on sentences that open with the prefix serving prefills
    from ml.reasons import reason_variants

    for ev in ([VIEWED], [BRAND], [CATEGORY]):
        prefix = reason_prefix(reason_profile(ev), SLEEVE["title"])
        assert all(v.startswith(prefix) for v in reason_variants(ev, SLEEVE["title"])[1:])


def test_continuations_join_as_written():
    from ml.reasons import join_continuation

    assert join_continuation("Since you like Mugs,", " this one fits.") == "Since you like Mugs, this one fits."
    assert join_continuation("Since you like Mugs,", "this one fits.") == "Since you like Mugs, this one fits."
    assert join_continuation("因为你常选李维斯，", " 这款也适合你。") == "因为你常选李维斯，这款也适合你。"
    assert join_continuation("", "text") == "text"


def test_highlights_without_a_value_or_repeated_are_dropped():
    from ml.reasons import publishable_highlights

    got = publishable_highlights(["Colour:", "", "Color: silver", "color: silver", "Size: 13 in", "[feature]"])
    assert got == ["Color: silver", "Size: 13 in"]


@pytest.mark.parametrize(
    ("text", "claims"),
    [
        # found in a hand review of the tuned generator's output, all passed the grounding check
        ("This shirt fits you perfectly.", ["perfectly"]),
        ("Premium running socks, 2, Red.", ["Premium"]),
        ("You may enjoy a beautiful belt.", ["beautiful"]),
        ("A lightweight, durable sleeve.", ["lightweight", "durable"]),
        ("This lamp has blue colour and male gender.", ["male"]),
        ("It was confirmed by our customer service team.", ["customer service", "confirmed"]),
        ("It is due to your recent purchase of the sleeve.", ["recent purchase"]),
        ("A silver sleeve for 13 in laptops.", []),
    ],
)
def test_unbacked_quality_history_and_audience_claims(text, claims):
    from ml.reasons import unbacked_claims

    assert sorted(unbacked_claims(text, SLEEVE)) == sorted(claims)


def test_claims_the_facts_state_are_backed():
    from ml.reasons import unbacked_claims

    facts = {"title": "Women Premium Waterproof Jacket", "attributes": {"gender": "Women", "warranty": "2 years"}}
    assert unbacked_claims("A premium, waterproof jacket for women with a 2 year warranty.", facts) == []
    assert unbacked_claims("A jacket for men.", facts) == ["men"]
    kept, why = accept_reason(
        "Since you viewed the Keystone Wireless Mouse, your recent items include this sleeve.",
        SLEEVE,
        reason_profile([VIEWED]),
    )
    assert (kept, why) == (None, "unbacked_claim")


HUB = {
    "title": "Corebyte K21 USB-C hub, 7, Navy Blue",
    "brand": "Corebyte",
    "category": "Computers > USB-C Hubs",
    "price": 49.0,
    "currency": "USD",
    "attributes": {"color": "navy blue", "display output": "two HDMI", "ports": "7"},
}


@pytest.mark.parametrize(
    ("text", "faults"),
    [
        # the kinds of fault a hand review of the tuned generator's pages found, on our own facts
        ("This is a highlighter from Corebyte.", ["novel:highlighter"]),  # a wrong product type
        ("A diamond hub with 7 ports.", ["novel:diamond"]),  # an invented material
        ("A hub from Corebite.", ["novel:Corebite"]),  # a misspelt brand
        ("It has three HDMI outputs.", ["novel:three"]),  # a wrong count, in words
        ("It has 9 ports.", ["novel:9"]),  # and in digits
        ("She has a navy blue hub.", ["novel:She"]),  # a person
        ("This hub has a color: navy blue ports.", ["field_in_prose"]),  # a fact list read as prose
        ("Hub ports are hub ports.", ["repeated:hub", "repeated:port"]),  # a small model stalling
        # what it may write: the facts' words (any inflection) and plain words, numbers the facts hold
        ("This USB-C hub from Corebyte has 7 ports and two HDMI outputs, in navy blue.", []),
        ("It's made by Corebyte, and you can have it for 49 USD.", []),
        ("这款集线器有7个接口。", []),  # CJK is judged by the grounding check and the claim lists only
    ],
)
def test_generated_copy_may_use_only_the_facts_words(text, faults):
    from ml.reasons import generated_faults

    assert sorted(generated_faults(text, HUB)) == sorted(faults)


def test_generated_pages_keep_only_faultless_sentences_and_real_highlights():
    from ml.reasons import publishable_description, publishable_highlights

    text = "This USB-C hub from Corebyte has 7 ports. It is a diamond hub for three screens."
    assert publishable_description(text, HUB) == ("This USB-C hub from Corebyte has 7 ports.", None)
    assert publishable_description("A diamond hub for your desk.", HUB)[0] == ""
    got = publishable_highlights(
        ["three HDMI", "blue", "display_output: two HDMI", "Ports: 7,", "Color: navy blue"], HUB
    )
    assert got == ["Ports: 7", "Color: navy blue"]
    # human copy (the corpus) is held to the claim lists only: a person may use words the facts lack
    from ml.reasons import generated_faults, unbacked_claims

    assert unbacked_claims("A handy hub for your desk.", HUB) == []
    assert generated_faults("A handy hub for your desk.", HUB) == ["novel:handy", "novel:desk"]
