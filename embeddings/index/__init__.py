"""The index on disk: its file layout, the build that writes it, and `Index`, which opens it and
finds the passages nearest a question (dense matrix, int8 scan, BM25, segments)."""
