"""Recommendation reasons: what the generator is told, how its answer is judged, and the template.

    from ml.reasons import reason_profile, reason_key, accept_reason, template_reason

A reason explains one recommended item from the **evidence the ranker used** (`ml.ranker_features`:
`because_you_interacted`, `same_brand`, `favourite_category`, `popular`, and the retriever's
`similar_item` / `similar_new_item`). The generator sees only the strongest evidence entry, so:

- the prompt's profile (`reason_profile`) holds exactly the evidence, in the corpus's profile
  shape (`recent_items`, `top_brands`, `top_categories`), and nothing else of the shopper (no
  history the reason could cite that the ranker did not use, no user id);
- a generated reason is a pure function of (product facts, evidence), so it is cached and
  precomputed per `reason_key(evidence)` and may be shown to any shopper with that evidence.

`accept_reason` is the gate every generated reason passes before a shopper reads it (serving and
the batch job run it): one complete sentence, addressed to the shopper ("you"), naming the
evidence, no unsupported claim (`ml.grounding` with the evidence as profile), not degenerate
(empty, "The item", the title alone, a loop, cut off mid-sentence). A rejected reason is never
shown: the caller falls back to `template_reason`, which is built from the evidence alone and
is grounded and faithful by construction. `degenerate_description` is the same gate for a
product page's description.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")

# Evidence kinds the generator may be asked to explain; "popular" says nothing about the shopper
# (the template states it plainly), so it is not sent to the generator.
ITEM_EVIDENCE = ("because_you_interacted", "similar_item", "similar_new_item")
GENERATED_EVIDENCE = (*ITEM_EVIDENCE, "same_brand", "favourite_category")


def leaf(category: str | None) -> str:
    return (category or "").split(">")[-1].strip()


def primary_evidence(evidence: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The strongest usable evidence entry (the ranker lists strongest first), or None."""
    for e in evidence or []:
        kind = e.get("type")
        if kind in ITEM_EVIDENCE and e.get("title"):
            return dict(e)
        if kind == "same_brand" and e.get("brand"):
            return dict(e)
        if kind in ("favourite_category", "popular") and (e.get("category") or kind == "popular"):
            return dict(e)
    return None


def reason_key(evidence: Iterable[Mapping[str, Any]]) -> str:
    """The cache key segment of a reason: the primary evidence, exactly as the generator sees it."""
    e = primary_evidence(evidence)
    if e is None:
        return "none"
    kind = e["type"]
    if kind in ITEM_EVIDENCE:
        return f"{kind}:{e.get('product_id') or e['title']}:{e.get('detail') or ''}"
    if kind == "same_brand":
        return f"same_brand:{e['brand']}"
    return f"{kind}:{e.get('category') or ''}"


def reason_profile(evidence: Iterable[Mapping[str, Any]]) -> dict[str, list[str]] | None:
    """The generator's profile input, built only from the primary evidence; None = do not generate
    (no evidence, or evidence the template states best: "popular")."""
    e = primary_evidence(evidence)
    if e is None or e["type"] not in GENERATED_EVIDENCE:
        return None
    profile: dict[str, list[str]] = {"recent_items": [], "top_categories": [], "top_brands": []}
    if e["type"] in ITEM_EVIDENCE:
        profile["recent_items"] = [str(e["title"])]
    elif e["type"] == "same_brand":
        profile["top_brands"] = [str(e["brand"])]
    else:
        profile["top_categories"] = [str(e["category"])]
    return profile


def evidence_names(profile: Mapping[str, Any]) -> list[str]:
    """What a faithful reason names: the evidence item's title, the brand, or the category (leaf)."""
    names: list[str] = []
    for value in profile.get("recent_items") or []:
        names.append(str(value))
    for value in profile.get("top_brands") or []:
        names.append(str(value))
    for value in profile.get("top_categories") or []:
        names += [str(value), leaf(str(value))]
    return [n for n in names if n.strip()]


def _zh(text: str | None) -> bool:
    """Chinese copy for a Chinese title (`core.facts.language_of`: by the share of Chinese words,
    so an English title with a Chinese brand keeps English reasons)."""
    from core.facts import language_of

    return language_of(text) == "zh"


