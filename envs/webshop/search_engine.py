"""BM25 search over product text, built once per catalogue and shared read-only.

WebShop indexes, per product, `Title + Description + BulletPoints[0] + option
text` lower-cased (search_engine/convert_product_file_format.py) with
Lucene/pyserini: BM25 with k1=0.9, b=0.4, English stop words and stemming,
returning at most 50 hits that share a term with the query. We do the same
with `bm25s` (pure Python), Lucene's stop words and possessive filter, and
plural folding in place of Porter's stemmer; ties keep catalogue order.

`search_engine(catalogue)` caches one engine per catalogue key at module
level, and each engine caches its query results: every environment and
clone on a catalogue shares both.
"""

from __future__ import annotations

import re
import threading

import bm25s
import numpy as np

SEARCH_RETURN_N = 50
K1, B = 0.9, 0.4  # pyserini's BM25 defaults
#: Lucene's English stop words (EnglishAnalyzer.ENGLISH_STOP_WORDS_SET)
STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then "
    "there these they this to was will with".split()
)
_TOKEN = re.compile(r"\w+")
_POSSESSIVE = re.compile(r"['’]s\b")
QUERY_CACHE_SIZE = 50_000


def s_stem(word: str) -> str:
    """Plural folding (Porter's step 1a, kept to plurals): "dresses" -> "dress",
    "batteries" -> "battery", "watches" -> "watch", "shoes" -> "shoe"."""
    if len(word) <= 3 or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "ches", "shes", "zes")):
        return word[:-2]
    return word[:-1] if word.endswith("s") else word


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens without possessive 's and stop words, plurals folded."""
    text = _POSSESSIVE.sub("", text.lower())
    return [s_stem(t) for t in _TOKEN.findall(text) if t not in STOP_WORDS]


def product_document(product: dict) -> str:
    """The text WebShop indexes for a product."""
    option_text = ", and ".join(f"{name}: {', '.join(values)}" for name, values in product["options"].items())
    bullets = product["BulletPoints"]
    return " ".join([product["Title"], product["Description"], bullets[0] if bullets else "", option_text]).lower()


class SearchEngine:
    """BM25 over a catalogue's products. `search(query)` -> up to 50 ASINs, best first."""

    def __init__(self, products: list[dict]):
        self.asins = [p["asin"] for p in products]
        self._bm25 = bm25s.BM25(k1=K1, b=B)
        self._bm25.index([tokenize(product_document(p)) or ["\x00"] for p in products], show_progress=False)
        self._cache: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def search(self, query: str) -> tuple[str, ...]:
        """The ASINs of the top hits for `query` (only products sharing a term), best first."""
        key = " ".join(query.lower().split())
        hits = self._cache.get(key)
        if hits is None:
            hits = self._rank(key)
            with self._lock:
                if len(self._cache) >= QUERY_CACHE_SIZE:
                    self._cache.clear()
                self._cache[key] = hits
        return hits

    def _rank(self, query: str) -> tuple[str, ...]:
        tokens = tokenize(query)
        if not tokens:
            return ()
        scores = np.asarray(self._bm25.get_scores(tokens), dtype=np.float64)
        order = np.argsort(-scores, kind="stable")[:SEARCH_RETURN_N]
        return tuple(self.asins[i] for i in order if scores[i] > 0)

    def __deepcopy__(self, memo: dict) -> "SearchEngine":
        return self


_ENGINES: dict[str, SearchEngine] = {}
_ENGINES_LOCK = threading.Lock()


def search_engine(catalogue) -> SearchEngine:
    """The shared engine for `catalogue` (built on first use, keyed by `catalogue.key`)."""
    engine = _ENGINES.get(catalogue.key)
    if engine is None:
        with _ENGINES_LOCK:
            engine = _ENGINES.get(catalogue.key)
            if engine is None:
                engine = _ENGINES[catalogue.key] = SearchEngine(catalogue.products)
    return engine
