"""Online evaluation on SQLite and a real PostgreSQL (tests/conftest.py `db_url`): served items and
events seeded by hand give exact CTR and conversion per group; events that match no served item
are counted as unattributed, never dropped.

    pytest -q tests/core/store/test_evaluation.py
"""

from __future__ import annotations

import pytest

from core.store import Store, make_engine
from core.store.evaluation import online_report, parse_time_ms
from core.values import as_duration_ms

HOUR = 3_600_000


def _served(request_id, position, product_id, user_key, rec, gen, source, ts=1_000):
    return dict(
        request_id=request_id,
        position=position,
        product_id=product_id,
        user_key=user_key,
        surface="recommendations",
        recommender_version=rec,
        generator_version=gen,
        reason_source=source,
        degraded=None,
        ts=ts,
    )


_KEYS = iter(range(1_000_000))


def _event(event, product_id, user_key, request_id=None, ts=1_200):
    return dict(
        event=event,
        user_key=user_key,
        product_id=product_id,
        ts=ts,
        value=None,
        request_id=request_id,
        idempotency_key=f"k{next(_KEYS)}",
        received_at=ts,
        flagged_reason=None,
    )


@pytest.fixture
def store(db_url):
    engine = make_engine(db_url)
    yield Store(engine)
    engine.dispose()


def _seed(store: Store) -> None:
    store.add_served(
        [
            _served("A", 1, "p1", "u1", "r1", "g1", "generated"),
            _served("A", 2, "p2", "u1", "r1", "g1", "template"),
            _served("A", 3, "p3", "u1", "r1", "g1", "template"),
            _served("B", 1, "p1", "u2", "r1", "g2", "generated"),
            _served("B", 2, "p4", "u2", "r1", "g2", "generated"),
            _served("C", 1, "p2", None, "r2", "g1", "template"),  # anonymous
            _served("D", 1, "p2", "u1", "r1", "g1", "template", ts=2_000),  # p2 shown to u1 again, later
            _served("OLD", 1, "p5", "u1", "r1", "g1", "generated", ts=10),  # before the window
        ]
    )
    store.add_events(
        [
            *(_event("impression", p, "u1", "A") for p in ("p1", "p2", "p3")),
            _event("impression", "p1", "u1", "A"),  # seen twice: one impression
            _event("click", "p1", "u1", "A"),
            _event("click", "p1", "u1", "A"),  # clicked twice: one click
            _event("purchase", "p1", "u1", "A", ts=50 * HOUR),  # a purchase days later, by request_id
            _event("impression", "p1", "u2", "B"),
            _event("impression", "p4", "u2", "B"),
            _event("click", "p4", "u2", ts=1_500),  # no request_id: within the window after B
            _event("cart", "p1", "u2", ts=1_000 + HOUR + 1),  # no request_id, past the window: organic
            _event("click", "p2", "anon", "C"),  # clicked without an impression event
            _event("impression", "p2", "u1", "D"),
            _event("click", "p2", "u1", ts=2_300),  # no request_id: last touch is D, not A
            _event("impression", "p9", "u3", "ghost"),  # a request_id nothing was served under
            _event("click", "p9", "u1", "A"),  # request A did not show p9
            _event("view", "p3", "u1"),  # views are no outcome
            _event("impression", "p5", "u1", "OLD"),  # its slot is outside the window
        ]
    )


def _counts(group: dict) -> tuple:
    return tuple(
        group[k] for k in ("served", "impressions", "clicks", "carts", "purchases", "outcomes_without_impression")
    )


