"""Check shop copy against its product facts: which claims do the facts not support, and why.

    python -m data.check_copy copy.jsonl --brands brands.txt        # same as `shopgraph data check-copy`
    python -m data.check_copy copy.jsonl --brands brands.txt --json # one JSON object per input line
    cat copy.jsonl | python -m data.check_copy - --json             # "-" reads standard input

Each input line is one JSON object `{"facts": {"title", "brand", "price", "currency",
"category", "attributes": {...}}, "text": "..."}` (any fact key may be missing; an attribute
value may be a string or a list of strings). `--brands` is a text file with one catalog brand
per line (blank lines and lines starting with `#` are skipped): with it, a brand the copy names
that is not the product's own is flagged. The check is `ml.grounding` (the one the batch job
and serving run), with one compiled brand matcher for the whole file.

Without `--json`: per flagged line, its number and each flag (span, reason, what the facts
say), then a summary. With `--json`: one object per input line, `{"line": n, "flags": [{"span",
"reason", "fact"}]}`, a malformed line as `{"line": n, "error": "..."}`, and last
`{"summary": {"texts", "flagged", "claims", "unsupported", "errors"}}`. A malformed line (bad
JSON, no text, facts not an object) is reported and counted, never dropped; the exit status is
1 only for unusable input (the file or the brands file missing or unreadable).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from ml.grounding import Catalog, catalog_for, check


class LineError(ValueError):
    """One input line that cannot be checked, with the reason a person can act on."""


def parse_line(raw: str) -> tuple[dict[str, Any], str]:
    """(facts, text) of one input line; `LineError` says what is wrong with it."""
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as e:
        raise LineError(f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise LineError(f"expected a JSON object with 'facts' and 'text', got {type(obj).__name__}")
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        raise LineError("missing 'text' (a non-empty string)" if text is None else "'text' must be a non-empty string")
    facts = obj.get("facts", {})
    if not isinstance(facts, dict):
        raise LineError(f"'facts' must be an object (title, brand, price, attributes, ...), got {type(facts).__name__}")
    attributes = facts.get("attributes")
    if attributes is not None and not isinstance(attributes, dict):
        raise LineError(f"'facts.attributes' must be an object of name -> value(s), got {type(attributes).__name__}")
    return facts, text


def check_record(facts: dict[str, Any], text: str, catalog: Catalog) -> dict[str, Any]:
    """The flags of one text: {"flags": [{"span", "reason", "fact", "kind"}], "claims": n}."""
    try:
        result = check(text, facts, catalog=catalog)
    except (ValueError, TypeError) as e:  # facts the checker cannot read (a price that is no number, ...)
        raise LineError(f"facts cannot be read: {e}") from None
    flags = [{"span": c.text, "reason": c.reason, "fact": c.fact, "kind": c.kind} for c in result.unsupported]
    return {"flags": flags, "claims": len(result.claims)}


def check_lines(lines: Iterable[str], catalog: Catalog) -> Iterator[dict[str, Any]]:
    """One record per non-blank input line: {"line", "flags", "claims"} or {"line", "error"}."""
    for n, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            facts, text = parse_line(raw)
            yield {"line": n, **check_record(facts, text, catalog)}
        except LineError as e:
            yield {"line": n, "error": str(e)}


def read_brands(path: Path) -> list[str]:
    """One brand per line; blank lines and `#` comments skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"brands file {path} not found; pass --brands with one brand per line") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"brands file {path} cannot be read as UTF-8 text ({e})") from None
    return [b.strip() for b in lines if b.strip() and not b.lstrip().startswith("#")]


def _open(path: Path) -> TextIO:
    if str(path) == "-":
        return open(sys.stdin.fileno(), encoding="utf-8", errors="replace", closefd=False)
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"input {p} not found; pass a JSONL file with one {{'facts', 'text'}} object per line")
    return p.open(encoding="utf-8", errors="replace")  # an undecodable byte is reported on its line, not fatal


def _readable(record: dict[str, Any]) -> list[str]:
    if "error" in record:
        return [f"line {record['line']}: error: {record['error']}"]
    out = [f"line {record['line']}: {len(record['flags'])} of {record['claims']} claims unsupported"]
    for f in record["flags"]:
        says = f"facts say {f['fact']}" if f["fact"] else "the facts say nothing of this kind"
        out.append(f"  {f['span']!r}: {f['reason']} ({f['kind']}; {says})")
    return out


def run(
    config: Any = None, *, file: Path, brands: Path | None = None, as_json: bool = False, out: TextIO | None = None
) -> dict[str, Any]:
    """Check every line of `file`, print the report to `out` (stdout) and return the summary."""
    out = out or sys.stdout
    catalog = catalog_for(read_brands(brands) if brands else ())
    summary = {"texts": 0, "flagged": 0, "claims": 0, "unsupported": 0, "errors": 0}
    with _open(file) as f:
        for record in check_lines(f, catalog):
            if "error" in record:
                summary["errors"] += 1
            else:
                summary["texts"] += 1
                summary["claims"] += record["claims"]
                summary["unsupported"] += len(record["flags"])
                summary["flagged"] += bool(record["flags"])
            if as_json:
                shown = record if "error" in record else {"line": record["line"], "flags": record["flags"]}
                print(json.dumps(shown, ensure_ascii=False), file=out)
            elif "error" in record or record["flags"]:
                print("\n".join(_readable(record)), file=out)
    if as_json:
        print(json.dumps({"summary": summary}), file=out)
    else:
        print(
            f"{summary['texts']} texts checked, {summary['flagged']} with unsupported claims; "
            f"{summary['unsupported']} of {summary['claims']} claims unsupported; "
            f"{summary['errors']} malformed lines"
            + (f"; {len(catalog)} catalog brands" if len(catalog) else "; no --brands: other brands are not checked"),
            file=out,
        )
    return summary


def _options(parser) -> None:
    parser.add_argument(
        "file", type=Path, help="JSONL: one {'facts': {...}, 'text': '...'} object per line ('-': standard input)."
    )
    parser.add_argument("--brands", type=Path, default=None, help="Text file, one catalog brand per line.")
    parser.add_argument("--json", dest="as_json", action="store_true", help="One JSON object per input line.")


def main(argv: list[str] | None = None) -> int:
    """`python -m data.check_copy` and `shopgraph data check-copy`."""
    from core.cli import stage_main

    return stage_main(
        argv,
        run,
        prog="python -m data.check_copy",
        description=__doc__,
        options=_options,
        show=lambda summary: None,  # the report is printed as it goes
        input_errors=(FileNotFoundError, ValueError),
    )


if __name__ == "__main__":
    sys.exit(main())
