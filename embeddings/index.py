"""The index on disk: the passage matrix, the passages and their metadata; build, load, search.

Layout of an index folder (plain files, readable without this library)::

    CURRENT                 the name of the generation in use (replaced atomically)
    <generation>/vectors.npy      float32, one L2-normalised row per passage
    <generation>/passages.jsonl   one passage per line, in row order
    <generation>/passages.offsets.npy   int64 byte offset of each line (and of the end)
    <generation>/meta.json        format version, model, dimension, count, article hashes,
                                  and the SHA-256 of every other file (checked at open)
    <generation>/vectors-multilingual.npy   optional: the same rows from a multilingual model

A build writes a new generation in a temporary folder, renames it into place and only then
points CURRENT at it, so a crash at any moment leaves the previous index whole.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
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
from embeddings.store import PassageStore, passages_file

FORMAT = "newsqa-index"
FORMAT_VERSION = 1
CURRENT = "CURRENT"
VECTORS, PASSAGES, META = "vectors.npy", "passages.jsonl", "meta.json"
# meta.json key: the SHA-256 of every other file of the generation, checked when it is opened.
CHECKSUMS = "sha256"
OFFSETS = "passages.offsets.npy"  # byte offset of each passages.jsonl line, and the end
# The optional second matrix, from the multilingual model, for questions not in English.
MULTILINGUAL_VECTORS = "vectors-multilingual.npy"

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
        self,
        generation: str,
        vectors: Vectors,
        passages: Sequence[Passage],
        meta: dict[str, Any],
        multilingual: Vectors | None = None,
    ):
        self.generation = generation
        self.vectors = vectors
        self.passages = passages
        self.meta = meta
        self.multilingual = multilingual

    def __len__(self) -> int:
        return len(self.passages)

    @property
    def model(self) -> str:
        """The name of the model the passages were embedded with."""
        return str(self.meta["model"])

    @property
    def multilingual_model(self) -> str | None:
        """The multilingual model of the second matrix, or None when there is none."""
        return (
            self.meta.get("multilingual", {}).get("model")
            if self.multilingual is not None
            else None
        )

    @property
    def articles(self) -> dict[str, dict[str, Any]]:
        """Per article id: its content hash, title, date, source and row range."""
        articles: dict[str, dict[str, Any]] = self.meta["articles"]
        return articles

    def search(self, query: Vectors, k: int, *, multilingual: bool = False) -> list[Hit]:
        """The `k` passages closest to a normalised query vector, best first.

        With `multilingual`, the query comes from the multilingual model and is matched
        against the second matrix.
        """
        matrix = self.multilingual if multilingual else self.vectors
        if matrix is None:
            raise ModelMismatchError("This index has no multilingual vectors")
        scores = matrix @ query
        return [Hit(self.passages[i], float(scores[i])) for i in top_k(scores, k)]

    def article_passages(self, article_id: str) -> list[Passage]:
        """All passages of one article, in reading order."""
        first, count = self.articles[article_id]["rows"]
        return list(self.passages[first : first + count])

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
    except (OSError, UnicodeDecodeError) as error:
        raise IndexCorruptError(f"The index at {path} cannot be read ({error})") from error
    return name or None


def _read_generation(folder: Path) -> Index:
    """Load and cross-check one generation's files; any inconsistency is `IndexCorruptError`."""
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"unknown format {meta.get('format')!r} v{meta.get('version')!r}")
        vectors = _open_matrix(folder / VECTORS, (meta["count"], meta["dimension"]))
        multilingual = None
        if "multilingual" in meta:
            shape = (meta["count"], meta["multilingual"]["dimension"])
            multilingual = _open_matrix(folder / MULTILINGUAL_VECTORS, shape)
        offsets = np.load(folder / OFFSETS, allow_pickle=False)
        passages = PassageStore(folder / PASSAGES, offsets)
        _check_sums(folder, meta.get(CHECKSUMS, {}))  # what the shapes and sizes cannot see
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise IndexCorruptError(f"The index at {folder.parent} is damaged ({error})") from error
    if len(passages) != meta["count"]:
        raise IndexCorruptError(
            f"The index at {folder.parent} is damaged ({len(passages)} passages, "
            f"expected {meta['count']})"
        )
    return Index(folder.name, vectors, passages, meta, multilingual)