def reason_prefix(profile: Mapping[str, Any] | None, title: str) -> str:
    """The opening every generated reason is continued from: it speaks to "you" and names the
    evidence (`reason_profile`), so the model only writes the rest of the sentence. Chinese when
    the product's title is Chinese; '' without evidence. It ends at the comma, not a space: a
    BPE model writes the space with its next word (`join_continuation` puts them together)."""
    profile = profile or {}
    zh = _zh(title)
    if profile.get("recent_items"):
        item = profile["recent_items"][0]
        return f"因为你看过{item}，" if zh else f"Since you viewed the {item},"
    if profile.get("top_brands"):
        brand = profile["top_brands"][0]
        return f"因为你常选{brand}，" if zh else f"Since you often choose {brand},"
    if profile.get("top_categories"):
        where = leaf(profile["top_categories"][0])
        return f"因为你常逛{where}，" if zh else f"Since you like {where},"
    return ""


def join_continuation(prefix: str, continuation: str) -> str:
    """The reason a prefilled `prefix` and the engine's `continuation` make, spaced as written."""
    rest = continuation.lstrip()
    if not prefix or not rest or _CJK.search(prefix[-1:]) or prefix[-1:] in "，、：":
        return prefix + rest
    return f"{prefix} {rest}"


def reason_variants(evidence: Iterable[Mapping[str, Any]], title: str) -> list[str]:
    """Grounded, faithful reasons for one evidence entry: [the serving template, then sentences
    that start with `reason_prefix`, which the corpus trains on (the engine continues that prefix
    at serving time, so training and serving agree)]. Chinese when the title is Chinese."""
    e = primary_evidence(evidence)
    zh = _zh(title)
    if e is None:
        return [f"为你推荐：{title}。" if zh else f"Recommended for you: {title}."]
    kind = e["type"]
    where = leaf(e.get("category"))
    if kind in ITEM_EVIDENCE:
        item = e["title"]
        if zh:
            first = f"你看过{item}，这款{title}也许也适合你。"
        elif kind == "because_you_interacted" and e.get("detail") == "often bought next":
            first = f"It goes well with the {item} you viewed."
        else:
            first = f"It is {'new and ' if kind == 'similar_new_item' else ''}similar to the {item} you viewed."
    elif kind == "same_brand":
        brand = e["brand"]
        first = (
            f"这款来自{brand}，你之前选过这个品牌。" if zh else f"It is from {brand}, a brand you have chosen before."
        )
    elif kind == "favourite_category":
        first = (
            f"这是你常逛的{where}里的一款。" if zh else f"It is a pick from {where}, one of your favourite categories."
        )
    else:  # popular: about the product, not the shopper; never generated
        if zh:
            return [f"这款{'在' + where + '里' if where else ''}正受欢迎。"]
        return [f"It is popular with shoppers right now{' in ' + where if where else ''}."]
    prefix = reason_prefix(reason_profile([e]), title)
    if zh:
        return [first, f"{prefix}这款{title}也许也适合你。", f"{prefix}推荐你看看这款{title}。"]
    return [first, f"{prefix} the {title} is a natural next pick.", f"{prefix} you may like the {title} too."]


def template_reason(evidence: Iterable[Mapping[str, Any]], title: str) -> str:
    """A one-sentence reason built only from the evidence: grounded and faithful by construction."""
    return reason_variants(evidence, title)[0]


# ----------------------------------------------------------------------------- the gate

