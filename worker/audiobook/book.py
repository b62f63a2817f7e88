"""Turn a book (plain text, Markdown or EPUB) into a title and a list of chapters.

Every reader returns a `Book` whose chapters hold plain, speakable text: paragraphs with
their inner whitespace collapsed to single spaces, separated by one blank line.

Exceptions::

    ValueError
    └── BookError          the book is empty, has no text, or cannot be read
        └── UnsupportedBook  not a .txt, .md/.markdown or .epub (the API answers 415)

Chapter headings in text (`split_chapters`) are lines that stand alone:

- Markdown `# Title` and `## Title` (`###` and deeper are ordinary text); in a Markdown
  book also a one-line paragraph underlined with `===` or `---` (see `read_markdown`);
- after a blank line or at the start of the text, "Chapter 1", "CHAPTER ONE",
  "Chapter XII: The Storm", "Part II", "PART THREE", "Prologue", "Epilogue" (any case),
  optionally followed by a title after ":", ".", "—",
  "–" or " - ". The number is digits, a Roman numeral or an English number word up to
  ninety-nine. A line such as "Chapter 3 of the manual" is not a heading.

Such a heading with no title of its own ("CHAPTER I") takes its title from the next
line, as Project Gutenberg books print it, when that line is a paragraph of its own, at
most 60 characters, with a letter in it, and not a sentence: it does not end with
". ! ? , ; : … —" (a closing quote or bracket after them counts too) nor open with a
double quote. "CHAPTER I" then "The Boy Who Lived" make "CHAPTER I: The Boy Who Lived".
A chapter's only line is left as its text.

A heading with no text under it (a "Part II" directly followed by "Chapter 5") is folded
into the next chapter's title ("Part II — Chapter 5"). Text before the first heading is
kept as an untitled first chapter (title "") only when it has at least three lines or 200
characters; anything shorter is taken for a title page and dropped, its first line
becoming the book's title when none was given.
"""

from __future__ import annotations

import codecs
import importlib.util
import io
import posixpath
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import unquote

__all__ = [
    "Book",
    "BookError",
    "Chapter",
    "UnsupportedBook",
    "read_book",
    "read_epub",
    "read_markdown",
    "read_txt",
    "split_chapters",
]

EPUB_MIMETYPE = b"application/epub+zip"
TITLE_PAGE_MAX_LINES = 2
TITLE_PAGE_MAX_CHARACTERS = 200
HEADING_MAX_CHARACTERS = 120
TITLE_LINE_MAX_CHARACTERS = 60


@dataclass(frozen=True)
class Chapter:
    """One chapter: its title ("" for an untitled opening) and its paragraphs as text."""

    title: str
    text: str


@dataclass(frozen=True)
class Book:
    """A book's title, if known, and its chapters in reading order (never empty)."""

    title: str | None
    chapters: tuple[Chapter, ...]


class BookError(ValueError):
    """The book is empty, has no readable text, or its file cannot be read."""


class UnsupportedBook(BookError):
    """The file is not a format speechq reads (.txt, .md/.markdown, .epub)."""


# --- headings in plain text ---------------------------------------------------------------

_NUMBER_WORD = (
    r"(?:(?:twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)(?:[- ]"
    r"(?:one|two|three|four|five|six|seven|eight|nine))?"
    r"|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen"
    r"|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen)"
)
_ROMAN = r"(?=[ivxlcdm])m{0,4}(?:cm|cd|d?c{0,3})(?:xc|xl|l?x{0,3})(?:ix|iv|v?i{0,3})"
_KEYWORD_HEADING = re.compile(
    r"(?P<label>(?:chapter|part)\s+(?:\d+|" + _ROMAN + "|" + _NUMBER_WORD + r")"
    r"|prologue|epilogue)"
    r"(?:\s*(?:[:.\u2014\u2013]|\s-)\s*(?P<title>.*?))?\s*",
    re.IGNORECASE,
)
_MARKDOWN_HEADING = re.compile(r"(#{1,2})[ \t]+(?P<title>.+?)(?:[ \t]+#+)?[ \t]*")
_SPACE = re.compile(r"\s+")
_BLANK_LINES = re.compile(r"\n[ \t]*\n")
_SENTENCE_END = re.compile(r"[.!?,;:\u2026\u2014][\"'\u201d\u2019)\]]*$")
_OPENING_QUOTE = re.compile(r"[\"\u201c]")


