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


class EmptyQuestionError(NewsqaError):
    """The question has no words to search for."""


class IndexBusyError(NewsqaError):
    """Another build holds the index lock."""


class RerankerLoadError(NewsqaError):
    """The reranker model shipped with the package could not be loaded."""
