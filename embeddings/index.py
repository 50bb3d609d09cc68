"""The index on disk: the passage matrix, the passages and their metadata; build, load, search.

Layout of an index folder (plain files, readable without this library)::

    CURRENT                 the name of the generation in use (replaced atomically)
    <generation>/vectors.npy      float32, one L2-normalised row per passage
    <generation>/passages.jsonl   one passage per line, in row order
    <generation>/meta.json        format version, model, dimension, count, article hashes

A build writes a new generation in a temporary folder, renames it into place and only then
points CURRENT at it, so a crash at any moment leaves the previous index whole.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embeddings.articles import Article
from embeddings.encoder import Encoder, Vectors
from embeddings.errors import (
    IndexBusyError,
    IndexCorruptError,
    IndexNotFoundError,
    ModelMismatchError,
    NewsqaError,
    NoArticlesError,
)
from embeddings.passages import Passage, split_article

FORMAT = "newsqa-index"
FORMAT_VERSION = 1
CURRENT = "CURRENT"
VECTORS, PASSAGES, META = "vectors.npy", "passages.jsonl", "meta.json"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hit:
    """A passage found for a question, with its cosine similarity to the question."""

    passage: Passage
    score: float


@dataclass(frozen=True)
class BuildReport:
    """What a build did: how much it embedded and how much it could reuse."""

    articles: int
    passages: int
    embedded: int
    reused: int
    removed_articles: int
    written: bool
    seconds: float


class Index:
    """A loaded index: a (memory-mapped) matrix and the passages its rows belong to."""

    def __init__(
        self, generation: str, vectors: Vectors, passages: list[Passage], meta: dict[str, Any]
    ):
        self.generation = generation
        self.vectors = vectors
        self.passages = passages
        self.meta = meta

    def __len__(self) -> int:
        return len(self.passages)

    @property
    def model(self) -> str:
        """The name of the model the passages were embedded with."""
        return str(self.meta["model"])

    @property
    def articles(self) -> dict[str, dict[str, Any]]:
        """Per article id: its content hash, title, date, source and row range."""
        articles: dict[str, dict[str, Any]] = self.meta["articles"]
        return articles

    def search(self, query: Vectors, k: int) -> list[Hit]:
        """The `k` passages closest to a normalised query vector, best first."""
        scores = self.vectors @ query
        return [Hit(self.passages[i], float(scores[i])) for i in top_k(scores, k)]

    def article_passages(self, article_id: str) -> list[Passage]:
        """All passages of one article, in reading order."""
        first, count = self.articles[article_id]["rows"]
        return self.passages[first : first + count]

    @classmethod
    def load(cls, path: Path, *, model: str | None = None) -> Index:
        """Open the index at `path`; with `model`, insist it was built with that model."""
        generation = current_generation(path)
        if generation is None:
            raise IndexNotFoundError(f"No index at {path}")
        index = _read_generation(path / generation)
        if model is not None and index.model != model:
            raise ModelMismatchError(
                f"The index at {path} was built with {index.model!r}, not {model!r}"
            )
        return index


def top_k(scores: Vectors, k: int) -> list[int]:
    """Row numbers of the `k` highest scores, best first; ties keep row order."""
    k = min(k, len(scores))
    if k <= 0:
        return []
    candidates = np.argpartition(-scores, k - 1)[:k]
    order = np.lexsort((candidates, -scores[candidates]))
    return [int(i) for i in candidates[order]]


def current_generation(path: Path) -> str | None:
    """The name of the generation in use at `path`, or None when there is no index."""
    try:
        name = (path / CURRENT).read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        raise IndexCorruptError(f"The index at {path} cannot be read ({error})") from error
    return name or None


def _read_generation(folder: Path) -> Index:
    """Load and cross-check one generation's files; any inconsistency is `IndexCorruptError`."""
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"unknown format {meta.get('format')!r} v{meta.get('version')!r}")
        vectors = np.load(folder / VECTORS, mmap_mode="r", allow_pickle=False)
        with (folder / PASSAGES).open(encoding="utf-8") as lines:
            passages = [Passage.from_json(json.loads(line)) for line in lines]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise IndexCorruptError(f"The index at {folder.parent} is damaged ({error})") from error
    expected = (meta["count"], meta["dimension"])
    if vectors.dtype != np.float32 or vectors.shape != expected or len(passages) != meta["count"]:
        raise IndexCorruptError(
            f"The index at {folder.parent} is damaged (vectors {vectors.shape} {vectors.dtype}, "
            f"{len(passages)} passages, expected {expected} float32)"
        )
    return Index(folder.name, vectors, passages, meta)


def build_index(
    articles: Sequence[Article], encoder: Encoder, path: Path, *, progress: bool = False
) -> BuildReport:
    """Bring the index at `path` up to date with `articles`, embedding only what changed."""
    if not articles:
        raise NoArticlesError("There are no articles to index")
    started = time.perf_counter()
    path.mkdir(parents=True, exist_ok=True)
    with _build_lock(path):
        previous = _previous_index(path, encoder.name)
        plan = _plan(articles, previous, encoder)
        removed = len(previous.articles.keys() - {a.id for a in articles}) if previous else 0
        written = previous is None or removed > 0 or plan.embedded > 0
        if written:
            vectors = plan.assemble(encoder.encode_passages(plan.texts_to_embed, progress=progress))
            _write_generation(path, vectors, plan.passages, _meta(encoder, articles, plan))
    return BuildReport(
        articles=len(articles),
        passages=len(plan.passages),
        embedded=plan.embedded,
        reused=len(plan.passages) - plan.embedded,
        removed_articles=removed,
        written=written,
        seconds=time.perf_counter() - started,
    )


@contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock so two builds never write the same index at once."""
    with (path / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise IndexBusyError(f"Another build is writing the index at {path}") from error
        yield


def _previous_index(path: Path, model: str) -> Index | None:
    """The index to reuse vectors from, or None when it is missing, damaged or another model's."""
    try:
        return Index.load(path, model=model)
    except IndexNotFoundError:
        return None
    except NewsqaError as error:
        log.warning("Rebuilding from scratch: %s", error)
        return None


class _Plan:
    """The passages of a new build in row order, and where each row's vector comes from."""

    def __init__(self) -> None:
        self.passages: list[Passage] = []
        self.rows: list[dict[str, Any]] = []  # per article: its rows in the new matrix
        self.texts_to_embed: list[str] = []
        self._sources: list[tuple[Vectors | None, int]] = []  # (old matrix or None, row)

    @property
    def embedded(self) -> int:
        return len(self.texts_to_embed)

    def reuse(self, previous: Index, article_id: str) -> None:
        first, count = previous.articles[article_id]["rows"]
        self._add(previous.passages[first : first + count])
        self._sources.extend((previous.vectors, first + i) for i in range(count))

    def embed(self, passages: list[Passage]) -> None:
        self._add(passages)
        start = len(self.texts_to_embed)
        self.texts_to_embed.extend(p.embedding_text for p in passages)
        self._sources.extend((None, start + i) for i in range(len(passages)))

    def _add(self, passages: list[Passage]) -> None:
        self.rows.append({"rows": [len(self.passages), len(passages)]})
        self.passages.extend(passages)

    def assemble(self, new_vectors: Vectors) -> Vectors:
        """The full matrix: reused rows copied from the old matrix, new rows from `new_vectors`."""
        dimension = new_vectors.shape[1] if len(new_vectors) else self._old_dimension()
        matrix = np.empty((len(self._sources), dimension), dtype=np.float32)
        for row, (old, source_row) in enumerate(self._sources):
            matrix[row] = new_vectors[source_row] if old is None else old[source_row]
        return matrix

    def _old_dimension(self) -> int:
        return next(int(old.shape[1]) for old, _ in self._sources if old is not None)


def _plan(articles: Sequence[Article], previous: Index | None, encoder: Encoder) -> _Plan:
    """Decide, article by article, whether its passages can be reused or must be embedded."""
    plan = _Plan()
    known = previous.articles if previous else {}
    for article in articles:
        if previous and known.get(article.id, {}).get("hash") == article.content_hash:
            plan.reuse(previous, article.id)
        else:
            plan.embed(split_article(article, encoder.count_tokens, encoder.max_tokens))
    return plan


def _meta(encoder: Encoder, articles: Sequence[Article], plan: _Plan) -> dict[str, Any]:
    """The meta.json record of a build."""
    described = {
        article.id: {
            "hash": article.content_hash,
            "title": article.title,
            "date": article.date.isoformat() if article.date else None,
            "source": article.source,
            "url": article.url,
            **rows,
        }
        for article, rows in zip(articles, plan.rows, strict=True)
    }
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model": encoder.name,
        "max_tokens": encoder.max_tokens,
        "dimension": None,  # filled in by _write_generation from the matrix itself
        "count": len(plan.passages),
        "built_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "articles": described,
    }


def _write_generation(
    path: Path, vectors: Vectors, passages: list[Passage], meta: dict[str, Any]
) -> None:
    """Write a complete new generation, then switch CURRENT to it in one atomic rename."""
    meta = {**meta, "dimension": int(vectors.shape[1])}
    name = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    staging = path / f".build-{name}"
    staging.mkdir()
    with (staging / VECTORS).open("wb") as file:
        np.save(file, vectors, allow_pickle=False)
        _sync(file.fileno())
    lines = "".join(json.dumps(p.to_json(), ensure_ascii=False) + "\n" for p in passages)
    _write_synced(staging / PASSAGES, lines)
    _write_synced(staging / META, json.dumps(meta, ensure_ascii=False, indent=1))
    staging.rename(path / name)
    previous = current_generation(path)
    _write_synced(path / f".{CURRENT}.tmp", name)
    (path / f".{CURRENT}.tmp").replace(path / CURRENT)
    _sync_folder(path)
    _remove_old_generations(path, keep={name, previous or ""})


def _write_synced(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        _sync(file.fileno())


def _sync(descriptor: int) -> None:
    os.fsync(descriptor)


def _sync_folder(path: Path) -> None:
    """Make the renames inside `path` durable."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove_old_generations(path: Path, *, keep: set[str]) -> None:
    """Delete superseded generations and leftovers of crashed builds (we hold the lock)."""
    for child in path.iterdir():
        if child.is_dir() and child.name not in keep:
            shutil.rmtree(child, ignore_errors=True)
