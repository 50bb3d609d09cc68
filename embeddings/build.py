"""Building the index: articles in, a new generation on disk, embedding only what changed.

A build holds a lock, reuses the vectors of every article whose content hash is unchanged,
writes the whole new generation into a temporary folder (every file synced), renames it into
place and only then switches CURRENT to it in one atomic rename.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import re
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
from embeddings.catalog import ArticleEntry, Catalog
from embeddings.encoder import Encoder, Vectors
from embeddings.errors import IndexBusyError, IndexNotFoundError, NewsqaError, NoArticlesError
from embeddings.index import (
    CHECKSUMS,
    CURRENT,
    FORMAT,
    FORMAT_VERSION,
    INT8_SCAN_ROWS,
    LEXICAL,
    META,
    MULTILINGUAL_VECTORS,
    OFFSETS,
    PASSAGES,
    VECTORS,
    Index,
    current_generation,
    lexical_of,
    sha256,
)
from embeddings.passages import Passage, split_article
from embeddings.scan import Int8Matrix
from embeddings.store import passages_file

# Generation folders (and the temporary folders of builds): everything else in an index
# folder, such as an exported model, belongs to someone else and is left alone.
_GENERATION = re.compile(r"\.build-.+|\d{8}T\d{6}-[0-9a-f]{8}")

log = logging.getLogger(__name__)


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


def build_index(
    articles: Sequence[Article],
    encoder: Encoder,
    path: Path,
    *,
    multilingual: Encoder | None = None,
    progress: bool = False,
) -> BuildReport:
    """Bring the index at `path` up to date with `articles`, embedding only what changed.

    With `multilingual`, a second matrix from that encoder is kept alongside, under the same
    incremental rules; without it, an existing second matrix is dropped.
    """
    if not articles:
        raise NoArticlesError("There are no articles to index")
    started = time.perf_counter()
    path.mkdir(parents=True, exist_ok=True)
    with _build_lock(path):
        previous = _previous_index(path, encoder.name)
        plan = _plan(articles, previous, encoder)
        known = {entry.id for entry in previous.catalog.entries} if previous else set()
        removed = len(known - {a.id for a in articles})
        old_multilingual = previous.multilingual_model if previous else None
        new_multilingual = multilingual.name if multilingual else None
        written = (
            previous is None or removed > 0 or plan.embedded > 0
            or old_multilingual != new_multilingual
        )  # fmt: skip
        if written:
            new_rows = _embed(encoder, plan.texts_to_embed, progress)
            matrices = {VECTORS: plan.assemble(previous.vectors if previous else None, new_rows)}
            meta = _meta(encoder, plan)
            if multilingual:
                matrices[MULTILINGUAL_VECTORS] = _multilingual_matrix(
                    plan, previous, multilingual, progress
                )
                meta["multilingual"] = {"model": multilingual.name}
            _write_generation(path, matrices, plan, meta)
    return BuildReport(
        articles=len(articles),
        passages=len(plan.passages),
        embedded=plan.embedded,
        reused=len(plan.passages) - plan.embedded,
        removed_articles=removed,
        written=written,
        seconds=time.perf_counter() - started,
    )


def _multilingual_matrix(
    plan: _Plan, previous: Index | None, encoder: Encoder, progress: bool
) -> Vectors:
    """The second matrix: reused rows where the previous one came from the same model."""
    if previous is not None and previous.multilingual_model == encoder.name:
        return plan.assemble(previous.multilingual, _embed(encoder, plan.texts_to_embed, progress))
    texts = [passage.embedding_text for passage in plan.passages]
    return encoder.encode_passages(texts, progress=progress)


def _embed(encoder: Encoder, texts: list[str], progress: bool) -> Vectors:
    """Embed `texts`; with none, the model is not even loaded."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    return encoder.encode_passages(texts, progress=progress)


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
        index = Index.load(path, model=model)
        index.catalog.entries  # noqa: B018 -- a damaged articles.jsonl fails here, not mid-build
    except IndexNotFoundError:
        return None
    except (NewsqaError, ValueError, KeyError) as error:
        log.warning("Rebuilding from scratch: %s", error)
        return None
    return index


