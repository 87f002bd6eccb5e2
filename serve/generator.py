"""The Generator deployment: vLLM behind an engine seam, prompts, and the grounding filter.

It only generates: caching and fallbacks live in the ingress, so a slow or dead generator
costs the client nothing but the generated text. Every output passes the same grounding check
as the offline evaluation; sentences with unsupported claims are removed, and an output with
nothing left (or a page that is not valid JSON) is reported as `None`, so the caller falls back.

A streamed page is grounded while it streams (`GroundedPageStream`): the JSON is read field
by field as it arrives, each highlight is checked when its string closes and the description
sentence by sentence, with the same splitter and checker that `ground_page` applies to the
whole answer; only text that passed is ever yielded, so nothing a shopper reads on the stream
is removed from the final page.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any, ClassVar

from ray import serve


class GeneratorCore:
    """Prompts -> engine -> grounding. Async; one instance per replica.

    Prompts and the grounding check are the ones training and evaluation use
    (`ml.prompts`, `ml.grounding`), so the served model sees the prompts it was tuned on
    and its output is held to the same standard it was measured by.
    """

    def __init__(self, engine, generation_cfg, known_brands: list[str] | None = None, metrics=None):
        from serve.metrics import MetricSet

        self.engine = engine
        self.cfg = generation_cfg
        self.known_brands = known_brands or []
        self.chunks = 0
        self.completions = {"started": 0, "finished": 0, "cancelled": 0, "failed": 0}
        # In a replica, also exported through Ray's metrics: every replica's outcomes in one scrape.
        self.metrics = metrics if metrics is not None else MetricSet()
        ms = self.metrics
        self.m_completions = ms.counter(
            "shopgraph_generator_completions_total",
            "Engine completions by event (started, finished, cancelled, failed)",
            ["event"],
        )
        self.m_outputs = ms.counter(
            "shopgraph_generator_outputs_total",
            "Generated outputs by kind (reason, page, stream_page, answer) and outcome: accepted, or the gate that "
            "rejected it (reason: accept_reason's why; page: invalid_json, instruction_in_facts, ungrounded, degenerate)",
            ["kind", "outcome"],
        )
        self.m_removed = ms.counter(
            "shopgraph_generator_removed_claims_total",
            "Highlights and descriptions of accepted pages, and sentences of answers, that lost unsupported claims to the grounding check",
            ["kind"],
        )
        self.m_latency = ms.histogram("shopgraph_replica_latency_seconds", "Time inside a replica per stage", ["stage"])

    def _outcome(self, kind: str, why: str | None, started: float, removed: int = 0) -> None:
        self.m_outputs.labels(kind, why or "accepted").inc()
        if removed:
            self.m_removed.labels(kind).inc(removed)
        self.m_latency.labels(f"generate_{kind}").observe(time.perf_counter() - started)

    @property
    def model_version(self) -> str:
        return self.engine.model_version

    async def _complete(self, messages, max_tokens: int, json_schema=None) -> str:
        import contextlib

        parts = []
        self.completions["started"] += 1
        self.m_completions.labels("started").inc()
        try:
            # aclosing: a cancelled call (Serve's request cancellation raises CancelledError here)
            # closes the engine's stream at once, which aborts the engine request.
            stream = self.engine.stream(messages, max_tokens=max_tokens, json_schema=json_schema)
            async with contextlib.aclosing(stream):
                async for delta in stream:
                    parts.append(delta)
                    self.chunks += 1
        except BaseException as e:
            event = "cancelled" if isinstance(e, asyncio.CancelledError | GeneratorExit) else "failed"
            self.completions[event] += 1
            self.m_completions.labels(event).inc()
            raise
        self.completions["finished"] += 1
        self.m_completions.labels("finished").inc()
        return "".join(parts).strip()

    async def reason(self, facts: dict, profile: dict) -> dict[str, Any]:
        """`profile` is `ml.reasons.reason_profile(evidence)`: the reason is shown only if it passes
        `ml.reasons.accept_reason` (one complete sentence to "you", naming that evidence, grounded,
        not degenerate); otherwise `text` is None and `why` says what failed."""
        from ml.prompts import reason_messages
        from ml.reasons import accept_reason, join_continuation, reason_prefix

        started = time.perf_counter()
        prefix = reason_prefix(profile, str(facts.get("title") or ""))  # "Since you viewed the X,"
        rest = await self._complete(reason_messages(profile, facts, prefix), self.cfg.reason_max_tokens)
        raw = join_continuation(prefix, rest)
        kept, why = accept_reason(raw, facts, profile, known_brands=self.known_brands)
        self._outcome("reason", (why or "rejected") if kept is None else None, started)
        return {"text": kept, "why": why, "raw": raw, "ms": 1000 * (time.perf_counter() - started)}

    async def page(self, facts: dict, segment: dict | None = None) -> dict[str, Any]:
        """The page's sections, grounded; `segment` (`ml.segments.SegmentIndex.profile`, None =
        segment "all") goes to the prompt, and its `cares_about` orders the kept highlights."""
        from ml.prompts import PDP_SCHEMA, pdp_messages

        started = time.perf_counter()
        raw = await self._complete(pdp_messages(facts, segment), self.cfg.page_max_tokens, json_schema=PDP_SCHEMA)
        cares = (segment or {}).get("cares_about")
        page = ground_page(raw, facts, self.known_brands, cares)
        self._outcome(
            "page",
            (page.get("why") or "rejected") if page["sections"] is None else None,
            started,
            page.get("removed", 0),
        )
        return {**page, "ms": 1000 * (time.perf_counter() - started)}

    async def stream_page(self, facts: dict, segment: dict | None = None):
        """Yields {"section": {"field", "text"[, "index"]}} for grounded text only, as each
        sentence (description) or string (highlights) completes, then `ground_page`'s result.

        The title is the catalog's, as `ground_page` makes it, so it comes first (once the engine
        answers) and the model's title is never streamed. For a segment, highlights stream in the
        order they are written; the final sections hold them in the segment's order."""
        from ml.prompts import PDP_SCHEMA, pdp_messages

        started = time.perf_counter()
        parts = []
        grounded = GroundedPageStream(facts, self.known_brands)
        cares = (segment or {}).get("cares_about")
        async for delta in self.engine.stream(
            pdp_messages(facts, segment), max_tokens=self.cfg.page_max_tokens, json_schema=PDP_SCHEMA
        ):
            if not parts and facts.get("title"):  # once the engine answers: a dead one streams nothing
                yield {"section": {"field": "title", "text": facts["title"]}}
            parts.append(delta)
            self.chunks += 1
            for section in grounded.feed(delta):
                yield {"section": section}
        for section in grounded.finish():
            yield {"section": section}
        page = ground_page("".join(parts), facts, self.known_brands, cares)
        self._outcome(
            "stream_page",
            (page.get("why") or "rejected") if page["sections"] is None else None,
            started,
            page.get("removed", 0),
        )
        yield {**page, "ms": 1000 * (time.perf_counter() - started)}

    async def stream_answer(self, question: str, plan, max_tokens: int | None = None):
        """Yields {"text": sentence} for each sentence of the answer that is grounded in the plan's
        evidence (`ml.qa.Plan`: the facts and review summaries it cites), then {"done", "why",
        "kept", "dropped", "raw"}; `why` is None when something was sent, else why nothing was;
        `raw` is the whole generation (for evaluation; the ingress never shows it)."""
        from ml.qa import answer_messages

        grounded = GroundedAnswerStream(plan, self.known_brands)
        tokens = max_tokens or self.cfg.reason_max_tokens
        raw = []
        started = time.perf_counter()
        self.completions["started"] += 1
        self.m_completions.labels("started").inc()
        try:
            async for delta in self.engine.stream(answer_messages(question, plan), max_tokens=tokens):
                self.chunks += 1
                raw.append(delta)
                for sentence in grounded.feed(delta):
                    yield {"text": sentence}
        except BaseException as e:
            event = "cancelled" if isinstance(e, asyncio.CancelledError | GeneratorExit) else "failed"
            self.completions[event] += 1
            self.m_completions.labels(event).inc()
            raise
        self.completions["finished"] += 1
        self.m_completions.labels("finished").inc()
        for sentence in grounded.finish():
            yield {"text": sentence}
        self._outcome("answer", grounded.why(), started, grounded.dropped)
        yield {
            "done": True,
            "why": grounded.why(),
            "kept": grounded.kept,
            "dropped": grounded.dropped,
            "raw": "".join(raw),
        }


