"""The evaluation harness: every trained model of an artifact root, measured in one report.

    shopgraph train evaluate --config configs/local.yaml [--parts recommender,ranker,generator,serving]
    shopgraph train evaluate --online [--since 2026-12-01T00:00:00Z] [--window 24h]   # served answers
    python -m cluster.evaluate --config configs/local.yaml      # ray job submit / RayJob entry point
    python -m train.evaluate --config configs/local.yaml        # the recommender part alone

Parts, each skipped with a line that says what to run when its model has not been trained:

- **recommender**: the exported SASRec and the popularity / co-occurrence baselines under both
  protocols, sampled and full ranking, on the test targets (`train.evaluate`); its training curves;
- **ranker**: the exported ranker's order against the retrieval order on the same candidates,
  test targets (`train.ranker.heldout_metrics`, the evaluation that ends ranker training);
- **generator**: BLEU, ROUGE-L, distinct-2, JSON validity and the unsupported-claim rate of the
  fine-tuned generator (`<artifacts>/models/generator`, never the base model) on
  `train.evaluation.generator_max_examples` held-out examples per task (`train.eval_generator`);
- **serving**: p50/p99 latency of recommendation requests (`with_reasons` off, so the generator is
  not called) through the retrieval -> ranking -> rules path of the Serve graph, in-process
  (`serve.recommend`), no HTTP and no Ray: what the models and rules cost, not the transport.

`--online` evaluates the served answers instead (`core.store.evaluation`): impressions, clicks,
carts and purchases that shoppers sent through POST /v1/events, joined to the items each answer
showed, give CTR and conversion per recommender version, generator version and reason source;
printed as JSON, nothing written.

Writes `<artifacts>/reports/evaluation/`: metrics.json (every part, or its `{"skipped": why}`),
report.html with its figures, and generator/ (that part's per-output report). It lives in
`cluster/`, the top layer, because it composes `train/` and `serve/`, which never import each other.
"""

from __future__ import annotations

import html
import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PARTS = ("recommender", "ranker", "generator", "serving")
REPORT_DIR = "evaluation"  # under <artifacts>/reports


class EvaluationInputError(ValueError):
    """A request the harness cannot run (unknown part, no artifact root); nothing was evaluated."""


class SkipPart(Exception):  # noqa: N818 - a control-flow signal, not an error
    """This part's model (or data) is not there; the message says what to run."""


def parse_parts(text: str | None) -> list[str]:
    """`"recommender,ranker"` -> the parts in harness order; unknown names are an error."""
    if text is None or not text.strip():
        return list(PARTS)
    names = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in names if p not in PARTS]
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise EvaluationInputError(f"unknown part {names} in --parts; choose from {','.join(PARTS)} (comma-separated)")
    return [p for p in PARTS if p in names]


def artifacts_dir(cfg) -> Path:
    from core.runtime import local_dir

    root = local_dir(cfg.artifacts.root)  # a clear ValueError for remote URIs
    if not root.is_dir():
        raise EvaluationInputError(
            f"artifacts root {root} does not exist; point --set artifacts.root at the directory the pipeline wrote "
            "(or build one: `shopgraph demo` runs every stage)"
        )
    return root


def _require(path: Path, what: str, command: str) -> dict[str, Any]:
    """The manifest of a committed export, or SkipPart naming the command that makes it."""
    from core.manifest import IncompleteDirError, verify_dir

    if not path.is_dir():
        raise SkipPart(f"no {what} at {path}: run `{command}`")
    try:
        return verify_dir(path)
    except IncompleteDirError as e:
        raise SkipPart(f"incomplete {what} at {path} ({e}): rerun `{command}`") from None


# ----------------------------------------------------------------------------- parts


def recommender_part(cfg, layout) -> dict[str, Any]:
    from train.recommender import evaluate_exported

    export = Path(layout.recommender)
    _require(export, "recommender", "shopgraph train recommender")
    results = evaluate_exported(cfg)  # also refreshes reports/recommender, as before the harness
    trained = export / "metrics.json"
    curves = json.loads(trained.read_text()).get("curves", []) if trained.is_file() else []
    return {"results": results, "curves": curves}


