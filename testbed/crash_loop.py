"""Killing `newsqa index` builds and checking what they leave: the loop behind
tests/test_crash_safety.py (a few kills) and benchmarks/crash_loop.py (20).

The build is the real command, in a subprocess, with a tiny real sentence-transformers model
made on disk (so nothing downloads), killed with SIGKILL while it embeds, while it writes, or at
a random moment. After each kill the index must load, hold exactly the old or the new articles,
have every sampled row equal to its passage's embedding, and find a passage by its own text.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import random
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embeddings import Index, Searcher, build_index, read_articles
from embeddings.encoders.torch_runtime import SentenceTransformerEncoder
from embeddings.index.layout import CURRENT
from testbed.articles import write_article

ROOT = Path(__file__).resolve().parent.parent  # where `python -m bot` runs
PHASES = ("embedding", "writing", "random")

# -- a tiny real model, made locally -------------------------------------------------------------

# Whole-word tokens, so passages differ in their bags of tokens and so in their vectors.
_WORDS = [f"w{number}" for number in range(500)]


def make_tiny_model(folder: Path) -> Path:
    """A 1-layer, 32-dimension BERT sentence-transformers model saved in `folder`.

    Randomly initialised with a fixed seed: its vectors mean nothing, but they are
    deterministic, differ between texts with different words, and the model runs through
    exactly the code path of a real one.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    pieces = [*"abcdefghijklmnopqrstuvwxyz0123456789.,:;!?'\"-", *_WORDS]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(pieces)]
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    bert = folder / "bert"
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)})
    tokenizer.save_pretrained(bert)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
    )
    model = BertModel(config)
    with torch.no_grad():  # token vectors dominate, so a text's vector follows its tokens
        model.embeddings.word_embeddings.weight.normal_(0.0, 1.0)
        model.embeddings.position_embeddings.weight.zero_()
        model.embeddings.token_type_embeddings.weight.zero_()
    model.save_pretrained(bert)
    modules = [Transformer(str(bert), max_seq_length=128), Pooling(32, "mean"), Normalize()]
    SentenceTransformer(modules=modules, device="cpu").save(str(folder / "model"))
    return folder / "model"


def write_corpus(folder: Path, articles: int, seed: int = 0) -> None:
    """`articles` news-export files of five 60-word paragraphs each."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(articles):
        _write_random_article(folder, number, rng)


def _write_random_article(folder: Path, number: int, rng: random.Random) -> None:
    paragraphs = [
        " ".join(rng.choice(_WORDS) for _ in range(60)).capitalize() + f" {number}-{p}."
        for p in range(5)
    ]
    write_article(folder, f"a{number:04d}.txt", f"Article {number}", *paragraphs, date="2024-03-01")


def grow_corpus(folder: Path, rng: random.Random, added: int = 3) -> None:
    """Add `added` articles and change nothing else: a build that appends a segment."""
    last = max(int(path.name[1:5]) for path in folder.glob("a*.txt"))
    for number in range(last + 1, last + 1 + added):
        _write_random_article(folder, number, rng)


def edit_corpus(folder: Path, rng: random.Random, changed: int) -> None:
    """Rewrite `changed` articles, add one and delete one: a build with real work to do."""
    names = sorted(path.name for path in folder.glob("a*.txt"))
    for name in rng.sample(names, changed):
        _write_random_article(folder, int(name[1:5]), rng)
    (folder / rng.choice(names)).unlink()
    _write_random_article(folder, int(names[-1][1:5]) + 1, rng)


# -- killing a build ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Crash:
    """What one SIGKILL hit and what it left behind."""

    phase: str  # what the kill aimed at
    seconds: float  # from start of the process to the kill
    hit: str  # what the build was doing at the kill: starting, embedding, writing, switch...
    generation: str  # "old" or "new": the generation CURRENT names afterwards
    passages: int
    checked: int  # rows verified to be their passage's embedding


def _observed(index_dir: Path, embedding: bool, before: set[str]) -> str:
    """How far the build has visibly got: starting, embedding, writing, switching, or switched
    (CURRENT names the new generation; the process is clearing up or exiting). `before` is
    what the folder held at the start, including earlier killed builds' leftovers."""
    names = {path.name for path in index_dir.iterdir()}
    if (index_dir / CURRENT).read_text() not in before:
        return "switched"
    if f".{CURRENT}.tmp" in names:
        return "switching"
    if any(name.startswith(".build-") for name in names - before):
        return "writing"
    return "embedding" if embedding else "starting"