_CJK_CHAR = re.compile(r"[\u3400-\u9fff]")


class GroundedAnswerStream:
    """The grounded sentences of a generated answer while it streams: `feed(delta)` / `finish()`
    return the sentences that may be shown. A sentence is checked once the text after it fixes
    where it ends (`ml.grounding.sentences`, as the page stream), with the page's checker against
    the plan's evidence; one with an unsupported claim, a review count that is not a cited
    aspect's, a repeat, a question (the shopper's echoed), English for a Chinese question, the
    prompt's own words or the
    abstention (the question was answerable) is dropped. Kept sentences are held until one names
    a value the question asked for (`ml.qa.mentions_value`), so an answer that never answers
    the question shows nothing and the caller falls back to the template answer. An unfinished
    last piece (cut by the token limit) is shown only if it names such a value."""

    def __init__(self, plan, known_brands: list[str]):
        from ml.reasons import instruction_in_facts

        self.plan, self.known_brands = plan, list(known_brands)
        self.blocked = instruction_in_facts(plan.evidence) is not None
        self.pending, self.held, self.seen = "", [], set()
        self.answered = False
        self.kept = self.dropped = self.passed = 0

    def _ok(self, text: str) -> bool:
        from ml.grounding import check
        from ml.qa import counts_agree, is_abstention
        from ml.reasons import leaks_prompt

        norm = " ".join(text.lower().split())
        if self.blocked or not norm or norm in self.seen or norm.endswith(("?", "？")):
            return False  # a question (a small model echoes the shopper's) is no answer
        if self.plan.language == "zh" and not _CJK_CHAR.search(text):
            return False  # a Chinese question is answered in Chinese
        self.seen.add(norm)
        return not (
            check(text, self.plan.evidence, known_brands=self.known_brands).unsupported
            or not counts_agree(text, self.plan)
            or is_abstention(text)
            or leaks_prompt(text)
        )

    def _take(self, pieces: list[str], final: bool = False) -> list[str]:
        from ml.qa import mentions_value

        out = []
        for piece in pieces:
            if not piece.strip():
                continue
            complete = piece.rstrip().endswith(_SENTENCE_END[:-1])
            if final and not complete and not mentions_value(piece, self.plan.values):
                self.dropped += 1
                continue
            if not self._ok(piece):
                self.dropped += 1
                continue
            self.held.append(piece)
            self.passed += 1
            self.answered = self.answered or mentions_value(piece, self.plan.values)
            if self.answered:
                out += self.held
                self.kept += len(self.held)
                self.held = []
        if out:
            out[0] = out[0].lstrip() if self.kept == len(out) else out[0]
        return out

    def feed(self, delta: str) -> list[str]:
        from ml.grounding import sentences

        pieces = sentences(self.pending + delta)
        if not pieces:
            return []
        self.pending = pieces[-1]  # the last piece may still grow ("$75." -> "$75.99")
        return self._take(pieces[:-1])

    def finish(self) -> list[str]:
        from ml.grounding import sentences

        pieces, self.pending = sentences(self.pending), ""
        out = self._take(pieces, final=True)
        self.dropped += len(self.held)
        self.held = []
        return out

    def why(self) -> str | None:
        if self.kept:
            return None
        if self.blocked:
            return "instruction_in_facts"
        if self.passed:
            return "off_topic"  # grounded, but it never named what was asked
        return "ungrounded" if self.dropped else "empty"


