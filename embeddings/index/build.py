"""Building the index: articles in, a new generation on disk, embedding only what changed.

A build holds a lock, reuses the vectors of every article whose content hash is unchanged,
writes the new generation into a temporary folder (every file synced), renames it into place
and only then switches CURRENT to it in one atomic rename.

When the articles only grew (no article changed or removed, the same multilingual model), the
new generation is the previous one's segments, hard-linked, plus one small append segment of
the new articles: its cost follows the new articles, not the index. Anything else, a build that
would exceed `MAX_SEGMENTS`, or `merge`, writes one base segment from all rows, reusing every
vector it already has (see embeddings/index/layout.py for the layout).
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
from embeddings.encoders.base import Encoder, Vectors
from embeddings.errors import IndexBusyError, IndexNotFoundError, NewsqaError, NoArticlesError
from embeddings.index.catalog import ArticleEntry, Catalog
from embeddings.index.index import INT8_SCAN_ROWS, Index, current_generation, lexical_of, sha256
from embeddings.index.layout import (
    CHECKSUMS,
    CURRENT,
    FORMAT,
    FORMAT_VERSION,
    LEXICAL,
    MAX_SEGMENTS,
    META,
    MULTILINGUAL_VECTORS,
    OFFSETS,
    PASSAGES,
    SEGMENTED_VERSION,
    SEGMENTS,
    VECTORS,
)
from embeddings.index.scan import Int8Matrix
from embeddings.index.segments import StackedRows
from embeddings.index.store import passages_file
from embeddings.passages import Passage, split_article

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
    segments: int = 1  # segments of the index afterwards


@dataclass(frozen=True)
class _Change:
    """How the articles differ from the previous index's."""

    added: list[Article]
    changed: int
    removed: int
    multilingual: bool  # the multilingual model (or its absence) changed

    @classmethod
    def of(
        cls, articles: Sequence[Article], previous: Index | None, multilingual: Encoder | None
    ) -> _Change:
        if previous is None:
            return cls(list(articles), 0, 0, multilingual is not None)
        entries = [previous.article(article.id) for article in articles]
        added = [a for a, entry in zip(articles, entries, strict=True) if entry is None]
        changed = sum(
            1 for a, e in zip(articles, entries, strict=True) if e and e.hash != a.content_hash
        )
        removed = len(previous.article_ids() - {a.id for a in articles})
        model = multilingual.name if multilingual else None
        return cls(added, changed, removed, previous.multilingual_model != model)

    @property
    def additive(self) -> bool:
        """Only new articles: the previous index stays as it is, under them."""
        return bool(self.added) and not (self.changed or self.removed or self.multilingual)

    @property
    def any(self) -> bool:
        return bool(self.added or self.changed or self.removed or self.multilingual)


@dataclass(frozen=True)
class _Written:
    passages: int
    embedded: int
    segments: int


def build_index(
    articles: Sequence[Article],
    encoder: Encoder,
    path: Path,
    *,
    multilingual: Encoder | None = None,
    progress: bool = False,
    merge: bool = False,
) -> BuildReport:
    """Bring the index at `path` up to date with `articles`, embedding only what changed.

    With `multilingual`, a second matrix from that encoder is kept alongside, under the same
    incremental rules; without it, an existing second matrix is dropped. With `merge`, an index
    of several segments is rewritten as one even when no article changed.
    """
    if not articles:
        raise NoArticlesError("There are no articles to index")
    started = time.perf_counter()
    path.mkdir(parents=True, exist_ok=True)
    with _build_lock(path):
        previous = _previous_index(path, encoder.name)
        change = _Change.of(articles, previous, multilingual)
        segments = len(previous.segments) if previous else 0
        written: _Written | None = None
        if previous and change.additive and not merge and segments < MAX_SEGMENTS:
            written = _append(path, previous, change.added, encoder, multilingual, progress)
        elif previous is None or change.any or (merge and segments > 1):
            written = _rebuild(path, articles, previous, encoder, multilingual, progress)
    passages = written.passages if written else len(previous or ())
    embedded = written.embedded if written else 0
    return BuildReport(
        articles=len(articles),
        passages=passages,
        embedded=embedded,
        reused=passages - embedded,
        removed_articles=change.removed,
        written=written is not None,
        seconds=time.perf_counter() - started,
        segments=written.segments if written else segments,
    )


def _rebuild(
    path: Path,
    articles: Sequence[Article],
    previous: Index | None,
    encoder: Encoder,
    multilingual: Encoder | None,
    progress: bool,
) -> _Written:
    """Write one base segment of every article, reusing every vector `previous` holds."""
    plan = _plan(articles, previous, encoder)
    new_rows = _embed(encoder, plan.texts_to_embed, progress)
    matrices = {VECTORS: plan.assemble(previous.vectors if previous else None, new_rows)}
    meta = _meta(encoder, plan)
    if multilingual:
        matrices[MULTILINGUAL_VECTORS] = _multilingual_matrix(
            plan, previous, multilingual, progress
        )
        meta["multilingual"] = {"model": multilingual.name}
    _write_generation(path, matrices, plan, meta, below=None)
    return _Written(len(plan.passages), plan.embedded, 1)