def kill_build(
    data_dir: Path, index_dir: Path, model: Path, phase: str, rng: random.Random, limit: float
) -> tuple[float, str]:
    """Run `newsqa index`, SIGKILL it during `phase`; the seconds it ran and what the kill hit.

    stderr is a pseudo-terminal, so the command shows its progress bar: "embedding" kills at a
    random moment up to 0.6 s after the bar appears; "writing" kills as soon as the new
    generation's staging folder exists; "random" kills at a random moment of the run time
    `limit`. A run that ends first is reported as "finished".
    """
    main, child = pty.openpty()
    # A terminal of 0 columns would make the progress bar print nothing at all.
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "index", "--data", str(data_dir), "--index", str(index_dir),
         "--model", str(model), "--backend", "torch"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=child, cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    os.close(child)
    deadline = started + (rng.uniform(0.5, limit) if phase == "random" else 3 * limit)
    output, embedding, before = b"", False, {path.name for path in index_dir.iterdir()}
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if select.select([main], [], [], 0.001)[0]:
                with contextlib.suppress(OSError):
                    output += os.read(main, 65536)
            if not embedding and b"Batches" in output:
                embedding = True
                if phase == "embedding":
                    deadline = min(deadline, time.monotonic() + rng.uniform(0.0, 0.6))
            if phase == "writing" and _observed(index_dir, embedding, before) == "writing":
                break
        hit = _observed(index_dir, embedding, before) if process.poll() is None else "finished"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        os.close(main)
    return time.monotonic() - started, hit


def verify_index(index_dir: Path, encoder: SentenceTransformerEncoder, sample: int = 12) -> int:
    """Open the index with the model, check sampled rows are their passages' embeddings and
    that asking with a passage's own text finds it first; the number of rows checked."""
    index = Index.load(index_dir, model=encoder.name)
    rows = random.Random(len(index)).sample(range(len(index)), min(sample, len(index)))
    texts = [index.passages[row].embedding_text for row in rows]
    assert np.allclose(encoder.encode_passages(texts), index.vectors[rows], atol=1e-4)
    searcher = Searcher(index, encoder)
    for row in rows[:3]:
        [hit] = searcher.rank(searcher.encode_question(index.passages[row].embedding_text), 1)
        assert hit.passage == index.passages[row] and hit.cosine > 0.999
    return len(rows)


@dataclass
class Corpus:
    """Articles, their complete index, and the tiny model that embedded it."""

    data_dir: Path
    index_dir: Path
    model: Path
    encoder: SentenceTransformerEncoder


def prepare(root: Path, articles: int = 200) -> Corpus:
    """Make the tiny model, the articles and their index under `root`."""
    model = make_tiny_model(root / "tiny")
    write_corpus(root / "data", articles)
    encoder = SentenceTransformerEncoder(str(model))
    build_index(read_articles(root / "data").articles, encoder, root / "index")
    return Corpus(root / "data", root / "index", model, encoder)


def crash_once(
    corpus: Corpus, phase: str, rng: random.Random, limit: float, *, additive: bool = False
) -> Crash:
    """Edit the articles (with `additive`, only add some), kill a build of them, and check what
    is left is a whole index: the previous one, or the new one holding exactly the edited
    articles."""
    before = (corpus.index_dir / CURRENT).read_text()
    old_articles = {entry.id for entry in Index.load(corpus.index_dir).entries}
    if additive:
        grow_corpus(corpus.data_dir, rng)
    else:
        edit_corpus(corpus.data_dir, rng, changed=60)
    new_articles = {article.id for article in read_articles(corpus.data_dir).articles}
    seconds, hit = kill_build(corpus.data_dir, corpus.index_dir, corpus.model, phase, rng, limit)
    after = (corpus.index_dir / CURRENT).read_text()
    checked = verify_index(corpus.index_dir, corpus.encoder)
    index = Index.load(corpus.index_dir)
    assert {entry.id for entry in index.entries} == (
        old_articles if after == before else new_articles
    )
    return Crash(phase, seconds, hit, "old" if after == before else "new", len(index), checked)


def crash_table(crashes: Sequence[Crash]) -> str:
    """The kills as a Markdown table."""
    rows = [
        "| kill | aimed at | killed after | the kill hit | CURRENT after | passages "
        "| rows checked |",
        "| ---: | --- | ---: | --- | --- | ---: | ---: |",
    ]
    for number, c in enumerate(crashes, start=1):
        rows.append(
            f"| {number} | {c.phase} | {c.seconds:.2f} s | {c.hit} | {c.generation} "
            f"| {c.passages} | {c.checked} |"
        )
    return "\n".join(rows)


def crash_loop(corpus: Corpus, kills: int, seed: int = 0, *, additive: bool = False) -> list[Crash]:
    """`kills` kills cycling through the phases; "random" spans the longest run seen so far."""
    crashes: list[Crash] = []
    limit = 30.0
    for number in range(kills):
        rng = random.Random(seed * 1000 + number)
        phase = PHASES[number % len(PHASES)]
        crashes.append(crash_once(corpus, phase, rng, limit, additive=additive))
        if crashes[-1].hit in ("writing", "switching", "finished"):
            limit = crashes[-1].seconds  # about how long a whole run takes
    return crashes