def ranker_part(cfg, layout) -> dict[str, Any]:
    from train.ranker import evaluate_exported_ranker

    _require(Path(layout.ranker), "ranker", "shopgraph train ranker")
    _require(
        Path(layout.recommender), "recommender (the ranker reorders its candidates)", "shopgraph train recommender"
    )
    metrics = evaluate_exported_ranker(cfg)
    metrics["ndcg@10_lift"] = metrics["ranker"].get("ndcg@10", 0.0) - metrics["retrieval_order"].get("ndcg@10", 0.0)
    return metrics


def generator_part(cfg, layout, out_dir: Path) -> dict[str, Any]:
    from train.eval_generator import evaluate_generator

    export = Path(layout.generator)
    manifest = _require(export, "fine-tuned generator", "shopgraph train generator")
    gen = cfg.train.generator
    small = gen.eval.model_copy(
        update={"max_examples": cfg.train.evaluation.generator_max_examples, "compare_base": False}
    )  # fine-tuned only: that is what "trained" means
    sized_train = cfg.train.model_copy(update={"generator": gen.model_copy(update={"eval": small})})
    sized = cfg.model_copy(update={"train": sized_train})
    report = evaluate_generator(sized, model_dir=export, out_dir=out_dir / "generator")
    tuned = report["models"]["fine_tuned"]
    tasks = {task: {k: v for k, v in m.items() if k != "per_output"} for task, m in tuned["tasks"].items()}
    return {
        "model_dir": str(export),
        "model_version": report.get("model_version") or manifest.get("meta", {}).get("model_version"),
        "max_examples_per_task": small.max_examples,
        "generate_seconds": round(tuned["generate_seconds"], 1),
        "tasks": tasks,
        "per_output_report": str(out_dir / "generator" / "eval.json"),
    }


def _serving_inputs_missing(cfg, layout) -> list[str]:
    """What the in-process graph reads besides the two models, as `path (command)` for each missing piece."""
    from core.manifest import IncompleteDirError, verify_dir
    from core.runtime import local_dir

    missing = []
    committed = [
        (layout.products, "shopgraph data prepare"),
        (layout.events, "shopgraph data prepare"),
        (layout.embeddings, "shopgraph data embed-products"),
        (layout.index, "shopgraph data index"),
    ]
    for uri, command in committed:
        try:
            verify_dir(local_dir(uri))
        except IncompleteDirError:
            missing.append(f"{local_dir(uri)} (`{command}`)")
    split_files = [
        (layout.id_maps, "users.parquet"),
        (layout.id_maps, "items.parquet"),
        (layout.sequences, "sequences.parquet"),
        (layout.features, "item_popularity.parquet"),
    ]
    for uri, name in split_files:
        if not (local_dir(uri) / name).is_file():
            missing.append(f"{local_dir(uri) / name} (`shopgraph data split`)")
    return missing


def request_mix(catalog, n: int, seed: int, k: int) -> list[dict[str, Any]]:
    """`n` request bodies as POST /v1/recommendations gets them, `with_reasons` off: 60% known users,
    20% unknown users (cold start), 20% anonymous sessions of 1-5 recent items; seeded."""
    rng = random.Random(seed)
    known = sorted(u for u, h in catalog.user_history.items() if len(h))
    products = sorted(catalog.products)
    n_known = round(0.6 * n) if known else 0
    n_unknown = round(0.2 * n) if products else n - n_known
    bodies = [{"user_id": rng.choice(known), "recent_items": [], "k": k, "with_reasons": False} for _ in range(n_known)]
    bodies += [{"user_id": f"evaluate-new-user-{i}", "recent_items": [], "k": k, "with_reasons": False}
               for i in range(n_unknown)]  # fmt: skip
    bodies += [{"user_id": None, "recent_items": rng.sample(products, rng.randint(1, min(5, len(products)))), "k": k,
                "with_reasons": False} for _ in range(n - n_known - n_unknown)]  # fmt: skip
    rng.shuffle(bodies)
    return bodies


def latency_stats(seconds: list[float]) -> dict[str, float]:
    import numpy as np

    a = np.asarray(seconds, dtype=np.float64) * 1000
    q = np.percentile(a, [50, 90, 99])
    return {"n": int(len(a)), "mean_ms": round(float(a.mean()), 3), "p50_ms": round(float(q[0]), 3),
            "p90_ms": round(float(q[1]), 3), "p99_ms": round(float(q[2]), 3),
            "max_ms": round(float(a.max()), 3)}  # fmt: skip