def ground_page(raw: str, facts: dict, known_brands: list[str], cares: list[str] | None = None) -> dict[str, Any]:
    """Parse the generated JSON and drop every unsupported claim; None sections = fall back.
    `cares` (a segment's, `ml.segments`) orders the kept highlights, adding the catalog price
    when the segment reads it first."""
    from ml.grounding import ground_pdp
    from ml.prompts import repair_pdp
    from ml.reasons import instruction_in_facts, publishable_description, publishable_highlights

    page = repair_pdp(raw)  # an answer cut off by the token limit is closed, not thrown away
    if page is None:
        return {
            "sections": None,
            "why": "invalid_json",
            "error": "generated page is not valid JSON with title, highlights, description",
        }
    if order := instruction_in_facts(facts):
        return {
            "sections": None,
            "why": "instruction_in_facts",
            "error": f"the product's catalog text gives the generator an order ({order[:60]!r}): template copy only",
        }
    grounded = ground_pdp(page, facts, known_brands=known_brands)
    # The page title is the catalog's: a small model's "The Ultimate Toys For Kids" claims
    # nothing checkable yet names no product. Generation writes highlights and description.
    grounded["title"] = facts.get("title") or grounded["title"]
    grounded["highlights"] = publishable_highlights(grounded["highlights"], facts)
    if not grounded["highlights"]:  # every generated highlight was unsupported: list the facts
        from serve.content import template_page

        grounded["highlights"] = template_page(facts)["highlights"]
    if not grounded["description"]:
        return {
            "sections": None,
            "why": "ungrounded",
            "error": "every sentence of the description had an unsupported claim",
        }
    # as the stream does: no repeated sentence, no fragment left unfinished, nothing degenerate
    grounded["description"], why = publishable_description(grounded["description"], facts)
    if why:
        return {"sections": None, "why": "degenerate", "error": f"the description is not publishable copy ({why})"}
    removed = len(page["highlights"]) - len(grounded["highlights"]) + (grounded["description"] != page["description"])
    if cares:  # the segment's order (and the catalog price, for a segment that reads it first)
        from ml.segments import segment_highlights

        grounded["highlights"] = segment_highlights(grounded["highlights"], facts, cares)
    return {"sections": grounded, "removed": removed}