def _heading_title(line: str, *, after_blank: bool = True) -> str | None:
    """The chapter title a heading line announces, or None when it is not a heading.

    Markdown headings count anywhere; "Chapter 1"-style ones only after a blank line, so
    a hard-wrapped sentence whose line happens to start with "Chapter 3." does not split.
    """
    stripped = line.strip()
    if not stripped or len(stripped) > HEADING_MAX_CHARACTERS:
        return None
    if match := _MARKDOWN_HEADING.fullmatch(stripped):
        return _collapse(match["title"])
    if after_blank and (match := _KEYWORD_HEADING.fullmatch(stripped)):
        label = _collapse(match["label"])
        title = _collapse(match["title"] or "")
        return f"{label}: {title}" if title else label
    return None


def _is_bare_keyword_heading(line: str) -> bool:
    """Whether `line` is a "Chapter 1"-style heading with no title after its number."""
    match = _KEYWORD_HEADING.fullmatch(line.strip())
    return match is not None and not (match["title"] or "").strip()


def _title_line(lines: list[str], *, heading_follows: bool) -> tuple[str, list[str]] | None:
    """The title printed on the line under a bare "CHAPTER I", and the lines after it;
    None when that line reads as body text (see the module docstring).

    `heading_follows` says another heading comes after these lines: a title line with
    nothing under it then folds into that heading ("PART ONE", "THE OLD WORLD", then
    "CHAPTER I"), while at the end of the book it is kept as the chapter's text.
    """
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        return None
    title = _collapse(lines[first])
    rest = lines[first + 1 :]
    if rest and rest[0].strip():
        return None  # the line opens a longer paragraph
    if (
        len(title) > TITLE_LINE_MAX_CHARACTERS
        or not any(c.isalpha() for c in title)  # "* * *" or a date is not a title
        or _SENTENCE_END.search(title)
        or _OPENING_QUOTE.match(title)  # dialogue
    ):
        return None
    if not heading_follows and not any(line.strip() for line in rest):
        return None
    return title, rest