def _append(
    path: Path,
    previous: Index,
    added: Sequence[Article],
    encoder: Encoder,
    multilingual: Encoder | None,
    progress: bool,
) -> _Written | None:
    """Write `previous`'s segments plus one of the `added` articles (None when they have no
    passages, so there is nothing to write)."""
    plan = _plan(added, None, encoder)
    if not plan.embedded:
        return None
    matrices = {VECTORS: _embed(encoder, plan.texts_to_embed, progress)}
    meta = _meta(encoder, plan)
    if multilingual:
        matrices[MULTILINGUAL_VECTORS] = _embed(multilingual, plan.texts_to_embed, progress)
        meta["multilingual"] = {"model": multilingual.name}
    _write_generation(path, matrices, plan, meta, below=previous)
    return _Written(len(previous) + plan.embedded, plan.embedded, len(previous.segments) + 1)


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
        for segment in index.segments:  # a damaged articles.jsonl fails here, not mid-build
            segment.catalog.entries  # noqa: B018
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

    def assemble(self, previous: Vectors | StackedRows | None, new_vectors: Vectors) -> Vectors:
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
    path: Path, matrices: dict[str, Vectors], plan: _Plan, meta: dict[str, Any], below: Index | None
) -> None:
    """Write a complete new generation, then switch CURRENT to it in one atomic rename: one
    segment of `plan`, on its own or (an append) above the segments of `below`, hard-linked."""
    name = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    staging = path / f".build-{name}"
    staging.mkdir()
    if below is None:
        _write_segment(staging, matrices, plan, meta, frequencies=False)
    else:
        records = [
            _link_segment(segment.folder, staging) for segment in below.segments if segment.folder
        ]
        (staging / name).mkdir()
        segment_meta = _write_segment(staging / name, matrices, plan, meta, frequencies=True)
        records.append(_segment_record(staging / name, segment_meta))
        _write_segmented_meta(staging, segment_meta, records)
    _sync_tree(staging)
    staging.rename(path / name)
    previous = current_generation(path)
    _write_synced(path / f".{CURRENT}.tmp", name)
    (path / f".{CURRENT}.tmp").replace(path / CURRENT)
    _sync_folder(path)
    _remove_old_generations(path, keep={name, previous or ""})


def _write_segment(
    folder: Path, matrices: dict[str, Vectors], plan: _Plan, meta: dict[str, Any], *,
    frequencies: bool,
) -> dict[str, Any]:  # fmt: skip
    """Write the files of one segment into `folder`, meta.json (with every file's SHA-256)
    last; returns that meta. An append segment keeps BM25 term `frequencies`."""
    vectors = matrices[VECTORS]
    meta = {**meta, "dimension": int(vectors.shape[1])}
    if MULTILINGUAL_VECTORS in matrices:
        dimension = int(matrices[MULTILINGUAL_VECTORS].shape[1])
        meta["multilingual"] = {**meta["multilingual"], "dimension": dimension}
    for filename, matrix in matrices.items():
        np.save(folder / filename, matrix, allow_pickle=False)
    lines, offsets = passages_file(plan.passages)
    (folder / PASSAGES).write_bytes(lines)
    np.save(folder / OFFSETS, offsets, allow_pickle=False)
    Catalog.build(plan.entries, vectors).save(folder)
    texts = [p.embedding_text for p in plan.passages]
    lexical_of(texts, frequencies=frequencies).save(folder / LEXICAL)
    if len(vectors) >= INT8_SCAN_ROWS:
        Int8Matrix.quantize(vectors).save(folder)
    files = sorted(f for f in folder.rglob("*") if f.is_file())
    meta[CHECKSUMS] = {str(f.relative_to(folder)): sha256(f) for f in files}
    (folder / META).write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")
    return meta


def _link_segment(source: Path, staging: Path) -> dict[str, Any]:
    """Hard-link every file of the segment at `source` into a folder of the same name in
    `staging` (its checksums come along in its meta.json); the generation's record of it."""
    target = staging / source.name
    for file in sorted(source.rglob("*")):
        if file.is_file():
            (target / file.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            os.link(file, target / file.relative_to(source))
    meta = json.loads((target / META).read_text(encoding="utf-8"))
    return _segment_record(target, meta)


def _segment_record(folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """A segment as its generation's meta.json lists it."""
    return {
        "name": folder.name,
        "count": meta["count"],
        "articles": meta["articles"],
        CHECKSUMS: sha256(folder / META),
    }


def _write_segmented_meta(
    staging: Path, newest: dict[str, Any], records: list[dict[str, Any]]
) -> None:
    """The generation's meta.json: the newest segment's model and dimensions, the totals,
    and the segments, base first."""
    keys = ("model", "dimension", "built_at", "multilingual")
    kept: dict[str, Any] = {key: newest[key] for key in keys if key in newest}
    meta = {
        "format": FORMAT,
        "version": SEGMENTED_VERSION,
        **kept,
        "count": sum(record["count"] for record in records),
        "articles": sum(record["articles"] for record in records),
        SEGMENTS: records,
    }
    (staging / META).write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")


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
