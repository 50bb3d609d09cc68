"""BM25 in PostgreSQL, scoring as `embeddings.index.lexical` does on bm25s.

Full-text search's `ts_rank_cd` is not BM25 and ranks differently, so the statistics BM25
needs are kept in tables instead: each term's document frequency (`newsqa_terms.df`), each
passage's length and each term's count in it (`newsqa_postings`, read from an index that
holds them, so no table row is visited), and the passage count and total length
(`newsqa_meta`). Text is cut into terms here, by the same `Tokenizer` as the index folder's,
and a question is scored over its terms' postings only, with Lucene's BM25 and the product's
k1 and b. Adding or removing an article updates the counts it touches; no build rescores the
rest.

The scores are exact. A question of rare terms reads all their postings. One whose terms
are common would read most of the table, so it is answered as MaxScore does (Turtle and
Flood, 1995): each term has an upper bound on what it adds to a passage's score
(`newsqa_terms.bound`: its highest term-frequency part, `tf / (tf + k1 * (1 - b + b *
length / average))`, as written), the rarest terms are read whole, and the common ones only
where they can still matter: for the best partial scores of the passages holding a rare one.
The result is checked: when the common terms' bounds could lift a passage from outside the
passages read into the top `k`, every posting is read instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, LiteralString

import numpy as np
import numpy.typing as npt

from embeddings.index.index import BM25_B, BM25_K1
from embeddings.index.lexical import Tokenizer
from embeddings.postgres.schema import Connection

Rows = npt.NDArray[np.intp]
Scores = npt.NDArray[np.float32]

# A question reads every posting of its terms while they hold at most this many in all
# (about 10 ms at 1,000,000 passages); past it the commonest terms are only looked up.
READ_WHOLE = 20_000
# The passages with the best partial scores (this many times k) have their common terms
# looked up, one index probe each.
PROBED = 10

# A term's part of a passage's score, from a posting `p` and the question's term `q`.
_PART: LiteralString = (
    "q.idf * p.tf / (p.tf + %(k1)s * (1 - %(b)s + %(b)s * p.length / %(average)s))"
)
# Every posting of the question's terms: exact.
_WHOLE: LiteralString = f"""
SELECT p.passage, sum({_PART}) AS score
FROM unnest(%(ids)s::int[], %(idfs)s::float8[]) AS q(id, idf)
JOIN newsqa_postings AS p ON p.term = q.id
GROUP BY p.passage
ORDER BY score DESC, p.passage
LIMIT %(k)s
"""
# The rare terms' postings whole, the common terms' looked up for the best `probed` passages
# by the rare ones; with each, the lowest partial score of those probed and how many passages
# the rare terms reached, so the caller can tell whether the result is exact.
_SPLIT: LiteralString = f"""
WITH partial AS (
    SELECT p.passage, sum({_PART}) AS partial
    FROM unnest(%(ids)s::int[], %(idfs)s::float8[]) AS q(id, idf)
    JOIN newsqa_postings AS p ON p.term = q.id
    GROUP BY p.passage),
probed AS (
    SELECT passage, partial FROM partial ORDER BY partial DESC, passage LIMIT %(probed)s),
scored AS (
    SELECT s.passage, s.partial + coalesce(sum({_PART}), 0) AS score
    FROM probed AS s
    CROSS JOIN unnest(%(common)s::int[], %(common_idfs)s::float8[]) AS q(id, idf)
    LEFT JOIN newsqa_postings AS p ON p.term = q.id AND p.passage = s.passage
    GROUP BY s.passage, s.partial)
SELECT passage, score, (SELECT min(partial) FROM probed), (SELECT count(*) FROM partial)
FROM scored
ORDER BY score DESC, passage
LIMIT %(k)s
"""
# Bounds are raised by a hair, so rounding in the server's arithmetic cannot make one short.
_MARGIN = 1 + 1e-9
_TERMS: LiteralString = """
SELECT t.id, t.df, t.bound, q.weight
FROM unnest(%(terms)s::text[], %(weights)s::int[]) AS q(term, weight)
JOIN newsqa_terms AS t ON t.term = q.term
ORDER BY t.df, t.id
"""


@dataclass(frozen=True)
class _Term:
    """An asked term: its id, how many passages hold it, its weight times IDF, and the most
    it can add to a passage's score."""

    id: int
    df: int
    idf: float
    bound: float