# A sentence is complete once one of these ends it (the splitter also cuts at ';' and '；': such a
# clause is checked on its own, as `remove_unsupported` does, but waits for its sentence's end).
_SENTENCE_END = tuple(".!?。！？\n")
_SENTENCE_FIELDS = ("description",)
_STRING_FIELDS = ("highlights",)


class _JsonStrings:
    """Reads a PDP JSON answer as it streams and reports the decoded text of its string values:
    `feed(chunk)` -> [(field, index, text, closed)], with index the array position (highlights)
    or None. Keys, nesting and anything outside the top-level object's strings are skipped."""

    _ESCAPES: ClassVar[dict[str, str]] = {
        "n": "\n",
        "t": "\t",
        "r": "\r",
        "b": "\b",
        "f": "\f",
        '"': '"',
        "\\": "\\",
        "/": "/",
    }

    def __init__(self):
        self.stack: list[str] = []  # "{" / "["
        self.key: str | None = None  # the current top-level key
        self.expect_key = False
        self.in_string = False
        self.string_is_key = False
        self.escape: str | None = None  # None, "" after a backslash, or the hex digits of \uXXXX
        self.buf: list[str] = []
        self.index = -1  # position in the current top-level array

    def _target(self) -> tuple[str, int | None] | None:
        if len(self.stack) == 1 and self.stack[0] == "{" and self.key is not None:
            return self.key, None
        if len(self.stack) == 2 and self.stack[1] == "[" and self.key is not None:
            return self.key, self.index
        return None

    def feed(self, chunk: str) -> list[tuple[str, int | None, str, bool]]:
        out: list[tuple[str, int | None, str, bool]] = []
        for ch in chunk:
            if self.in_string:
                if self.escape is not None:
                    if self.escape == "" and ch != "u":
                        self.buf.append(self._ESCAPES.get(ch, ch))
                        self.escape = None
                    elif self.escape == "":
                        self.escape = "u"
                    else:
                        self.escape += ch
                        if len(self.escape) == 5:
                            try:
                                self.buf.append(chr(int(self.escape[1:], 16)))
                            except ValueError:
                                pass
                            self.escape = None
                elif ch == "\\":
                    self.escape = ""
                elif ch == '"':
                    self.in_string = False
                    text, self.buf = "".join(self.buf), []
                    if self.string_is_key:
                        if len(self.stack) == 1:
                            self.key = text
                    elif (target := self._target()) is not None:
                        out.append((*target, text, True))
                else:
                    self.buf.append(ch)
                continue
            if ch == '"':
                self.in_string = True
                self.string_is_key = bool(self.stack) and self.stack[-1] == "{" and self.expect_key
                if len(self.stack) == 2 and self.stack[1] == "[":
                    self.index += 1
            elif ch in "{[":
                self.stack.append(ch)
                self.expect_key = ch == "{"
                if ch == "[" and len(self.stack) == 2:
                    self.index = -1
            elif ch in "}]":
                if self.stack:
                    self.stack.pop()
                self.expect_key = False
            elif ch == ",":
                self.expect_key = bool(self.stack) and self.stack[-1] == "{"
            elif ch == ":":
                self.expect_key = False
        if self.in_string and not self.string_is_key and self.buf and (target := self._target()) is not None:
            out.append((*target, "".join(self.buf), False))
            self.buf = []
        return out


