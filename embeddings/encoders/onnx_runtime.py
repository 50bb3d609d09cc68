"""The embedding model on onnxruntime, int8: no torch at run time, about 2x faster on a CPU.

`OnnxEncoder` reads a folder that `embeddings.encoders.onnx_export` wrote, with onnxruntime and
tokenizers alone. Its vectors differ from the torch model's by a cosine of about 0.993 per
passage, so an index records it as a model of its own (`<source>@onnx-int8`): switching backends
re-embeds rather than mixing the two.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from embeddings.cores import cores
from embeddings.encoders.base import Vectors
from embeddings.errors import EncoderLoadError, NewsqaError

ONNX_SUFFIX = "@onnx-int8"
MODEL_FILE, TOKENIZER_FILE, MANIFEST_FILE = "model.onnx", "tokenizer.json", "onnx.json"
MANIFEST_FORMAT = "newsqa-onnx-encoder"
# The layout version of every model manifest: this export's onnx.json and the reranker's.
MANIFEST_VERSION = 1
# The folder inside an index that holds its exports; an index build must leave it in place.
EXPORTS_FOLDER = "models"

# Passages per onnxruntime call, after sorting by length. Measured (benchmarks/speed.py): 8 is
# the fastest, and activations are quantised per call, so fewer batch mates also lose less.
DEFAULT_BATCH_SIZE = 8

Tokens = npt.NDArray[np.int64]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Manifest:
    """What `onnx.json` says about an exported model."""

    name: str
    max_tokens: int
    dimension: int

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        """The manifest in `folder`; a missing or foreign one is `EncoderLoadError`."""
        with manifest_errors(EncoderLoadError, f"No exported ONNX model in {folder}"):
            record = read_manifest(folder / MANIFEST_FILE, MANIFEST_FORMAT)
            return cls(str(record["name"]), int(record["max_tokens"]), int(record["dimension"]))


def read_manifest(path: Path, expected: str) -> dict[str, Any]:
    """A model folder's JSON manifest, insisting on its format and `MANIFEST_VERSION`."""
    record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if record.get("format") != expected or record.get("version") != MANIFEST_VERSION:
        raise ValueError(f"unknown format {record.get('format')!r}")
    return record


@contextmanager
def manifest_errors(error: type[NewsqaError], message: str) -> Iterator[None]:
    """Any way a manifest can be missing or wrong, as `error` with `message` and the cause."""
    try:
        yield
    except (OSError, ValueError, KeyError, TypeError) as cause:
        raise error(f"{message} ({cause})") from cause


