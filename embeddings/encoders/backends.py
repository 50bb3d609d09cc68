"""Which runtime embeds: sentence-transformers on torch, or the int8 ONNX export of the same model.

The ONNX model is exported from the installed model once, when an index is built, into a folder
inside that index (`onnx_encoder.EXPORTS_FOLDER`), so every later build and every question uses
the same file. Questions never export: an index built on torch has no export, and asking it
through ONNX is a model mismatch, as asking it with another model would be.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal, get_args

from embeddings.encoders.base import Encoder
from embeddings.encoders.onnx_export import default_export_folder, export_onnx
from embeddings.encoders.onnx_runtime import MANIFEST_FILE, OnnxEncoder
from embeddings.encoders.torch_runtime import SentenceTransformerEncoder
from embeddings.errors import EncoderLoadError, IndexNotFoundError, ModelMismatchError
from embeddings.index.index import current_generation

Backend = Literal["onnx", "torch"]
BACKENDS: tuple[str, ...] = get_args(Backend)
# ONNX int8 embeds about twice as fast as torch float32 and encodes a question in ~3 ms instead
# of ~10, for nDCG@10 within 0.6% of torch on both judged sets (benchmarks/results/speed.md).
DEFAULT_BACKEND: Backend = "onnx"
ONNX_INSTALL = "pip install onnxruntime onnx"


def make_encoder(model: str, backend: str, index_dir: Path, *, export: bool = False) -> Encoder:
    """The encoder for `model` on `backend`; with `export`, the ONNX export is made if missing."""
    if backend == "torch":
        return SentenceTransformerEncoder(model)
    if backend != "onnx":
        raise ValueError(f"Unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    require("onnxruntime")
    folder = default_export_folder(index_dir, model)
    if not (folder / MANIFEST_FILE).exists():
        if not export and current_generation(index_dir) is None:
            raise IndexNotFoundError(f"No index at {index_dir}")
        if not export:
            raise ModelMismatchError(
                f"The index at {index_dir} holds no ONNX export of {model!r} "
                "(it was built with another backend, or not yet)"
            )
        require("onnx")
        export_onnx(model, folder)
    return OnnxEncoder(folder)


def needs_export(model: str, backend: str, index_dir: Path) -> bool:
    """Whether `make_encoder(..., export=True)` must first export the model (about 20 s, once)."""
    return (
        backend == "onnx" and not (default_export_folder(index_dir, model) / MANIFEST_FILE).exists()
    )


def require(package: str) -> None:
    """Fail in one sentence, naming the fix, when a package the onnx backend needs is missing."""
    if importlib.util.find_spec(package) is None:
        raise EncoderLoadError(f"The onnx backend needs {package}: {ONNX_INSTALL}")
