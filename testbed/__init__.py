"""Stand-ins that tests and benchmarks both run against, so neither imports the other.

A local Telegram Bot API server (`telegram_server`), a throwaway PostgreSQL server
(`postgres_server`), a deterministic fake encoder, article files in the news-export format,
and the loop that kills `newsqa index` builds (`crash_loop`). Nothing in `bot/` or
`embeddings/` imports it.
"""
