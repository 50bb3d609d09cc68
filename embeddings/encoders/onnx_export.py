"""Exporting a sentence-transformers model to int8 ONNX, once, for `OnnxEncoder` to run.

`export_onnx` turns a sentence-transformers folder (a BERT-style Transformer, mean Pooling,
Normalize: all-MiniLM-L6-v2 among them) into a folder of plain files:

    model.onnx      the transformer with mean pooling and L2 normalisation inside the graph,
                    BERT operators fused by onnxruntime, weights dynamically quantised to
                    unsigned 8 bits per output channel (see `quantize_uint8` for why)
    tokenizer.json  the model's own tokenizer
    onnx.json       the source model, its token limit, dimension and the exporting versions

The export runs in the project's own environment: `torch.onnx.export` (the TorchScript exporter;
torch comes with sentence-transformers) and `onnxruntime.quantization.quantize_dynamic`. Neither
optimum nor the Hugging Face hub is involved, and nothing is downloaded.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embeddings.encoders.base import resolve_model
from embeddings.encoders.onnx_runtime import (
    EXPORTS_FOLDER,
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    MANIFEST_VERSION,
    MODEL_FILE,
    ONNX_SUFFIX,
    TOKENIZER_FILE,
)
from embeddings.errors import OnnxExportError

log = logging.getLogger(__name__)


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