def _collapse(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def _paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs with their whitespace collapsed, empty ones dropped."""
    return [p for p in (_collapse(block) for block in _BLANK_LINES.split(text)) if p]


def split_chapters(text: str, *, title: str | None = None) -> Book:
    """Find the chapters of `text` from its headings (see the module docstring)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise BookError("The book is empty: it has no text to read.")

    preamble: list[str] = []
    # (title, lines under it, whether the heading is a bare "CHAPTER I")
    sections: list[tuple[str, list[str], bool]] = []
    previous_blank = True
    for line in text.split("\n"):
        heading = _heading_title(line, after_blank=previous_blank)
        if heading is not None:
            sections.append((heading, [], _is_bare_keyword_heading(line)))
            # The line after a heading starts a new paragraph, and may itself be a heading
            # ("Part II" then "Chapter 5").
            previous_blank = True
            continue
        (sections[-1][1] if sections else preamble).append(line)
        previous_blank = not line.strip()

    chapters: list[Chapter] = []
    pending_titles: list[str] = []
    for n, (heading, lines, bare) in enumerate(sections):
        if bare and (found := _title_line(lines, heading_follows=n + 1 < len(sections))):
            title_line, lines = found
            heading = f"{heading}: {title_line}"
        body = "\n\n".join(_paragraphs("\n".join(lines)))
        if not body:
            pending_titles.append(heading)
            continue
        chapters.append(Chapter(" \u2014 ".join([*pending_titles, heading]), body))
        pending_titles = []

    opening = _paragraphs("\n".join(preamble))
    opening_lines = [line for line in preamble if line.strip()]
    is_title_page = (
        len(opening_lines) <= TITLE_PAGE_MAX_LINES
        and sum(len(p) for p in opening) < TITLE_PAGE_MAX_CHARACTERS
    )
    if opening and (not is_title_page or not sections):
        chapters.insert(0, Chapter("", "\n\n".join(opening)))
    elif opening and title is None:
        title = _collapse(opening_lines[0])

    if not chapters:
        raise BookError("The book has headings but no text under any of them.")
    if not sections:
        # No heading at all: the whole text is one chapter.
        chapters = [Chapter(title or "Chapter 1", chapters[0].text)]
    return Book(title=title, chapters=tuple(chapters))


# --- plain text and Markdown ----------------------------------------------------------------


def _decode(data: bytes) -> str:
    """UTF-8 (a BOM is dropped), UTF-16 with a BOM, else Latin-1, which always decodes."""
    if data.startswith(codecs.BOM_UTF8):
        return data[len(codecs.BOM_UTF8) :].decode("utf-8", errors="replace")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")
    if b"\x00" in data[:8192]:
        raise UnsupportedBook("The file is binary, not text: upload a .txt, .md or .epub.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def read_txt(data: bytes) -> Book:
    """A plain-text book: chapters from its headings (see `split_chapters`)."""
    return split_chapters(_decode(data))


_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})")
_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)|!\[[^\]]*\]\[[^\]]*\]")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)|\[([^\]]*)\]\[[^\]]*\]")
_AUTOLINK = re.compile(r"<(?:https?|mailto|ftp):[^>]*>")
_HTML_TAG = re.compile(r"</?[A-Za-z][^>]*>")
_REFERENCE_DEFINITION = re.compile(r"^[ \t]{0,3}\[[^\]]+\]:\s*\S.*$")
_RULE = re.compile(r"^[ \t]*(?:(?:\*[ \t]*){3,}|(?:-[ \t]*){3,}|(?:_[ \t]*){3,})$")
_QUOTE = re.compile(r"^[ \t]*(?:>[ \t]?)+")
_LIST_MARKER = re.compile(r"^[ \t]*(?:[-*+]|\d+[.)])[ \t]+")
_DEEP_HEADING = re.compile(r"^[ \t]*#{3,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_INLINE_CODE = re.compile(r"`+([^`]*)`+")
_STRONG = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_EMPHASIS = re.compile(
    r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?!\*)|(?<![\w_])_(?=\S)(.+?)(?<=\S)_(?!\w)"
)
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!>~|])")
_ESCAPED_BASE = 0xE000  # a private-use block: one code point per escaped ASCII character
_ESCAPED = re.compile("[\ue000-\ue07f]")
_SETEXT_UNDERLINE = re.compile(r" {0,3}(?P<marker>=+|-+)[ \t]*")
_ATX_HEADING = re.compile(r" {0,3}#{1,6}(?:[ \t]|$)")
_FRONT_MATTER_LINE = re.compile(r"[ \t]*$|[ \t]*#|[ \t]*- |[ \t]+\S|[\w\"'-][^:]*:(?:[ \t]|$)")


def _clean_markdown_line(line: str) -> str:
    if _REFERENCE_DEFINITION.match(line) or _RULE.match(line):
        return ""
    # Escaped characters are hidden from the patterns below, then restored.
    line = _ESCAPE.sub(lambda m: chr(_ESCAPED_BASE + ord(m[1])), line)
    line = _QUOTE.sub("", line)
    line = _LIST_MARKER.sub("", line)
    line = _DEEP_HEADING.sub(r"\1", line)
    line = _IMAGE.sub("", line)
    line = _LINK.sub(lambda m: m[1] if m[1] is not None else m[2], line)
    line = _AUTOLINK.sub("", line)
    line = _HTML_TAG.sub("", line)
    line = _INLINE_CODE.sub(r"\1", line)
    line = _STRONG.sub(r"\2", line)
    line = _EMPHASIS.sub(lambda m: m[1] if m[1] is not None else m[2], line)
    line = _STRIKE.sub(r"\1", line)
    return _ESCAPED.sub(lambda m: chr(ord(m[0]) - _ESCAPED_BASE), line)


def _without_front_matter(lines: list[str]) -> list[str]:
    """`lines` less a leading YAML front matter block (`---`, `key: value` lines, `---`
    or `...`), which is metadata, and whose closing `---` would make its last line a
    setext heading."""
    if not lines or lines[0].strip() != "---":
        return lines
    for end, line in enumerate(lines[1:], start=1):
        if line.strip() in ("---", "..."):
            return lines[end + 1 :]
        if not _FRONT_MATTER_LINE.match(line):
            break
    return lines


def _setext_heading(lines: list[str], paragraph: list[int], level: str) -> None:
    """Make the underlined paragraph at `paragraph` (indexes in `lines`) a heading.

    CommonMark makes the whole paragraph the heading; a chapter title is one short line,
    so a longer paragraph stays text (and its underline is dropped by the caller).
    """
    if len(paragraph) != 1:
        return
    heading = f"{level} {_collapse(lines[paragraph[0]])}"
    # Measured as an ATX heading line, so that `_heading_title` takes it.
    if heading.strip() != level and len(heading) <= HEADING_MAX_CHARACTERS:
        lines[paragraph[0]] = heading


def _markdown_lines(text: str) -> list[str]:
    """The lines of `text` as plain text, fenced code left out, `#`/`##` markers kept and
    setext headings (a paragraph underlined with `===` or `---`) written as them."""
    lines: list[str] = []
    # Indexes in `lines` of the paragraph being read, which an underline would make a
    # heading: [] between blocks, None inside a list item or quote, whose following lines
    # continue it (an underline there is a rule, as in CommonMark).
    paragraph: list[int] | None = []
    fence: str | None = None
    raw_lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for line in _without_front_matter(raw_lines):
        if match := _FENCE.match(line):
            marker = match[1]
            paragraph = []
            if fence is None:
                fence = marker
                continue
            if marker[0] == fence[0] and len(marker) >= len(fence):
                fence = None
                lines.append("")
                continue
        if fence is not None:
            continue
        underline = _SETEXT_UNDERLINE.fullmatch(line)
        if underline and paragraph:
            _setext_heading(lines, paragraph, "#" if underline["marker"][0] == "=" else "##")
            lines.append("")
            paragraph = []
            continue
        lines.append(_clean_markdown_line(line))
        if (
            not line.strip()
            or _ATX_HEADING.match(line)
            or _RULE.match(line)
            or _REFERENCE_DEFINITION.match(line)
        ):
            paragraph = []
        elif _QUOTE.match(line) or _LIST_MARKER.match(line):
            paragraph = None
        elif paragraph is not None and not underline:
            paragraph.append(len(lines) - 1)
    return lines


def read_markdown(data: bytes) -> Book:
    """A Markdown book as speakable text; `#`/`##` headings define its chapters.

    Setext headings count as `#` (`===` underline) and `##` (`---`) when the underlined
    paragraph is one line; under a longer paragraph the underline is dropped and the text
    kept. A `---` after a blank line, a list item or a quote is a rule. YAML front matter
    at the top is left out.

    Emphasis, inline code, links (their text stays), images, HTML tags, quotes, list
    markers and rules are stripped; fenced code blocks are left out, since code is not
    read aloud. A leading `# Title`, when it is the only `#` heading and `##` chapters
    follow, is the book's title rather than a chapter.
    """
    lines = _markdown_lines(_decode(data))
    levels = [
        (i, m[1])
        for i, line in enumerate(lines)
        if (m := _MARKDOWN_HEADING.fullmatch(line.strip()))
    ]
    title: str | None = None
    first_text = next((i for i, line in enumerate(lines) if line.strip()), None)
    top_level = [i for i, level in levels if level == "#"]
    if (
        top_level == [first_text]
        and any(level == "##" for _, level in levels)
        and first_text is not None
    ):
        title = _heading_title(lines[first_text])
        lines[first_text] = ""
    return split_chapters("\n".join(lines), title=title)


# --- EPUB --------------------------------------------------------------------------------------

_NOTE_TYPES = frozenset(
    {"footnote", "footnotes", "endnote", "endnotes", "noteref", "rearnote", "rearnotes"}
)
_NOTE_ROLES = frozenset({"doc-footnote", "doc-endnote", "doc-endnotes", "doc-noteref"})
_SKIPPED_DOCUMENT_TYPES = frozenset({"cover", "toc", "landmarks", "copyright-page"})
_BLOCK_TAGS = (
    "p", "div", "li", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "dt", "dd",
    "tr", "section", "article", "header", "footer", "figcaption", "table", "ul", "ol", "dl",
    "br", "hr",
)  # fmt: skip
_PARAGRAPH_BREAK = "\u2029"
_XML_ENCODING = re.compile(rb"\A(?:\xef\xbb\xbf)?\s*<\?xml[^>]*?encoding=[\"']([A-Za-z0-9._-]+)")
_XML_DECLARATION = re.compile(r"\A\ufeff?\s*<\?xml[^>]*\?>")
_PARSER = "lxml" if importlib.util.find_spec("lxml") is not None else "html.parser"


def _attribute_words(tag: object, name: str) -> set[str]:
    value = tag.get(name)  # type: ignore[attr-defined]
    if value is None:
        return set()
    if isinstance(value, list):
        value = " ".join(value)
    return set(str(value).lower().split())


def _is_note(tag: object) -> bool:
    return bool(
        _attribute_words(tag, "epub:type") & _NOTE_TYPES
        or _attribute_words(tag, "role") & _NOTE_ROLES
    )


def _is_note_marker(tag: object) -> bool:
    """A `<sup>` holding a link and nothing else: the number pointing at a note."""
    from bs4 import NavigableString, Tag

    assert isinstance(tag, Tag)
    children = [c for c in tag.children if not (isinstance(c, NavigableString) and not c.strip())]
    return len(children) == 1 and isinstance(children[0], Tag) and children[0].name == "a"


def _xhtml_text(content: bytes) -> str:
    """The document as text without its XML declaration, which would make BeautifulSoup
    warn that an HTML parser reads XML (XHTML parses well as HTML)."""
    encoding = "utf-8"
    if content.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    elif declared := _XML_ENCODING.match(content):
        encoding = declared[1].decode("ascii")
    try:
        text = content.decode(encoding, errors="replace")
    except LookupError:
        text = content.decode("utf-8", errors="replace")
    return _XML_DECLARATION.sub("", text, count=1)


def _document_paragraphs(content: bytes) -> tuple[list[str], bool]:
    """A document's paragraphs, and whether it declares itself cover, toc or copyright."""
    from bs4 import BeautifulSoup, NavigableString

    soup = BeautifulSoup(_xhtml_text(content), _PARSER)
    body = soup.body or soup
    declared = set()
    for tag in [body, *body.find_all(["section", "div", "nav"], limit=3)]:
        declared |= _attribute_words(tag, "epub:type")
    skipped_kind = bool(declared & _SKIPPED_DOCUMENT_TYPES)

    removed = body.find_all(["script", "style", "aside", "nav", "template", "head"])
    removed += [t for t in body.find_all(True) if _is_note(t)]
    removed += [t for t in body.find_all("sup") if _is_note_marker(t)]
    for tag in removed:
        if not tag.decomposed:
            tag.decompose()
    for tag in body.find_all(_BLOCK_TAGS):
        tag.insert_before(NavigableString(_PARAGRAPH_BREAK))
        tag.insert_after(NavigableString(_PARAGRAPH_BREAK))
    text = body.get_text()
    paragraphs = [p for p in (_collapse(piece) for piece in text.split(_PARAGRAPH_BREAK)) if p]
    return paragraphs, skipped_kind


