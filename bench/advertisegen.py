"""Chinese product copy on AdvertiseGen dev: BLEU-4 and ROUGE-L against the human ad copy, and
the unsupported-claim rate, for the Chinese template and (time-boxed) the embedded generator.

    .venv/bin/python bench/advertisegen.py [--data ../shared/data/advertisegen-dev/advertisegen_dev300.json] \\
        [--models-dir models] [--generator-rows 30] [--max-tokens 256] [--skip-generator]

Each row's `content` (类型#裤*风格#英伦*风格#简约) becomes the product's facts (a repeated key a
list value), as `bench/grounding.py` reads it; the reference is its `summary`. Systems:

- `template`: `serve.content.template_page` (Chinese for Chinese facts): what a shopper reads when
  generation is unavailable or the generator does not write Chinese. All rows.
- `generator`: the configured embedded generator (`models.generator`, SmolLM2-135M + shopgraph's
  adapter) with serving's page prompt (`ml.prompts.pdp_messages`), greedy HF `generate` on CPU,
  the first `--generator-rows` rows. `raw`: the description it wrote (its JSON parsed, else the
  text); `served`: what serving would show after its gates (`serve.generator.ground_page`; the
  template where they reject it). `zh_share`: outputs whose text is Chinese (`core.facts.language_of`).
- `reference`: the human copy itself, for the unsupported-claim rate only (much of it states what
  these thin facts lack, so this is the checker's base rate on human copy, not an error rate).

Metrics as the AdvertiseGen literature reports them, on characters: `bleu4` is sacrebleu's corpus
BLEU with tokenize="zh" (each Chinese character a token); `rouge_l` the mean character-level
ROUGE-L F1 (LCS) x100; `bleu4_sentence` the mean sentence BLEU-4 on characters with NLTK's
smoothing method 3, the definition ChatGLM-6B's P-tuning v2 script uses (its ROUGE is on jieba
words, not installed here). Anchor: ChatGLM-6B + P-tuning v2, BLEU-4 8.10 / ROUGE-L 24.97.
`unsupported`: share of texts with at least one claim `ml.grounding.check` finds unsupported by the
facts, and claims per text. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import unicodedata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DEFAULT_DATA = REPO.parent / "shared" / "data" / "advertisegen-dev" / "advertisegen_dev300.json"
ANCHOR = {"model": "ChatGLM-6B + P-tuning v2", "bleu4": 8.10, "rouge_l": 24.97}


def load_rows(path: Path) -> list[dict[str, Any]]:
    """[{"row", "facts", "reference"}]; a malformed line raises ValueError naming it."""
    out = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            content, summary = obj["content"], obj["summary"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{n}: not an AdvertiseGen row with content and summary ({e})") from e
        attributes: dict[str, list[str]] = {}
        for pair in content.split("*"):
            key, _, value = pair.partition("#")
            if key and value:
                attributes.setdefault(key, []).append(value)
        facts = {"attributes": {k: v[0] if len(v) == 1 else v for k, v in attributes.items()}}
        out.append({"row": n, "facts": facts, "reference": unicodedata.normalize("NFKC", summary)})
    return out


def _lcs(a: str, b: str) -> int:
    prev = [0] * (len(b) + 1)
    for ch in a:
        cur = [0]
        for j, other in enumerate(b):
            cur.append(prev[j] + 1 if ch == other else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(hyp: str, ref: str) -> float:
    """Character-level ROUGE-L F1 (whitespace ignored)."""
    h, r = "".join(hyp.split()), "".join(ref.split())
    if not h or not r:
        return 0.0
    lcs = _lcs(h, r)
    if lcs == 0:
        return 0.0
    p, rec = lcs / len(h), lcs / len(r)
    return 2 * p * rec / (p + rec)


def scores(hyps: list[str], refs: list[str]) -> dict[str, float]:
    import sacrebleu
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    smooth = SmoothingFunction().method3
    sentence = [
        sentence_bleu([list(r)], list(h), smoothing_function=smooth) if h.strip() else 0.0
        for h, r in zip(hyps, refs, strict=True)
    ]
    return {
        "bleu4": round(sacrebleu.corpus_bleu(hyps, [refs], tokenize="zh").score, 2),
        "rouge_l": round(100 * sum(rouge_l(h, r) for h, r in zip(hyps, refs, strict=True)) / len(hyps), 2),
        "bleu4_sentence": round(100 * sum(sentence) / len(sentence), 2),
    }


def unsupported(texts: list[str], facts: list[dict]) -> dict[str, Any]:
    from ml.grounding import check

    claims = [len(check(t, f).unsupported) if t.strip() else 0 for t, f in zip(texts, facts, strict=True)]
    return {
        "texts": len(texts),
        "with_unsupported": round(sum(c > 0 for c in claims) / max(1, len(texts)), 4),
        "claims_per_text": round(sum(claims) / max(1, len(texts)), 3),
    }


def template_figures(rows: list[dict]) -> dict[str, Any]:
    from core.facts import language_of
    from serve.content import template_page

    hyps = [template_page(r["facts"])["description"] for r in rows]
    return {
        "rows": len(rows),
        **scores(hyps, [r["reference"] for r in rows]),
        "zh_share": round(sum(language_of(h) == "zh" for h in hyps) / len(hyps), 4),
        "unsupported": unsupported(hyps, [r["facts"] for r in rows]),
        "example": hyps[0],
    }


def generator_figures(rows: list[dict], model_dir: Path, max_tokens: int, batch: int) -> dict[str, Any]:
    from core.facts import language_of
    from ml.llm import generate_hf
    from ml.prompts import pdp_messages, repair_pdp
    from serve.content import template_page
    from serve.generator import ground_page

    started = time.perf_counter()
    raw: list[str] = []
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        raw += generate_hf(model_dir, [pdp_messages(r["facts"]) for r in chunk], max_tokens=max_tokens)
    elapsed = time.perf_counter() - started
    refs, facts = [r["reference"] for r in rows], [r["facts"] for r in rows]
    parsed = [repair_pdp(t) for t in raw]
    described = [p["description"] if p is not None else t for p, t in zip(parsed, raw, strict=True)]
    served, sources = [], []
    for t, f in zip(raw, facts, strict=True):
        page = ground_page(t, f, known_brands=[])
        if page.get("sections"):
            served.append(page["sections"]["description"])
            sources.append("generated")
        else:
            served.append(template_page(f)["description"])
            sources.append(f"template:{page.get('why')}")
    return {
        "model_dir": model_dir.name,
        "rows": len(rows),
        "max_tokens": max_tokens,
        "seconds": round(elapsed, 1),
        "valid_json": round(sum(p is not None for p in parsed) / len(rows), 4),
        "raw": {
            **scores(described, refs),
            "zh_share": round(sum(language_of(d) == "zh" for d in described) / len(rows), 4),
            "empty": round(sum(not d.strip() for d in described) / len(rows), 4),
            "unsupported": unsupported(described, facts),
        },
        "served": {
            **scores(served, refs),
            "generated_share": round(sources.count("generated") / len(rows), 4),
            "sources": {s: sources.count(s) for s in sorted(set(sources))},
            "unsupported": unsupported(served, facts),
        },
        "examples": [{"row": r["row"], "raw": t[:300]} for r, t in zip(rows[:3], raw[:3], strict=True)],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="advertisegen_dev300.json (JSON lines).")
    parser.add_argument("--models-dir", type=Path, default=REPO / "models", help="Where the embedded models are.")
    parser.add_argument("--generator", default=None, help="Generator name or directory; default: models.generator.")
    parser.add_argument("--generator-rows", type=int, default=30, help="Rows the generator writes (CPU, time-boxed).")
    parser.add_argument("--max-tokens", type=int, default=256, help="New tokens per generated page.")
    parser.add_argument("--batch", type=int, default=10, help="Rows per HF generate batch.")
    parser.add_argument("--skip-generator", action="store_true", help="Template and reference figures only.")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"error: {args.data} not found; pass --data with advertisegen_dev300.json", file=sys.stderr)
        return 1
    if args.generator_rows < 1 or args.max_tokens < 1 or args.batch < 1:
        print("error: --generator-rows, --max-tokens and --batch must be positive", file=sys.stderr)
        return 2
    try:
        rows = load_rows(args.data)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    report: dict[str, Any] = {
        "data": args.data.name,
        "rows": len(rows),
        "anchor": ANCHOR,
        "template": template_figures(rows),
        "reference": {"unsupported": unsupported([r["reference"] for r in rows], [r["facts"] for r in rows])},
    }
    if not args.skip_generator:
        from core.config import load_config
        from ml.base_model import check_generator_dir, resolve_generator_dir

        name = args.generator or load_config().models.generator
        model_dir = check_generator_dir(resolve_generator_dir(args.models_dir, name))
        report["generator"] = generator_figures(rows[: args.generator_rows], model_dir, args.max_tokens, args.batch)
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