def passage_terms(tokenizer: Tokenizer, text: str) -> Counter[str]:
    """A passage's terms and their counts; an empty passage still holds one (empty) term, as
    in the index folder, so the two agree on every passage length."""
    return Counter(tokenizer.passage_terms(text) or [""])


def shortlist(
    connection: Connection, tokenizer: Tokenizer, question: str, k: int
) -> tuple[Rows, Scores]:
    """The `k` best passages for `question` by BM25, best first, and their scores.

    A term asked twice counts twice, as in bm25s.
    """
    weights = Counter(tokenizer.question_terms(question))
    corpus = connection.execute(
        "SELECT passages, total_length, least_average FROM newsqa_meta"
    ).fetchone()
    if not weights or k <= 0 or corpus is None or not corpus[0]:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.float32)
    count, average = float(corpus[0]), corpus[1] / corpus[0]
    # An impact written with a smaller mean length can be exceeded now by this ratio, at most.
    drift = max(1.0, average / corpus[2]) if corpus[2] else float("inf")
    terms = _terms(connection, weights, count, drift)
    parameters = {"k1": BM25_K1, "b": BM25_B, "average": average, "k": k}
    found = _scored(connection, terms, parameters)
    rows = np.array([row[0] for row in found], dtype=np.intp)
    return rows, np.array([row[1] for row in found], dtype=np.float32)


def _terms(
    connection: Connection, weights: Counter[str], count: float, drift: float
) -> list[_Term]:
    """The asked terms the index holds, rarest first."""
    found = connection.execute(
        _TERMS, {"terms": list(weights), "weights": list(weights.values())}
    ).fetchall()
    terms = []
    for term_id, df, bound, weight in found:
        idf = weight * float(np.log(1.0 + (count - df + 0.5) / (df + 0.5)))
        terms.append(_Term(int(term_id), int(df), idf, idf * float(bound) * drift * _MARGIN))
    return terms


def _scored(
    connection: Connection, terms: list[_Term], parameters: dict[str, Any]
) -> list[tuple[Any, ...]]:
    """The best passages over `terms`: by the split into rare and common terms when the
    rare ones hold too many postings and the split is provably exact, else over all."""
    rare = _rare(terms)
    if len(rare) < len(terms):
        common = terms[len(rare) :]
        k = parameters["k"]
        # Not prepared: a generic plan cannot see how many postings the asked terms hold.
        found = connection.execute(
            _SPLIT,
            {
                **parameters, **_columns(rare), "probed": PROBED * k,
                "common": [t.id for t in common], "common_idfs": [t.idf for t in common],
            },
            prepare=False,
        ).fetchall()  # fmt: skip
        if _exact(found, sum(t.bound for t in common), PROBED * k, k):
            return found
    return connection.execute(_WHOLE, {**parameters, **_columns(terms)}, prepare=False).fetchall()


def _rare(terms: list[_Term]) -> list[_Term]:
    """The rarest terms (at least one) that hold at most `READ_WHOLE` postings together."""
    total, rare = 0, list[_Term]()
    for term in terms:
        total += term.df
        if rare and total > READ_WHOLE:
            break
        rare.append(term)
    return rare


def _columns(terms: Sequence[_Term]) -> dict[str, list[Any]]:
    return {"ids": [t.id for t in terms], "idfs": [t.idf for t in terms]}


def _exact(found: list[tuple[Any, ...]], common: float, probed: int, k: int) -> bool:
    """Whether the split's top `k` is the true one: the `k`-th score beats any passage
    holding common terms alone (at most `common`), and any passage of the rare terms not
    probed (at most the lowest partial probed + `common`)."""
    if not found:
        return False
    kth = found[-1][1] if len(found) >= k else 0.0
    lowest, reached = found[0][2], found[0][3]
    return common < kth and (reached <= probed or lowest + common < kth)


