"""Evaluate the generator LM on held-out products: base vs fine-tuned, one report.

    shopgraph train eval-generator --config configs/local.yaml
    python -m train.eval_generator --config configs/local.yaml          # ray job submit entry point

For each model (the base `models.generator` and the fine-tuned export under
`<artifacts>/models/generator`) and each task, on the corpus examples with `split == "eval"`
(products never trained on):

- PDP (facts -> JSON): generated with vLLM structured outputs constrained to `PDP_SCHEMA`
  (`train.generator.eval.guided_json`); JSON validity = parses with exactly the three keys.
  BLEU (sacrebleu, `zh` tokenizer so Chinese is split into characters) and ROUGE-L
  (rouge-score, with a CJK-aware tokenizer: its default drops non-ASCII text) of the generated
  description against the catalog's human-written description. "JSON complete" = the raw
  output parses; "JSON valid" = it parses after closing an answer the token budget cut off
  (`ml.prompts.repair_pdp`; under structured outputs every output is a valid prefix), which
  is what serving and batch generation show.
- reasons (profile + facts -> one sentence): BLEU / ROUGE-L against the templated reference
  (grounded by construction but not human-written; see data/corpus.py).
- both: distinct-2 over all outputs of the model, and the grounding check (ml/grounding.py):
  unsupported claims per output and overall, with the catalog's brands as known brands (and,
  for reasons, the example's shopper profile, which may be quoted but grounds no product fact).

Writes `<artifacts>/reports/generator/{eval.json, eval.md, eval.html}`.
"""

from __future__ import annotations

import gc
import html
import json
import re
import time
from pathlib import Path
from typing import Any

from ml.grounding import check_batch, pdp_visible_text
from ml.prompts import parse_pdp, repair_pdp

_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]|[^\W_]+", re.UNICODE)


def tokens(text: str) -> list[str]:
    """Words, with each CJK character a token (CJK has no spaces)."""
    return _TOKEN.findall(text.lower())


class _CjkTokenizer:
    """rouge-score's tokenizer interface (its default keeps only [a-z0-9])."""

    def tokenize(self, text: str) -> list[str]:
        return tokens(text)


def distinct_n(texts: list[str], n: int = 2) -> float:
    grams = [tuple(t[i : i + n]) for t in map(tokens, texts) for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def bleu_rouge(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    import sacrebleu
    from rouge_score import rouge_scorer

    if not hypotheses:
        return {"bleu": 0.0, "rougeL": 0.0}
    bleu = sacrebleu.corpus_bleu(hypotheses, [references], tokenize="zh").score
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_CjkTokenizer())
    rouge = sum(scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hypotheses, references, strict=True)) / len(
        hypotheses
    )
    return {"bleu": bleu, "rougeL": rouge}


def load_eval_examples(corpora_dir: str | Path, tasks: list[str], limit: int) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        path = Path(corpora_dir) / f"{task}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; run `shopgraph data corpus` first")
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        # references must be human-written (pdp) or at least present (reasons)
        out[task] = [r for r in rows if r["split"] == "eval" and r.get("has_reference")][:limit]
    if not any(out.values()):
        raise ValueError(
            f"no held-out (split == 'eval') examples with a reference in {corpora_dir}; raise data.corpus.eval_fraction and rerun `shopgraph data corpus`"
        )
    return out


def known_brands(corpora_dir: str | Path) -> list[str]:
    path = Path(corpora_dir) / "pdp.jsonl"
    if not path.is_file():
        return []
    brands = {
        json.loads(json.loads(line)["facts"]).get("brand")
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    }
    return sorted(b for b in brands if b)


def score_task(task: str, outputs: list[str], examples: list[dict[str, Any]], brands: list[str]) -> dict[str, Any]:
    facts = [ex["facts"] for ex in examples]
    if task == "pdp":
        raw_valid = [parse_pdp(o) is not None for o in outputs]
        parsed = [repair_pdp(o) for o in outputs]  # what serving shows: a cut-off answer closed
        hyps = [p["description"] if p else o for p, o in zip(parsed, outputs, strict=True)]
        refs = [ex["reference"]["description"] or "" for ex in examples]
        visible = [pdp_visible_text(p) if p else o for p, o in zip(parsed, outputs, strict=True)]
        validity: float | None = sum(p is not None for p in parsed) / len(parsed) if parsed else 0.0
        raw_validity: float | None = sum(raw_valid) / len(raw_valid) if raw_valid else 0.0
    else:
        hyps, refs, visible, validity, raw_validity = outputs, [ex["reference"] for ex in examples], outputs, None, None
    # a reason may cite the shopper's profile (brands, item names); numbers must be this product's
    grounding = check_batch(visible, facts, known_brands=brands, profiles=[ex.get("profile") for ex in examples])
    return {
        "examples": len(examples),
        **bleu_rouge(hyps, refs),
        "distinct_2": distinct_n(visible),
        "json_validity": validity,
        "json_complete": raw_validity,
        "unsupported_rate": grounding["overall_rate"],
        "mean_output_unsupported_rate": grounding["mean_output_rate"],
        "outputs_with_unsupported": grounding["outputs_with_unsupported"],
        "per_output": [
            {"id": ex["id"], "output": o, "unsupported": g["unsupported"], "rate": g["rate"]}
            for ex, o, g in zip(examples, outputs, grounding["per_output"], strict=True)
        ],
    }