def _check_sums(folder: Path, sums: dict[str, str]) -> None:
    """Insist every file has the SHA-256 its build recorded, so a damaged byte is an error."""
    for name, digest in sums.items():
        if _sha256(folder / name) != digest:
            raise ValueError(f"{name} does not match its checksum")


def _sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _open_matrix(path: Path, shape: tuple[int, int]) -> Vectors:
    """Memory-map a float32 matrix, insisting on the shape meta.json promises."""
    matrix: Vectors = np.load(path, mmap_mode="r", allow_pickle=False)
    if matrix.dtype != np.float32 or matrix.shape != shape:
        raise ValueError(f"{path.name} is {matrix.shape} {matrix.dtype}, expected {shape} float32")
    return matrix


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
        removed = len(previous.articles.keys() - {a.id for a in articles}) if previous else 0
        old_multilingual = previous.multilingual_model if previous else None
        new_multilingual = multilingual.name if multilingual else None
        written = (
            previous is None or removed > 0 or plan.embedded > 0
            or old_multilingual != new_multilingual
        )  # fmt: skip
        if written:
            new_rows = _embed(encoder, plan.texts_to_embed, progress)
            matrices = {VECTORS: plan.assemble(previous.vectors if previous else None, new_rows)}
            meta = _meta(encoder, articles, plan)
            if multilingual:
                matrices[MULTILINGUAL_VECTORS] = _multilingual_matrix(
                    plan, previous, multilingual, progress
                )
                meta["multilingual"] = {"model": multilingual.name}
            _write_generation(path, matrices, plan.passages, meta)
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
        self._reused: list[tuple[int, int]] = []  # (new row, row in the previous matrix)
        self._new: list[int] = []  # new rows, in the order of `texts_to_embed`

    @property
    def embedded(self) -> int:
        return len(self.texts_to_embed)

    def reuse(self, previous: Index, article_id: str) -> None:
        first, count = previous.articles[article_id]["rows"]
        start = self._add(previous.article_passages(article_id))
        self._reused.extend((start + i, first + i) for i in range(count))

    def embed(self, passages: list[Passage]) -> None:
        start = self._add(passages)
        self.texts_to_embed.extend(p.embedding_text for p in passages)
        self._new.extend(range(start, start + len(passages)))

    def _add(self, passages: list[Passage]) -> int:
        start = len(self.passages)
        self.rows.append({"rows": [start, len(passages)]})
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
        "dimension": None,  # filled in by _write_generation from the matrices themselves
        "count": len(plan.passages),
        "built_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "articles": described,
    }


def _write_generation(
    path: Path, matrices: dict[str, Vectors], passages: list[Passage], meta: dict[str, Any]
) -> None:
    """Write a complete new generation, then switch CURRENT to it in one atomic rename."""
    meta = {**meta, "dimension": int(matrices[VECTORS].shape[1])}
    if MULTILINGUAL_VECTORS in matrices:
        meta["multilingual"]["dimension"] = int(matrices[MULTILINGUAL_VECTORS].shape[1])
    name = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    staging = path / f".build-{name}"
    staging.mkdir()
    for filename, matrix in matrices.items():
        with (staging / filename).open("wb") as file:
            np.save(file, matrix, allow_pickle=False)
            _sync(file.fileno())
    lines, offsets = passages_file(passages)
    _write_synced(staging / PASSAGES, lines)
    with (staging / OFFSETS).open("wb") as file:
        np.save(file, offsets, allow_pickle=False)
        _sync(file.fileno())
    meta[CHECKSUMS] = {file.name: _sha256(file) for file in sorted(staging.iterdir())}
    _write_synced(staging / META, json.dumps(meta, ensure_ascii=False, indent=1))
    staging.rename(path / name)
    previous = current_generation(path)
    _write_synced(path / f".{CURRENT}.tmp", name)
    (path / f".{CURRENT}.tmp").replace(path / CURRENT)
    _sync_folder(path)
    _remove_old_generations(path, keep={name, previous or ""})


def _write_synced(path: Path, content: str | bytes) -> None:
    data = content.encode() if isinstance(content, str) else content
    with path.open("wb") as file:
        file.write(data)
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