class OnnxEncoder:
    """An exported model folder (see `export_onnx`) run by onnxruntime on the CPU."""

    def __init__(
        self, folder: Path, *, batch_size: int = DEFAULT_BATCH_SIZE, threads: int | None = None
    ) -> None:
        self.folder = folder
        self._batch_size = batch_size
        self._threads = threads  # sessions run at once, one thread each (None: one per core)
        self._manifest = Manifest.read(folder)
        self._made: list[Any] = []

    @property
    def name(self) -> str:
        """The source model's name with `@onnx-int8` appended."""
        return self._manifest.name

    @property
    def max_tokens(self) -> int:
        """The source model's `max_seq_length`."""
        return self._manifest.max_tokens

    @property
    def dimension(self) -> int:
        """The length of each vector."""
        return self._manifest.dimension

    def count_tokens(self, text: str) -> int:
        """Tokens with the model's own tokenizer, special tokens included, untruncated."""
        return len(self._counting_tokenizer.encode(text).ids)

    def encode_passages(self, texts: Sequence[str], *, progress: bool = False) -> Vectors:
        """Passage-side embeddings, batched by similar length."""
        return self._encode(texts, progress)

    def encode_queries(self, texts: Sequence[str]) -> Vectors:
        """Query-side embeddings (this model family has no query prompt)."""
        return self._encode(texts, False)

    def _encode(self, texts: Sequence[str], progress: bool) -> Vectors:
        """Batches of similar length, each run whole by one of the one-thread sessions.

        One session per core, each on one thread, beats one session on every core by about a
        fifth (benchmarks/speed.py): a batch's small steps never wait for a second thread, and
        a question (one batch) runs on one thread without waking another.
        """
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return vectors
        encodings = self._tokenizer.encode_batch(list(texts))
        lengths = np.array([len(e.ids) for e in encodings])
        work = list(batches(np.argsort(-lengths, kind="stable"), self._batch_size))

        def encode(session: Any, rows: npt.NDArray[np.intp]) -> None:
            ids, mask = padded([encodings[row].ids for row in rows], lengths[rows])
            vectors[rows] = self._run(session, ids, mask)

        sessions = self._sessions(min(len(work), self._workers))
        with _progress(len(texts), progress) as advance:
            share_batches(work, sessions, encode, advance)
        return vectors

    def _run(self, session: Any, ids: Tokens, mask: Tokens) -> Vectors:
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        inputs = {name: feed[name] for name in self._input_names}
        output: Vectors = session.run(None, inputs)[0]
        return output

    @property
    def _workers(self) -> int:
        return self._threads or cores()

    def _sessions(self, count: int) -> list[Any]:
        """`count` one-thread onnxruntime sessions (at least one), created on first use."""
        while len(self._made) < max(count, 1):
            self._made.append(self._new_session())
        return self._made[: max(count, 1)]

    def _new_session(self) -> Any:
        return one_thread_session(self.folder / MODEL_FILE, EncoderLoadError)

    @cached_property
    def _input_names(self) -> set[str]:
        return {node.name for node in self._sessions(1)[0].get_inputs()}

    @cached_property
    def _tokenizer(self) -> Any:
        """The model's tokenizer, truncating at the token limit and never padding."""
        tokenizer = self._counting_tokenizer_copy()
        tokenizer.enable_truncation(max_length=self.max_tokens)
        return tokenizer

    @cached_property
    def _counting_tokenizer(self) -> Any:
        """The model's tokenizer without truncation or padding (tokenizer.json sets both)."""
        return self._counting_tokenizer_copy()

    def _counting_tokenizer_copy(self) -> Any:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(self.folder / TOKENIZER_FILE))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return tokenizer


def one_thread_session(path: Path, error: type[NewsqaError]) -> Any:
    """An onnxruntime session of the model at `path` that runs on one thread (several run side
    by side); a missing runtime or an unreadable model is `error`, in one sentence."""
    try:
        import onnxruntime
    except ImportError as missing:
        raise error("Running the model needs onnxruntime: pip install onnxruntime") from missing
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as failure:  # onnxruntime raises its own untyped exceptions
        raise error(f"Cannot load {path}: {failure}") from failure


def batches(order: npt.NDArray[np.intp], size: int) -> Iterator[npt.NDArray[np.intp]]:
    """Consecutive slices of `order`, `size` rows each."""
    for start in range(0, len(order), size):
        yield order[start : start + size]


def padded(ids: list[list[int]], lengths: npt.NDArray[Any]) -> tuple[Tokens, Tokens]:
    """Token ids right-padded with 0 to the longest in the batch, and the attention mask."""
    width = int(lengths.max())
    matrix = np.zeros((len(ids), width), dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for row, (tokens, length) in enumerate(zip(ids, lengths, strict=True)):
        matrix[row, :length] = tokens
        mask[row, :length] = 1
    return matrix, mask


def share_batches(
    batches: list[npt.NDArray[np.intp]],
    sessions: list[Any],
    encode: Callable[[Any, npt.NDArray[np.intp]], None],
    advance: Callable[[int], None],
) -> None:
    """`encode(session, batch)` for every batch: each session takes the next batch when done
    with its last (onnxruntime releases the GIL while it runs)."""
    pending = iter(batches)
    lock = threading.Lock()

    def work(session: Any) -> None:
        while True:
            with lock:
                rows = next(pending, None)
            if rows is None:
                return
            encode(session, rows)
            with lock:
                advance(len(rows))

    if len(sessions) == 1:
        work(sessions[0])
        return
    with ThreadPoolExecutor(len(sessions), thread_name_prefix="onnx") as pool:
        list(pool.map(work, sessions))


@contextmanager
def _progress(total: int, show: bool) -> Iterator[Callable[[int], None]]:
    """A function to call with the texts just embedded: a progress bar counts them when `show`."""
    if not show:
        yield lambda done: None
        return
    from tqdm import tqdm  # type: ignore[import-untyped]

    with tqdm(total=total, unit="passage", desc="Embedding") as bar:
        yield bar.update