def _flatten_toc(entries: object) -> Iterator[tuple[str, str]]:
    """(href, title) for every navigation entry, in document order."""
    from ebooklib.epub import Link, Section

    for entry in entries if isinstance(entries, list | tuple) else [entries]:
        if isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], Section):
            yield from _flatten_toc([entry[0]])
            yield from _flatten_toc(entry[1])
        elif isinstance(entry, Link | Section) and entry.href:
            yield entry.href, _collapse(entry.title or "")
        elif isinstance(entry, list | tuple):
            yield from _flatten_toc(entry)


def _navigation_titles(epub_book: object) -> dict[str, str]:
    """Document path (relative to the package) -> its first navigation title."""
    from ebooklib.epub import EpubNav

    items = list(epub_book.get_items())  # type: ignore[attr-defined]
    has_nav = any(isinstance(item, EpubNav) for item in items)
    ncx_dir = next(
        (
            posixpath.dirname(item.file_name)
            for item in items
            if item.media_type == "application/x-dtbncx+xml"
        ),
        "",
    )
    titles: dict[str, str] = {}
    for href, title in _flatten_toc(epub_book.toc):  # type: ignore[attr-defined]
        path = unquote(href.split("#", 1)[0])
        if not has_nav:  # NCX sources are relative to the NCX file, nav ones are resolved
            path = posixpath.normpath(posixpath.join(ncx_dir, path))
        if path and title:
            titles.setdefault(path, title)
    return titles


