"""Online evaluation: what the shop's shoppers did with what shopgraph showed them.

    shopgraph train evaluate --online --window 24h        # the JSON report (cluster/evaluate.py)
    report = online_report(engine, since_ms, until_ms, attribution_window_ms)   # /metrics gauges too

The unit is a *slot*: one item of one answer (`served_items`: request_id, position, product_id,
the versions that produced it and its reason's source), written by the ingress for every answer.
Events (`events`, from POST /v1/events) are attributed to slots:

- an event that carries a `request_id` belongs to the slot with that request_id and product_id,
  and to nothing else (no slot: *unattributed*, counted by event type, never dropped silently);
- a click / cart / purchase without a `request_id` belongs to the latest slot that showed the same
  product to the same user (pseudonym) at most `attribution_window_ms` before the event (last
  touch: the answer that most recently showed it gets the credit, never several at once);
  none in that window: counted as *unattributed without request_id* (organic: browsing, search).

Per slot: *impressed* when an impression event names it; *clicked* / *carted* / *purchased* when
an attributed event of that type exists (several clicks on one slot count once). Per group
(recommender version x generator version x reason source) and rolled up per recommender
version, generator version, reason source and overall: served, impressions, clicks, carts,
purchases, CTR = clicks / impressions, cart rate, conversion = purchases / impressions (null
without impressions). Outcomes on a slot that never got an impression event (a client that
does not send impressions) are not in CTR; `outcomes_without_impression` counts those slots.

The window selects slots by the time they were served: [since, until). Their events may come
later (a purchase the next day counts, within the attribution window when it has no request_id).
One SQL statement (SQLAlchemy core) computes the groups, the same on SQLite and PostgreSQL; a
second one counts the unattributed events.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import Engine, and_, case, exists, func, or_, select, text, update

from core.store.models import EventRow, ServedRow, SharedReport

OUTCOMES = ("click", "cart", "purchase")
GROUP_KEYS = ("recommender_version", "generator_version", "reason_source")
COUNTS = ("served", "impressions", "clicks", "carts", "purchases", "outcomes_without_impression")


def parse_time_ms(text: str, what: str = "--since") -> int:
    """ISO 8601 ('2026-12-01T00:00:00Z', naive = UTC) or milliseconds since the epoch -> ms."""
    from core.values import RowError, as_timestamp_ms

    value = str(text).strip()
    try:
        return as_timestamp_ms(int(value) if value.isdigit() else value, "ms" if value.isdigit() else "iso", what)
    except RowError as e:
        raise ValueError(f"{e}; use ISO 8601 (e.g. 2026-12-01T00:00:00Z) or milliseconds since the epoch") from None


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _as_int(condition) -> Any:
    return case((condition, 1), else_=0)


def last_touch(event, window_ms: int):
    """The id of the served item an event without a request_id is attributed to: the latest one
    that showed the same product to the same user at most `window_ms` before it (NULL: none)."""
    later = ServedRow.__table__.alias(f"later_{event.name}")
    return (
        select(later.c.id)
        .where(
            later.c.user_key == event.c.user_key,
            later.c.product_id == event.c.product_id,
            later.c.ts <= event.c.ts,
            later.c.ts >= event.c.ts - window_ms,
        )
        .order_by(later.c.ts.desc(), later.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def _attributed(event_type: str, slot, since_ms: int, until_ms: int, window_ms: int):
    """Whether an event of `event_type` is attributed to `slot` (a served_items alias), as the module
    docstring says: by request_id (EXISTS, per slot), else by last touch. The last-touch ids are
    computed once from the events side (an uncorrelated IN: one index probe per event without a
    request_id) rather than per slot: probing every slot's user+product window was 10x slower."""
    e = EventRow.__table__.alias(f"e_{event_type}")
    by_request = exists().where(
        e.c.request_id == slot.c.request_id, e.c.product_id == slot.c.product_id, e.c.event == event_type
    )
    if event_type == "impression":
        return by_request
    w = EventRow.__table__.alias(f"w_{event_type}")
    touched = (
        select(last_touch(w, window_ms).label("slot_id"))
        .where(w.c.event == event_type, w.c.request_id.is_(None), w.c.ts >= since_ms, w.c.ts < until_ms + window_ms)
        .subquery(f"touched_{event_type}")
    )
    # NULLs (events no slot touched) in the IN list make `IN` NULL instead of false where it does not
    # match, which CASE WHEN reads as false: filtering them out would run the subquery twice.
    return or_(by_request, slot.c.id.in_(select(touched.c.slot_id)))


