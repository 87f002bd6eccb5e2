"""Personal data in free text: find it and replace it with a token, before text reaches a prompt,
a training corpus or a log line.

    from core.pii import scrub, scrub_counts
    scrub("mail jo@example.com or call (415) 555-2671")   # 'mail [email] or call [phone]'

Kinds and their tokens: e-mail addresses `[email]`; Chinese resident ID numbers (18 digits, valid
birth date and ISO 7064 check digit) `[id]`; payment-card numbers (13-19 digits, spaces or dashes
allowed, a card network's prefix and a valid Luhn digit) `[card]`; phone numbers `[phone]`
(Chinese mobiles `1[3-9]` + 9 digits, and whatever `phonenumbers` finds valid for the US, GB, DE,
IN or CN, or in international `+..` / `00..` form); street addresses `[address]` ("123 Main
Street", "221B Baker St", and Chinese 省/市/区 ... 路/街/道 ... 号 forms).

What it must not touch is as important: product facts are full of numbers. "5000 mAh", "1080p",
"USB 3.0", prices, sizes, years, pack counts and model numbers ("SM-G991B") are never a match: a
digit run shorter than 7 digits cannot be a phone, card or id number; a card number needs a
network prefix and the Luhn check (an EAN or part number fails one or the other 9 times in 10,
and a 13-digit one starting with 4 is not taken for the retired 13-digit Visa); a bare run of
digits is a phone number only with a cue before it ("call", "tel", "phone", "电话" ...), and a
grouped one without a cue or `+` only in a national shape (a trunk 0 as in "030 12345678", the US
"(415) 555-2671", an Indian mobile "98765 43210"), so part numbers such as "2 417 630 058" or
"731204-115" stay; an English address needs a house number (not starting with 0), a capitalised
name and a street word ("4 Way Switch", "15 One Way Switch", "2 Hard Drive" stay).

Scrubbing is idempotent (the tokens match nothing) and fast on text without personal data: each
kind has a cheap pre-check (`@`, a long digit run, `号`, a street word) before its real matcher.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import Counter
from collections.abc import Iterable

KINDS = ("email", "id", "card", "phone", "address")
TOKENS = {kind: f"[{kind}]" for kind in KINDS}
PHONE_REGIONS = ("US", "GB", "DE", "IN", "CN")

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}\b")
# 7+ digits with at most 3 separator characters between each: the pre-check of ids, cards, phones
_LONG_DIGITS = re.compile(r"\d(?:[^\d\n]{0,3}\d){6}")
_CN_ID = re.compile(r"(?<![0-9A-Za-z])\d{17}[\dXx](?![0-9A-Za-z])")
_CARD = re.compile(r"(?<![\d.,])(?:\d[ -]?){12,18}\d(?![\d.,]\d)")
_CN_MOBILE = re.compile(r"(?<![\d+])(?:(?:\+|00)86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}(?!\d)")
# a phone-number-like run: optional + or 00, digits with spaces, dots, dashes, slashes, brackets
_PHONE_RUN = re.compile(r"(?<![\w+])(?:\+|00)?\(?\d[\d ().\-/]{5,24}\d(?!\w)")
_PHONE_CUE = re.compile(  # "cell", "number", "ring" are left out: "8 cell battery", "model number 12345678"
    r"(?:\b(?:phone|tel(?:ephone)?|call|mobile|fax|whats ?app|text me|contact|cell ?phone)|电话|手机|联系|致电|热线|微信)(?:\W{1,3}\S{1,12}){0,2}\W{0,3}$",
    re.IGNORECASE,
)
# dates and year ranges look like regional phone numbers to `phonenumbers`; they never are one
_DATE_LIKE = re.compile(
    r"^(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}|(?:19|20)\d\d ?[-/] ?(?:19|20)?\d\d)$"
)
_STREET_WORDS = (
    "Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Terrace|Place|Pl|"
    "Crescent|Highway|Hwy|Parkway|Pkwy|Close|Gardens|Row|Strasse|Straße"
)
_NOT_STREET_NAMES = r"(?!(?:Hard|Flash|Disk|Thumb|Pen|Solid|Optical|Hybrid|Way|Speed|Pack|Piece|Inch|One|Two|Three|Four|Single|Double|Multi)\b)"
_EN_ADDRESS = re.compile(
    r"\b[1-9]\d{0,4}[A-Za-z]?,?\s+"  # a house number (a leading 0 is a shade or size: "01 Miyuki Street")
    rf"(?:{_NOT_STREET_NAMES}[A-Z][a-z]+\.?\s+){{1,3}}(?:{_STREET_WORDS})\b\.?"
    r"(?:,?\s+(?:Apt|Apartment|Suite|Unit|Flat)\.?\s*#?\w{1,6})?"
)
_HAN = r"[\u4e00-\u9fff]"
_PROVINCES = (
    "北京|天津|上海|重庆|河北|山西|辽宁|吉林|黑龙江|江苏|浙江|安徽|福建|江西|山东|河南|湖北|湖南|广东|海南|四川|"
    "贵州|云南|陕西|甘肃|青海|台湾|内蒙古|广西|西藏|宁夏|新疆|香港|澳门"
)
_CN_ADDRESS = re.compile(
    rf"(?:(?:{_PROVINCES})(?:省|市|自治区|壮族自治区|回族自治区|维吾尔自治区|特别行政区)?)?(?:{_HAN}{{2,3}}市)?(?:{_HAN}{{1,3}}(?:区|县))?"
    rf"{_HAN}{{1,8}}?(?:路|街|大道|道|巷|弄)\s*\d{{1,5}}\s*号"
    rf"(?:\s*\d{{1,4}}\s*(?:栋|幢|号楼|单元|层|楼|室))*"
)

_CN_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
# IIN prefixes of the card networks (Visa 16/19 digits; Mastercard 51-55 and 2221-2720; Amex 34/37;
# Discover 6011/644-649/65; JCB 3528-3589; Diners 300-305/36/38; UnionPay 62; Maestro 50/56-58/6x)
_CARD_PREFIX = re.compile(
    r"^(?:4\d{15}(?:\d{3})?|5[0-8]\d{11,17}|2[2-7]\d{14}|3[47]\d{13}|3[0-9]\d{12,17}|6\d{12,18})$"
)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def cn_id_ok(number: str) -> bool:
    """An 18-character PRC resident ID: plausible birth date and the ISO 7064 MOD 11-2 check digit."""
    year, month, day = int(number[6:10]), int(number[10:12]), int(number[12:14])
    if not (1900 <= year <= 2099 and 1 <= month <= 12 and 1 <= day <= 31):
        return False
    total = sum(int(c) * w for c, w in zip(number[:17], _CN_ID_WEIGHTS, strict=True))
    return "10X98765432"[total % 11] == number[17].upper()


def _sub(pattern: re.Pattern, text: str, kind: str, counts: Counter, accept=None) -> str:
    def repl(m: re.Match) -> str:
        if accept is not None and not accept(m):
            return m.group(0)
        counts[kind] += 1
        return TOKENS[kind]

    return pattern.sub(repl, text)


def _card(m: re.Match) -> bool:
    digits = re.sub(r"[ -]", "", m.group(0))
    return 13 <= len(digits) <= 19 and bool(_CARD_PREFIX.match(digits)) and luhn_ok(digits)


def _phone_in(run: str, before: str) -> bool:
    """Whether a phone-like run of characters is a phone number valid in one of PHONE_REGIONS
    (or internationally, with + or 00). A bare digit run needs a cue word before it."""
    import phonenumbers

    digits = sum(c.isdigit() for c in run)
    if not 7 <= digits <= 15:
        return False
    if _DATE_LIKE.match(run):
        return False
    candidate = "+" + run[2:] if run.startswith("00") else run
    if candidate.startswith("+"):
        regions: tuple[str | None, ...] = (None,)
    elif _PHONE_CUE.search(before[-40:]):
        regions = PHONE_REGIONS
    elif run.isdigit():  # a bare digit run is a phone number only after a cue
        return False
    else:
        regions = _regions_by_shape(run, digits)
        if not regions:
            return False
    for region in regions:
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return True
    return False


_US_SHAPE = re.compile(r"(?:1[ .-]?)?\(?\d{3}\)?[ .-]?\d{3}[ .-]\d{4}")
_IN_MOBILE_SHAPE = re.compile(r"[6-9]\d{4}[ .-]\d{5}")


def _regions_by_shape(run: str, digits: int) -> tuple[str, ...]:
    """Where a grouped digit run without a cue or `+` can be a phone number, by how it is written:
    a national number with its trunk 0 (GB, DE, IN, CN: "030 12345678", "010-12345678"), the US
    "(415) 555-2671" / "415-555-2671" shape, or an Indian mobile "98765 43210". Model and part
    numbers ("2 608 521 039", "684658-003", "5220 5710") have none of these shapes."""
    if run.lstrip("(").startswith("0"):
        return ("GB", "DE", "IN", "CN") if 9 <= digits <= 12 else ()
    if _US_SHAPE.fullmatch(run):
        return ("US",)
    if _IN_MOBILE_SHAPE.fullmatch(run):
        return ("IN",)
    return ()


def _phones(text: str, counts: Counter) -> str:
    out, last = [], 0
    for m in _PHONE_RUN.finditer(text):
        run = m.group(0).rstrip(").-/ ")
        start = m.start()
        if run.startswith("(") and ")" not in run:
            run, start = run[1:], start + 1
        if _phone_in(run, text[:start]):
            out += [text[last:start], TOKENS["phone"]]
            last = start + len(run)
            counts["phone"] += 1
    return "".join(out) + text[last:] if out else text


# a long digit run, or a number before a capitalised word (a house number): one scan for both
_DIGIT_CHECKS = re.compile(r"\d(?:(?:[^\d\n]{0,3}\d){6}|[A-Za-z]?,?\s+[A-Z][a-z])")


def _maybe(text: str) -> bool:
    """The union of the kinds' pre-checks: most text (product facts, profiles) fails it, cheaply."""
    return "@" in text or "号" in text or bool(_DIGIT_CHECKS.search(text))