_END = re.compile(r"[.!?。！？]$")
_YOU = re.compile(r"\b(you|your|you're|you've|yours)\b|[你您]", re.I)
# Third person about the shopper, or the prompt's own vocabulary leaking into the answer.
_THIRD = re.compile(
    r"\b(the shopper|shoppers'?s? (profile|data)|the (user|customer)|this (user|customer)|they|them|their|"
    r"profile|facts? (block|about)|recent_items|top_brands|top_categories)\b|用户|顾客",
    re.I,
)
_WORD = re.compile(r"[\u3400-\u9fff]|[^\W_]+", re.UNICODE)
# "[address]", "{website}", "<brand name>", "XX": a template the model did not fill
_PLACEHOLDER = re.compile(r"[\[{<]\s*[A-Za-z][A-Za-z _-]{1,30}\s*[\]}>]|\b(?:XX+|TBD|lorem ipsum)\b", re.I)
_NON_ANSWER = re.compile(r"^\W*(the|this|that|an?)?\s*(item|product)\W*$", re.I)


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip().lower()


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def addressed(text: str) -> bool:
    """Does the text speak to the shopper ("you", 你/您)?"""
    return bool(_YOU.search(text))


def looping(text: str, n: int = 3, limit: int = 3) -> bool:
    """A phrase of `n` words repeated `limit` times or more (a small model's loop)."""
    words = _words(text)
    counts: dict[tuple[str, ...], int] = {}
    for i in range(len(words) - n + 1):
        gram = tuple(words[i : i + n])
        counts[gram] = counts.get(gram, 0) + 1
        if counts[gram] >= limit:
            return True
    return False


def first_sentence(text: str) -> tuple[str, bool]:
    """(the first sentence, whether more text followed it)."""
    from ml.grounding import sentences

    text = re.sub(r'([.!?])["\u201d\u2019]+', r"\1", text.strip().strip('"\u201c\u201d').strip())
    parts = [s.strip() for s in sentences(text) if s.strip()]
    return (parts[0], len(parts) > 1) if parts else ("", False)


def degenerate(text: str, title: str | None = None, *, min_words: int = 5, require_end: bool = True) -> str | None:
    """Why `text` is not publishable copy, or None: empty, a non-answer ("The item"), the title
    alone, a loop, too short, or cut off mid-sentence."""
    stripped = text.strip()
    if not stripped:
        return "empty"
    if _NON_ANSWER.match(stripped):
        return "non_answer"
    if _PLACEHOLDER.search(stripped):
        return "placeholder"
    if title and _norm(stripped).rstrip(".!。！") == _norm(title).rstrip(".!。！"):
        return "title_repeated"
    if looping(stripped):
        return "loop"
    words = _words(stripped)
    if len(words) < (min_words * 2 if _CJK.search(stripped) else min_words):
        return "too_short"
    if require_end and not _END.search(stripped):
        return "cut_off"
    return None


def drop_repeats(text: str) -> str:
    """`text` without sentences that repeat an earlier one (a small model's loop), as streamed."""
    from ml.grounding import sentences

    seen: set[str] = set()
    kept = []
    for sentence in sentences(text):
        norm = " ".join(sentence.lower().split())
        if norm and norm in seen:
            continue
        seen.add(norm)
        kept.append(sentence)
    return "".join(kept).strip()


def complete_sentences(text: str) -> str:
    """`text` up to its last complete sentence: a fragment the model left unfinished is dropped."""
    from ml.grounding import sentences

    parts = sentences(text)
    while parts and not parts[-1].rstrip().endswith(tuple(".!?。！？\n")):
        parts.pop()
    return "".join(parts).strip()


# Claims the grounding checker has no facts for but a shopper reads as facts, found in a hand review
# of generated copy: quality and fit ("premium", "durable", "fits you perfectly"), the shopper's
# history beyond the evidence ("your recent purchase of", "confirmed by our customer service"),
# reviews and ratings, and who the product is for. Each is allowed only where the facts say it.
_QUALITY = re.compile(
    r"\b(premium|luxur\w*|high[- ]?(?:end|quality)|top[- ]quality|quality|durable|durability|sturdy|robust|"
    r"lightweight|light[- ]weight|comfortable|comfort|comfy|soft|breathable|waterproof|water[- ]resistant|"
    r"perfect(?:ly)?|ideal(?:ly)?|best|finest|excellent|exceptional|superior|amazing|stylish|elegant|"
    r"fashionable|trendy|beautiful|lovely|gorgeous|pretty|cute|reliable|long[- ]lasting|affordable|cheap|budget|"
    r"genuine|authentic|exclusive|"
    r"eco[- ]friendly|sustainable|organic|handmade|hand[- ]?crafted|guarantee\w*|warrant\w*)\b",
    re.I,
)
_HISTORY = re.compile(
    r"\b(purchas\w*|bought|order(?:ed|s)?|recent (?:items?|purchases?|orders?)|customer service|confirmed|"
    r"reviews?|reviewers?|rated|ratings?|best[- ]?sell\w*|popular|trending|loved by|customers?)\b",
    re.I,
)
_GENDER = {"men": "men", "man": "men", "male": "men", "mens": "men", "women": "women", "woman": "women",
           "female": "women", "womens": "women", "ladies": "women", "unisex": "unisex", "boys": "boys",
           "girls": "girls", "kids": "kids", "children": "kids", "baby": "kids"}  # fmt: skip