def test_ctr_and_conversion_per_group_are_exact(store):
    _seed(store)
    report = online_report(store.engine, 100, 100 * HOUR, HOUR)
    groups = {(g["recommender_version"], g["generator_version"], g["reason_source"]): g for g in report["groups"]}
    assert {k: _counts(g) for k, g in groups.items()} == {
        ("r1", "g1", "generated"): (1, 1, 1, 0, 1, 0),
        ("r1", "g1", "template"): (3, 3, 1, 0, 0, 0),
        ("r1", "g2", "generated"): (2, 2, 1, 0, 0, 0),
        ("r2", "g1", "template"): (1, 0, 0, 0, 0, 1),
    }
    assert groups[("r1", "g1", "generated")]["ctr"] == 1.0
    assert groups[("r1", "g1", "generated")]["conversion"] == 1.0
    assert groups[("r1", "g1", "template")]["ctr"] == pytest.approx(1 / 3, abs=1e-6)
    assert groups[("r2", "g1", "template")]["ctr"] is None  # no impressions: no rate, not 0
    overall = report["overall"]
    assert _counts(overall) == (7, 6, 3, 0, 1, 1)
    assert overall["ctr"] == 0.5 and overall["conversion"] == pytest.approx(1 / 6, abs=1e-6)
    by_source = report["by_reason_source"]
    assert _counts(by_source["generated"]) == (3, 3, 2, 0, 1, 0)
    assert by_source["generated"]["ctr"] == pytest.approx(2 / 3, abs=1e-6)
    assert _counts(by_source["template"]) == (4, 3, 1, 0, 0, 1)
    assert report["by_recommender_version"]["r1"]["ctr"] == 0.5
    assert report["by_recommender_version"]["r2"]["ctr"] is None
    assert report["by_generator_version"]["g2"]["ctr"] == 0.5
    # Events no served item takes are counted by type, not dropped: a request_id that showed
    # nothing (or not that product), and outcomes without request_id and without a recent slot.
    assert report["unattributed"] == {
        "with_request_id": {"impression": 1, "click": 1},
        "without_request_id": {"cart": 1},
    }


def test_the_window_selects_items_by_when_they_were_served(store):
    _seed(store)
    later = online_report(store.engine, 1_500, 100 * HOUR, HOUR)  # only D
    assert [(g["reason_source"], _counts(g)) for g in later["groups"]] == [("template", (1, 1, 1, 0, 0, 0))]
    assert online_report(store.engine, 200 * HOUR, 300 * HOUR, HOUR)["overall"]["served"] == 0
    with pytest.raises(ValueError, match="window is empty"):
        online_report(store.engine, 5, 5, HOUR)


def test_a_shorter_attribution_window_leaves_late_clicks_unattributed(store):
    _seed(store)
    report = online_report(store.engine, 100, 100 * HOUR, 400)  # the click 500 ms after B no longer counts
    g2 = report["by_generator_version"]["g2"]
    assert (g2["impressions"], g2["clicks"]) == (2, 0)
    assert report["unattributed"]["without_request_id"] == {"cart": 1, "click": 1}


def test_erasure_removes_the_users_served_items(store):
    _seed(store)
    assert store.count_served() == 8
    store.erase_users(["u1"])
    assert store.count_served() == 3  # B's two and anonymous C


def test_durations_and_times_parse_or_say_what_to_write():
    assert as_duration_ms("24h", "--window") == 24 * HOUR
    assert as_duration_ms("90s", "--window") == 90_000
    assert as_duration_ms(" 1.5d ", "--window") == 36 * HOUR
    for bad in ("", "7", "-1h", "0m", "1 fortnight", "h"):
        with pytest.raises(ValueError, match=r"--window is .*use a positive number and a unit"):
            as_duration_ms(bad, "--window")
    assert parse_time_ms("2026-12-01T00:00:00Z") == 1_796_083_200_000
    assert parse_time_ms("1796083200000") == 1_796_083_200_000
    with pytest.raises(ValueError, match="--since.*ISO 8601"):
        parse_time_ms("yesterday")


# ----------------------------------------------------------------------------- one report for all replicas


def _counting(calls: list, report: dict | None = None, delay_s: float = 0.0):
    def compute():
        import time

        calls.append(1)
        time.sleep(delay_s)
        return report or {"n": len(calls)}

    return compute


