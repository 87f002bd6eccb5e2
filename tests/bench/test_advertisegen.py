"""bench/advertisegen.py runs (the template side, on three AdvertiseGen-shaped rows) and its
metrics mean what the README says: character-level BLEU-4 / ROUGE-L, 100 for a perfect copy;
a bad data file is refused with a clear error. The generator side is the benchmark's to time.

    pytest -q tests/bench/test_advertisegen.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

ROWS = [
    {"content": "类型#裤*风格#英伦*风格#简约", "summary": "裤子是简约大方的版型设计，带来一种极简主义风格。"},
    {"content": "类型#上衣*材质#牛仔布*颜色#白色", "summary": "这件白色牛仔布上衣，百搭又耐穿。"},
    {"content": "类型#裙*裙长#连衣裙*领型#圆领", "summary": "基础款的舒适圆领连衣裙，简约不失大方。"},
]


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "bench" / "advertisegen.py"), *args],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip


def test_metrics_are_character_level():
    from advertisegen import rouge_l, scores

    assert rouge_l("简约大方", "简约大方") == 1.0 and rouge_l("", "简约") == 0.0
    assert scores(["裤子是简约大方的版型设计"], ["裤子是简约大方的版型设计"])["bleu4"] == pytest.approx(100)
    assert scores(["完全不同的话"], ["裤子是简约大方"])["rouge_l"] == 0.0


def test_template_figures_on_a_small_file(tmp_path):
    data = tmp_path / "dev.json"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS) + "\n", encoding="utf-8")
    out = _bench("--data", str(data), "--skip-generator")
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    template = report["template"]
    assert report["rows"] == 3 and template["zh_share"] == 1.0
    assert template["unsupported"]["with_unsupported"] == 0.0  # the template states the facts only
    assert 0 < template["rouge_l"] < 100 and report["anchor"]["bleu4"] == 8.10


def test_a_bad_data_file_is_refused(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"content": "类型#裤"}\n', encoding="utf-8")
    out = _bench("--data", str(bad), "--skip-generator")
    assert out.returncode == 1 and "bad.json:1" in out.stderr and "summary" in out.stderr
    missing = _bench("--data", str(tmp_path / "none.json"), "--skip-generator")
    assert missing.returncode == 1 and "not found" in missing.stderr
    assert _bench("--data", str(bad), "--generator-rows", "0").returncode == 2
