"""Labelled reviews for training and evaluating the sentiment model (`ml.sentiment`).

    from data.labelled_reviews import read_labelled
    reviews, rejected = read_labelled("online_shopping_10_cats.csv")   # CSV: cat,label,review
    reviews, rejected = read_labelled("amazon_cells_labelled.txt")     # text: sentence<TAB>label

A row without text or with a label other than 0/1 is not kept and not lost: it is returned in
`rejected` with its line number and reason. Review text is scrubbed of personal data
(`core.pii`) as it is read, as ingest scrubs review text.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from core.pii import scrub


@dataclass(frozen=True)
class LabelledReview:
    text: str
    label: int  # 1 positive, 0 negative
    category: str | None = None
    line: int = 0


def _label(value: str) -> int:
    value = (value or "").strip()
    if value not in ("0", "1"):
        raise ValueError(f"label {value!r} is not 0 or 1")
    return int(value)


def read_labelled(path: str | Path) -> tuple[list[LabelledReview], list[tuple[int, str]]]:
    """(kept reviews, [(line, reason)] of rows that could not be kept)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such labelled review file")
    kept: list[LabelledReview] = []
    rejected: list[tuple[int, str]] = []

    def add(line: int, text: str | None, label: str, category: str | None) -> None:
        try:
            value = _label(label)
            if not (text or "").strip():
                raise ValueError("empty review text")
        except ValueError as e:
            rejected.append((line, str(e)))
            return
        kept.append(LabelledReview(scrub(text.strip()), value, category or None, line))

    with path.open(encoding="utf-8", newline="") as f:
        if path.suffix == ".csv":
            reader = csv.DictReader(f)
            missing = {"label", "review"} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(
                    f"{path}: needs the columns label and review (and optionally cat), lacks {sorted(missing)}"
                )
            for n, row in enumerate(reader, start=2):
                add(n, row.get("review"), row.get("label") or "", row.get("cat"))
        else:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                text, sep, label = line.rstrip("\r\n").rpartition("\t")
                if not sep:
                    rejected.append((n, "no tab between the sentence and its label"))
                    continue
                add(n, text, label, None)
    if not kept:
        raise ValueError(f"{path}: no labelled review could be read ({len(rejected)} rejected)")
    return kept, rejected