def test_a_shared_report_is_computed_once_per_refresh_for_every_caller(store):
    from core.store.evaluation import shared_report

    calls, e = [], store.engine
    first = shared_report(e, "online:x", "replica-a", 10_000, fresh_ms=1_000, lease_ms=60_000, compute=_counting(calls))
    assert first == ({"n": 1}, 10_000, True)
    # another replica within the refresh: the stored report, nothing computed
    again = shared_report(e, "online:x", "replica-b", 10_900, fresh_ms=1_000, lease_ms=60_000, compute=_counting(calls))
    assert again == ({"n": 1}, 10_000, False) and len(calls) == 1
    # a refresh later, whoever asks first computes it, once
    later = shared_report(e, "online:x", "replica-b", 11_001, fresh_ms=1_000, lease_ms=60_000, compute=_counting(calls))
    assert later == ({"n": 2}, 11_001, True)
    assert shared_report(e, "online:x", "replica-a", 11_002, 1_000, 60_000, _counting(calls)).computed_here is False
    # other settings are another key: shared with nobody
    assert shared_report(e, "online:y", "replica-a", 11_002, 1_000, 60_000, _counting(calls)).computed_here is True


def test_a_held_lease_serves_the_stale_report_until_it_expires(store):
    """A replica that died while computing holds the report back for lease_ms, no longer."""
    from sqlalchemy import text

    from core.store.evaluation import shared_report

    calls, e = [], store.engine
    shared_report(e, "k", "a", 10_000, fresh_ms=1_000, lease_ms=5_000, compute=_counting(calls))
    with e.begin() as conn:  # replica a took the lease at 20 s and died
        conn.execute(text("UPDATE shared_reports SET owner = 'a', lease_until = 25000"))
    stale = shared_report(e, "k", "b", 24_999, fresh_ms=1_000, lease_ms=5_000, compute=_counting(calls))
    assert stale == ({"n": 1}, 10_000, False) and len(calls) == 1
    taken = shared_report(e, "k", "b", 25_001, fresh_ms=1_000, lease_ms=5_000, compute=_counting(calls))
    assert taken == ({"n": 2}, 25_001, True)


def test_a_failed_computation_gives_the_lease_back(store):
    from core.store.evaluation import shared_report

    def broken():
        raise RuntimeError("database went away")

    with pytest.raises(RuntimeError, match="went away"):
        shared_report(store.engine, "k", "a", 10_000, fresh_ms=1_000, lease_ms=60_000, compute=broken)
    # nothing stored, nobody holding it: the next caller computes at once, not a minute later
    assert shared_report(store.engine, "k", "b", 10_001, 1_000, 60_000, _counting([])) == ({"n": 1}, 10_001, True)


def test_callers_racing_on_a_stale_report_compute_it_once(store):
    """Four replicas' refreshes at the same moment, each on its own connection: one computes, the
    others go on with what is stored (nothing yet: None) and never wait for it."""
    from concurrent.futures import ThreadPoolExecutor

    from core.store.evaluation import shared_report

    calls = []
    with ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(
                lambda owner: shared_report(
                    store.engine, "k", owner, 10_000, 1_000, 60_000, _counting(calls, {"n": 1}, delay_s=0.5)
                ),
                ["a", "b", "c", "d"],
            )
        )
    assert len(calls) == 1
    assert sorted(r.computed_here for r in results) == [False, False, False, True]
    assert all(r.report in (None, {"n": 1}) for r in results)
    assert shared_report(store.engine, "k", "e", 10_500, 1_000, 60_000, _counting(calls)).report == {"n": 1}


def test_a_slow_shared_report_stays_fresh_nine_times_as_long_as_it_took(store):
    """0.3 s to compute: no caller starts another within 2.7 s, whatever the refresh says."""
    from core.store.evaluation import shared_report

    calls = []
    shared_report(
        store.engine, "k", "a", 10_000, fresh_ms=1_000, lease_ms=60_000, compute=_counting(calls, delay_s=0.3)
    )
    assert shared_report(store.engine, "k", "b", 12_600, 1_000, 60_000, _counting(calls)).computed_here is False
    assert shared_report(store.engine, "k", "b", 20_000, 1_000, 60_000, _counting(calls)).computed_here is True