def _is_epub_zip(data: bytes) -> bool:
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return archive.read("mimetype").strip() == EPUB_MIMETYPE
    except (KeyError, zipfile.BadZipFile, OSError):
        return False


def read_epub(data: bytes) -> Book:
    """An EPUB (2 or 3) read in spine order, chapter titles from its navigation.

    Left out: footnotes, endnotes and their markers (`epub:type`/`role` note values,
    `<sup>` holding only a link), `<aside>`, `<nav>`, scripts and styles, non-linear spine
    items, and documents with no text or marked as cover, toc or copyright page. A
    document with no navigation entry continues the previous chapter ("Chapter 1" when it
    comes first). A chapter's first paragraph is dropped when it repeats the title.
    """
    from ebooklib import epub

    try:
        epub_book = epub.read_epub(io.BytesIO(data), options={"ignore_ncx": True})
        titles = _navigation_titles(epub_book)
        documents = []
        for idref, linear in epub_book.spine:
            item = epub_book.get_item_with_id(idref)
            if item is None or isinstance(item, epub.EpubNav) or linear == "no":
                continue
            if not isinstance(item, epub.EpubHtml):
                continue
            documents.append((item.file_name, _document_paragraphs(item.get_content())))
        metadata_titles = epub_book.get_metadata("DC", "title")
    except Exception as exc:  # ebooklib, zipfile and lxml raise many kinds on bad input
        raise BookError(
            f"This EPUB could not be read ({exc}); check that it opens in a reader."
        ) from exc

    book_title = _collapse(metadata_titles[0][0] or "") if metadata_titles else ""
    chapters: list[tuple[str, list[str]]] = []
    for file_name, (paragraphs, skipped_kind) in documents:
        if skipped_kind or not paragraphs:
            continue
        title = titles.get(file_name)
        if title is None and chapters:
            chapters[-1][1].extend(paragraphs)
            continue
        title = title or f"Chapter {len(chapters) + 1}"
        if paragraphs[0].casefold() == title.casefold():
            paragraphs = paragraphs[1:]
        chapters.append((title, paragraphs))

    chapters = [(title, paragraphs) for title, paragraphs in chapters if paragraphs]
    if not chapters:
        raise BookError("This EPUB has no readable text (only images or navigation?).")
    return Book(
        title=book_title or None,
        chapters=tuple(Chapter(title, "\n\n".join(ps)) for title, ps in chapters),
    )


def read_book(data: bytes, filename: str) -> Book:
    """Read an uploaded book: EPUB by its content, else .txt or .md/.markdown by name."""
    if not data.strip():
        raise BookError(f"{filename or 'The file'} is empty.")
    extension = posixpath.splitext(filename.lower())[1]
    if _is_epub_zip(data) or extension == ".epub":
        return read_epub(data)
    if extension == ".txt":
        return read_txt(data)
    if extension in (".md", ".markdown"):
        return read_markdown(data)
    raise UnsupportedBook(
        f"Cannot read {filename or 'this file'!r}: upload a .txt, .md/.markdown or .epub book."
    )
