"""Review sentiment: positive / negative per review, in Chinese and English.

    from ml.sentiment import SentimentModel
    model = SentimentModel(encoder=TextEncoder(dir)).fit(texts, labels)     # labels: 1 positive, 0 negative
    model.predict_proba(["电池很耐用，物流也快", "Broke after two days."])  # P(positive) per review
    model.save(path); SentimentModel.load(path, encoder=...)

Two heads, one per script, because the two languages want different features:
- **Chinese** (any CJK character in the text): TF-IDF over character 1–4-grams (no word
  segmenter needed: characters and their n-grams carry the sentiment words) plus word unigrams
  and bigrams, into a logistic regression. 92% accuracy on held-out reviews of ten product
  categories (bench/sentiment.py).
- **English**: the embedded MiniLM sentence encoder's vector (it knows "not great" is not
  great, which n-grams learned from a few hundred sentences do not) beside the same TF-IDF
  features, into a logistic regression.

Both heads are scikit-learn estimators trained here on labelled reviews (`fit`); a language with
fewer than MIN_PER_LABEL reviews of each label gets no head (recorded in `skipped` and the
manifest); its texts are read by the other head, and `read` names the head that read each text. The
saved model is a committed directory (manifest with the label counts, scikit-learn's version
and the encoder it was trained with): a model loads only beside the same encoder.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from core.manifest import staged_dir, verify_dir, write_manifest

LANGUAGES = ("zh", "en")
MAX_CHARS = 4000  # a review longer than this is cut for the features (TF-IDF and the encoder alike)
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
MODEL_FILE = "sentiment.pkl"
MAX_CACHED_VECTORS = 200_000  # ~300 MB of 384-d float32 at most
MIN_PER_LABEL = 10  # reviews of each label a language head needs before it is trained


class Encoder(Protocol):
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray: ...


def language_of(text: str) -> str:
    """'zh' when the text has a CJK character, else 'en' (the English head also takes other
    Latin-script text; it was not trained on it, which bench/sentiment.py would show)."""
    return "zh" if _CJK.search(text) else "en"


def check_texts(texts: Sequence[Any], what: str = "texts") -> list[str]:
    """Non-empty strings, cut to MAX_CHARS; a clear error naming the first bad one."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"{what} must be a list of strings, got {type(texts).__name__}")
    out = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{what}[{i}] has type {type(text).__name__}, expected a string")
        if not text.strip():
            raise ValueError(f"{what}[{i}] is empty: a review without text has no sentiment to read")
        out.append(text.strip()[:MAX_CHARS])
    return out


def _tfidf():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_union

    # char_wb n-grams: sentiment words in Chinese without a segmenter, and misspellings in English;
    # word n-grams keep "not good" together. sublinear_tf: a repeated word is not 5x the evidence.
    return make_union(
        TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), min_df=2, sublinear_tf=True, max_features=300_000),
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), token_pattern=r"(?u)\b\w+\b|n't", sublinear_tf=True),
    )


