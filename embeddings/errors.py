"""The facts the library reports; the command line adds how to fix each one."""

from __future__ import annotations


class NewsqaError(Exception):
    """Base class for every error the library raises on bad input or state."""


class NoArticlesError(NewsqaError):
    """The articles folder holds no readable article."""


class IndexNotFoundError(NewsqaError):
    """No index exists at the given path."""


class IndexCorruptError(NewsqaError):
    """An index exists but its files are damaged or inconsistent."""


class ModelMismatchError(NewsqaError):
    """The index was embedded with a different model than the one asked for."""


class EncoderLoadError(NewsqaError):
    """The embedding model could not be loaded."""


class LexicalError(NewsqaError):
    """The lexical index cannot be built or used as asked."""


class OnnxExportError(EncoderLoadError):
    """A model folder cannot be exported to ONNX (unsupported layout, or the export failed)."""


class EmptyQuestionError(NewsqaError):
    """The question has no words to search for."""


class IndexBusyError(NewsqaError):
    """Another build holds the index lock."""


class RerankerLoadError(NewsqaError):
    """The reranker model shipped with the package could not be loaded."""


class DatabaseUnavailableError(NewsqaError):
    """The database holding the index cannot be reached or refused the connection."""


class SchemaVersionError(NewsqaError):
    """The database holds the index in a schema version this newsqa cannot read."""


class SchemaTooNewError(SchemaVersionError):
    """The database's index was written by a newer newsqa."""


class SchemaTooOldError(SchemaVersionError):
    """The database's index was written by an older newsqa."""


class PostgresMissingError(NewsqaError):
    """A database store was asked for without the packages that reach one."""


class VectorExtensionError(NewsqaError):
    """The database lacks the pgvector extension, and the build may not create it."""


class JudgedSetError(NewsqaError):
    """A judged-set file is missing, unreadable or not in the expected format."""


class JudgedFilesError(NewsqaError):
    """The judged-set options of `newsqa eval` do not name one complete format."""


class StoreInUseError(NewsqaError):
    """A database asked to hold a judged set holds other articles: an index in use."""


class FetchError(NewsqaError):
    """A web page or feed could not be fetched: HTTP error, timeout, too large, redirect loop."""


class UnsafeAddressError(FetchError):
    """An address that is not public http(s), refused so a fetch cannot reach internal hosts."""


class NotAnArticleError(NewsqaError):
    """A fetched page is not HTML, or holds no article text once extracted."""


class NotAFeedError(NewsqaError):
    """A feed address answered with something that is not an RSS or Atom feed."""


class FeedListError(NewsqaError):
    """The file listing the watched feeds cannot be read."""


class DatabasePermissionError(NewsqaError):
    """The database refused to let newsqa create the tables it needs."""


class TokenRejectedError(NewsqaError):
    """The Bot API answered 401: the bot token is wrong or was revoked."""


class TelegramUnreachableError(NewsqaError):
    """The Bot API did not answer at start, even after waiting and trying again."""


class WebhookRefusedError(NewsqaError):
    """Telegram refused the webhook address it was given."""


class PortInUseError(NewsqaError):
    """A port the bot must listen on is held by another process."""


class PollingConflictError(NewsqaError):
    """Another process polls Telegram with the same bot token (409 Conflict)."""