class GroundedPageStream:
    """The grounded sections of a PDP answer while it streams: `feed(delta)` and `finish()` return
    [{"field", "text"[, "index"]}] pieces that passed the grounding check.

    The pieces are exactly what `ground_page` keeps of the whole answer: highlights are checked
    whole when their string closes; the description is cut by `ml.grounding.sentences` and
    each piece checked on its own (`remove_unsupported`). A piece is only checked once the text
    after it fixes where it ends (`$75.` may go on as `$75.99`), and sent when its sentence is
    complete; at the end of the field what is left is checked as the last piece. An answer cut
    off by the token limit keeps its unfinished description only up to its last complete
    sentence, as `repair_pdp` does.
    """

    def __init__(self, facts: dict, known_brands: list[str]):
        from ml.reasons import instruction_in_facts

        self.facts, self.known_brands = facts, list(known_brands)
        self.blocked = instruction_in_facts(facts) is not None  # the catalog text gives the model orders
        self.json = _JsonStrings()
        self.pending: dict[str, str] = {}  # field -> text not yet split into settled pieces
        self.kept: dict[str, str] = {}  # field -> checked text waiting for its sentence's end
        self.sent_any: set[str] = set()
        self.seen: dict[str, set[str]] = {}  # field -> normalized sentences already kept
        self.highlight_texts: list[str] = []
        self.highlights = 0

    def _ok(self, text: str, prose: bool = True) -> bool:
        from ml.grounding import check
        from ml.reasons import generated_faults

        if self.blocked:  # as the page: template copy only, nothing streamed
            return False

        # the page's gates, piece by piece: grounded, and nothing `generated_faults` finds
        return not check(text, self.facts, known_brands=self.known_brands).unsupported and not generated_faults(
            text, self.facts, prose=prose
        )

    def _piece(self, field: str, text: str) -> dict[str, str]:
        if field not in self.sent_any:
            text = text.lstrip()
            self.sent_any.add(field)
        return {"field": field, "text": text}

    def _settle(self, field: str, pieces: list[str]) -> list[dict]:
        """Check settled pieces; send the kept ones each time a sentence completes."""
        out = []
        for piece in pieces:
            seen = self.seen.setdefault(field, set())
            norm = " ".join(piece.lower().split())
            if norm not in seen and self._ok(piece):  # a repeated sentence is a loop: dropped
                if norm:
                    seen.add(norm)
                self.kept[field] = self.kept.get(field, "") + piece
            # whitespace alone (a line break) is kept, as on the page, but waits for text to lead
            if piece.rstrip(" \t").endswith(_SENTENCE_END) and self.kept.get(field, "").strip():
                out.append(self._piece(field, self.kept.pop(field)))
        return out

    def feed(self, delta: str) -> list[dict]:
        from ml.grounding import sentences
        from ml.reasons import publishable_highlights

        out: list[dict] = []
        for field, index, text, closed in self.json.feed(delta):
            if field in _STRING_FIELDS and closed:
                whole = self.pending.pop(field, "") + text
                shown = self.highlight_texts + [whole]
                if (
                    whole.strip() and publishable_highlights(shown) == shown and self._ok(whole, prose=False)
                ):  # as the page
                    self.highlight_texts.append(whole)
                    out.append({"field": field, "index": self.highlights, "text": whole})
                    self.highlights += 1
            elif field in _STRING_FIELDS:
                self.pending[field] = self.pending.get(field, "") + text
            elif field in _SENTENCE_FIELDS:
                pieces = sentences(self.pending.pop(field, "") + text)
                if closed:  # a fragment left unfinished at the string's end is dropped, as on the page
                    out += self._settle(field, pieces)
                    self.kept.pop(field, None)
                else:  # the last piece may still grow: keep it back
                    out += self._settle(field, pieces[:-1])
                    if pieces:
                        self.pending[field] = pieces[-1]
        return out

    def finish(self) -> list[dict]:
        """The answer ended (or was cut off) with a field still open: only complete sentences."""
        from ml.grounding import sentences

        out: list[dict] = []
        for field in _SENTENCE_FIELDS:
            pieces = sentences(self.pending.pop(field, ""))
            ends = [i for i, p in enumerate(pieces) if p.rstrip().endswith(_SENTENCE_END[:-1])]
            if ends:
                out += self._settle(field, pieces[: ends[-1] + 1])
        self.pending.clear()
        self.kept.clear()
        return out


