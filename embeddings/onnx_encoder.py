"""The embedding model on onnxruntime, int8: no torch at run time, about 2x faster on a CPU.

`export_onnx` turns a sentence-transformers folder (a BERT-style Transformer, mean Pooling,
Normalize: all-MiniLM-L6-v2 among them) into a folder of plain files, once:

    model.onnx      the transformer with mean pooling and L2 normalisation inside the graph,
                    BERT operators fused by onnxruntime, weights dynamically quantised to
                    unsigned 8 bits per output channel (see `quantize_uint8` for why)
    tokenizer.json  the model's own tokenizer
    onnx.json       the source model, its token limit, dimension and the exporting versions

The export runs in the project's own environment: `torch.onnx.export` (the TorchScript exporter;
torch comes with sentence-transformers) and `onnxruntime.quantization.quantize_dynamic`. Neither
optimum nor the Hugging Face hub is involved, and nothing is downloaded.

`OnnxEncoder` reads such a folder with onnxruntime and tokenizers alone. Its vectors differ from
the torch model's by a cosine of about 0.993 per passage, so an index records it as a model of its
own (`<source>@onnx-int8`): switching backends re-embeds rather than mixing the two.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from embeddings.encoder import Vectors, resolve_model
from embeddings.errors import EncoderLoadError, NewsqaError, OnnxExportError

ONNX_SUFFIX = "@onnx-int8"
MODEL_FILE, TOKENIZER_FILE, MANIFEST_FILE = "model.onnx", "tokenizer.json", "onnx.json"
MANIFEST_FORMAT = "newsqa-onnx-encoder"
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
    """A model folder's JSON manifest, insisting on its format (version 1)."""
    record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if record.get("format") != expected or record.get("version") != 1:
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


def cores() -> int:
    """Cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# --- the one-time export -------------------------------------------------------------------


def default_export_folder(index_dir: Path, model: str) -> Path:
    """Where `newsqa index` keeps the exported model of an index: beside its generations."""
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in model.rstrip("/"))
    return index_dir / EXPORTS_FOLDER / f"{slug[-80:]}{ONNX_SUFFIX.replace('@', '.')}"


def export_onnx(model: str, folder: Path) -> Path:
    """Export a sentence-transformers model (name or folder) to an int8 ONNX model folder.

    Writes into a temporary sibling and renames it into place, so a crash never leaves a
    half-written folder. Needs torch, transformers and onnxruntime; downloads nothing.
    """
    source = Path(resolve_model(model)).expanduser()
    settings = _check_exportable(source)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; bot replicas may run as other users
    try:
        with _export_quieted():
            _export_fp32(source, staging / "fp32.onnx", settings.max_tokens)
        _fuse(staging / "fp32.onnx", staging / "fused.onnx", settings)
        quantize_uint8(staging / "fused.onnx", staging / MODEL_FILE)
        for intermediate in ("fp32.onnx", "fused.onnx"):
            (staging / intermediate).unlink()
        shutil.copyfile(source / TOKENIZER_FILE, staging / TOKENIZER_FILE)
        _write_manifest(staging, model, settings)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    except OnnxExportError:
        raise
    except Exception as error:  # torch, onnx and onnxruntime raise many unrelated types
        raise OnnxExportError(f"Exporting {model!r} to ONNX failed: {error}") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("Exported %s to %s", model, folder)
    return folder


@dataclass(frozen=True)
class _Settings:
    """What the export needs to know about the source model."""

    max_tokens: int
    dimension: int
    heads: int
    model_type: str


def _check_exportable(source: Path) -> _Settings:
    """The source's settings; a layout other than Transformer + mean Pooling (+ Normalize) fails."""
    try:
        modules = [m["type"].rsplit(".", 1)[-1] for m in _json(source / "modules.json")]
        pooling = _json(source / "1_Pooling" / "config.json")
        config = _json(source / "config.json")
        max_tokens = int(_json(source / "sentence_bert_config.json")["max_seq_length"])
        if not (source / TOKENIZER_FILE).exists():
            raise ValueError(f"no {TOKENIZER_FILE}")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise OnnxExportError(
            f"{source} is not a sentence-transformers folder ({error})"
        ) from error
    if modules[:2] != ["Transformer", "Pooling"] or modules[2:] not in ([], ["Normalize"]):
        raise OnnxExportError(f"{source}: only Transformer + Pooling (+ Normalize), not {modules}")
    if not pooling.get("pooling_mode_mean_tokens"):
        raise OnnxExportError(f"{source}: only mean pooling can be exported")
    return _Settings(
        max_tokens=max_tokens,
        dimension=int(config["hidden_size"]),
        heads=int(config["num_attention_heads"]),
        model_type=str(config.get("model_type", "")),
    )


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _export_fp32(source: Path, target: Path, max_tokens: int) -> None:
    """The transformer plus mean pooling and normalisation, traced to a float32 ONNX graph."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    # Eager attention traces to the MatMul/Softmax pattern that onnxruntime fuses into one
    # Attention operator; the SDPA path traces to a graph it cannot fuse (~20% slower).
    transformer = AutoModel.from_pretrained(str(source), attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    sample = tokenizer(
        ["a short one", "a somewhat longer sample sentence, padded in the batch"],
        padding=True,
        truncation=True,
        max_length=max_tokens,
        return_tensors="pt",
    )
    names = ["input_ids", "attention_mask", "token_type_ids"]
    with torch.no_grad():
        torch.onnx.export(
            _pooled_module()(transformer),
            tuple(sample[name] for name in names),
            str(target),
            input_names=names,
            output_names=["sentence_embedding"],
            dynamic_axes={
                **{name: {0: "batch", 1: "sequence"} for name in names},
                "sentence_embedding": {0: "batch"},
            },
            opset_version=17,
            dynamo=False,  # the torch.export-based exporter needs onnxscript; this one does not
        )


@contextmanager
def _export_quieted() -> Iterator[None]:
    """Without what loading and tracing the model print at every export, none of it actionable:
    transformers' "Loading weights" progress bar, torch's `TracerWarning` that a Python boolean
    in the model becomes a constant, and the exporter's `UserWarning` that advanced indexing
    with negative indices would export wrong. The exported model's vectors are compared with
    torch's in tests/test_onnx_encoder.py instead."""
    import torch
    from transformers.utils import logging as transformers_logging

    bar_was_on = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx\.")
            yield
    finally:
        if bar_was_on:
            transformers_logging.enable_progress_bar()


