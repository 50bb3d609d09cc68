"""`--backend`: which runtime embeds, where the ONNX export lives, and the errors on the way."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli import main
from embeddings.articles import read_articles
from embeddings.encoders import backends
from embeddings.encoders.backends import make_encoder
from embeddings.encoders.base import DEFAULT_MODEL
from embeddings.encoders.onnx_export import default_export_folder
from embeddings.encoders.onnx_runtime import EXPORTS_FOLDER, ONNX_SUFFIX, OnnxEncoder
from embeddings.encoders.torch_runtime import SentenceTransformerEncoder
from embeddings.errors import EncoderLoadError, IndexNotFoundError, ModelMismatchError
from embeddings.index.build import build_index
from embeddings.index.index import Index
from testbed.fake_encoder import FakeEncoder
from tests.conftest import SEED_QUESTION


def test_torch_backend_is_the_sentence_transformers_encoder(tmp_path: Path) -> None:
    """`torch` gives the sentence-transformers encoder, without loading the model or exporting."""
    encoder = make_encoder(DEFAULT_MODEL, "torch", tmp_path, export=True)
    assert isinstance(encoder, SentenceTransformerEncoder)
    assert encoder.name == DEFAULT_MODEL
    assert not any(tmp_path.iterdir())


def test_an_unknown_backend_is_refused(tmp_path: Path) -> None:
    """A backend name outside BACKENDS is a ValueError naming the known ones."""
    with pytest.raises(ValueError, match="onnx, torch"):
        make_encoder(DEFAULT_MODEL, "tensorflow", tmp_path)


def test_missing_onnxruntime_is_one_sentence_naming_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without onnxruntime the onnx backend says which pip command fixes it."""
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        backends.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "onnxruntime" else real_find_spec(name, *args),
    )
    with pytest.raises(EncoderLoadError, match="pip install onnxruntime onnx"):
        make_encoder(DEFAULT_MODEL, "onnx", tmp_path, export=True)


def test_questions_never_export_and_an_index_without_export_is_a_mismatch(
    data_dir: Path, tmp_path: Path
) -> None:
    """Opening for questions (no `export`) on an index with no ONNX export is a model mismatch."""
    pytest.importorskip("onnxruntime")
    build_index(read_articles(data_dir).articles, FakeEncoder(DEFAULT_MODEL), tmp_path)
    with pytest.raises(ModelMismatchError, match="holds no ONNX export"):
        make_encoder(DEFAULT_MODEL, "onnx", tmp_path)
    assert not (tmp_path / EXPORTS_FOLDER).exists()


def test_questions_on_no_index_say_there_is_none(tmp_path: Path) -> None:
    """Without an index at all, the onnx backend reports the missing index, as torch would."""
    pytest.importorskip("onnxruntime")
    with pytest.raises(IndexNotFoundError, match="No index at"):
        make_encoder(DEFAULT_MODEL, "onnx", tmp_path / "missing")


def test_the_export_folder_is_inside_the_index_folder(tmp_path: Path) -> None:
    """Exports live in one folder beside the generations, one sub-folder per model."""
    folder = default_export_folder(tmp_path, DEFAULT_MODEL)
    assert folder.parent == tmp_path / EXPORTS_FOLDER
    assert folder != default_export_folder(tmp_path, "other/model")


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--backend", "tensorflow"], {}, "'tensorflow' is not one of 'onnx', 'torch'"),
        ([], {"NEWSQA_BACKEND": "tensorflow"}, "'tensorflow' is not one of 'onnx', 'torch'"),
        (["--backend", "onnx"], {}, "holds no ONNX export of"),
        ([], {"NEWSQA_BACKEND": "onnx"}, "holds no ONNX export of"),
    ],
    ids=["bad-option", "bad-variable", "option", "variable"],
)
def test_asking_through_another_backend_is_refused(
    data_dir: Path, tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    """`ask` on a torch-built index with `--backend`/NEWSQA_BACKEND onnx or a bad name fails."""
    if "onnx" in args or "onnx" in env.values():
        pytest.importorskip("onnxruntime")
    index_dir = tmp_path / "index"
    build_index(read_articles(data_dir).articles, FakeEncoder(DEFAULT_MODEL), index_dir)
    result = CliRunner().invoke(main, ["ask", "q", "--index", str(index_dir), *args], env=env)
    assert result.exit_code != 0
    assert message in result.output


@pytest.mark.parametrize("command", ["index", "ask", "chat", "bot", "run"])
def test_every_command_that_embeds_offers_the_backend(command: str) -> None:
    """`--backend` and its variable appear in the help of each command that loads the model."""
    result = CliRunner().invoke(main, [command, "--help"])
    assert "--backend [onnx|torch]" in result.output
    assert "NEWSQA_BACKEND" in result.output


@pytest.mark.model
def test_onnx_index_answers_and_refuses_torch_questions(
    onnx_export: Path, data_dir: Path, tmp_path: Path
) -> None:
    """An index built on ONNX answers `ask --backend onnx` and refuses torch question vectors."""
    index_dir = tmp_path / "index"
    build_index(read_articles(data_dir).articles, OnnxEncoder(onnx_export), index_dir)
    shutil.copytree(onnx_export, default_export_folder(index_dir, DEFAULT_MODEL))
    assert Index.load(index_dir).model == f"{DEFAULT_MODEL}{ONNX_SUFFIX}"
    ask = ["ask", "--json", SEED_QUESTION, "--index", str(index_dir)]
    asked = CliRunner().invoke(main, ask, env={"NEWSQA_BACKEND": "onnx"})
    assert asked.exit_code == 0, asked.output
    first = json.loads(asked.output)["hits"][0]
    assert first["text"].startswith("Jiang Hui, member of the Standing Committee")
    torch = CliRunner().invoke(main, ask, env={"NEWSQA_BACKEND": "torch"})
    assert torch.exit_code != 0 and "was built with" in torch.output


@pytest.mark.model
def test_the_export_survives_the_build_that_made_it(
    onnx_export: Path, data_dir: Path, tmp_path: Path
) -> None:
    """`newsqa index --backend onnx` leaves its export in place for the questions that follow."""
    index_dir = tmp_path / "index"
    shutil.copytree(onnx_export, default_export_folder(index_dir, DEFAULT_MODEL))
    index = ["index", "--data", str(data_dir), "--index", str(index_dir), "--backend", "onnx"]
    built = CliRunner().invoke(main, index)
    assert built.exit_code == 0, built.output
    assert (default_export_folder(index_dir, DEFAULT_MODEL) / "model.onnx").is_file()
