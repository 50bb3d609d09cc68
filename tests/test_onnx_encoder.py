"""The ONNX int8 encoder, exported from the packaged model, agrees with the torch model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embeddings.articles import read_articles
from embeddings.encoders.onnx_export import export_onnx
from embeddings.encoders.onnx_runtime import ONNX_SUFFIX, OnnxEncoder
from embeddings.encoders.torch_runtime import SentenceTransformerEncoder
from embeddings.errors import EncoderLoadError, OnnxExportError
from embeddings.passages import split_article
from tests.conftest import SEED_ARTICLE
from tests.conftest import SEED_QUESTION as QUESTION

pytestmark = pytest.mark.model

pytest.importorskip("onnxruntime", reason="the ONNX backend needs onnxruntime")
pytest.importorskip("onnx", reason="quantising the export needs onnx")


@pytest.fixture(scope="module")
def onnx_encoder(onnx_export: Path) -> OnnxEncoder:
    """The default model exported once to an int8 ONNX folder."""
    return OnnxEncoder(onnx_export)


@pytest.fixture(scope="module")
def seed_texts(real_encoder: SentenceTransformerEncoder) -> list[str]:
    """The seed article's passages as the index embeds them (title + paragraph)."""
    [article] = read_articles(SEED_ARTICLE.parent).articles
    passages = split_article(article, real_encoder.count_tokens, real_encoder.max_tokens)
    return [p.embedding_text for p in passages]


def test_passage_vectors_match_torch(
    onnx_encoder: OnnxEncoder, real_encoder: SentenceTransformerEncoder, seed_texts: list[str]
) -> None:
    """Every seed passage's int8 vector has cosine >= 0.98 with the torch float32 vector."""
    int8 = onnx_encoder.encode_passages(seed_texts)
    fp32 = real_encoder.encode_passages(seed_texts)
    cosines = np.sum(int8 * fp32, axis=1)
    assert int8.shape == fp32.shape and int8.dtype == np.float32
    assert cosines.min() >= 0.98, cosines


def test_question_vector_matches_torch_and_ranks_the_same_passage_first(
    onnx_encoder: OnnxEncoder, real_encoder: SentenceTransformerEncoder, seed_texts: list[str]
) -> None:
    """The question's vector agrees with torch, and both put the same passage first."""
    int8 = onnx_encoder.encode_queries([QUESTION])[0]
    fp32 = real_encoder.encode_queries([QUESTION])[0]
    assert float(int8 @ fp32) >= 0.98
    best = np.argmax(onnx_encoder.encode_passages(seed_texts) @ int8)
    assert best == np.argmax(real_encoder.encode_passages(seed_texts) @ fp32)


def test_vectors_are_unit_length_and_nearly_independent_of_batching(
    onnx_encoder: OnnxEncoder, seed_texts: list[str]
) -> None:
    """Rows are L2-normalised, in input order, and almost the same alone or in a batch.

    Dynamic quantisation scales activations per batch, so batch mates move a vector slightly
    (cosine ~0.99), never enough to reorder it among other texts.
    """
    together = onnx_encoder.encode_passages(seed_texts)
    alone = np.vstack([onnx_encoder.encode_passages([text]) for text in seed_texts])
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    similarity = together @ alone.T
    assert np.diag(similarity).min() >= 0.98, np.diag(similarity)
    assert (similarity.argmax(axis=1) == np.arange(len(seed_texts))).all()


def test_tokens_are_counted_like_the_torch_model_without_truncation(
    onnx_encoder: OnnxEncoder, real_encoder: SentenceTransformerEncoder
) -> None:
    """count_tokens matches the torch tokenizer, even past tokenizer.json's 128-token cut."""
    long_text = " ".join(["parliament"] * 300)
    for text in [QUESTION, long_text, ""]:
        assert onnx_encoder.count_tokens(text) == real_encoder.count_tokens(text)
    assert onnx_encoder.count_tokens(long_text) > 256


@pytest.mark.parametrize(
    "texts", [[], [""], [" ".join(["word"] * 1000)]], ids=["none", "empty", "too-long"]
)
def test_edge_inputs_give_one_row_each(onnx_encoder: OnnxEncoder, texts: list[str]) -> None:
    """No text, an empty text and a text past the token limit each give one row per text."""
    vectors = onnx_encoder.encode_passages(texts)
    assert vectors.shape == (len(texts), onnx_encoder.dimension)
    assert np.isfinite(vectors).all()


def test_name_and_limits_come_from_the_source_model(onnx_encoder: OnnxEncoder) -> None:
    """The recorded name marks the backend, so an index never mixes torch and int8 vectors."""
    assert onnx_encoder.name == f"sentence-transformers/all-MiniLM-L6-v2{ONNX_SUFFIX}"
    assert (onnx_encoder.max_tokens, onnx_encoder.dimension) == (256, 384)


def test_a_folder_without_an_export_is_a_load_error(tmp_path: Path) -> None:
    """Opening a folder that holds no export names the folder."""
    with pytest.raises(EncoderLoadError, match=str(tmp_path)):
        OnnxEncoder(tmp_path)


def test_an_unsupported_model_layout_is_refused(tmp_path: Path) -> None:
    """A model with CLS pooling is refused before anything is exported."""
    (tmp_path / "1_Pooling").mkdir()
    modules = [
        {"type": "sentence_transformers.models.Transformer"},
        {"type": "sentence_transformers.models.Pooling"},
    ]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    (tmp_path / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    (tmp_path / "config.json").write_text('{"hidden_size": 8, "num_attention_heads": 2}')
    (tmp_path / "sentence_bert_config.json").write_text('{"max_seq_length": 16}')
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(OnnxExportError, match="mean pooling"):
        export_onnx(str(tmp_path), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_several_sessions_give_the_vectors_one_session_gives(
    onnx_encoder: OnnxEncoder, seed_texts: list[str]
) -> None:
    """Batches shared out over sessions on threads come back in input order, unchanged."""
    texts = seed_texts * 3  # several batches
    one = OnnxEncoder(onnx_encoder.folder, threads=1)
    three = OnnxEncoder(onnx_encoder.folder, threads=3)
    together = three.encode_passages(texts)
    assert len(three._made) == 3
    assert np.allclose(together, one.encode_passages(texts), atol=1e-5)
    assert np.allclose(three.encode_queries(texts[:1]), one.encode_passages(texts[:1]), atol=1e-5)
