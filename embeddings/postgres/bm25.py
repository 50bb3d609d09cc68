"""BM25 in PostgreSQL, scoring as `embeddings.lexical` does on bm25s.

Full-text search's `ts_rank_cd` is not BM25 and ranks differently, so the statistics BM25
needs are kept in tables instead: each term's document frequency (`newsqa_terms.df`), each
passage's length and each term's count in it (`newsqa_postings`), and the passage count and
total length (`newsqa_meta`). Text is cut into terms here, by the same `Tokenizer` as the
index folder's, and a question is scored over its terms' postings only, with Lucene's BM25
and the product's k1 and b. Adding or removing an article updates the counts it touches; no
build rescores the rest.

A term most passages hold would make a question read most postings, so each posting also
keeps its impact, the term-frequency part of its BM25 score (`tf / (tf + k1 * (1 - b + b *
length / average))`, with the average length when it was written), and a question reads at
most `PER_TERM` postings per term, the highest by impact. A term in fewer passages than that
is read whole, so a small index scores exactly as bm25s does. In a large one, the passages
best by the postings read are scored again over every posting of the asked terms they hold,
so a returned score is exact; a passage is missed only when the parts of its score outside
its terms' best postings would have lifted it into the top from below that shortlist.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import LiteralString

import numpy as np
import numpy.typing as npt

from embeddings.index.index import BM25_B, BM25_K1
from embeddings.index.lexical import Tokenizer
from embeddings.postgres.schema import Connection

Rows = npt.NDArray[np.intp]
Scores = npt.NDArray[np.float32]

# Postings read per asked term, at most: the best by impact (see above).
PER_TERM = 2000
# The best `RESCORED * k` passages by the postings read are scored again over all their
# postings of the asked terms (one index lookup each), and the best `k` of them returned.
RESCORED = 3

# The corpus's passage count and mean length come in as parameters: joined in from
# newsqa_meta, they made the planner misjudge the row counts and hash every posting.
_SCORE: LiteralString = """
WITH q AS (
    SELECT t.id, q.weight * ln(1 + (%(n)s - t.df + 0.5) / (t.df::float8 + 0.5)) AS idf
    FROM unnest(%(terms)s::text[], %(weights)s::int[]) AS q(term, weight)
    JOIN newsqa_terms AS t ON t.term = q.term),
shortlist AS (
    SELECT p.passage
    FROM q CROSS JOIN LATERAL (SELECT passage, tf, length FROM newsqa_postings
                               WHERE term = q.id ORDER BY impact DESC, passage
                               LIMIT %(per_term)s) AS p
    GROUP BY p.passage
    ORDER BY sum(q.idf * p.tf / (p.tf + %(k1)s * (1 - %(b)s + %(b)s * p.length / %(average)s)))
             DESC, p.passage
    LIMIT %(rescored)s)
SELECT s.passage,
       sum(q.idf * p.tf / (p.tf + %(k1)s * (1 - %(b)s + %(b)s * p.length / %(average)s)))
           AS score
FROM shortlist AS s CROSS JOIN q
JOIN newsqa_postings AS p ON p.term = q.id AND p.passage = s.passage
GROUP BY s.passage
ORDER BY score DESC, s.passage
LIMIT %(k)s
"""


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
    if not weights or k <= 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.float32)
    corpus = connection.execute("SELECT passages, total_length FROM newsqa_meta").fetchone()
    if corpus is None or not corpus[0]:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.float32)
    parameters = {
        "terms": list(weights), "weights": list(weights.values()), "k1": BM25_K1, "b": BM25_B,
        "n": float(corpus[0]), "average": corpus[1] / corpus[0], "k": k,
        "per_term": max(PER_TERM, k), "rescored": RESCORED * k,
    }  # fmt: skip
    # Planned afresh each time: a prepared (generic) plan cannot see which terms are asked.
    found = connection.execute(_SCORE, parameters, prepare=False).fetchall()
    rows = np.array([row for row, _ in found], dtype=np.intp)
    return rows, np.array([score for _, score in found], dtype=np.float32)


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
    connection: Connection, passages: Sequence[tuple[int, Counter[str]]], average: float
) -> None:
    """Record the terms of new passages (row, term counts) and raise their frequencies;
    `average` is the mean passage length their impacts are weighed by."""
    vocabulary = sorted({term for _, counts in passages for term in counts})
    if not vocabulary:
        return
    connection.execute(
        """INSERT INTO newsqa_terms (term, df) SELECT unnest(%s::text[]), 0
           ON CONFLICT (term) DO NOTHING""",
        (vocabulary,),
    )
    ids = dict(
        connection.execute(
            "SELECT term, id FROM newsqa_terms WHERE term = ANY(%s)", (vocabulary,)
        ).fetchall()
    )
    frequency: Counter[int] = Counter()
    lines: list[str] = []  # COPY's text format, written whole: faster than row by row
    for row, counts in passages:
        length = sum(counts.values())
        norm = BM25_K1 * (1 - BM25_B + BM25_B * length / (average or 1.0))
        lines.extend(
            f"{ids[term]}\t{row}\t{count}\t{length}\t{count / (count + norm)!r}\n"
            for term, count in counts.items()
        )
        frequency.update(ids[term] for term in counts)
    copy_sql = "COPY newsqa_postings (term, passage, tf, length, impact) FROM STDIN"
    with connection.cursor() as cursor, cursor.copy(copy_sql) as copy:
        copy.write("".join(lines))
    connection.execute(
        """UPDATE newsqa_terms AS t SET df = t.df + d.n
           FROM unnest(%s::int[], %s::int[]) AS d(id, n) WHERE t.id = d.id""",
        (list(frequency), list(frequency.values())),
    )


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
