"""Articles in, passages, vectors and search hits out: the library behind the newsqa bot."""

from embeddings.articles import Article, SkippedFile, read_articles
from embeddings.build import BuildReport, build_index
from embeddings.errors import (
    EmptyQuestionError,
    EncoderLoadError,
    IndexBusyError,
    IndexCorruptError,
    IndexNotFoundError,
    ModelMismatchError,
    NewsqaError,
    NoArticlesError,
)
from embeddings.index import Hit, Index
from embeddings.passages import Passage, split_article

__all__ = [
    "Article",
    "BuildReport",
    "EmptyQuestionError",
    "EncoderLoadError",
    "Hit",
    "Index",
    "IndexBusyError",
    "IndexCorruptError",
    "IndexNotFoundError",
    "ModelMismatchError",
    "NewsqaError",
    "NoArticlesError",
    "Passage",
    "SkippedFile",
    "build_index",
    "read_articles",
    "split_article",
]
