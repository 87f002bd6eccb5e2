"""The grounding check on real human copy (../shared/data): hand-label precision/recall, false
flags on copy whose claims are in the facts, and planted errors caught, per language.

The texts are read from the shared data folder (never copied here); the labels
(tests/ml/fixtures/grounding_labels.tsv) hold only row ids, spans and labels. The figures come
from bench/grounding.py, which prints them all (with the speed) as JSON.
"""

from __future__ import annotations

import pytest

from bench.grounding import (
    ADVERTISEGEN,
    KINDS,
    MYNTRA,
    ZH_BRANDS,
    catalog_brands,
    label_figures,
    load_advertisegen,
    load_labels,
    load_myntra,
    planted_figures,
)
from ml.grounding import catalog_for
from tests.conftest import SHARED

DATA = SHARED / "data"
pytestmark = pytest.mark.skipif(
    not ((DATA / MYNTRA).is_file() and (DATA / ADVERTISEGEN).is_file()),
    reason=f"dev catalogs {DATA / MYNTRA} and {DATA / ADVERTISEGEN} not present (set SHOPGRAPH_SHARED_DIR)",
)


@pytest.fixture(scope="module")
def sources():
    en, zh = load_myntra(DATA), load_advertisegen(DATA)
    en_brands = catalog_brands(en)
    return {
        "myntra": (en, catalog_for(en_brands), en_brands),
        "advertisegen": (zh, catalog_for(ZH_BRANDS), ZH_BRANDS),
    }


def test_labels_cover_a_few_hundred_claims_per_language():
    labels = load_labels()
    per_source = {s: sum(len(v) for (src, _), v in labels.items() if src == s) for s in ("myntra", "advertisegen")}
    assert all(n >= 150 for n in per_source.values()), per_source


@pytest.mark.parametrize("source", ["myntra", "advertisegen"])
def test_precision_recall_and_false_flags_on_hand_labels(sources, source):
    rows, cat, _ = sources[source]
    fig = label_figures(rows, load_labels(), cat)
    assert fig["labeled_texts"] >= 50
    assert fig["unlabeled_flags"] == 0, "a flag on a labeled text has no label: label it in the fixture"
    assert fig["precision"] >= 0.9, fig["false_flags"]
    assert fig["recall"] >= 0.8, fig["missed"]
    assert fig["clean_flagged"] <= 0.05, fig["false_flags"]  # copy whose claims are in the facts


@pytest.mark.parametrize("source", ["myntra", "advertisegen"])
def test_planted_errors_are_caught(sources, source):
    rows, cat, brands = sources[source]
    fig = planted_figures(rows, cat, brands, per_kind=40, seed=1)
    for kind in KINDS:
        if fig[kind]["planted"]:
            assert fig[kind]["caught"] >= 0.95, (kind, fig[kind])
    assert sum(fig[k]["planted"] for k in KINDS) >= 150