def groups_query(since_ms: int, until_ms: int, window_ms: int):
    """The one statement: per (recommender version, generator version, reason source), the counts
    of `COUNTS` over the slots served in [since_ms, until_ms)."""
    s = ServedRow.__table__.alias("s")
    flags = (
        select(
            *(s.c[k] for k in GROUP_KEYS),
            _as_int(_attributed("impression", s, since_ms, until_ms, window_ms)).label("imp"),
            *(_as_int(_attributed(t, s, since_ms, until_ms, window_ms)).label(t) for t in OUTCOMES),
        )
        .where(s.c.ts >= since_ms, s.c.ts < until_ms)
        # Materialized: each slot's EXISTS run once, not once per aggregate that reads its flag
        # (SQLite and PostgreSQL would otherwise inline the subquery into every sum()).
        .cte("slots")
        .prefix_with("MATERIALIZED")
    )
    imp, click, cart, purchase = flags.c.imp, flags.c.click, flags.c.cart, flags.c.purchase
    any_outcome = or_(click == 1, cart == 1, purchase == 1)
    return (
        select(
            *(flags.c[k] for k in GROUP_KEYS),
            func.count().label("served"),
            func.sum(imp).label("impressions"),
            func.sum(imp * click).label("clicks"),
            func.sum(imp * cart).label("carts"),
            func.sum(imp * purchase).label("purchases"),
            func.sum(_as_int(and_(imp == 0, any_outcome))).label("outcomes_without_impression"),
        )
        .group_by(*(flags.c[k] for k in GROUP_KEYS))
        .order_by(*(flags.c[k] for k in GROUP_KEYS))
    )


def unattributed_query(since_ms: int, until_ms: int, window_ms: int):
    """Events in [since_ms, until_ms) that no slot takes: (has request_id, event type, count).
    With a request_id: no served item with that request_id and product. Without: a click, cart
    or purchase with no slot of the same user and product in the window before it."""
    e = EventRow.__table__.alias("e")
    s = ServedRow.__table__.alias("s")
    shown = exists().where(s.c.request_id == e.c.request_id, s.c.product_id == e.c.product_id)
    touched = last_touch(e, window_ms).is_not(None)
    with_request = e.c.request_id.is_not(None)
    return (
        select(with_request.label("with_request_id"), e.c.event, func.count().label("n"))
        .where(
            e.c.ts >= since_ms,
            e.c.ts < until_ms,
            or_(
                and_(with_request, ~shown),
                and_(e.c.request_id.is_(None), e.c.event.in_(OUTCOMES), ~touched),
            ),
        )
        .group_by(with_request, e.c.event)
    )


def _rates(counts: dict[str, int]) -> dict[str, Any]:
    shown = counts["impressions"]

    def rate(n: int) -> float | None:
        return round(n / shown, 6) if shown else None

    return {
        **counts,
        "ctr": rate(counts["clicks"]),
        "cart_rate": rate(counts["carts"]),
        "conversion": rate(counts["purchases"]),
    }


def _rollup(groups: list[dict[str, Any]], key: str | None) -> dict[str, Any]:
    out: dict[str, dict[str, int]] = {}
    for g in groups:
        into = out.setdefault(g[key] if key else "all", dict.fromkeys(COUNTS, 0))
        for c in COUNTS:
            into[c] += g[c]
    return {k: _rates(v) for k, v in sorted(out.items())}