_GENDER_RE = re.compile(r"\b(" + "|".join(sorted(_GENDER, key=len, reverse=True)) + r")\b", re.I)


def unbacked_claims(text: str, facts: Mapping[str, Any], *, history_ok: str = "") -> list[str]:
    """Quality, history and audience claims in `text` that the facts do not state (see above).
    `history_ok`: text whose history words are the evidence itself (a reason's prefix)."""
    import json

    known = _norm(json.dumps(dict(facts), ensure_ascii=False))
    out = [m.group(0) for m in _QUALITY.finditer(text) if _norm(m.group(0)) not in known]
    rest = text.replace(history_ok, " ", 1) if history_ok else text
    out += [m.group(0) for m in _HISTORY.finditer(rest) if _norm(m.group(0)) not in known]
    audiences = {_GENDER[m.group(0).lower()] for m in _GENDER_RE.finditer(known)}
    out += [m.group(0) for m in _GENDER_RE.finditer(text) if audiences and _GENDER[m.group(0).lower()] not in audiences]
    if not audiences:  # the facts say nothing of who it is for: neither may the copy
        out += [m.group(0) for m in _GENDER_RE.finditer(text)]
    return out


# Generated copy may use the facts' own words and these, nothing else (English; a CJK sentence is
# judged by the checks above only). Closed-class words, and verbs/nouns every product page uses
# that assert nothing about the product. A hand review of the generator's pages found its faults
# were almost all words from outside the facts: a wrong product type ("a highlighter" for jeans),
# an invented material ("diamond"), a misspelt brand ("Optikos", "Stripp"), a wrong count ("three
# HDMI" for two), a person ("She has brown mules"). A word outside this list and the facts costs
# only the sentence (the template takes over), so the list errs on the strict side.
_PLAIN = frozenset(
    """a an the this that these those it its it's is are be been being has have had with without and or
    but nor of in on at to for from by as into onto over under up out per each every all both either any
    no not also which who whose where when while than then so just only very more most much many
    other another same such here there what how you your yours you're you'll you've can will may lets
    let keep keeps make makes made come comes coming available offer offers offered feature features
    featuring featured include includes including included design designed built add adds added
    give gives get gets use used uses using wear wears worn hold holds go goes pair pairs set sets pack packs piece
    pieces item items product products one ones look looks option options choice day days
    price priced costs cost brand""".split()
)
# A reason also recommends: these verbs and pronouns assert nothing about the product either.
_REASON_PLAIN = _PLAIN | frozenset(
    """i we me us recommend recommends recommended suggest suggests like likes liked love loves enjoy enjoys
    prefer prefers consider considering try choose chose chosen often usually viewed view seen saw browse
    browsed might could would should want think also too similar fan favourite favorite great good since
    because likely buy buying check checking out yourself interested goes well new before chosen pick
    category categories natural next""".split()  # the last line: the templates' own words
)
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve".split())}  # fmt: skip
_LATIN = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*|\d+(?:[.,]\d+)?", re.UNICODE)
# "a color: white memory", "the Toys & Games > Batteries": a fact list or a category path read as prose
_FIELD_IN_PROSE = re.compile(r"[^\W\d_]:\s*\w|\w\s+>\s+\w")