def scrub_counts(text: str) -> tuple[str, Counter]:
    """`text` with personal data replaced by kind tokens, and how many of each kind were found."""
    counts: Counter = Counter()
    if not text or not _maybe(text):
        return text, counts
    if "@" in text:
        text = _sub(_EMAIL, text, "email", counts)
    if _LONG_DIGITS.search(text):
        text = _sub(_CN_ID, text, "id", counts, lambda m: cn_id_ok(m.group(0)))
        text = _sub(_CARD, text, "card", counts, _card)
        text = _sub(_CN_MOBILE, text, "phone", counts)
        if _LONG_DIGITS.search(text):
            text = _phones(text, counts)
    if "号" in text:
        text = _sub(_CN_ADDRESS, text, "address", counts)
    text = _sub(_EN_ADDRESS, text, "address", counts)  # anchored on a digit: no pre-check needed
    return text, counts


def scrub(text: str) -> str:
    """`text` with personal data replaced by `[email]`, `[id]`, `[card]`, `[phone]`, `[address]`.
    Short texts are memoized: facts are scrubbed again each time a prompt serializes them."""
    if not text or not _maybe(text):
        return text
    return _scrub_short(text) if len(text) <= 256 else scrub_counts(text)[0]


@functools.lru_cache(maxsize=16_384)
def _scrub_short(text: str) -> str:
    return scrub_counts(text)[0]