def online_report(engine: Engine, since_ms: int, until_ms: int, attribution_window_ms: int) -> dict[str, Any]:
    """The online evaluation report (module docstring) of slots served in [since_ms, until_ms)."""
    if until_ms <= since_ms:
        raise ValueError(f"the window is empty: since {_iso(since_ms)} is not before until {_iso(until_ms)}")
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # Its JIT compiles this statement for seconds (the cost of many correlated subplans is
            # overestimated) to save far less; off for this transaction only.
            conn.execute(text("SET LOCAL jit = off"))
        rows = conn.execute(groups_query(since_ms, until_ms, attribution_window_ms)).mappings().all()
        lost = conn.execute(unattributed_query(since_ms, until_ms, attribution_window_ms)).all()
    groups = [{**{k: r[k] for k in GROUP_KEYS}, **{c: int(r[c] or 0) for c in COUNTS}} for r in rows]
    unattributed: dict[str, dict[str, int]] = {"with_request_id": {}, "without_request_id": {}}
    for with_request, event, n in lost:
        unattributed["with_request_id" if with_request else "without_request_id"][event] = int(n)
    return {
        "window": {"since": _iso(since_ms), "until": _iso(until_ms), "since_ms": since_ms, "until_ms": until_ms},
        "attribution": {
            "by": "request_id + product_id; without a request_id: the same user and product, "
            "the latest item served at most window_ms before the event",
            "window_ms": attribution_window_ms,
        },
        "overall": _rollup(groups, None)["all"] if groups else _rates(dict.fromkeys(COUNTS, 0)),
        "by_recommender_version": _rollup(groups, "recommender_version"),
        "by_generator_version": _rollup(groups, "generator_version"),
        "by_reason_source": _rollup(groups, "reason_source"),
        "groups": [_rates(g) for g in groups],
        "unattributed": unattributed,
    }


class Shared(NamedTuple):
    report: dict[str, Any] | None  # None: nobody has finished one yet
    computed_at: int  # ms, when the report's window ended; 0 with no report
    computed_here: bool  # this call ran `compute`


def shared_report(
    engine: Engine, key: str, owner: str, now_ms: int, fresh_ms: int, lease_ms: int, compute: Callable[[], dict]
) -> Shared:
    """A report that every process sharing the database computes once per `fresh_ms` between them.

    The stored report is returned while it is fresh: computed at most `fresh_ms` before `now_ms`,
    or 9 times as long as computing it took, whichever is longer, so that computing it never keeps
    more than a tenth of one core busy across all the callers. When it is stale, one caller takes
    the row's lease (an UPDATE that only succeeds while nobody holds it and the stored report is
    still the stale one this caller read) and runs `compute`;
    the others go on with the stale one meanwhile. A caller that dies while computing holds the
    lease for `lease_ms`, then another takes over. A failing `compute` gives the lease back and
    raises. Two callers compute at once only when one of them takes longer than `lease_ms`."""
    table = SharedReport.__table__
    from core.store.db import _insert

    with engine.begin() as conn:
        conn.execute(
            _insert(engine, SharedReport).values(key=key, lease_until=0, computed_at=0).on_conflict_do_nothing()
        )
        row = conn.execute(select(table).where(table.c.key == key)).mappings().one()
    stored = Shared(
        json.loads(row["report"]) if row["report"] else None, row["computed_at"] if row["report"] else 0, False
    )
    if stored.report is not None and row["computed_at"] >= now_ms - max(fresh_ms, 9 * row["took_ms"]):
        return stored
    claim = (
        update(table)
        .where(table.c.key == key, table.c.computed_at == row["computed_at"])
        .where(or_(table.c.lease_until < now_ms, table.c.owner == owner))
        .values(owner=owner, lease_until=now_ms + lease_ms)
    )
    with engine.begin() as conn:
        if conn.execute(claim).rowcount != 1:
            return stored  # another caller is computing it, or has just stored a newer one
    mine = and_(table.c.key == key, table.c.owner == owner)
    started = time.monotonic()
    try:
        report = compute()
    except BaseException:
        with engine.begin() as conn:
            conn.execute(update(table).where(mine).values(lease_until=0))
        raise
    with engine.begin() as conn:
        conn.execute(
            update(table)
            .where(mine)
            .values(
                report=json.dumps(report),
                computed_at=now_ms,
                took_ms=int((time.monotonic() - started) * 1000),
                lease_until=0,
            )
        )
    return Shared(report, now_ms, True)