@serve.deployment(name="Generator")
class Generator:
    def __init__(self, engine_spec: dict, generation: dict, known_brands: list[str]):
        from core.config.serve import GenerationConfig
        from serve.engine import build_engine
        from serve.metrics import GC_PAUSES

        self.core = GeneratorCore(build_engine(engine_spec), GenerationConfig(**generation), known_brands)
        GC_PAUSES.watch(self.core.metrics)

    async def reason(self, facts: dict, profile: dict) -> dict[str, Any]:
        return await self.core.reason(facts, profile)

    async def page(self, facts: dict, segment: dict | None = None) -> dict[str, Any]:
        return await self.core.page(facts, segment)

    async def stream_page(self, facts: dict, segment: dict | None = None):
        async for event in self.core.stream_page(facts, segment):
            yield event

    async def stream_answer(self, question: str, plan, max_tokens: int | None = None):
        async for event in self.core.stream_answer(question, plan, max_tokens):
            yield event

    async def stats(self) -> dict[str, Any]:
        return generator_stats(self.core)

    async def health(self) -> dict[str, Any]:
        """The health probe of the ingress (serve.resilience.StageMonitor): raises when the engine
        cannot generate, else this replica's counters. Cheap: no generation."""
        check = getattr(self.core.engine, "check_health", None)
        if check is not None:
            await check()
        return generator_stats(self.core)

    async def check_health(self) -> None:
        """Serve's own replica check: an engine whose process died (vLLM's EngineDeadError) makes Serve
        restart this replica. Only engines that say so (a fake engine that fails stays up, for tests)."""
        if getattr(self.core.engine, "restart_when_unhealthy", False):
            await self.core.engine.check_health()


def generator_stats(core: GeneratorCore) -> dict[str, Any]:
    engine = core.engine
    return {
        "chunks": core.chunks,
        "model_version": core.model_version,
        "completions": dict(core.completions),
        "engine_active": getattr(engine, "active", None),
        "engine_aborted": getattr(engine, "aborted", None),
    }