class _Plan:
    """The passages and articles of a new build in row order, and where each row's vector
    comes from."""

    def __init__(self) -> None:
        self.passages: list[Passage] = []
        self.entries: list[ArticleEntry] = []
        self.texts_to_embed: list[str] = []
        self._reused: list[tuple[int, int]] = []  # (new row, row in the previous matrix)
        self._new: list[int] = []  # new rows, in the order of `texts_to_embed`

    @property
    def embedded(self) -> int:
        return len(self.texts_to_embed)

    def reuse(self, previous: Index, article: Article, old: ArticleEntry) -> None:
        start = self._add(article, previous.article_passages(article.id))
        self._reused.extend((start + i, old.first + i) for i in range(old.count))

    def embed(self, article: Article, passages: list[Passage]) -> None:
        start = self._add(article, passages)
        self.texts_to_embed.extend(p.embedding_text for p in passages)
        self._new.extend(range(start, start + len(passages)))

    def _add(self, article: Article, passages: list[Passage]) -> int:
        start = len(self.passages)
        self.entries.append(
            ArticleEntry(
                article.id, article.content_hash, article.title, article.date, article.source,
                article.url, start, len(passages),
            )
        )  # fmt: skip
        self.passages.extend(passages)
        return start

    def assemble(self, previous: Vectors | None, new_vectors: Vectors) -> Vectors:
        """The full matrix: reused rows copied from `previous`, the others from `new_vectors`."""
        source = previous if previous is not None and len(previous) else new_vectors
        matrix = np.empty((len(self.passages), source.shape[1]), dtype=np.float32)
        if self._reused and previous is not None:
            new_rows, old_rows = np.array(self._reused).T
            matrix[new_rows] = previous[old_rows]
        if self._new:
            matrix[self._new] = new_vectors
        return matrix


def _plan(articles: Sequence[Article], previous: Index | None, encoder: Encoder) -> _Plan:
    """Decide, article by article, whether its passages can be reused or must be embedded."""
    plan = _Plan()
    for article in articles:
        old = previous.article(article.id) if previous else None
        if previous and old and old.hash == article.content_hash:
            plan.reuse(previous, article, old)
        else:
            plan.embed(article, split_article(article, encoder.count_tokens, encoder.max_tokens))
    return plan


def _meta(encoder: Encoder, plan: _Plan) -> dict[str, Any]:
    """The meta.json record of a build."""
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model": encoder.name,
        "dimension": None,  # filled in by _write_generation from the matrices themselves
        "count": len(plan.passages),
        "articles": len(plan.entries),
        "built_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _write_generation(
    path: Path, matrices: dict[str, Vectors], plan: _Plan, meta: dict[str, Any]
) -> None:
    """Write a complete new generation, then switch CURRENT to it in one atomic rename."""
    vectors = matrices[VECTORS]
    meta = {**meta, "dimension": int(vectors.shape[1])}
    if MULTILINGUAL_VECTORS in matrices:
        meta["multilingual"]["dimension"] = int(matrices[MULTILINGUAL_VECTORS].shape[1])
    name = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    staging = path / f".build-{name}"
    staging.mkdir()
    for filename, matrix in matrices.items():
        np.save(staging / filename, matrix, allow_pickle=False)
    lines, offsets = passages_file(plan.passages)
    (staging / PASSAGES).write_bytes(lines)
    np.save(staging / OFFSETS, offsets, allow_pickle=False)
    Catalog.build(plan.entries, vectors).save(staging)
    lexical_of([p.embedding_text for p in plan.passages]).save(staging / LEXICAL)
    if len(vectors) >= INT8_SCAN_ROWS:
        Int8Matrix.quantize(vectors).save(staging)
    files = sorted(f for f in staging.rglob("*") if f.is_file())
    meta[CHECKSUMS] = {str(f.relative_to(staging)): sha256(f) for f in files}
    (staging / META).write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")
    _sync_tree(staging)
    staging.rename(path / name)
    previous = current_generation(path)
    _write_synced(path / f".{CURRENT}.tmp", name)
    (path / f".{CURRENT}.tmp").replace(path / CURRENT)
    _sync_folder(path)
    _remove_old_generations(path, keep={name, previous or ""})


def _sync_tree(folder: Path) -> None:
    """Make every file under `folder`, and the folders themselves, durable."""
    for item in sorted(folder.rglob("*"), reverse=True):
        if item.is_file():
            with item.open("rb") as file:
                os.fsync(file.fileno())
        else:
            _sync_folder(item)
    _sync_folder(folder)


def _write_synced(path: Path, content: str) -> None:
    with path.open("w", encoding="utf-8") as file:
        file.write(content)
        file.flush()
        os.fsync(file.fileno())


def _sync_folder(path: Path) -> None:
    """Make the renames and new files inside `path` durable."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove_old_generations(path: Path, *, keep: set[str]) -> None:
    """Delete superseded generations and leftovers of crashed builds (we hold the lock)."""
    for child in path.iterdir():
        if child.is_dir() and child.name not in keep and _GENERATION.fullmatch(child.name):
            shutil.rmtree(child, ignore_errors=True)
