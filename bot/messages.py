"""The bot's own sentences in English, Russian and Chinese; other languages get English."""

from __future__ import annotations

ENGLISH = "en"

MESSAGES: dict[str, dict[str, str]] = {
    "not_found": {
        "en": "I couldn't find that in the articles. Try rephrasing the question, "
        "or send /help for examples of what I can answer.",
        "ru": "Я не нашёл ответа в статьях. Попробуйте переформулировать вопрос "
        "или отправьте /help, чтобы увидеть примеры.",
        "zh": "我在文章中没有找到答案。请换一种说法提问，或发送 /help 查看示例。",
    },
    "empty_question": {
        "en": "Please ask a question in words, for example: {example}",
        "ru": "Пожалуйста, задайте вопрос словами, например: {example}",
        "zh": "请用文字提问，例如：{example}",
    },
    "not_text": {
        "en": "I can only read text: ask me a question about the news articles, or send /help.",
        "ru": "Я понимаю только текст: задайте вопрос о новостных статьях или отправьте /help.",
        "zh": "我只能读取文字：请就新闻文章提问，或发送 /help。",
    },
    "expired": {
        "en": "This answer has expired; please ask the question again.",
        "ru": "Этот ответ устарел; задайте вопрос ещё раз.",
        "zh": "这个回答已过期，请重新提问。",
    },
    "not_allowed": {
        "en": "Sorry, this bot is not available in this chat.",
        "ru": "Извините, этот бот недоступен в этом чате.",
        "zh": "抱歉，此聊天中无法使用本机器人。",
    },
    "failed": {
        "en": "Sorry, something went wrong while answering. Please try again.",
        "ru": "Извините, при ответе что-то пошло не так. Попробуйте ещё раз.",
        "zh": "抱歉，回答时出了点问题，请重试。",
    },
    "too_many": {
        "en": "Too many questions; please try again in {seconds} s.",
        "ru": "Слишком много вопросов; попробуйте снова через {seconds} с.",
        "zh": "提问太频繁，请在 {seconds} 秒后重试。",
    },
    "admins_only": {
        "en": "Sorry, only the bot's admins can add articles.",
        "ru": "Извините, добавлять статьи могут только администраторы бота.",
        "zh": "抱歉，只有本机器人的管理员可以添加文章。",
    },
    "add_usage": {
        "en": "Send /add followed by the article's address, or the article as a .txt, .md, "
        ".html or .jsonl file.",
        "ru": "Отправьте /add и адрес статьи или саму статью файлом .txt, .md, .html или .jsonl.",
        "zh": "请发送 /add 加文章地址，或以 .txt、.md、.html 或 .jsonl 文件发送文章。",
    },
    "added": {
        "en": "Added \u201c{title}\u201d (passages: {passages}); it can be searched now.",
        "ru": "Добавлена статья «{title}» (фрагментов: {passages}); по ней уже можно искать.",
        "zh": "已添加《{title}》（{passages} 个段落），现在可以搜索。",
    },
    "not_added": {
        "en": "Not added: {reason}",
        "ru": "Не добавлено: {reason}",
        "zh": "未添加：{reason}",
    },
    "not_indexed": {
        "en": "Stored, but the index could not be updated: {reason}",
        "ru": "Сохранено, но индекс обновить не удалось: {reason}",
        "zh": "已保存，但索引未能更新：{reason}",
    },
    "more": {"en": "More »", "ru": "Ещё »", "zh": "更多 »"},
    "back": {"en": "« Back", "ru": "« Назад", "zh": "« 返回"},
    "whole_article": {"en": "Whole article", "ru": "Вся статья", "zh": "全文"},
    "article_n": {"en": "Article {n}", "ru": "Статья {n}", "zh": "文章 {n}"},
    # /start and /help (bot.replies.introduction_message)
    "introduction": {
        "en": "I answer questions about {count}{dates} by quoting the passages that answer them.",
        "ru": "Я отвечаю на вопросы по новостным статьям ({count}{dates}), цитируя отрывки, "
        "в которых есть ответ.",
        "zh": "我根据{count}{dates}回答问题，并引用包含答案的段落。",
    },
    "article_count": {"en": "{n} news articles", "ru": "статей: {n}", "zh": "{n} 篇新闻文章"},
    "article_count_one": {"en": "{n} news article", "ru": "статей: {n}", "zh": "{n} 篇新闻文章"},
    "date_range": {
        "en": " ({first} to {last})",
        "ru": ", с {first} по {last}",
        "zh": "（{first}至{last}）",
    },
    "one_date": {"en": " ({first})", "ru": ", {first}", "zh": "（{first}）"},
    "examples": {
        "en": "Ask in plain words, for example:",
        "ru": "Спрашивайте простыми словами, например:",
        "zh": "请用平常的话提问，例如：",
    },
    "in_groups": {
        "en": "In a group, mention me or use /ask followed by your question.",
        "ru": "В группе упомяните меня или напишите /ask и вопрос.",
        "zh": "在群组中，请提及我，或发送 /ask 加上你的问题。",
    },
    # /about (bot.replies.about_message)
    "about_articles": {"en": "Articles:", "ru": "Статей:", "zh": "文章："},
    "about_passages": {"en": "Passages:", "ru": "Фрагментов:", "zh": "段落："},
    "about_model": {"en": "Model:", "ru": "Модель:", "zh": "模型："},
    "about_built": {"en": "Index built:", "ru": "Индекс построен:", "zh": "索引构建于："},
}


def say(key: str, language: str = ENGLISH, **values: object) -> str:
    """The sentence `key` in `language` (English when there is no translation)."""
    return template(key, language).format(**values)


def template(key: str, language: str = ENGLISH) -> str:
    """The sentence `key` in `language` with its `{placeholders}` left in."""
    texts = MESSAGES[key]
    return texts.get(language, texts[ENGLISH])


def language_of(code: str | None) -> str:
    """Our language for a Telegram `language_code` such as "ru" or "zh-hans"."""
    return (code or ENGLISH).split("-")[0].lower()
