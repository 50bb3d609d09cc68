"""The index survives crashes and damage, and the bot serves the old one until the new is whole.

* `newsqa index` (the real command, in a subprocess, with a tiny real sentence-transformers
  model made on disk, so no download) is killed with SIGKILL while it embeds, while it writes,
  and at random moments, both when it rewrites the index (articles changed and removed) and
  when it appends a segment (articles only added); the index then always loads, is internally
  consistent (every row is its passage's embedding) and answers. CI runs a few kills;
  `benchmarks/crash_loop.py` runs 20.
* Damaged index files are refused when the index is opened, with a clear error.
* While a build runs, the bot keeps answering from the previous index; questions asked during
  a stream of rebuilds always see one whole generation.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import random
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from embeddings.articles import read_articles
from embeddings.encoders.base import Vectors
from embeddings.encoders.torch_runtime import SentenceTransformerEncoder
from embeddings.errors import IndexCorruptError
from embeddings.index.build import build_index
from embeddings.index.index import Index
from embeddings.index.layout import CURRENT, META, PASSAGES, SEGMENTS, VECTORS
from embeddings.search.decision import Thresholds
from embeddings.search.searcher import Searcher
from tests.conftest import FakeEncoder, write_article
from tests.telegram_server import TelegramServer
from tests.test_bot_e2e import _news, _start, _stop

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("embedding", "writing", "random")
# How many kills CI runs; benchmarks/crash_loop.py runs the full 20.
CI_KILLS = int(os.environ.get("NEWSQA_CRASH_KILLS", "3"))

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
        "| kill | aimed at | killed after | the kill hit | CURRENT after | passages | rows checked |",
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


@pytest.mark.model
def test_killed_builds_always_leave_a_whole_index_that_answers(tmp_path: Path) -> None:
    """SIGKILL of `newsqa index` while it embeds, while it writes and at a random moment always
    leaves CURRENT naming a complete generation whose rows are its passages' embeddings and that
    answers; the next build completes and clears what the killed ones left behind."""
    corpus = prepare(tmp_path)
    crashes = crash_loop(corpus, CI_KILLS)
    print(crash_table(crashes))  # shown with pytest -s
    assert all(crash.checked > 0 for crash in crashes)
    build_index(read_articles(corpus.data_dir).articles, corpus.encoder, corpus.index_dir)
    assert not [p.name for p in corpus.index_dir.iterdir() if p.name.startswith(".build-")]
    assert verify_index(corpus.index_dir, corpus.encoder) > 0


@pytest.mark.model
def test_killed_appends_always_leave_a_whole_index_that_answers(tmp_path: Path) -> None:
    """The same kills of builds that only add articles (each writes an append segment and
    hard-links the others): CURRENT always names a whole generation, old or new, that answers;
    the next build completes, as one more segment, and clears what the killed ones left."""
    corpus = prepare(tmp_path, articles=60)
    crashes = crash_loop(corpus, CI_KILLS, additive=True)
    print(crash_table(crashes))  # shown with pytest -s
    assert all(crash.checked > 0 for crash in crashes)
    grow_corpus(corpus.data_dir, random.Random(99))
    indexed = len(Index.load(corpus.index_dir))
    report = build_index(read_articles(corpus.data_dir).articles, corpus.encoder, corpus.index_dir)
    assert report.segments > 1 and report.embedded == report.passages - indexed >= 15
    assert not [p.name for p in corpus.index_dir.iterdir() if p.name.startswith(".build-")]
    assert verify_index(corpus.index_dir, corpus.encoder) > 0
    Index.load(corpus.index_dir).verify()


# -- damaged files ----------------------------------------------------------------------------------


def _cut_mid_line(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: data.rindex(b"\n", 0, len(data) - 1) + 20])


def _drop_last_line(path: Path) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]))


def _change_a_word(path: Path) -> None:
    path.write_text(path.read_text(encoding="utf-8").replace("rain", "RAIN", 1), encoding="utf-8")


def _flip_a_vector_value(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x40  # inside the last row: a wrong number, same size and shape
    path.write_bytes(bytes(data))


def _cut_in_half(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE: list[tuple[str, str, Callable[[Path], None]]] = [
    # (file, what happened, how) -- vectors.npy truncation and garbage: see test_index.py
    (PASSAGES, "cut in the middle of a line", _cut_mid_line),
    (PASSAGES, "missing its last line", _drop_last_line),
    (PASSAGES, "with a word changed", _change_a_word),
    (VECTORS, "with one value changed", _flip_a_vector_value),
    (VECTORS, "empty", lambda path: path.write_bytes(b"")),
    (META, "cut in half", _cut_in_half),
    (META, "missing", Path.unlink),
    ("", "CURRENT naming a missing generation", lambda g: (g.parent / CURRENT).write_text("x")),
    ("", "CURRENT holding binary garbage", lambda g: (g.parent / CURRENT).write_bytes(b"\xff\0")),
]


@pytest.mark.parametrize(("name", "what", "damage"), DAMAGE, ids=[f"{n} {w}" for n, w, _ in DAMAGE])
def test_damaged_index_file_is_refused_at_open(
    data_dir: Path, tmp_path: Path, name: str, what: str, damage: Callable[[Path], None]
) -> None:
    """A truncated, edited or missing index file is `IndexCorruptError` naming the index when
    it is opened, never an index that gives wrong answers."""
    _news(data_dir)
    encoder = FakeEncoder()
    build_index(read_articles(data_dir).articles, encoder, tmp_path / "index")
    generation = tmp_path / "index" / (tmp_path / "index" / CURRENT).read_text()
    damage(generation / name if name else generation)
    with pytest.raises(IndexCorruptError, match=re.escape(str(tmp_path / "index"))):
        Index.load(tmp_path / "index")


def _own_files(generation: Path) -> Path:
    """Where a generation's own files are: the generation, or, when the build appended a
    segment, that segment (the others are hard links shared with the generation before)."""
    meta = json.loads((generation / META).read_text(encoding="utf-8"))
    return generation / meta[SEGMENTS][-1]["name"] if SEGMENTS in meta else generation


# -- serving while building -------------------------------------------------------------------------


class GatedEncoder(FakeEncoder):
    """Blocks inside passage embedding while `gate` is closed, so a build can be held mid-way."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.inside = threading.Event()
        self.gate.set()

    def encode_passages(self, texts: Sequence[str], *, progress: bool = False) -> Vectors:
        if threading.current_thread().name == "build" and not self.gate.is_set():
            self.inside.set()
            self.gate.wait(timeout=30)
        return super().encode_passages(texts, progress=progress)


