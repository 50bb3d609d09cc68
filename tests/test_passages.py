"""Splitting articles into passages: paragraphs, the token limit, fragments, stable ids."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from embeddings.articles import Article, read_articles
from embeddings.passages import EMBEDDED_TITLE_LENGTH, MIN_WORDS, Passage, split_article
from embeddings.sentences import split_sentences
from testbed.fake_encoder import FakeEncoder


def _article(*paragraphs: str, title: str = "A title") -> Article:
    return Article(id="a", title=title, date=None, source="a.txt", text="\n\n".join(paragraphs))


def _words(texts: list[str]) -> Counter[str]:
    return Counter(word for text in texts for word in text.split())


def test_seed_article_splits_into_its_paragraphs(data_dir: Path, encoder: FakeEncoder) -> None:
    """With room to spare, each paragraph is one passage, in order, with stable ids."""
    [article] = read_articles(data_dir).articles
    passages = split_article(article, encoder.count_tokens, max_tokens=256)
    assert [p.text for p in passages] == article.paragraphs
    assert [p.id for p in passages] == [f"{article.id}:{i}" for i in range(len(passages))]
    assert all(p.title == article.title and p.date == article.date for p in passages)


@pytest.mark.parametrize("max_tokens", [24, 40, 64, 128])
def test_token_limit_is_honoured_and_no_word_is_lost(
    data_dir: Path, encoder: FakeEncoder, max_tokens: int
) -> None:
    """Every passage (with its title) fits the limit; together they hold exactly the words."""
    [article] = read_articles(data_dir).articles
    passages = split_article(article, encoder.count_tokens, max_tokens)
    assert all(encoder.count_tokens(p.embedding_text) <= max_tokens for p in passages)
    assert _words([p.text for p in passages]) == _words(article.paragraphs)


def test_long_paragraph_is_cut_at_sentence_boundaries(encoder: FakeEncoder) -> None:
    """A paragraph over the limit becomes passages made of whole sentences."""
    sentences = [f"Sentence number {i} has exactly seven words here." for i in range(10)]
    paragraph = " ".join(sentences)
    passages = split_article(_article(paragraph, title="T"), encoder.count_tokens, max_tokens=30)
    assert len(passages) > 1
    for passage in passages:
        assert set(split_sentences(passage.text)) <= set(sentences)


def test_single_overlong_sentence_is_cut_at_words(encoder: FakeEncoder) -> None:
    """A sentence longer than the limit is split between words rather than truncated."""
    sentence = " ".join(f"word{i}" for i in range(100))
    passages = split_article(_article(sentence, title="T"), encoder.count_tokens, max_tokens=20)
    assert all(encoder.count_tokens(p.embedding_text) <= 20 for p in passages)
    assert " ".join(p.text for p in passages) == sentence


def test_tiny_fragments_are_merged_with_a_neighbour(encoder: FakeEncoder) -> None:
    """A short line such as a subheading joins the paragraph after it."""
    body = "A long enough paragraph of text that says a great many things about the news today."
    passages = split_article(
        _article("Subheading", body, "The end."), encoder.count_tokens, max_tokens=128
    )
    assert [p.text for p in passages] == [f"Subheading {body} The end."]
    assert all(len(p.text.split()) >= MIN_WORDS for p in passages)


@pytest.mark.parametrize(
    "title",
    [
        " ".join(f"headline{i}" for i in range(300)),  # 300 words: over the 256-token limit
        "长" * 1000,  # no spaces to cut at
    ],
)
def test_a_title_over_the_token_limit_leaves_paragraphs_whole(
    data_dir: Path, encoder: FakeEncoder, title: str
) -> None:
    """A title longer than the model's limit is cut for embedding only: the paragraphs stay
    whole passages and each passage keeps the full title to show."""
    [seed] = read_articles(data_dir).articles
    passages = split_article(_article(*seed.paragraphs, title=title), encoder.count_tokens, 256)
    assert [p.text for p in passages] == seed.paragraphs
    assert all(p.title == title for p in passages)
    assert all(encoder.count_tokens(p.embedding_text) <= 256 for p in passages)
    head = passages[0].embedding_text.split("\n", 1)[0]
    assert title.startswith(head) and 0 < len(head) <= EMBEDDED_TITLE_LENGTH


def test_passage_json_round_trip(data_dir: Path, encoder: FakeEncoder) -> None:
    """A passage written as JSON reads back equal."""
    [article] = read_articles(data_dir).articles
    for passage in split_article(article, encoder.count_tokens, 256):
        assert Passage.from_json(passage.to_json()) == passage


SENTENCES = [
    ("One. Two three.", ["One.", "Two three."]),
    ("Mr. Smith met Dr. Jones. They spoke.", ["Mr. Smith met Dr. Jones.", "They spoke."]),
    ("The U.S. economy grew. Prices fell.", ["The U.S. economy grew.", "Prices fell."]),
    ('He said "Stop." Then left.', ['He said "Stop."', "Then left."]),
    ("Is it? Yes! 2023 was good.", ["Is it?", "Yes!", "2023 was good."]),
    ("no capital after. so one sentence", ["no capital after. so one sentence"]),
    ("这是第一句。这是第二句！", ["这是第一句。", "这是第二句！"]),
    ("", []),
]


@pytest.mark.parametrize(("text", "expected"), SENTENCES)
def test_split_sentences(text: str, expected: list[str]) -> None:
    """Sentence boundaries respect abbreviations, initials, quotes and CJK full stops."""
    assert split_sentences(text) == expected
