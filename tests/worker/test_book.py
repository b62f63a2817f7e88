"""Turning books into chapters: headings in text, .txt encodings, Markdown, EPUB."""

from __future__ import annotations

import io
import zipfile

import pytest
from ebooklib import epub

from worker.audiobook.book import (
    Book,
    BookError,
    Chapter,
    UnsupportedBook,
    read_book,
    read_epub,
    read_markdown,
    read_txt,
    split_chapters,
)

BODY = "It was a dark and stormy night.\nThe rain fell in torrents."
BODY_TEXT = "It was a dark and stormy night. The rain fell in torrents."


def titles(book: Book) -> list[str]:
    return [chapter.title for chapter in book.chapters]


@pytest.mark.parametrize(
    ("heading", "title"),
    [
        ("Chapter 1", "Chapter 1"),
        ("CHAPTER ONE", "CHAPTER ONE"),
        ("Chapter Twenty-One", "Chapter Twenty-One"),
        ("Chapter XII: The Storm", "Chapter XII: The Storm"),
        ("chapter 3. Home", "chapter 3: Home"),
        ("Chapter 4 \u2014 Away", "Chapter 4: Away"),
        ("Part II", "Part II"),
        ("PART THREE", "PART THREE"),
        ("Prologue", "Prologue"),
        ("EPILOGUE", "EPILOGUE"),
        ("# The Storm", "The Storm"),
        ("## The Calm ##", "The Calm"),
    ],
)
def test_split_chapters_heading_styles(heading: str, title: str) -> None:
    text = f"{heading}\n\n{BODY}\n\nChapter 99\n\nThe end."
    book = split_chapters(text)
    assert book.chapters == (Chapter(title, BODY_TEXT), Chapter("Chapter 99", "The end."))


def test_split_chapters_roman_numerals() -> None:
    text = "\n\n".join(f"Chapter {n}\n\nText {n}." for n in ["I", "IV", "IX", "XIV", "XL"])
    book = split_chapters(text)
    assert titles(book) == ["Chapter I", "Chapter IV", "Chapter IX", "Chapter XIV", "Chapter XL"]
    # "IIII" is not a Roman numeral, so this line stays text.
    assert len(split_chapters("Chapter 1\n\nA.\n\nChapter IIII\n\nB.").chapters) == 1


def test_split_chapters_mid_sentence_words_do_not_split() -> None:
    text = (
        "Chapter 1\n\nShe read Chapter 2 of the manual twice.\n"
        "Chapter 3 of the manual was worse.\n\n"
        "Part of the problem was the\nChapter 4. It never ended.\n\n"
        "Chapter 5 is where it gets good, she said."
    )
    book = split_chapters(text)
    assert titles(book) == ["Chapter 1"]
    assert "Chapter 4. It never ended." in book.chapters[0].text


def test_split_chapters_keeps_paragraphs_and_normalises_whitespace() -> None:
    book = split_chapters("Chapter 1\n\n  One   two\n three.\n\n\n\nFour\t five.  \n")
    assert book.chapters[0].text == "One two three.\n\nFour five."


def test_split_chapters_text_before_first_heading_with_content() -> None:
    opening = "A foreword.\nIt goes on.\nAnd on for a third line."
    book = split_chapters(f"{opening}\n\nChapter 1\n\n{BODY}")
    assert book.chapters[0] == Chapter("", "A foreword. It goes on. And on for a third line.")
    assert titles(book) == ["", "Chapter 1"]


def test_split_chapters_title_page_dropped_and_used_as_title() -> None:
    book = split_chapters(f"The Storm\nby A. Writer\n\nChapter 1\n\n{BODY}")
    assert book.title == "The Storm"
    assert book.chapters == (Chapter("Chapter 1", BODY_TEXT),)
    given = split_chapters(f"The Storm\n\nChapter 1\n\n{BODY}", title="Given")
    assert given.title == "Given"


def test_split_chapters_no_headings() -> None:
    assert split_chapters(BODY).chapters == (Chapter("Chapter 1", BODY_TEXT),)
    assert split_chapters(BODY, title="Storms").chapters == (Chapter("Storms", BODY_TEXT),)
    assert split_chapters("Hi.").chapters == (Chapter("Chapter 1", "Hi."),)