@contextlib.contextmanager
def _build_in_background(data_dir: Path, index_dir: Path, encoder: GatedEncoder) -> Iterator[None]:
    """A build of `data_dir` in a thread, held inside embedding until the block ends."""
    encoder.gate.clear()
    errors: list[BaseException] = []

    def build() -> None:
        try:
            build_index(read_articles(data_dir).articles, encoder, index_dir)
        except BaseException as error:  # surfaced in the test below
            errors.append(error)

    thread = threading.Thread(target=build, name="build")
    thread.start()
    assert encoder.inside.wait(timeout=10), "the build never reached embedding"
    try:
        yield
    finally:
        encoder.gate.set()
        thread.join(timeout=30)
    assert not errors, errors


async def test_bot_serves_the_old_index_during_a_build_then_switches(
    data_dir: Path, tmp_path: Path
) -> None:
    """While a build that adds an article is held mid-embedding, the bot answers from the old
    index (and has not switched); once the build completes the next question finds the article."""
    _news(data_dir)
    encoder = GatedEncoder()
    async with TelegramServer() as server:
        handlers, application = await _start(server, data_dir, tmp_path / "index", encoder)
        old = handlers.service.index.generation
        write_article(data_dir, "volcano.txt", "Volcano erupts",
                      "The volcano eruption sent an ash cloud over the island and flights stopped.")  # fmt: skip
        with _build_in_background(data_dir, tmp_path / "index", encoder):
            server.user_message(1001, "volcano eruption ash cloud over the island")
            [during] = await server.wait_for_messages(1001, 1, timeout=10)
            assert handlers.service.index.generation == old
        server.user_message(1001, "volcano eruption ash cloud over the island")
        after = (await server.wait_for_messages(1001, 2, timeout=10))[1]
        await _stop(application)
    assert "Volcano" not in during.text
    assert after.text.startswith("1. Volcano erupts")
    assert handlers.service.index.generation != old


