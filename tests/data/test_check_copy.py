"""`shopgraph data check-copy` / `python -m data.check_copy`: readable and JSON reports, malformed
lines reported with their number and reason, exit status 1 only for unusable input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from data.check_copy import main, parse_line, run
from tests.conftest import REPO

MUG = {"title": "Keystone Silver Mug 350 ml", "brand": "Keystone", "price": 35.99, "currency": "USD",
       "attributes": {"colour": "silver", "style": ["retro", "minimal"]}}  # fmt: skip
LINES = [
    json.dumps({"facts": MUG, "text": "A gold Brewly mug, 500 ml, only $39.99, with free shipping."}),
    json.dumps({"facts": MUG, "text": "A retro silver Keystone mug, 350 ml, $35.99."}),
    "not json",
    json.dumps({"facts": ["title", "Mug"], "text": "A mug."}),
    json.dumps({"facts": MUG}),
    "",
    json.dumps({"facts": {"price": "cheap"}, "text": "Only $5."}),
    json.dumps({"text": "A mug made of 100% cotton, with a handle."}),  # no facts: every claim unsupported
    json.dumps([1, 2]),
    json.dumps({"facts": {"attributes": "red"}, "text": "A red mug."}),
]


@pytest.fixture
def files(tmp_path):
    copy = tmp_path / "copy.jsonl"
    copy.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    brands = tmp_path / "brands.txt"
    brands.write_text("# catalog brands\nKeystone\nBrewly\n\nWITH\n", encoding="utf-8")
    return copy, brands


def test_json_report_one_object_per_line_and_a_summary(files, capsys):
    copy, brands = files
    assert main([str(copy), "--brands", str(brands), "--json"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_line = {o["line"]: o for o in out if "line" in o}
    flags = {f["span"]: (f["reason"], f["fact"]) for f in by_line[1]["flags"]}
    assert flags == {
        "gold": ("not_in_facts", "colour: silver"),
        "Brewly": ("brand_mismatch", "brand: Keystone"),
        "500 ml": ("numeric_mismatch", "title: Keystone Silver Mug 350 ml"),
        "$39.99": ("numeric_mismatch", "price: 35.99 USD"),
        "free shipping": ("not_in_facts", None),
    }
    assert by_line[2] == {"line": 2, "flags": []}
    assert {f["span"] for f in by_line[8]["flags"]} == {"mug", "100%", "cotton"}  # no facts; "with" is a word
    errors = {n: o["error"] for n, o in by_line.items() if "error" in o}
    assert set(errors) == {3, 4, 5, 7, 9, 10}  # line 6 is blank: skipped, not an error
    assert "not valid JSON" in errors[3]
    assert "'facts' must be an object" in errors[4]
    assert "missing 'text'" in errors[5]
    assert "price must be a number" in errors[7]
    assert "expected a JSON object" in errors[9]
    assert "'facts.attributes' must be an object" in errors[10]
    assert out[-1] == {"summary": {"texts": 3, "flagged": 2, "claims": 14, "unsupported": 8, "errors": 6}}


def test_readable_report_names_line_span_reason_and_fact(files, capsys):
    copy, brands = files
    assert main([str(copy), "--brands", str(brands)]) == 0
    out = capsys.readouterr().out
    assert "line 1: 5 of 6 claims unsupported" in out
    assert "'Brewly': brand_mismatch (brand; facts say brand: Keystone)" in out
    assert "'free shipping': not_in_facts (assurance; the facts say nothing of this kind)" in out
    assert "line 2" not in out  # nothing flagged on line 2
    assert "line 3: error: not valid JSON" in out
    assert out.rstrip().endswith(
        "3 texts checked, 2 with unsupported claims; 8 of 14 claims unsupported; 6 malformed lines; 3 catalog brands"
    )


def test_unusable_input_exits_1_with_a_message(files, tmp_path, capsys):
    copy, _ = files
    assert main([str(tmp_path / "missing.jsonl")]) == 1
    assert "input" in capsys.readouterr().err
    assert main([str(copy), "--brands", str(tmp_path / "missing.txt")]) == 1
    assert "brands file" in capsys.readouterr().err
    bad = tmp_path / "brands.bin"
    bad.write_bytes(b"\xff\xfe\x00bad")
    assert main([str(copy), "--brands", str(bad)]) == 1
    assert "cannot be read as UTF-8" in capsys.readouterr().err


def test_undecodable_bytes_are_reported_on_their_line(tmp_path):
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(json.dumps({"facts": MUG, "text": "A silver mug."}).encode() + b"\n\xff\xfe{not json\n")
    import io

    buf = io.StringIO()
    summary = run(file=copy, as_json=True, out=buf)
    assert summary == {"texts": 1, "flagged": 0, "claims": 2, "unsupported": 0, "errors": 1}
    assert json.loads(buf.getvalue().splitlines()[1])["line"] == 2


def test_parse_line_accepts_missing_fact_keys():
    facts, text = parse_line(json.dumps({"text": "A mug."}))
    assert facts == {} and text == "A mug."


def test_module_and_console_script_run_the_same_code(files):
    copy, brands = files
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "data.check_copy", str(copy), "--brands", str(brands), "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["summary"]["errors"] == 6
    from typer.testing import CliRunner

    from cluster.cli import app

    result = CliRunner().invoke(app, ["data", "check-copy", str(copy), "--brands", str(brands), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.splitlines()[-1]) == json.loads(proc.stdout.splitlines()[-1])
    missing = CliRunner().invoke(app, ["data", "check-copy", str(copy.parent / "nope.jsonl")])
    assert missing.exit_code == 1