def test_split_chapters_empty_heading_folds_into_next() -> None:
    book = split_chapters("Part II\n\nChapter 5\n\nText.\n\nChapter 6\nMore.")
    assert titles(book) == ["Part II \u2014 Chapter 5", "Chapter 6"]
    assert book.chapters[1].text == "More."


@pytest.mark.parametrize(
    ("text", "chapters"),
    [
        (
            "CHAPTER I\n\nThe Boy Who Lived\n\nMr. and Mrs. Dursley were proud.",
            [("CHAPTER I: The Boy Who Lived", "Mr. and Mrs. Dursley were proud.")],
        ),
        (
            "CHAPTER I\nTHE BOY WHO LIVED\n\nMr. and Mrs. Dursley were proud.",
            [("CHAPTER I: THE BOY WHO LIVED", "Mr. and Mrs. Dursley were proud.")],
        ),
        (
            "Chapter 1.\n\n  The   Vanishing\tGlass  \n\nNearly ten years had passed.",
            [("Chapter 1: The Vanishing Glass", "Nearly ten years had passed.")],
        ),
        (
            "Prologue\n\nLondon, 1815\n\nIt rained.\n\nChapter 2\n\nThe Letters\n",
            [("Prologue: London, 1815", "It rained."), ("Chapter 2", "The Letters")],
        ),
        (
            "PART ONE\n\nTHE OLD WORLD\n\nCHAPTER I\n\nHOME\n\nText.",
            [("PART ONE: THE OLD WORLD \u2014 CHAPTER I: HOME", "Text.")],
        ),
    ],
    ids=["blank-line", "next-line", "whitespace", "last-chapter-only-line", "part-folds"],
)
def test_split_chapters_title_on_line_after_bare_heading(
    text: str, chapters: list[tuple[str, str]]
) -> None:
    assert split_chapters(text).chapters == tuple(Chapter(t, body) for t, body in chapters)


@pytest.mark.parametrize(
    ("first", "body"),
    [
        ("It was a dark and stormy night.", "It was a dark and stormy night.\n\nMore."),
        ("Where was he?", "Where was he?\n\nMore."),
        ("He waited\u2026", "He waited\u2026\n\nMore."),
        ("\u201cWake up!\u201d", "\u201cWake up!\u201d\n\nMore."),
        ("\u201cWake up\u201d", "\u201cWake up\u201d\n\nMore."),
        ("The boy woke\nearly that day", "The boy woke early that day\n\nMore."),
        ("* * *", "* * *\n\nMore."),
        ("A" + " very long line" * 5, "A" + " very long line" * 5 + "\n\nMore."),
    ],
    ids=["sentence", "question", "ellipsis", "quoted-sentence", "dialogue", "paragraph",
         "scene-break", "long"],
)  # fmt: skip
def test_split_chapters_next_line_that_is_text_stays_text(first: str, body: str) -> None:
    book = split_chapters(f"Chapter 2\n\n{first}\n\nMore.")
    assert book.chapters == (Chapter("Chapter 2", body),)


def test_split_chapters_next_line_not_taken_by_titled_or_markdown_heading() -> None:
    for heading in ("Chapter 1: Named", "# Chapter 1"):
        book = split_chapters(f"{heading}\n\nThe Boy\n\nText.")
        assert book.chapters[0].text == "The Boy\n\nText."
    # A chapter's only line is its text, not its title.
    assert split_chapters("Chapter 1\n\nThe End").chapters == (Chapter("Chapter 1", "The End"),)


@pytest.mark.parametrize("text", ["", "  \n\n \t", "Chapter 1\n\nChapter 2\n"])
def test_split_chapters_without_text_fails(text: str) -> None:
    with pytest.raises(BookError, match="no text"):
        split_chapters(text)


@pytest.mark.parametrize(
    "data",
    [
        "Chapter 1\n\nCaf\u00e9 na\u00efve.".encode(),
        b"\xef\xbb\xbf" + "Chapter 1\n\nCaf\u00e9 na\u00efve.".encode(),
        "Chapter 1\r\n\r\nCaf\u00e9 na\u00efve.".encode("latin-1"),
        "Chapter 1\n\nCaf\u00e9 na\u00efve.".encode("utf-16"),
    ],
    ids=["utf-8", "utf-8-bom", "latin-1-crlf", "utf-16-bom"],
)
def test_read_txt_encodings(data: bytes) -> None:
    assert read_txt(data).chapters == (Chapter("Chapter 1", "Caf\u00e9 na\u00efve."),)


