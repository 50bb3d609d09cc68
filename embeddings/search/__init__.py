"""Questions in, hits out: `Searcher` fuses the index's shortlists (`ranking`, with any dates
the question names: `dates`), lets the reranker read the best, and decides whether the
articles answer (`decision`)."""
