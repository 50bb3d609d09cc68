"""The index on disk: the files of an index folder, plain and readable without this library::

    CURRENT                       the name of the generation in use (replaced atomically)
    <generation>/meta.json        format version, model, dimension, counts, build time, and the
                                  SHA-256 of every other file
    <generation>/vectors.npy      float32, one L2-normalised row per passage
    <generation>/passages.jsonl   one passage per line, in row order
    <generation>/passages.offsets.npy   int64 byte offset of each line (and of the end)
    <generation>/articles.jsonl, row_articles.npy, article_dates.npy, article_vectors.npy
                                  the articles (catalog.py)
    <generation>/bm25/            the BM25 index of the passages (lexical.py)
    <generation>/codes.npy, scales.npy   int8 copy of the matrix for large indexes (scan.py)
    <generation>/vectors-multilingual.npy   optional: the same rows from a multilingual model

A generation is one segment (the files above, in the generation folder itself: format version 2)
or, after builds that only added articles, a base segment plus up to `MAX_SEGMENTS` - 1 small
append segments (format version 3)::

    <generation>/meta.json        version 3: model, dimension, counts, and "segments": each one's
                                  folder name, passage and article counts and meta.json SHA-256
    <generation>/<segment>/...    each segment: exactly the files of a version-2 generation

Global row numbers run through the segments in order (a segment's first row + its local row),
and article numbers likewise, so `Index` answers as if it were one matrix (segments.py).
A new generation reuses the previous one's segments as hard links to the same files: nothing is
copied or hashed again, and each generation stays a self-contained folder that can be deleted
on its own.

`embeddings.index.build` writes a generation in a temporary folder, renames it into place and
only then points CURRENT at it, so a crash at any moment leaves the previous index whole.
"""

FORMAT = "newsqa-index"
FORMAT_VERSION = 2
# The version of a generation made of segments (each segment a version-2 folder).
SEGMENTED_VERSION = 3
# meta.json key of a segmented generation: its segments, base first.
SEGMENTS = "segments"
# A generation holds at most this many segments; a build past it merges them into one.
MAX_SEGMENTS = 8
CURRENT = "CURRENT"
VECTORS, PASSAGES, META = "vectors.npy", "passages.jsonl", "meta.json"
OFFSETS = "passages.offsets.npy"  # byte offset of each passages.jsonl line, and the end
LEXICAL = "bm25"  # folder of the BM25 index
# The optional second matrix, from the multilingual model, for questions not in English.
MULTILINGUAL_VECTORS = "vectors-multilingual.npy"
# meta.json key: the SHA-256 of every other file of the generation.
CHECKSUMS = "sha256"