def serving_part(cfg, layout) -> dict[str, Any]:
    """Time the recommendation path of the Serve graph in-process: history lookup, retrieval
    (SASRec user vector + FAISS, text neighbours for new items), ranking and business rules, with
    the candidate count and exclusions the ingress uses (serve/app.py `Ingress._recommend`)."""
    _require(Path(layout.recommender), "recommender", "shopgraph train recommender")
    _require(Path(layout.ranker), "ranker", "shopgraph train ranker")
    missing = _serving_inputs_missing(cfg, layout)
    if missing:
        raise SkipPart(f"the serving graph needs data this root lacks: {'; '.join(missing)}")

    from serve.catalog import load_catalog
    from serve.recommend import RankerCore, RetrieverCore
    from serve.schemas import Filters

    ev = cfg.train.evaluation
    catalog = load_catalog(cfg)
    retriever, ranker = RetrieverCore(cfg, catalog), RankerCore(cfg, catalog)
    default_filters = Filters().model_dump()

    def recommend(body: dict[str, Any]) -> list[str]:
        n = min(max(body["k"] * 3, 50), 300)  # what the ingress asks the retriever for
        history, unknown = retriever.history_of(body["user_id"], body["recent_items"])
        cands = retriever.retrieve_batch([history], [unknown], n)[0]
        filters = {**default_filters, "exclude": sorted(set(body["recent_items"]))}
        return [s.product_id for s in ranker.rank(body["user_id"], history, cands, body["k"], filters)]

    bodies = request_mix(catalog, ev.serving_warmup + ev.serving_requests, cfg.train.seed, ev.serving_k)
    timings, short = [], 0
    for i, body in enumerate(bodies):
        started = time.perf_counter()
        items = recommend(body)
        elapsed = time.perf_counter() - started
        if i >= ev.serving_warmup:
            timings.append(elapsed)
            short += len(items) < body["k"]
    generator_dir = Path(layout.generator)
    return {
        "path": "in-process retrieval -> ranking -> rules (serve.recommend), no HTTP, no Ray",
        "requests": ev.serving_requests,
        "warmup": ev.serving_warmup,
        "k": ev.serving_k,
        "mix": "60% known users, 20% unknown users, 20% anonymous sessions; with_reasons=false",
        "generator": "not called (with_reasons=false)"
        + ("" if generator_dir.is_dir() else f"; no fine-tuned generator at {generator_dir}"),
        "latency": latency_stats(timings),
        "responses_short_of_k": short,
        "samples_ms": [round(t * 1000, 3) for t in timings],
    }


# ----------------------------------------------------------------------------- harness


def summary_line(part: str, result: dict[str, Any]) -> str:
    """One console line per part: its headline numbers, or why it was skipped."""
    if "skipped" in result:
        return f"{part}: skipped: {result['skipped']}"
    if part == "recommender":
        res = result["results"]
        sampled = next((p for p in next(iter(res.values())) if p.startswith("sampled")), None)
        cells = [f"{name} full NDCG@10 {r['full'].get('ndcg@10', float('nan')):.4f}" for name, r in res.items()]
        if sampled:
            hr = res.get("sasrec", {}).get(sampled, {}).get("hr@10", float("nan"))
            cells.append(f"sasrec {sampled} HR@10 {hr:.4f}")
        return f"{part}: " + ", ".join(cells)
    if part == "ranker":
        return (f"{part}: NDCG@10 {result['ranker'].get('ndcg@10', float('nan')):.4f} vs retrieval order "
                f"{result['retrieval_order'].get('ndcg@10', float('nan')):.4f} on {result['users']} users, "
                f"{result['candidates']} candidates (recall {result['recall_at_candidates']:.3f})")  # fmt: skip
    if part == "generator":
        cells = [f"{task} BLEU {m['bleu']:.2f} ROUGE-L {m['rougeL']:.3f} distinct-2 {m['distinct_2']:.3f} "
                 f"unsupported {m['unsupported_rate']:.1%} (n={m['examples']})"
                 for task, m in result["tasks"].items()]  # fmt: skip
        return f"{part}: " + "; ".join(cells)
    lat = result["latency"]
    return f"{part}: p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms over {lat['n']} requests (k={result['k']})"