def _stem(word: str) -> str:
    word = word.lower().replace("’", "'").removesuffix("'s")
    for suffix, repl in (("ies", "y"), ("es", ""), ("s", ""), ("ed", ""), ("ing", ""), ("ly", "")):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)] + repl
    return word


def _number(token: str) -> str:
    """ "425", "425.0" and "425,00" are one number."""
    token = token.replace(",", ".")
    return token.rstrip("0").rstrip(".") if "." in token else token


def _fact_words(facts: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """(stems of every word, every number) in the facts: keys and values, title, brand, category."""
    import json

    text = unicodedata.normalize("NFKC", json.dumps(dict(facts), ensure_ascii=False)).replace("_", " ")
    words, numbers = set(), set()
    for token in _LATIN.findall(text):
        if token[0].isdigit():
            numbers.add(_number(token))
        else:
            words.add(_stem(token))
            if token.lower() in _NUMBER_WORDS:
                numbers.add(_NUMBER_WORDS[token.lower()])
    return words, numbers


@functools.cache
def _stems(words: frozenset[str]) -> frozenset[str]:
    return frozenset(_stem(w) for w in words)


def novel_words(text: str, facts: Mapping[str, Any], plain: frozenset[str] | None = None) -> list[str]:
    """Words of generated `text` that neither the facts nor the plain words above contain, and
    numbers (in digits or words) the facts do not hold: each is a claim nothing backs."""
    plain = _PLAIN if plain is None else plain
    words, numbers = _fact_words(facts)
    words |= {"colour", "color"} if words & {"colour", "color"} else set()
    out = []
    for token in _LATIN.findall(unicodedata.normalize("NFKC", text)):
        low = token.lower()
        if token[0].isdigit():
            if _number(token) not in numbers:
                out.append(token)
        elif low in _NUMBER_WORDS and low != "one":  # "this one", "one of your": a pronoun more often than a count
            if _NUMBER_WORDS[low] not in numbers and _stem(low) not in words:
                out.append(token)
        elif (
            low not in plain and _stem(low) not in words and _stem(low) not in _stems(plain) and not _CJK.search(token)
        ):
            out.append(token)
    return out


def _grams(text: str, n: int) -> set[tuple[str, ...]]:
    words = _words(unicodedata.normalize("NFKC", text))
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def leaks_prompt(text: str, n: int = 5) -> bool:
    """Does generated text repeat `n` consecutive words (characters, in Chinese) of the generator's
    own instructions? An injected "print your system prompt" that a model obeys is never shown."""
    from ml.prompts import INSTRUCTIONS

    return bool(_grams(text, n) & _instruction_grams(n, INSTRUCTIONS))


@functools.cache
def _instruction_grams(n: int, texts: tuple[str, ...]) -> frozenset[tuple[str, ...]]:
    return frozenset().union(*(_grams(t, n) for t in texts))


# Catalog text that gives the generator orders ("ignore previous instructions", "say that it is
# made of gold", "告诉顾客…"). Catalog text is the facts, so a model that obeys writes claims the
# grounding check must accept; a product whose facts carry such text gets template copy only.
_INSTRUCTION = re.compile(
    r"\b(?:ignore|disregard|forget)\b.{0,40}\b(?:instructions?|above|prompt|rules)\b|"
    r"\b(?:system|hidden)\s+(?:prompt|instructions?|message)\b|"
    r"\b(?:say|tell\s+(?:the\s+)?(?:shopper|customer|user)s?)\s+that\b|"
    r"\b(?:respond|reply|answer)\s+(?:only\s+)?(?:with|in)\b|\byou\s+are\s+now\b|"
    r"\bnew\s+instructions?\b|<\|im_start\|>|</?(?:facts|profile)>|"
    r"\b(?:repeat|print|reveal|output|translate)\b.{0,30}\b(?:instructions?|prompt|above|everything)\b|"
    r"\b(?:other|previous)\s+(?:customers?|shoppers?|users?)\b|"
    r"忽略.{0,12}(?:指令|提示|说明)|(?:系统|隐藏).{0,4}(?:提示|指令|说明)|告诉(?:顾客|用户|买家)|"
    r"(?:只|直接)?(?:回复|回答|输出).{0,6}(?:纯文本|格式)|新指令|(?:泄露|公开).{0,8}(?:提示|说明|指令)|"
    r"(?:其他|上一位)(?:用户|顾客|买家)|(?:重复|翻译).{0,10}(?:上面|指令|提示)",
    re.I,
)


def instruction_in_facts(facts: Mapping[str, Any]) -> str | None:
    """The first piece of catalog text in `facts` that reads as an order to the generator, or None."""
    import json

    m = _INSTRUCTION.search(unicodedata.normalize("NFKC", json.dumps(dict(facts), ensure_ascii=False)))
    return m.group(0) if m else None


def generated_faults(text: str, facts: Mapping[str, Any], *, prose: bool = True) -> list[str]:
    """Why a piece of *generated* page copy may not be shown: unbacked claims, novel words, and
    (prose only, one sentence at a time) a "key: value" list read as a sentence or a content word
    repeated. Human copy is judged by `unbacked_claims`
    alone: a person may use words the facts lack; a 135M-parameter model, in a hand review, may not."""
    faults = unbacked_claims(text, facts) + [f"novel:{w}" for w in novel_words(text, facts)]
    if leaks_prompt(text):
        faults.append("leaked_prompt")
    if prose and _FIELD_IN_PROSE.search(text):
        faults.append("field_in_prose")
    if prose:  # "Socks running socks are sand.": a content word twice in one sentence is a small model stalling
        brand = {_stem(w) for w in _LATIN.findall(str(facts.get("brand") or "").lower())}  # "the Brewly mug by Brewly"
        stems = [
            _stem(w) for w in _LATIN.findall(text.lower()) if not w[0].isdigit() and w not in _PLAIN and len(w) > 2
        ]
        stems = [w for w in stems if w not in brand]
        faults += [f"repeated:{w}" for w in sorted({w for w in stems if stems.count(w) > 1})]
    return faults


def publishable_highlights(highlights: Iterable[str], facts: Mapping[str, Any] | None = None) -> list[str]:
    """Generated highlights a shopper may read: no empty value ("Colour:"), no lone word ("blue"),
    no raw field name ("speed_class:V60"), no repeat, no loop, and (given the facts) nothing
    `generated_faults` finds. A trailing comma or semicolon is trimmed."""
    out: list[str] = []
    seen: set[str] = set()
    for h in highlights:
        text = str(h).strip().rstrip(",;，；").strip()
        key, sep, value = text.partition(":")
        if not text or (sep and not _words(value)) or looping(text) or _PLACEHOLDER.search(text):
            continue
        if len(_words(text)) < 2 or (sep and "_" in key):
            continue
        if facts is not None and generated_faults(text, facts, prose=False):
            continue
        if _norm(text) not in seen:
            seen.add(_norm(text))
            out.append(text)
    return out


def publishable_description(text: str, facts: Mapping[str, Any]) -> tuple[str, str | None]:
    """A generated description as a shopper may read it (already grounded sentence by sentence):
    no sentence `generated_faults` finds fault with, no repeated sentence, no unfinished tail;
    ("", why) when what is left is not publishable.
    Serving (live and streamed) and the batch job apply exactly this."""
    from ml.grounding import sentences

    backed = "".join(x for x in sentences(text) if not generated_faults(x, facts))
    kept = complete_sentences(drop_repeats(backed))
    if not kept:
        return "", "ungrounded" if not text.strip() else "cut_off"
    why = degenerate_description(kept, facts)
    return ("", why) if why else (kept, None)


def degenerate_description(text: str, facts: Mapping[str, Any], *, require_end: bool = True) -> str | None:
    """`degenerate` for a product page's description: also rejects one that only repeats its title.
    `require_end=False` for human copy, which no token limit cut off."""
    why = degenerate(text, str(facts.get("title") or ""), min_words=3, require_end=require_end)
    title = _norm(str(facts.get("title") or ""))
    if why is None and title and title in _norm(text):
        rest = _norm(text).replace(title, " ")
        if len(_words(rest)) < 5:  # the title with a few words around it
            return "title_repeated"
    return why


def accept_reason(
    text: str,
    facts: Mapping[str, Any],
    profile: Mapping[str, Any],
    *,
    known_brands: Iterable[str] = (),
    max_chars: int = 220,
) -> tuple[str | None, str | None]:
    """(the reason to show, None) or (None, why it was rejected).

    Kept: the first sentence of `text`, if it is complete, addressed to the shopper, names the
    evidence in `profile` (an item title, brand or category from `reason_profile`), carries no
    unsupported claim and is not degenerate. Only the first sentence is ever shown."""
    from ml.grounding import check

    sentence, _ = first_sentence(text)
    why = degenerate(sentence, str(facts.get("title") or ""))
    if why:
        return None, why
    if instruction_in_facts({**facts, "evidence": evidence_names(profile)}):
        return None, "instruction_in_facts"
    if len(sentence) > max_chars:
        return None, "too_long"
    if _THIRD.search(sentence):
        return None, "third_person"
    if leaks_prompt(sentence):
        return None, "leaked_prompt"
    if _FIELD_IN_PROSE.search(sentence.removeprefix(reason_prefix(profile, str(facts.get("title") or "")))):
        return None, "field_in_prose"
    if not addressed(sentence):
        return None, "not_addressed"
    low = _norm(sentence)
    if not any(_norm(name) in low for name in evidence_names(profile)):
        return None, "evidence_not_named"
    brands = list(known_brands)
    if unknown_names(sentence, facts, profile, brands):
        return None, "unknown_name"
    if unbacked_claims(sentence, facts, history_ok=reason_prefix(profile, str(facts.get("title") or ""))):
        return None, "unbacked_claim"
    if check(sentence, facts, known_brands=brands, profile=profile).unsupported:
        return None, "unsupported"
    # as for pages: only the facts' and the evidence's words ("a maximum height of 165 cm", "LENSMAR")
    if novel_words(sentence, {**facts, "evidence": evidence_names(profile)}, _REASON_PLAIN):
        return None, "novel_word"
    return sentence, None


_NAME = re.compile(r"(?<![\w'’])[A-Z][\w'’&-]*(?:\s+[A-Z][\w'’&-]*)*")
# Words a sentence may start with; any other capitalized word must be a known name (a rejection
# only costs the template, so the list errs on the strict side).
_ORDINARY_CAPS = set(
    "i you your you're you've since because as if it it's its this these that those the a an and "
    "with for from given here there now like love looking enjoy want need perfect great ideal".split()
)


def unknown_names(sentence: str, facts: Mapping[str, Any], profile: Mapping[str, Any], brands: list[str]) -> list[str]:
    """Capitalized names in a reason that neither the facts, the evidence nor the catalog's brands
    contain ("Amazon Prime", "Lenseskine"): a one-sentence reason has no business naming them.
    The first word of the sentence and words like "You" or "It" are ordinary capitals."""
    import json

    known = _norm(" | ".join([json.dumps(dict(facts), ensure_ascii=False), *evidence_names(profile), *brands]))
    out = []
    for m in _NAME.finditer(sentence):
        words = [w for w in m.group(0).split() if w.lower() not in _ORDINARY_CAPS]
        if words and not all(_norm(w).strip("'’") in known for w in words):
            out.append(" ".join(words))
    return out


def names_evidence(text: str, evidence: Iterable[Mapping[str, Any]]) -> bool:
    """Faithfulness: does the reason name the evidence the ranker used (its primary entry)?"""
    e = primary_evidence(evidence)
    if e is None:
        return False
    if e["type"] == "popular":
        return ("popular" in text.lower() or "受欢迎" in text) and (
            not e.get("category") or _norm(leaf(e["category"])) in _norm(text)
        )
    profile = reason_profile([e]) or {}
    low = _norm(text)
    return any(_norm(name) in low for name in evidence_names(profile))
