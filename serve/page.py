"""The demo product page (`GET /shop/products/{id}?user_id=`): server-rendered HTML, no JS.

Everything shown comes from the API's own response, so what a shopper sees is exactly what an
API client gets. It is a shop page: where each text came from (generated, cached, template),
the model version and the facts hash are shown only with `?debug=1`; the shopper's id is never
printed (the route keeps it in a cookie, so the links need not carry it); every value from the
URL or the catalog is HTML-escaped, and the page is served with a Content-Security-Policy that
allows no script at all (`serve.security`). `error_page` is the same for 4xx answers.
"""

from __future__ import annotations

from html import escape
from urllib.parse import quote

from serve.schemas import ProductPage

# Inline, allowed by its hash in the pages' Content-Security-Policy (serve.security.CSP_PAGE).
PAGE_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:12px 24px;font-weight:600}
main{max-width:980px;margin:24px auto;background:#fff;border-radius:10px;padding:24px 32px;box-shadow:0 1px 4px #0001}
h1{margin:0 0 6px;font-size:26px} .meta{color:#566;margin-bottom:14px}
.price{font-size:22px;font-weight:700;color:#0a7d32} .stock{margin-left:10px;font-size:14px}
.note{background:#eef6ff;border-left:4px solid #2b6cb0;padding:10px 14px;margin:16px 0;border-radius:4px}
.src{font-size:11px;color:#889;text-transform:uppercase;letter-spacing:.05em;margin-left:6px}
ul.hl li{margin:4px 0} .strip{display:grid;grid-template-columns:repeat(3,1fr);gap:12px;margin-top:10px}
.card{border:1px solid #e3e6ea;border-radius:8px;padding:10px 12px;background:#fcfcfd}
.card a{font-weight:600;color:#1d2330;text-decoration:none} .card .why{font-size:13px;color:#455;margin-top:6px}
.card .p{color:#0a7d32;font-weight:600;font-size:14px}
"""


def error_page(status: int, message: str) -> str:
    """A 4xx page of the demo shop: the status and the (escaped) message, nothing else."""
    title = {404: "Not found", 429: "Too many requests"}.get(status, "Bad request")
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>'
        f'<body><h1>{status} {title}</h1><p id="message">{escape(message)}</p></body></html>'
    )


def _price(value: float | None, currency: str) -> str:
    return f"{value:,.2f} {escape(currency)}" if value is not None else ""


def _source(source: str, debug: bool) -> str:
    return f'<span class="src">{escape(source)}</span>' if debug else ""


# The page's own words, in the product's language (`core.facts.facts_language`); catalog and
# generated text is shown as it is.
LABELS = {
    "en": {"shop": "shopgraph demo shop", "highlights": "Highlights", "reviews": "What reviewers say",
           "also_like": "You may also like", "in_stock": "in stock", "out_of_stock": "out of stock"},
    "zh": {"shop": "shopgraph 演示商店", "highlights": "商品亮点", "reviews": "买家评价",
           "also_like": "猜你喜欢", "in_stock": "有货", "out_of_stock": "缺货"},
}  # fmt: skip


def page_language(product) -> str:
    """ "zh" or "en": the product's language, from its title, category and attribute values."""
    from core.facts import facts_language

    attributes = getattr(product, "attributes", None)
    return facts_language(
        {
            "title": product.title,
            "category": product.category,
            "attributes": attributes if isinstance(attributes, dict) else {},
        }
    )


def render_page(page: ProductPage, product, currency: str, debug: bool = False) -> str:
    s = page.sections
    lang = page_language(product)
    words = LABELS[lang]
    q = "?debug=1" if debug else ""
    highlights = "".join(f"<li>{escape(h)}</li>" for h in s.highlights)
    stock = (
        f'<span class="stock">{words["in_stock"]}</span>'
        if page.in_stock
        else f'<span class="stock">{words["out_of_stock"]}</span>'
        if page.in_stock is False
        else ""
    )
    note = (
        f'<div class="note" id="note">{escape(page.personalized_note)}{_source(page.note_source, debug)}</div>'
        if page.personalized_note
        else ""
    )
    cards = "".join(
        f'<div class="card"><a href="/shop/products/{quote(i.product_id, safe="")}{q}">{escape(i.title)}</a>'
        f'<div class="p">{_price(i.price, currency)}</div>'
        f'<div class="why">{escape(i.reason or "")}{_source(i.reason_source, debug)}</div></div>'
        for i in page.also_like
    )
    crumbs = escape(product.category or "")
    reviews = ""
    if page.reviews is not None and page.reviews.aspects:
        said = "".join(
            f"<li>{escape(a.sentence)}" + (f" <q>{escape(a.quote)}</q>" if a.quote else "") + "</li>"
            for a in page.reviews.aspects
        )
        reviews = f'<h3>{words["reviews"]}</h3><ul class="hl" id="reviews">{said}</ul>'
    elif page.reviews is not None and page.reviews.note:
        reviews = f'<h3>{words["reviews"]}</h3><p id="reviews">{escape(page.reviews.note)}</p>'

    footer = (
        f'<p class="src" id="debug">model {escape(page.model_version)} · facts {escape(page.facts_hash[:12])}'
        f" · segment {escape(page.segment)}"
        + (f" (copy of {escape(page.sections_segment)})" if page.sections_segment != page.segment else "")
        + "</p>"
        if debug
        else ""
    )
    return f"""<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><title>{escape(s.title)} · shopgraph</title><style>{PAGE_CSS}</style></head>
<body><header>{words["shop"]}</header>
<main>
<div class="meta">{crumbs}{(" · " + escape(product.brand)) if product.brand else ""}</div>
<h1 id="title">{escape(s.title)}</h1>
<div><span class="price">{_price(page.price, currency)}</span>{stock}</div>
{note}
<h3>{words["highlights"]}{_source(page.sections_source, debug)}</h3>
<ul class="hl" id="highlights">{highlights}</ul>
<p id="description">{escape(s.description)}</p>
{reviews}
<h3>{words["also_like"]}</h3>
<div class="strip" id="also-like">{cards}</div>
{footer}
</main></body></html>"""
