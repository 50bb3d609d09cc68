"""What metrics and JSON logging add to each question, against the time a question takes.

Run from the repository root::

    .venv/bin/python -m benchmarks.monitoring_overhead        # --questions N for another count

It times what the bot does per question for monitoring (the counter, the latency histogram and
the one JSON log line at INFO, through the token-redacting formatter, into a discarded stream)
and prints it as a share of `--question-ms`, the time of the fastest question: a refusal from
the int8 ONNX model without the reranker, about 3 ms (README, "Using it").
"""

from __future__ import annotations

import argparse
import io
import logging
import time

from bot.logs import JsonFormatter, RedactingFormatter
from bot.metrics import Metrics


def per_question_seconds(questions: int) -> float:
    """Mean seconds of monitoring one question, JSON logging on at INFO."""
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(RedactingFormatter(JsonFormatter(), ["123456:not-a-real-token"]))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    metrics = Metrics()
    started = time.perf_counter()
    for number in range(questions):
        metrics.question("answered", time.perf_counter(), number % 50)
    return (time.perf_counter() - started) / questions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--questions", type=int, default=20_000)
    parser.add_argument("--question-ms", type=float, default=3.0)
    arguments = parser.parse_args()
    seconds = per_question_seconds(arguments.questions)
    share = seconds * 1000 / arguments.question_ms
    print(
        f"monitoring: {seconds * 1e6:.1f} µs a question, {share:.2%} of {arguments.question_ms} ms"
    )


if __name__ == "__main__":
    main()