def test_read_txt_binary_is_unsupported() -> None:
    with pytest.raises(UnsupportedBook):
        read_txt(b"\x89PNG\r\n\x1a\n\x00\x00\x00")


MARKDOWN = """\
# The Storm

## Chapter One

It was **dark** and *stormy*, see [the map](http://x/map.png) and ![a map](map.png).
Some `code` and __strong__ and _soft_ and ~~gone~~ words; snake_case stays.

> A quoted line.

- first item
- second item

```python
# not a heading
print("hi")
```

---

### A small heading

Escaped \\*stars\\*. <span>Tagged</span> text. [ref link][1]

[1]: http://example.com

## Chapter Two

The end.
"""


def test_read_markdown_title_and_cleanup() -> None:
    book = read_markdown(MARKDOWN.encode())
    assert book.title == "The Storm"
    assert titles(book) == ["Chapter One", "Chapter Two"]
    assert book.chapters[0].text == (
        "It was dark and stormy, see the map and . Some code and strong and soft and gone "
        "words; snake_case stays.\n\nA quoted line.\n\nfirst item second item\n\n"
        "A small heading\n\nEscaped *stars*. Tagged text. ref link"
    )
    assert book.chapters[1].text == "The end."


def test_read_markdown_top_level_chapters() -> None:
    book = read_markdown(b"# One\n\nFirst.\n\n# Two\n\nSecond.\n")
    assert book.title is None
    assert titles(book) == ["One", "Two"]


SETEXT = """\
The Storm
=========

Chapter *One*
-------------

It was dark.

---

Still dark.
Two lines, then
---

Chapter Two
--

- a list item
---

> a quote
---

The end.
Of the book
===========
"""


def test_read_markdown_setext_headings() -> None:
    book = read_markdown(SETEXT.encode())
    assert book.title == "The Storm"
    assert book.chapters == (
        Chapter("Chapter One", "It was dark.\n\nStill dark. Two lines, then"),
        Chapter("Chapter Two", "a list item\n\na quote\n\nThe end. Of the book"),
    )


@pytest.mark.parametrize(
    ("markdown", "chapters"),
    [
        ("# A\n\nText.\nSub\n---\nMore.", [("A", "Text. Sub\n\nMore.")]),
        ("# A\n\nText.\n\n# B\nSub\n---\nMore.", [("A", "Text."), ("B \u2014 Sub", "More.")]),
        ("# A\n\nText.\n\n===\n\nMore.", [("A", "Text.\n\n===\n\nMore.")]),
        ("# A\n\n```\ncode\n```\n---\nMore.", [("A", "More.")]),
        ("# A\n\n" + "x" * 120 + "\n---\nMore.", [("A", "x" * 120 + "\n\nMore.")]),
        ("# A\n\n- - -\nMore.\n- - -", [("A", "More.")]),
    ],
    ids=["two-line-paragraph", "after-atx", "lone-equals", "after-fence", "too-long", "rules"],
)
def test_read_markdown_setext_edges(markdown: str, chapters: list[tuple[str, str]]) -> None:
    book = read_markdown(markdown.encode())
    assert book.chapters == tuple(Chapter(title, text) for title, text in chapters)


def test_read_markdown_front_matter_left_out() -> None:
    text = "---\ntitle: The Storm\ntags:\n  - weather\n---\n\n# One\n\nText.\n"
    assert read_markdown(text.encode()).chapters == (Chapter("One", "Text."),)
    # Without key: value lines, the first `---` is a rule and the second an underline.
    text = "---\nAn opening line\n---\n\nText.\n\n# One\n\nMore.\n"
    assert titles(read_markdown(text.encode())) == ["An opening line", "One"]


def _html(title: str, body: str) -> epub.EpubHtml:
    page = epub.EpubHtml(title=title, file_name=f"text/{title.lower().replace(' ', '_')}.xhtml")
    page.content = f"<html><body>{body}</body></html>"
    return page