def idf(connection: Connection, terms: Sequence[str]) -> npt.NDArray[np.float64]:
    """Each term's inverse document frequency, as `LexicalIndex.idf` computes it."""
    found = connection.execute(
        """SELECT coalesce(t.df, 0), (SELECT passages FROM newsqa_meta)
           FROM unnest(%s::text[]) WITH ORDINALITY AS q(term, place)
           LEFT JOIN newsqa_terms AS t ON t.term = q.term
           ORDER BY q.place""",
        (list(terms),),
    ).fetchall()
    if not found or not found[0][1]:
        return np.zeros(len(terms))
    frequency = np.array([df for df, _ in found], dtype=np.float64)
    count = float(found[0][1])
    return np.asarray(np.log(1.0 + (count - frequency + 0.5) / (frequency + 0.5)))


def add(
    connection: Connection,
    passages: Sequence[tuple[int, Counter[str]]],
    average: float,
    *,
    fresh: bool = False,
) -> None:
    """Record the terms of new passages (row, term counts), raise their frequencies and
    their bounds; `average` is the mean passage length the bounds are weighed by (the build
    records it in `newsqa_meta.least_average` when it is the least yet). `fresh`:
    the postings table was made in this transaction, so its rows are written frozen, visible
    to every later reader, and an index-only scan need not visit them."""
    vocabulary = sorted({term for _, counts in passages for term in counts})
    if not vocabulary:
        return
    connection.execute(
        """INSERT INTO newsqa_terms (term, df, bound) SELECT unnest(%s::text[]), 0, 0
           ON CONFLICT (term) DO NOTHING""",
        (vocabulary,),
    )
    ids = dict(
        connection.execute(
            "SELECT term, id FROM newsqa_terms WHERE term = ANY(%s)", (vocabulary,)
        ).fetchall()
    )
    frequency: Counter[int] = Counter()
    bounds: dict[int, float] = {}
    lines: list[str] = []  # COPY's text format, written whole: faster than row by row
    for row, counts in passages:
        length = sum(counts.values())
        norm = BM25_K1 * (1 - BM25_B + BM25_B * length / (average or 1.0))
        for term, count in counts.items():
            term_id = ids[term]
            lines.append(f"{term_id}\t{row}\t{count}\t{length}\n")
            bounds[term_id] = max(bounds.get(term_id, 0.0), count / (count + norm))
        frequency.update(ids[term] for term in counts)
    _copy_postings(connection, "".join(lines), fresh)
    connection.execute(
        """UPDATE newsqa_terms AS t SET df = t.df + d.n, bound = greatest(t.bound, d.bound)
           FROM unnest(%s::int[], %s::int[], %s::float8[]) AS d(id, n, bound)
           WHERE t.id = d.id""",
        (list(frequency), list(frequency.values()), [bounds[i] for i in frequency]),
    )


def _copy_postings(connection: Connection, lines: str, fresh: bool) -> None:
    copy_sql: LiteralString = "COPY newsqa_postings (term, passage, tf, length) FROM STDIN"
    if fresh:
        copy_sql += " (FREEZE)"
    with connection.cursor() as cursor, cursor.copy(copy_sql) as copy:
        copy.write(lines)


def remove(connection: Connection, articles: Sequence[int]) -> None:
    """Delete the postings of these articles' passages (before the passages go) and lower
    their terms' frequencies."""
    connection.execute(
        """UPDATE newsqa_terms AS t SET df = t.df - d.n
           FROM (SELECT p.term, count(*) AS n
                 FROM newsqa_postings AS p
                 JOIN newsqa_passages AS s ON s.number = p.passage
                 WHERE s.article = ANY(%s)
                 GROUP BY p.term) AS d
           WHERE t.id = d.term""",
        (list(articles),),
    )
    connection.execute(
        """DELETE FROM newsqa_postings WHERE passage IN
               (SELECT number FROM newsqa_passages WHERE article = ANY(%s))""",
        (list(articles),),
    )