def run_evaluation(cfg, parts: list[str] | None = None, *, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the requested parts (all by default), write metrics.json + report.html, return the metrics.

    A part whose model is missing is recorded as `{"skipped": why}`; any other failure raises.
    """
    from core.layout import ArtifactLayout
    from core.runtime import local_dir

    parts = list(PARTS) if parts is None else parse_parts(",".join(parts))
    root = artifacts_dir(cfg)
    layout = ArtifactLayout(cfg.artifacts.root)
    out_dir = local_dir(layout.reports) / REPORT_DIR
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "recommender": lambda: recommender_part(cfg, layout),
        "ranker": lambda: ranker_part(cfg, layout),
        "generator": lambda: generator_part(cfg, layout, out_dir),
        "serving": lambda: serving_part(cfg, layout),  # last: the serving cores set torch to one thread
    }
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    metrics: dict[str, Any] = {"artifacts": str(root), "parts": parts, "created_at": created}
    for part in PARTS:
        if part not in parts:
            metrics[part] = {"skipped": f"not requested (--parts {','.join(parts)})"}
            continue
        started = time.perf_counter()
        try:
            result = runners[part]()
            result["seconds"] = round(time.perf_counter() - started, 2)
        except SkipPart as e:
            result = {"skipped": str(e)}
        metrics[part] = result
        echo(summary_line(part, result))
    write_report(out_dir, metrics)
    echo(f"wrote {out_dir / 'metrics.json'} and {out_dir / 'report.html'}")
    return metrics


def online_evaluation(cfg, since_ms: int | None = None, window_ms: int | None = None) -> dict[str, Any]:
    """The online evaluation report (`core.store.evaluation`) of the online database: items served
    in [since, since + window), [now - window, now] without --since, [since, now] without --window;
    the window defaults to online.evaluation.window. Read only: nothing is written."""
    from sqlalchemy import inspect

    from core.store import database_url, make_engine
    from core.store.evaluation import online_report
    from core.values import as_duration_ms

    now = int(time.time() * 1000)
    if since_ms is None:
        window_ms = window_ms or as_duration_ms(cfg.online.evaluation.window, "online.evaluation.window")
        since_ms, until_ms = now - window_ms, now + 1
    else:
        until_ms = since_ms + window_ms if window_ms else now + 1
        if since_ms >= until_ms:
            raise EvaluationInputError(
                "--since is in the future: nothing was served after it yet; give an earlier time"
            )
    engine = make_engine(database_url(cfg), cfg.online.password_env)
    try:
        if not inspect(engine).has_table("served_items"):
            raise EvaluationInputError(
                f"the online database {engine.url.render_as_string(hide_password=True)} has no served_items table: "
                "the serving app creates it when it starts (online.enabled); check online.database_url"
            )
        attribution_ms = as_duration_ms(
            cfg.online.evaluation.attribution_window, "online.evaluation.attribution_window"
        )
        report = online_report(engine, since_ms, until_ms, attribution_ms)
    finally:
        engine.dispose()
    return {"online": report}


def evaluated_parts(metrics: dict[str, Any]) -> list[str]:
    return [p for p in PARTS if p in metrics and "skipped" not in metrics[p]]


# ----------------------------------------------------------------------------- report


def _figure(path: Path, draw: Callable[[Any], None], size: tuple[float, float] = (6.4, 3.2)) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    draw(ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f'<img src="{html.escape(path.name)}" alt="{html.escape(path.stem)}">'


def _bars(ax, groups: list[str], series: dict[str, list[float]], ylabel: str) -> None:
    import numpy as np

    x = np.arange(len(groups))
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name)
        ax.bar_label(bars, fmt="%.3f", fontsize="x-small")
    ax.set_xticks(x, groups)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="small")


def _metric_keys(metrics: dict[str, Any]) -> list[str]:
    """hr@5, hr@10, ..., ndcg@5, ..., mrr: the order a reader scans, not the alphabet's."""

    def order(key: str) -> tuple[str, int]:
        name, _, k = key.partition("@")
        return (name if k else "~" + name, int(k) if k.isdigit() else 0)

    return sorted((k for k in metrics if k != "users"), key=order)


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _recommender_html(r: dict[str, Any], out: Path) -> str:
    res = r["results"]
    protocols = sorted({p for m in res.values() for p in m})
    keys = _metric_keys(next(iter(next(iter(res.values())).values())))
    rows = [[p, name, *(f"{res[name][p][k]:.4f}" for k in keys), str(res[name][p]["users"])]
            for p in protocols for name in res if p in res[name]]  # fmt: skip
    parts = [_table(["protocol", "model", *keys, "users"], rows)]
    metric = "ndcg@10" if "ndcg@10" in keys else keys[0]
    series = {name: [res[name].get(p, {}).get(metric, 0.0) for p in protocols] for name in res}
    parts.append(_figure(out / "recommender_metrics.png", lambda ax: _bars(ax, protocols, series, f"{metric} (test)")))
    curves = r.get("curves") or []
    if curves:

        def draw(ax) -> None:
            epochs = [c["epoch"] for c in curves]
            ax.plot(epochs, [c.get("train_loss") for c in curves], color="tab:blue", label="train loss")
            ax.set_xlabel("epoch")
            ax.set_ylabel("train loss")
            twin = ax.twinx()
            twin.plot(
                epochs, [c.get("valid_ndcg@10") for c in curves], color="tab:orange", label="valid NDCG@10 (full)"
            )
            if any(c.get("valid_sampled_hr@10") is not None for c in curves):
                twin.plot(
                    epochs,
                    [c.get("valid_sampled_hr@10") for c in curves],
                    color="tab:green",
                    label="valid HR@10 (sampled)",
                )
            twin.set_ylabel("validation metric")
            twin.legend(loc="lower right", fontsize="small")

        parts.append(_figure(out / "recommender_curves.png", draw))
    return "".join(parts)


def _ranker_html(r: dict[str, Any], out: Path) -> str:
    keys = _metric_keys(r["ranker"])
    rows = [[name, *(f"{r[name][k]:.4f}" for k in keys)] for name in ("retrieval_order", "ranker")]
    info = (f"<p>{r['users']} test users, {r['candidates']} candidates each; "
            f"the target is among them for {r['recall_at_candidates']:.1%}.</p>")  # fmt: skip
    ks = [k for k in keys if k.startswith("ndcg@")]
    series = {"retrieval order": [r["retrieval_order"][k] for k in ks], "ranker": [r["ranker"][k] for k in ks]}
    fig = _figure(out / "ranker_ndcg.png", lambda ax: _bars(ax, ks, series, "NDCG (test)"))
    return info + _table(["order", *keys], rows) + fig


def _generator_html(r: dict[str, Any], out: Path) -> str:
    cols = [("bleu", "BLEU", "{:.2f}"), ("rougeL", "ROUGE-L", "{:.3f}"), ("distinct_2", "distinct-2", "{:.3f}"),
            ("json_validity", "JSON valid", "{:.1%}"), ("unsupported_rate", "unsupported claims", "{:.1%}"),
            ("outputs_with_unsupported", "outputs w/ unsupported", "{:.1%}")]  # fmt: skip
    rows = [[task, str(m["examples"]), *(fmt.format(m[k]) if m.get(k) is not None else "–" for k, _, fmt in cols)]
            for task, m in r["tasks"].items()]  # fmt: skip
    info = (f"<p>fine-tuned model {html.escape(str(r.get('model_version')))}, "
            f"at most {r['max_examples_per_task']} held-out examples per task.</p>")  # fmt: skip
    return info + _table(["task", "n", *(title for _, title, _ in cols)], rows)


def _serving_html(r: dict[str, Any], out: Path) -> str:
    lat = r["latency"]
    rows = [[k.removesuffix("_ms"), f"{v:.3f}" if k != "n" else str(v)] for k, v in lat.items()]
    info = (f"<p>{html.escape(r['path'])}; {html.escape(r['mix'])}, k={r['k']}. "
            f"Generator: {html.escape(r['generator'])}.</p>")  # fmt: skip

    def draw(ax) -> None:
        ax.hist(r["samples_ms"], bins=min(30, max(5, len(r["samples_ms"]) // 3)), color="tab:blue")
        for name, color in (("p50_ms", "tab:green"), ("p99_ms", "tab:red")):
            ax.axvline(lat[name], color=color, linestyle="--", label=f"{name.removesuffix('_ms')} {lat[name]:.2f} ms")
        ax.set_xlabel("latency per request (ms)")
        ax.set_ylabel("requests")
        ax.legend(fontsize="small")

    return info + _table(["statistic", "ms"], rows) + _figure(out / "serving_latency.png", draw)


_SECTIONS: dict[str, tuple[str, Callable[[dict[str, Any], Path], str]]] = {
    "recommender": ("Recommender (SASRec) and baselines — test targets", _recommender_html),
    "ranker": ("Ranker vs retrieval order — test targets", _ranker_html),
    "generator": ("Generator LM (fine-tuned) — held-out products", _generator_html),
    "serving": ("Serving latency — recommendation path, in-process", _serving_html),
}


def write_report(out: Path, metrics: dict[str, Any]) -> None:
    """metrics.json (every part or its skip line), report.html and its PNG figures, in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.png"):  # a figure of a part skipped this time must not linger
        stale.unlink()
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False))
    body = []
    for part in PARTS:
        title, render = _SECTIONS[part]
        result = metrics.get(part, {"skipped": "not run"})
        body.append(f'<section id="{part}"><h2>{html.escape(title)}</h2>')
        if "skipped" in result:
            body.append(f'<p class="skipped">skipped: {html.escape(result["skipped"])}</p>')
        else:
            body.append(render(result, out))
        body.append("</section>")
    (out / "report.html").write_text(
        "<!doctype html><meta charset=utf-8><title>shopgraph evaluation</title>"
        "<style>body{font-family:sans-serif;max-width:60em}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px}.skipped{color:#a60}</style>"
        f"<h1>shopgraph evaluation</h1><p>artifacts: {html.escape(metrics.get('artifacts', ''))}; "
        f"{html.escape(metrics.get('created_at', ''))}</p>" + "".join(body)
    )


def _parts_option(text: str) -> list[str]:
    import argparse

    try:
        return parse_parts(text)
    except EvaluationInputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _window_option(text: str) -> int:
    import argparse

    from core.values import as_duration_ms

    try:
        return as_duration_ms(text, "--window")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _since_option(text: str) -> int:
    import argparse

    from core.store.evaluation import parse_time_ms

    try:
        return parse_time_ms(text, "--since")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    """`python -m cluster.evaluate` (the evaluate stage's `ray job submit` / RayJob entry point) and
    `shopgraph train evaluate`. Exit 2 for an unknown part or a malformed --window / --since, 1 when
    nothing could be evaluated. `--online` prints the online evaluation report (JSON) instead."""
    from core.cli import as_json, stage_main

    def options(parser) -> None:
        parser.add_argument(
            "--parts",
            type=_parts_option,
            default=None,
            help=f"Comma-separated: {','.join(PARTS)} (default: all).",
        )
        parser.add_argument(
            "--online",
            action="store_true",
            help="Evaluate what shoppers did with the served answers (online database): CTR and conversion "
            "per model version and reason source, printed as JSON.",
        )
        parser.add_argument(
            "--since",
            type=_since_option,
            default=None,
            help="With --online: items served from this time (ISO 8601 or ms since the epoch; default: now - window).",
        )
        parser.add_argument(
            "--window",
            type=_window_option,
            default=None,
            help="With --online: how long a span of served items, e.g. 24h, 7d (default: online.evaluation.window).",
        )

    def run(cfg, parts: list[str] | None, online: bool, since: int | None, window: int | None) -> dict | None:
        if online:
            if parts is not None:
                raise EvaluationInputError("--online evaluates the online database only; leave out --parts")
            return online_evaluation(cfg, since, window)
        if since is not None or window is not None:
            raise EvaluationInputError("--since and --window apply to --online only; add --online or leave them out")
        parts = parts or list(PARTS)
        metrics = run_evaluation(cfg, parts)
        if not evaluated_parts(metrics):
            raise ValueError(
                f"nothing was evaluated: every requested part ({','.join(parts)}) was skipped, see above; "
                "train a model first, e.g. `shopgraph train recommender`"
            )
        return None

    return stage_main(argv, run, prog="python -m cluster.evaluate", description=__doc__, options=options, show=as_json)


if __name__ == "__main__":
    import sys

    sys.exit(main())