class SentimentModel:
    def __init__(self, encoder: Encoder | None = None, c: float = 4.0, seed: int = 0):
        self.encoder, self.c, self.seed = encoder, c, seed
        self.heads: dict[str, dict[str, Any]] = {}  # language -> {"tfidf", "clf", "dense"}
        self.counts: dict[str, dict[str, int]] = {}
        self.skipped: dict[str, str] = {}  # language -> why no head was trained
        self._vectors: dict[str, np.ndarray] = {}  # text -> encoder vector (not saved)

    # -- training

    def fit(self, texts: Sequence[str], labels: Sequence[int]) -> SentimentModel:
        texts = check_texts(texts)
        labels = np.asarray(labels)
        if labels.shape != (len(texts),) or not np.isin(labels, (0, 1)).all():
            raise ValueError(f"labels must be {len(texts)} values of 0 (negative) or 1 (positive), one per text")
        langs = np.asarray([language_of(t) for t in texts])
        for lang in LANGUAGES:
            rows = np.flatnonzero(langs == lang)
            if not len(rows):
                continue
            y = labels[rows]
            self.counts[lang] = {"positive": int(y.sum()), "negative": int(len(y) - y.sum())}
            if min(self.counts[lang].values()) < MIN_PER_LABEL:
                # e.g. a few Chinese-source reviews written without a CJK character ("good!"): too few
                # to learn a language from. Recorded, and that language is refused at prediction.
                self.skipped[lang] = f"{self.counts[lang]} training reviews; a head needs {MIN_PER_LABEL} of each label"
                continue
            self.heads[lang] = self._fit_head(lang, [texts[i] for i in rows], y)
        if not self.heads:
            raise ValueError(
                f"no language has {MIN_PER_LABEL} positive and negative reviews to learn from: {self.skipped}"
            )
        return self

    def _fit_head(self, lang: str, texts: list[str], y: np.ndarray) -> dict[str, Any]:
        from sklearn.linear_model import LogisticRegression

        tfidf = _tfidf().fit(texts)
        dense = lang == "en" and self.encoder is not None
        clf = LogisticRegression(C=self.c, max_iter=3000, class_weight="balanced", random_state=self.seed)
        clf.fit(self._features(tfidf, dense, texts), y)
        return {"tfidf": tfidf, "clf": clf, "dense": dense}

    def _features(self, tfidf, dense: bool, texts: list[str]):
        import scipy.sparse as sp

        x = tfidf.transform(texts)
        if dense:
            x = sp.hstack([x, sp.csr_matrix(self._encode(texts))]).tocsr()
        return x

    def _encode(self, texts: list[str]) -> np.ndarray:
        """Encoder vectors, each distinct text encoded once per model (reviews repeat: "Great value
        for the price." and its clauses; a held-out fit, the final fit and the summaries share them)."""
        todo = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if todo:
            if len(self._vectors) + len(todo) > MAX_CACHED_VECTORS:
                self._vectors.clear()
            self._vectors.update(zip(todo, self.encoder.encode(todo)))
        return np.stack([self._vectors[t] for t in texts]) if texts else np.zeros((0, self.encoder.dim), np.float32)

    # -- prediction

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """P(positive) per text (float64)."""
        return self.read(texts)[0]

    def read(self, texts: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """(P(positive), the head that read it) per text. A text of a language without a head
        (a Chinese shop's "good!!", too few of them to train on) is read by the other head and
        named so: its character n-grams still carry "good" and "!!", but it is the weaker read."""
        texts = check_texts(texts)
        out = np.empty(len(texts), np.float64)
        fallback = sorted(self.heads)[0]
        langs = [lang if lang in self.heads else fallback for lang in map(language_of, texts)]
        for lang in set(langs):
            head = self.heads[lang]
            rows = [i for i, g in enumerate(langs) if g == lang]
            x = self._features(head["tfidf"], head["dense"], [texts[i] for i in rows])
            out[rows] = head["clf"].predict_proba(x)[:, 1]
        return out, langs

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return (self.predict_proba(texts) >= 0.5).astype(np.int64)

    # -- persistence

    def save(self, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
        import sklearn

        encoder = getattr(self.encoder, "model_dir", None)
        with staged_dir(Path(path)) as staging:
            with (staging / MODEL_FILE).open("wb") as f:
                pickle.dump(
                    {
                        "heads": self.heads,
                        "counts": self.counts,
                        "skipped": self.skipped,
                        "c": self.c,
                        "seed": self.seed,
                    },
                    f,
                )
            write_manifest(
                staging,
                meta={
                    "kind": "sentiment",
                    "languages": sorted(self.heads),
                    "counts": self.counts,
                    "skipped": self.skipped,
                    "sklearn": sklearn.__version__,
                    "encoder": Path(encoder).name if encoder else None,
                    **(meta or {}),
                },
            )
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, encoder: Encoder | None = None) -> SentimentModel:
        import sklearn

        manifest = verify_dir(Path(path), full=True)  # every byte hashed: a pickle is code
        meta = manifest["meta"]
        if meta.get("kind") != "sentiment":
            raise ValueError(f"{path} is not a sentiment model (kind {meta.get('kind')!r})")
        if meta["sklearn"] != sklearn.__version__:
            raise ValueError(
                f"{path} was saved with scikit-learn {meta['sklearn']}, this is {sklearn.__version__}: retrain it"
            )
        with (Path(path) / MODEL_FILE).open("rb") as f:
            state = pickle.load(f)  # our own committed artifact (manifest verified above), never user input
        model = cls(encoder=encoder, c=state["c"], seed=state["seed"])
        model.heads, model.counts, model.skipped = state["heads"], state["counts"], state["skipped"]
        if any(h["dense"] for h in model.heads.values()) and encoder is None:
            raise ValueError(f"{path} was trained with the text encoder {meta['encoder']!r}: load it with one")
        return model


def scores(labels: Sequence[int], predicted: Sequence[int]) -> dict[str, float]:
    """Accuracy and macro-F1 (the mean of the positive and negative classes' F1)."""
    from sklearn.metrics import accuracy_score, f1_score

    if not len(labels):
        raise ValueError("no labelled reviews to score")
    return {
        "n": len(labels),
        "accuracy": round(float(accuracy_score(labels, predicted)), 4),
        "macro_f1": round(float(f1_score(labels, predicted, average="macro")), 4),
    }