def scrub_value(value, counts: Counter | None = None):
    """Strings scrubbed inside a JSON-like value (dicts, lists, tuples); other values unchanged."""
    if isinstance(value, str):
        if counts is None:
            return scrub(value)
        out, found = scrub_counts(value)
        if counts is not None:
            counts.update(found)
        return out
    if isinstance(value, dict):
        return {k: scrub_value(v, counts) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub_value(v, counts) for v in value)  # list, tuple, core.facts.Values
    return value


class ScrubFilter(logging.Filter):
    """A logging filter that scrubs each record's formatted message (and exception text) in place."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to the handler to report
            return True
        record.msg, record.args = scrub_counts(message)[0], None  # not memoized: log lines rarely repeat
        if record.exc_info and not record.exc_text:
            record.exc_text = scrub_counts(logging.Formatter().formatException(record.exc_info))[0]
        return True


_FILTER = ScrubFilter()


def install_log_filter(names: Iterable[str] = ("shopgraph", "shopgraph.serve")) -> None:
    """Put the scrubbing filter on the named loggers and every `<name>.*` logger that exists now
    (a logger's filters do not apply to its children's records, so each needs its own). Idempotent."""
    names = tuple(names)
    existing = [n for n in logging.root.manager.loggerDict if any(n == x or n.startswith(x + ".") for x in names)]
    for name in {*names, *existing}:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