def make_epub(*, ncx_only: bool = False) -> bytes:
    book = epub.EpubBook()
    book.set_identifier("book-1")
    book.set_title("The Test Book")
    book.set_language("en")
    cover = _html("Cover", '<div><img src="cover.jpg" alt=""/></div>')
    one = _html(
        "One",
        "<h1>The Beginning</h1><p>First paragraph"
        '<a epub:type="noteref" href="#fn1">1</a> with a note.</p>'
        '<p>Second<sup><a href="#fn2">2</a></sup> paragraph.</p>'
        '<aside epub:type="footnote" id="fn1"><p>FOOTNOTE ONE</p></aside>'
        '<div role="doc-endnote" id="fn2"><p>ENDNOTE TWO</p></div>'
        "<script>var hidden = 1;</script>",
    )
    one_more = _html("One More", "<p>Continued without a nav entry.</p>")
    two = _html("Two", "<h2>The Middle</h2><div>Middle <em>text</em>.</div><ul><li>A</li></ul>")
    three = _html("Three", "<p>Last words.</p>")
    for item in (cover, one, one_more, two, three):
        book.add_item(item)
    book.toc = [
        epub.Link("text/cover.xhtml", "Cover", "cover"),
        epub.Link("text/one.xhtml#start", "The Beginning", "one"),
        epub.Link("text/two.xhtml", "The Middle", "two"),
        epub.Link("text/three.xhtml", "The End", "three"),
    ]
    if ncx_only:
        book.add_item(epub.EpubNcx())
        book.spine = [cover, one, one_more, two, three]
    else:
        book.add_item(epub.EpubNav())
        book.spine = ["nav", cover, one, one_more, two, three]
    out = io.BytesIO()
    epub.write_epub(out, book, {"raise_exceptions": True})
    return out.getvalue()


@pytest.mark.parametrize("ncx_only", [False, True], ids=["epub3-nav", "epub2-ncx"])
def test_read_epub_chapters_from_navigation(ncx_only: bool) -> None:
    book = read_epub(make_epub(ncx_only=ncx_only))
    assert book.title == "The Test Book"
    assert book.chapters == (
        Chapter(
            "The Beginning",
            "First paragraph with a note.\n\nSecond paragraph.\n\nContinued without a nav entry.",
        ),
        Chapter("The Middle", "Middle text.\n\nA"),
        Chapter("The End", "Last words."),
    )
    text = " ".join(chapter.text for chapter in book.chapters)
    for absent in ("FOOTNOTE", "ENDNOTE", "hidden", "paragraph1", "Second2", "Cover"):
        assert absent not in text


def test_read_epub_first_document_without_nav_entry_is_chapter_1() -> None:
    book = epub.EpubBook()
    book.set_identifier("b")
    book.set_title("Untitled")
    page = _html("Lonely", "<p>Hello.</p>")
    book.add_item(page)
    book.add_item(epub.EpubNav())
    book.toc = []
    book.spine = [page]
    out = io.BytesIO()
    epub.write_epub(out, book, {"raise_exceptions": True})
    assert read_epub(out.getvalue()).chapters == (Chapter("Chapter 1", "Hello."),)


def test_read_epub_unreadable() -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("mimetype", "application/epub+zip")
    with pytest.raises(BookError, match="EPUB could not be read"):
        read_epub(archive.getvalue())
    with pytest.raises(BookError, match="EPUB could not be read"):
        read_book(b"not a zip at all", "book.epub")


def test_read_book_dispatch() -> None:
    data = make_epub()
    assert read_book(data, "whatever.bin").title == "The Test Book"
    assert titles(read_book(b"Chapter 1\n\nHi.", "a.TXT")) == ["Chapter 1"]
    assert titles(read_book(b"# A\n\nHi.\n\n# B\n\nYo.", "a.markdown")) == ["A", "B"]
    assert titles(read_book(b"# A\n\nHi.", "a.md")) == ["A"]


@pytest.mark.parametrize(
    ("data", "filename"),
    [(b"%PDF-1.7 ...", "book.pdf"), (b"<html></html>", "book.html"), (b"text", "noext")],
)
def test_read_book_unsupported(data: bytes, filename: str) -> None:
    with pytest.raises(UnsupportedBook, match="upload a .txt"):
        read_book(data, filename)


def test_read_book_empty() -> None:
    with pytest.raises(BookError, match="empty"):
        read_book(b"", "book.txt")