def generate_all(
    model_dir: Path,
    engine_cfg,
    examples: dict[str, list[dict[str, Any]]],
    *,
    max_new_tokens: int,
    guided_json: bool,
    reason_max_new_tokens: int | None = None,
) -> dict[str, list[str]]:
    """One vLLM engine per model; PDP prompts constrained to the JSON schema."""
    from vllm import SamplingParams

    from ml.prompts import build_structured_vllm, pdp_structured_outputs

    llm = build_structured_vllm(model_dir, engine_cfg)
    try:
        out = {}
        for task, rows in examples.items():
            if not rows:
                out[task] = []
                continue
            structured = pdp_structured_outputs() if task == "pdp" and guided_json else None
            budget = reason_max_new_tokens if task == "reasons" and reason_max_new_tokens else max_new_tokens
            params = SamplingParams(max_tokens=budget, temperature=0.0, seed=0, structured_outputs=structured)
            results = llm.chat(
                [r["messages"][:-1] if r["messages"][-1]["role"] == "assistant" else r["messages"] for r in rows],
                params,
                use_tqdm=False,
            )
            out[task] = [r.outputs[0].text.strip() for r in results]
        return out
    finally:
        del llm
        gc.collect()


def evaluate_generator(
    cfg,
    *,
    model_dir: str | Path | None = None,
    corpora_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    from core.layout import ArtifactLayout
    from core.manifest import verify_dir
    from train.generator import check_setup

    layout = ArtifactLayout(cfg.artifacts.root)
    ev = cfg.train.generator.eval
    corpora_dir = Path(corpora_dir or layout.corpora)
    tuned = Path(model_dir or layout.generator)
    manifest = verify_dir(tuned)  # raises with a clear message when there is no committed export
    examples = load_eval_examples(corpora_dir, cfg.train.generator.tasks, ev.max_examples)
    brands = known_brands(corpora_dir)
    models = {"fine_tuned": tuned}
    if ev.compare_base:
        models = {"base": check_setup(cfg), **models}
    report: dict[str, Any] = {
        "corpora": str(corpora_dir),
        "model_version": manifest.get("meta", {}).get("model_version"),
        "settings": ev.model_dump(),
        "models": {},
    }
    for name, path in models.items():
        started = time.perf_counter()
        outputs = generate_all(
            path,
            cfg.models.engine,
            examples,
            max_new_tokens=ev.max_new_tokens,
            guided_json=ev.guided_json,
            reason_max_new_tokens=ev.reason_max_new_tokens,
        )
        seconds = time.perf_counter() - started  # engine start + generation of every task
        report["models"][name] = {"path": str(path), "generate_seconds": seconds,
                                  "tasks": {task: score_task(task, outputs[task], rows, brands) for task, rows in examples.items() if rows}}  # fmt: skip
    write_report(Path(out_dir or f"{layout.reports}/generator"), report)
    return report


_COLUMNS = [("bleu", "BLEU", "{:.2f}"), ("rougeL", "ROUGE-L", "{:.3f}"), ("distinct_2", "distinct-2", "{:.3f}"), ("json_validity", "JSON valid", "{:.1%}"), ("json_complete", "JSON complete", "{:.1%}"),
            ("unsupported_rate", "unsupported claims", "{:.1%}"), ("outputs_with_unsupported", "outputs w/ unsupported", "{:.1%}")]  # fmt: skip


def summary_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, model in report["models"].items():
        for task, m in model["tasks"].items():
            cells = [fmt.format(m[key]) if m.get(key) is not None else "–" for key, _, fmt in _COLUMNS]
            rows.append([name, task, str(m["examples"]), *cells])
    return rows


def write_report(out: Path, report: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    header = ["model", "task", "n", *(title for _, title, _ in _COLUMNS)]
    rows = summary_rows(report)
    md = ["# Generator LM — held-out products", "", f"model_version: {report.get('model_version')}", "",
          "| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows), "",
          "PDP BLEU/ROUGE-L: generated description vs the human-written one; reasons: vs the templated reference."]  # fmt: skip
    (out / "eval.md").write_text("\n".join(md) + "\n")
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    (out / "eval.html").write_text(
        "<!doctype html><meta charset=utf-8><title>shopgraph generator eval</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}</style>"
        f"<h1>Generator LM — held-out products</h1><table><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in header)}</tr>{cells}</table>"
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m train.eval_generator` (a `ray job submit` / RayJob entry point) and `shopgraph train eval-generator`."""
    from core.cli import stage_main

    def options(parser) -> None:
        parser.add_argument(
            "--model-dir", default=None, help="Fine-tuned model dir (default: <artifacts>/models/generator)."
        )

    return stage_main(
        argv,
        lambda cfg, model_dir: evaluate_generator(cfg, model_dir=model_dir),
        prog="python -m train.eval_generator",
        description=__doc__,
        options=options,
        show=lambda report: "\n".join("  ".join(row) for row in summary_rows(report)),
        hint="; train one first with `shopgraph train generator` (or pass --model-dir)",
    )


if __name__ == "__main__":
    import sys

    sys.exit(main())