def _pooled_module() -> Any:
    """`torch.nn.Module` subclass built lazily, so importing this module never imports torch."""
    import torch

    class Pooled(torch.nn.Module):  # type: ignore[misc]
        def __init__(self, transformer: Any) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.transformer(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2.0, dim=1)

    return Pooled


def _fuse(source: Path, target: Path, settings: _Settings) -> None:
    """onnxruntime's BERT fusions for BERT models; other models are copied as they are."""
    if settings.model_type != "bert":
        shutil.copyfile(source, target)
        return
    fuse_bert(source, target, settings.heads, settings.dimension)


def fuse_bert(source: Path, target: Path, heads: int, hidden: int) -> None:
    """onnxruntime's BERT fusions (Attention, SkipLayerNorm, BiasGelu) of a BERT graph."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(source), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0
    )
    optimized.save_model_to_file(str(target))


# Operators quantised when the embedding tables go to 8 bits too (the fused embedding layer, or
# a plain Gather where the graph was not fused), beside the default MatMul and Attention.
_WITH_EMBEDDINGS = ["MatMul", "Attention", "EmbedLayerNormalization", "Gather"]


def quantize_uint8(source: Path, target: Path, *, embeddings: bool = False) -> None:
    """Dynamic 8-bit quantisation with unsigned weights, one scale per output channel.

    Measured on TrecQA and BBC passages against torch float32 (benchmarks/speed.py): one scale
    per tensor drops the mean cosine to 0.96; signed weights lose more nDCG than unsigned ones
    at the same speed, because on CPUs without VNNI onnxruntime multiplies unsigned activations
    by signed weights with an instruction whose 16-bit sums saturate, and 7-bit weights
    (`reduce_range`) that avoid it are coarser. With `embeddings`, the embedding tables are
    stored in 8 bits too (a quarter of the file, for a model shipped in the repository).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _root_logging_quieted():  # it warns "consider pre-processing" on the root logger
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QUInt8,
            per_channel=True,
            op_types_to_quantize=_WITH_EMBEDDINGS if embeddings else None,
            # The fused operators are onnxruntime's own; shape inference cannot type them.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


@contextmanager
def _root_logging_quieted() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _write_manifest(folder: Path, model: str, settings: _Settings) -> None:
    import onnxruntime
    import torch

    record = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "name": f"{_recorded_name(model)}{ONNX_SUFFIX}",
        "source": str(Path(resolve_model(model)).expanduser().resolve()),
        "max_tokens": settings.max_tokens,
        "dimension": settings.dimension,
        "quantization": "dynamic uint8 weights and activations, weights per channel",
        "exported_with": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
    }
    (folder / MANIFEST_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def _recorded_name(model: str) -> str:
    """The model's name as `SentenceTransformerEncoder.name` records it."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model
