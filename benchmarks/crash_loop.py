"""kill -9 of `newsqa index`, 20 times: the index left behind always loads and answers.

Run from the repository root::

    .venv/bin/python -m benchmarks.crash_loop            # 20 kills (--kills N for another count)

It makes a tiny sentence-transformers model on disk (no download), 200 articles and their
index in a temporary folder, then 20 times: rewrites 60 articles (adding one, deleting one),
starts the real `newsqa index` and SIGKILLs it while it embeds, while it writes the new
generation, or at a random moment (in turn). After each kill the index must open with the
model, every sampled row must be its passage's embedding, and asking with a passage's own text
must find it first. A final build must complete and remove the killed builds' leftovers.
CI runs the same loop with 3 kills (tests/test_crash_safety.py).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

from embeddings.articles import read_articles
from embeddings.index.build import build_index
from testbed.crash_loop import crash_loop, crash_table, prepare, verify_index


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="how many builds to kill")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    options = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="newsqa-crash-") as folder:
        corpus = prepare(Path(folder))
        crashes = crash_loop(corpus, options.kills, options.seed)
        build_index(read_articles(corpus.data_dir).articles, corpus.encoder, corpus.index_dir)
        leftovers = [p.name for p in corpus.index_dir.iterdir() if p.name.startswith(".build-")]
        final_rows = verify_index(corpus.index_dir, corpus.encoder)
    print(crash_table(crashes))
    hits = {
        hit: sum(c.hit == hit for c in crashes) for hit in dict.fromkeys(c.hit for c in crashes)
    }
    print(
        f"\n{len(crashes)} kills ({', '.join(f'{n} {hit}' for hit, n in hits.items())}); "
        f"index whole and answering after every one; final build: {final_rows} rows checked, "
        f"{len(leftovers)} leftovers; {time.monotonic() - started:.0f} s in all."
    )
    return 0 if not leftovers else 1


if __name__ == "__main__":
    sys.exit(main())