def test_questions_during_rebuilds_always_see_one_whole_generation(
    data_dir: Path, tmp_path: Path
) -> None:
    """Four threads ask while 30 builds alternate between two article sets: every answer's
    scores match its passages' vectors (no rows of one generation with passages of another)
    and no question fails."""
    from bot.service import QAService

    encoder = FakeEncoder()
    _news(data_dir)
    build_index(read_articles(data_dir).articles, encoder, tmp_path / "index")
    service = QAService(tmp_path / "index", encoder, thresholds=Thresholds(cosine=0.0))
    done = threading.Event()
    failures: list[BaseException] = []
    answered: list[int] = []

    def ask() -> None:
        while not done.is_set():
            try:
                ranking = service._rank("heavy rain in the valley cup final volcano")
                vectors = encoder.encode_passages([h.passage.embedding_text for h in ranking.hits])
                scores = vectors @ ranking.query.vector
                assert np.allclose(scores, [h.cosine for h in ranking.hits], atol=1e-5)
                answered.append(len(ranking.hits))
            except BaseException as error:
                failures.append(error)
                return

    askers = [threading.Thread(target=ask) for _ in range(4)]
    for thread in askers:
        thread.start()
    generations = set()
    for number in range(30):
        if number % 2:
            write_article(data_dir, "volcano.txt", "Volcano erupts", f"Ash cloud number {number}.")
        else:
            (data_dir / "volcano.txt").unlink(missing_ok=True)
        build_index(read_articles(data_dir).articles, encoder, tmp_path / "index")
        generations.add((tmp_path / "index" / CURRENT).read_text())
        time.sleep(0.005)
    done.set()
    for thread in askers:
        thread.join(timeout=30)
    assert not failures, failures[:3]
    assert len(generations) == 30 and len(answered) > 30


async def test_bot_keeps_the_old_index_when_the_new_one_is_damaged(
    data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A new generation that fails its checks is logged once and passed over: questions are
    still answered from the old index, and the next good build is switched to."""
    from bot.service import QAService

    _news(data_dir)
    encoder = FakeEncoder()
    build_index(read_articles(data_dir).articles, encoder, tmp_path / "index")
    service = QAService(tmp_path / "index", encoder, thresholds=Thresholds(cosine=0.1))
    old = service.index.generation
    write_article(data_dir, "volcano.txt", "Volcano erupts", "The volcano sent an ash cloud.")
    build_index(read_articles(data_dir).articles, encoder, tmp_path / "index")
    damaged = tmp_path / "index" / (tmp_path / "index" / CURRENT).read_text()
    _flip_a_vector_value(_own_files(damaged) / VECTORS)
    for _ in range(3):
        ranking = await service.rank("heavy rain in the valley")
        assert ranking.hits[0].passage.article_id == "rain"
    assert service.index.generation == old
    assert caplog.text.count(f"Still answering from index {old}") == 1
    build_index(read_articles(data_dir).articles, FakeEncoder("fake-encoder"), tmp_path / "index")
    assert (await service.rank("volcano ash cloud")).hits[0].passage.article_id == "volcano"
