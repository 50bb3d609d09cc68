"""Articles in, passages, vectors and search hits out: the library behind the newsqa bot."""

from embeddings.articles import Article, SkippedFile, read_articles
from embeddings.errors import (
    DatabaseUnavailableError,
    EmptyQuestionError,
    EncoderLoadError,
    IndexBusyError,
    IndexCorruptError,
    IndexNotFoundError,
    ModelMismatchError,
    NewsqaError,
    NoArticlesError,
    PostgresMissingError,
    SchemaVersionError,
)
from embeddings.index.build import BuildReport, build_index
from embeddings.index.index import Index
from embeddings.passages import Passage, split_article
from embeddings.search.searcher import Hit
from embeddings.stores import SearchStore, StoreLocation, location_of

__all__ = [
    "Article",
    "BuildReport",
    "DatabaseUnavailableError",
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
    "PostgresMissingError",
    "SchemaVersionError",
    "SearchStore",
    "SkippedFile",
    "StoreLocation",
    "build_index",
    "location_of",
    "read_articles",
    "split_article",
]
