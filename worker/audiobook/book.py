"""Turn a book (plain text, Markdown or EPUB) into a title and a list of chapters.

Every reader returns a `Book` whose chapters hold plain, speakable text: paragraphs with
their inner whitespace collapsed to single spaces, separated by one blank line.

Exceptions::

    ValueError
    └── BookError            the book is empty, has no text, cannot be read or stored
        ├── UnsupportedBook  not a .txt, .md/.markdown or .epub (the API answers 415)
        ├── BookTooLarge     an EPUB that unpacks past its caps, a zip bomb (413)
        ├── BookTooLong      more characters than `BookLimits.characters` (400)
        └── TooManyChapters  more chapters than `BookLimits.chapters` (400)

Limits come in as a `BookLimits` (this module reads no settings). Each is decided before
the work it protects: the text's length before its chapters are found, an EPUB's entries
and unpacked bytes (counted while inflating, whatever the archive declares) before
ebooklib opens it, its XHTML's size before it is parsed. Text no database can store (NUL,
a lone surrogate) is refused too.

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
import io
import posixpath
import re
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from urllib.parse import unquote

from speechq.text_checks import forbidden_character
from worker.audiobook.whitespace import collapse, split_paragraphs

__all__ = [
    "Book",
    "BookError",
    "BookLimits",
    "BookTooLarge",
    "BookTooLong",
    "Chapter",
    "TooManyChapters",
    "TooManyParagraphs",
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
MARKDOWN_MAX_LINES = 200_000


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


class BookTooLarge(BookError):
    """An EPUB that unpacks past `BookLimits.expanded_bytes`, holds too many files, or
    expands like a zip bomb; refused as soon as a cap is passed."""


class BookTooLong(BookError):
    """The book holds more characters than `BookLimits.characters`."""


class TooManyParagraphs(BookError):
    """The book has more paragraphs than `BookLimits.paragraphs`."""

    def __init__(self, max_paragraphs: int) -> None:
        super().__init__(
            f"The book has more than {max_paragraphs:,} paragraphs, each at least one "
            "request to the provider; split it into volumes."
        )
        self.max_paragraphs = max_paragraphs

    def __reduce__(self) -> tuple[type, tuple[int]]:  # crosses a process boundary
        return type(self), (self.max_paragraphs,)


class TooManyChapters(BookError):
    """The book has more chapters than `BookLimits.chapters`."""


@dataclass(frozen=True)
class BookLimits:
    """The most a book may hold; None is no cap. The caller (the API) passes its own."""

    expanded_bytes: int | None = None  # an EPUB's files unpacked, all together
    characters: int | None = None  # the text: decoded (Markdown once cleaned), or read
    chapters: int | None = None
    # Every paragraph is at least one provider request: the API passes its segment cap.
    # Counted where paragraphs are many and cheap to make (an EPUB's documents).
    paragraphs: int | None = None


NO_LIMITS = BookLimits()


def _check_storable(text: str) -> None:
    if (problem := forbidden_character(text)) is not None:
        raise BookError(f"The book's text holds {problem}, which cannot be stored; remove it.")


def _check_length(characters: int, limits: BookLimits) -> None:
    if limits.characters is not None and characters > limits.characters:
        raise BookTooLong(
            f"The book has {characters:,} characters; at most {limits.characters:,} are "
            "accepted. Split it into volumes."
        )


def _check_chapters(chapters: int, limits: BookLimits) -> None:
    if limits.chapters is not None and chapters > limits.chapters:
        raise TooManyChapters(
            f"The book has more than {limits.chapters:,} chapters; at most "
            f"{limits.chapters:,} are accepted. Split it into volumes."
        )


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
_SENTENCE_END = re.compile(r"[.!?,;:\u2026\u2014][\"'\u201d\u2019)\]]*$")
_OPENING_QUOTE = re.compile(r"[\"\u201c]")
# A line that may be a heading: what `_MARKDOWN_HEADING` or `_KEYWORD_HEADING` start with.
_HEADING_START = re.compile(
    r"^[^\S\n]*(?:#|chapter|part|prologue|epilogue)", re.IGNORECASE | re.MULTILINE
)
_TEXT_LINE = re.compile(r"^[^\S\n]*\S.*$", re.MULTILINE)


def _heading_title(line: str, *, after_blank: bool = True) -> str | None:
    """The chapter title a heading line announces, or None when it is not a heading.

    Markdown headings count anywhere; "Chapter 1"-style ones only after a blank line, so
    a hard-wrapped sentence whose line happens to start with "Chapter 3." does not split.
    """
    stripped = line.strip()
    if not stripped or len(stripped) > HEADING_MAX_CHARACTERS:
        return None
    if match := _MARKDOWN_HEADING.fullmatch(stripped):
        return collapse(match["title"])
    if after_blank and (match := _KEYWORD_HEADING.fullmatch(stripped)):
        label = collapse(match["label"])
        title = collapse(match["title"] or "")
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
    title = collapse(lines[first])
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


def _headings(text: str) -> list[tuple[str, int, int, bool]]:
    """(title, start, end, bare) of each heading line `text[start:end]`; bare: a "CHAPTER
    I" with no title of its own. Only lines that start like a heading are looked at."""
    found: list[tuple[str, int, int, bool]] = []
    after_heading = 0  # where the line after the last heading starts (the text's start)
    for match in _HEADING_START.finditer(text):
        start = match.start()
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        line = text[start:end]
        if start == after_heading:
            after_blank = True  # the line after a heading starts a new paragraph
        else:
            previous = text.rfind("\n", 0, start - 1) + 1
            after_blank = not text[previous : start - 1].strip()
        heading = _heading_title(line, after_blank=after_blank)
        if heading is not None:
            found.append((heading, start, end, _is_bare_keyword_heading(line)))
            after_heading = end + 1
    return found


def split_chapters(text: str, *, title: str | None = None, limits: BookLimits = NO_LIMITS) -> Book:
    """Find the chapters of `text` from its headings (see the module docstring).

    Raises BookTooLong before reading a text longer than `limits.characters`, and
    TooManyChapters as soon as more than `limits.chapters` are found.
    """
    _check_length(len(text), limits)
    _check_storable(text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise BookError("The book is empty: it has no text to read.")

    # A heading's lines run from the line after it to the line before the next heading.
    sections = _headings(text)
    preamble = text[: max(sections[0][1] - 1, 0)] if sections else text

    chapters: list[Chapter] = []
    pending_titles: list[str] = []
    for n, (heading, _, end, bare) in enumerate(sections):
        lines = text[end + 1 : sections[n + 1][1] - 1] if n + 1 < len(sections) else text[end + 1 :]
        if bare and (
            found := _title_line(lines.split("\n"), heading_follows=n + 1 < len(sections))
        ):
            title_line, rest = found
            heading = f"{heading}: {title_line}"
            lines = "\n".join(rest)
        body = "\n\n".join(split_paragraphs(lines))
        if not body:
            pending_titles.append(heading)
            continue
        chapters.append(Chapter(" \u2014 ".join([*pending_titles, heading]), body))
        pending_titles = []
        _check_chapters(len(chapters), limits)

    opening = split_paragraphs(preamble)
    # Its first lines with text: enough to tell a title page, and its title.
    opening_lines = [m[0] for m in islice(_TEXT_LINE.finditer(preamble), TITLE_PAGE_MAX_LINES + 1)]
    is_title_page = (
        len(opening_lines) <= TITLE_PAGE_MAX_LINES
        and sum(len(p) for p in opening) < TITLE_PAGE_MAX_CHARACTERS
    )
    if opening and (not is_title_page or not sections):
        chapters.insert(0, Chapter("", "\n\n".join(opening)))
        _check_chapters(len(chapters), limits)
    elif opening and title is None:
        title = collapse(opening_lines[0])

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


def read_txt(data: bytes, *, limits: BookLimits = NO_LIMITS) -> Book:
    """A plain-text book: chapters from its headings (see `split_chapters`)."""
    return split_chapters(_decode(data), limits=limits)


_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})")
# The inline patterns never match a newline and the line ones are MULTILINE, so that many
# lines are cleaned at once as they would be one by one (`_clean_markdown_text`).
_IMAGE = re.compile(r"!\[[^\]\n]*\]\([^)\n]*\)|!\[[^\]\n]*\]\[[^\]\n]*\]")
_LINK = re.compile(r"\[([^\]\n]*)\]\([^)\n]*\)|\[([^\]\n]*)\]\[[^\]\n]*\]")
_AUTOLINK = re.compile(r"<(?:https?|mailto|ftp):[^>\n]*>")
_HTML_TAG = re.compile(r"</?[A-Za-z][^>\n]*>")
_REFERENCE_DEFINITION = re.compile(r"^[ \t]{0,3}\[[^\]]+\]:\s*\S.*$")
_RULE = re.compile(r"^[ \t]*(?:(?:\*[ \t]*){3,}|(?:-[ \t]*){3,}|(?:_[ \t]*){3,})$")
_QUOTE = re.compile(r"^[ \t]*(?:>[ \t]?)+", re.MULTILINE)
_LIST_MARKER = re.compile(r"^[ \t]*(?:[-*+]|\d+[.)])[ \t]+", re.MULTILINE)
_DEEP_HEADING = re.compile(r"^[ \t]*#{3,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$", re.MULTILINE)
_INLINE_CODE = re.compile(r"`+([^`\n]*)`+")
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
# A character any of the Markdown patterns above needs (or a list item's leading digit):
# a line without one is plain text, passed through without trying them one by one.
_MARKDOWN_SYNTAX = re.compile(r"[\\`*_\[\]<>!#~+=\-\ue000-\ue07f]|\A[ \t]*\d")


def _is_dropped_line(line: str) -> bool:
    """A reference definition or a rule: no text to read."""
    return bool(_REFERENCE_DEFINITION.match(line) or _RULE.match(line))


def _clean_markdown_text(text: str) -> list[str]:
    """The lines of `text` (none of them dropped, see `_is_dropped_line`) with their
    Markdown stripped, as each would be alone: a chunk of lines at a time (every pattern
    stays within a line), so a pass holds one chunk's pieces, not a piece per match."""
    if len(text) <= _CLEAN_CHUNK_CHARACTERS:
        return _clean_markdown_chunk(text)
    lines: list[str] = []
    start = 0
    while start <= len(text):
        end = text.find("\n", start + _CLEAN_CHUNK_CHARACTERS)
        end = len(text) if end < 0 else end
        lines.extend(_clean_markdown_chunk(text[start:end]))
        start = end + 1
    return lines


_CLEAN_CHUNK_CHARACTERS = 1 << 16


def _clean_markdown_chunk(text: str) -> list[str]:
    # Escaped characters are hidden from the patterns below, then restored.
    text = _ESCAPE.sub(lambda m: chr(_ESCAPED_BASE + ord(m[1])), text)
    text = _QUOTE.sub("", text)
    text = _LIST_MARKER.sub("", text)
    text = _DEEP_HEADING.sub(r"\1", text)
    text = _IMAGE.sub("", text)
    text = _LINK.sub(lambda m: m[1] if m[1] is not None else m[2], text)
    text = _AUTOLINK.sub("", text)
    text = _HTML_TAG.sub("", text)
    text = _INLINE_CODE.sub(r"\1", text)
    text = _STRONG.sub(r"\2", text)
    text = _EMPHASIS.sub(lambda m: m[1] if m[1] is not None else m[2], text)
    text = _STRIKE.sub(r"\1", text)
    # Restored line by line: a restored character may be a newline.
    return [
        _ESCAPED.sub(lambda m: chr(ord(m[0]) - _ESCAPED_BASE), line) for line in text.split("\n")
    ]


def _clean_markdown_line(line: str) -> str:
    return "" if _is_dropped_line(line) else _clean_markdown_text(line)[0]


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


def _setext_heading(
    lines: list[str], paragraph: list[int], level: str, uncleaned: dict[int, None]
) -> None:
    """Make the underlined paragraph at `paragraph` (indexes in `lines`) a heading.

    CommonMark makes the whole paragraph the heading; a chapter title is one short line,
    so a longer paragraph stays text (and its underline is dropped by the caller).
    `uncleaned` holds the indexes of lines still to be cleaned of their Markdown.
    """
    if len(paragraph) != 1:
        return
    index = paragraph[0]
    line = _clean_markdown_line(lines[index]) if index in uncleaned else lines[index]
    heading = f"{level} {collapse(line)}"
    # Measured as an ATX heading line, so that `_heading_title` takes it.
    if heading.strip() != level and len(heading) <= HEADING_MAX_CHARACTERS:
        lines[index] = heading
        uncleaned.pop(index, None)


def _markdown_lines(text: str) -> list[str]:
    """The lines of `text` as plain text, fenced code left out, `#`/`##` markers kept and
    setext headings (a paragraph underlined with `===` or `---`) written as them.

    Lines with Markdown in them are kept as they are while the blocks are read, then
    cleaned all together (one regex pass each, not one per line)."""
    lines: list[str] = []
    uncleaned: dict[int, None] = {}  # indexes in `lines`, in order
    # Indexes in `lines` of the paragraph being read, which an underline would make a
    # heading: [] between blocks, None inside a list item or quote, whose following lines
    # continue it (an underline there is a rule, as in CommonMark). Only a one-line
    # paragraph can be a heading: two indexes tell it is longer, more are not kept.
    paragraph: list[int] | None = []
    fence: str | None = None
    raw_lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for line in _without_front_matter(raw_lines):
        if not _MARKDOWN_SYNTAX.search(line):  # plain text: the branches below, faster
            if fence is None:
                lines.append(line)
                if not line.strip():
                    paragraph = []
                elif paragraph is not None and len(paragraph) < 2:
                    paragraph.append(len(lines) - 1)
            continue
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
            level = "#" if underline["marker"][0] == "=" else "##"
            _setext_heading(lines, paragraph, level, uncleaned)
            lines.append("")
            paragraph = []
            continue
        if _is_dropped_line(line):
            lines.append("")
        else:
            uncleaned[len(lines)] = None
            lines.append(line)
        if (
            not line.strip()
            or _ATX_HEADING.match(line)
            or _RULE.match(line)
            or _REFERENCE_DEFINITION.match(line)
        ):
            paragraph = []
        elif _QUOTE.match(line) or _LIST_MARKER.match(line):
            paragraph = None
        elif paragraph is not None and not underline and len(paragraph) < 2:
            paragraph.append(len(lines) - 1)
    if uncleaned:
        cleaned = _clean_markdown_text("\n".join(lines[index] for index in uncleaned))
        for index, line in zip(uncleaned, cleaned, strict=True):
            lines[index] = line
    return lines


def read_markdown(data: bytes, *, limits: BookLimits = NO_LIMITS) -> Book:
    """A Markdown book as speakable text; `#`/`##` headings define its chapters.

    Setext headings count as `#` (`===` underline) and `##` (`---`) when the underlined
    paragraph is one line; under a longer paragraph the underline is dropped and the text
    kept. A `---` after a blank line, a list item or a quote is a rule. YAML front matter
    at the top is left out.

    Emphasis, inline code, links (their text stays), images, HTML tags, quotes, list
    markers and rules are stripped; fenced code blocks are left out, since code is not
    read aloud. A leading `# Title`, when it is the only `#` heading and `##` chapters
    follow, is the book's title rather than a chapter. `limits.characters` caps the
    decoded text, markup included, before it is read.
    """
    text = _decode(data)
    _check_length(len(text), limits)
    # Markdown is read line by line: cap the lines, as their count, not their characters,
    # is what that costs (a 5M-character novel has about 100,000).
    lines_in_text = text.count("\n") + 1
    if lines_in_text > MARKDOWN_MAX_LINES:
        raise BookError(
            f"The Markdown book has {lines_in_text:,} lines; at most {MARKDOWN_MAX_LINES:,} "
            "are read. Join its hard-wrapped lines, or send it as .txt."
        )
    lines = _markdown_lines(text)
    levels = [
        (i, m[1])
        for i, line in enumerate(lines)
        if "#" in line and (m := _MARKDOWN_HEADING.fullmatch(line.strip()))
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
    return split_chapters("\n".join(lines), title=title, limits=limits)


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
_LEFT_OUT_TAGS = frozenset({"script", "style", "aside", "nav", "template", "head"})
_PARAGRAPH_BREAK = "\u2029"
_PARAGRAPH_TEXT = re.compile("[^\u2029]+")
_XML_ENCODING = re.compile(rb"\A(?:\xef\xbb\xbf)?\s*<\?xml[^>]*?encoding=[\"']([A-Za-z0-9._-]+)")
_XML_DECLARATION = re.compile(r"\A\ufeff?\s*<\?xml[^>]*\?>")


def _attribute_words(attributes: Mapping[str, str], name: str) -> set[str]:
    return set(attributes.get(name, "").lower().split())


def _is_note(attributes: Mapping[str, str]) -> bool:
    return bool(
        _attribute_words(attributes, "epub:type") & _NOTE_TYPES
        or _attribute_words(attributes, "role") & _NOTE_ROLES
    )


def _xhtml_text(content: bytes) -> str:
    """The document as text without its XML declaration, which the HTML parser refuses in
    a string (XHTML parses well as HTML)."""
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


@dataclass
class _HeldSup:
    """An open `<sup>`, its text held back until its end tells whether it is a note
    marker: a `<sup>` whose only child (whitespace aside) is a link, the number pointing
    at a note, left out with it."""

    depth: int
    children: list[str]
    held: list[str]


class _DocumentText:
    """An lxml parser target: a document's text as its events arrive, with
    `_PARAGRAPH_BREAK` around each block element, the left-out elements (`_LEFT_OUT_TAGS`,
    notes, note markers) skipped. No tree is built, so memory and time are linear in the
    document and small per element, however many elements it has."""

    def __init__(self) -> None:
        self.chunks: list[str] = []
        self.parts: list[str] = []
        self.depth = 0
        self.left_out_at: int | None = None  # the depth of the left-out element we are in
        self.sups: list[_HeldSup] = []
        self.declared: set[str] = set()  # epub:type words of the body and its first blocks
        self.looked_at = 0
        self.last_blank: str | None = None  # the last piece, if a break or a space

    def _emit(self, text: str) -> None:
        if self.sups:
            self.sups[-1].held.append(text)
            return
        # Runs of breaks and spaces (the indentation between elements) shrink to one
        # piece: a break if there is one in the run, else a space; they read the same.
        is_break = text is _PARAGRAPH_BREAK
        if (is_break or text is _SPACE_PIECE) and self.last_blank is not None:
            if is_break and self.last_blank is _SPACE_PIECE:
                self.parts[-1] = self.last_blank = _PARAGRAPH_BREAK
            return
        self.last_blank = text if is_break or text is _SPACE_PIECE else None
        self.parts.append(text)
        if len(self.parts) >= _JOIN_EVERY:  # a piece per element would cost 50 bytes each
            self.chunks.append("".join(self.parts))
            self.parts.clear()

    def start(self, tag: str, attributes: Mapping[str, str]) -> None:
        self.depth += 1
        if tag == "body" or (tag in ("section", "div", "nav") and self.looked_at < 3):
            self.looked_at += tag != "body"
            self.declared |= _attribute_words(attributes, "epub:type")
        if self.sups and self.depth == self.sups[-1].depth + 1:
            self.sups[-1].children.append(tag)
        if self.left_out_at is not None or tag in ("html", "body"):
            return
        if tag in _LEFT_OUT_TAGS or (attributes and _is_note(attributes)):
            self.left_out_at = self.depth
        elif tag == "sup":
            self.sups.append(_HeldSup(self.depth, [], []))
        elif tag in _BLOCK_TAGS:
            self._emit(_PARAGRAPH_BREAK)

    def end(self, tag: str) -> None:
        depth, self.depth = self.depth, self.depth - 1
        if self.left_out_at is not None:
            if depth <= self.left_out_at:
                self.left_out_at = None
            return
        if self.sups and self.sups[-1].depth == depth:
            sup = self.sups.pop()
            if sup.children != ["a"]:
                for piece in sup.held:
                    self._emit(piece)
        elif tag in _BLOCK_TAGS:
            self._emit(_PARAGRAPH_BREAK)

    def data(self, text: str) -> None:
        if self.sups and self.depth == self.sups[-1].depth and text.strip():
            self.sups[-1].children.append("#text")
        if self.left_out_at is None:
            blank = not text.strip() and _PARAGRAPH_BREAK not in text
            self._emit(_SPACE_PIECE if blank else text)

    def comment(self, text: str) -> None:
        # Never read; but a comment in a `<sup>` makes it more than a note marker.
        if self.sups and self.depth == self.sups[-1].depth and text.strip():
            self.sups[-1].children.append("#comment")

    def close(self) -> str:
        return "".join([*self.chunks, *self.parts])


_JOIN_EVERY = 4096
_SPACE_PIECE = " "
_FEED_CHARACTERS = 1 << 16


def _document_paragraphs(
    content: bytes, max_paragraphs: int | None = None
) -> tuple[list[str], bool]:
    """A document's paragraphs, and whether it declares itself cover, toc or copyright.
    TooManyParagraphs as soon as there are more than `max_paragraphs`."""
    from lxml import etree

    target = _DocumentText()
    parser = etree.HTMLParser(target=target, no_network=True, recover=True)
    markup = _xhtml_text(content)
    for start in range(0, len(markup), _FEED_CHARACTERS):  # libxml2 copies what it is fed
        parser.feed(markup[start : start + _FEED_CHARACTERS])
    del markup
    text = parser.close()
    paragraphs: list[str] = []
    for piece in _PARAGRAPH_TEXT.finditer(text):  # lazily: no list of every piece
        if paragraph := collapse(piece[0]):
            paragraphs.append(paragraph)
            if max_paragraphs is not None and len(paragraphs) > max_paragraphs:
                raise TooManyParagraphs(max_paragraphs)
    return paragraphs, bool(target.declared & _SKIPPED_DOCUMENT_TYPES)


def _flatten_toc(entries: object) -> Iterator[tuple[str, str]]:
    """(href, title) for every navigation entry, in document order."""
    from ebooklib.epub import Link, Section

    for entry in entries if isinstance(entries, list | tuple) else [entries]:
        if isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], Section):
            yield from _flatten_toc([entry[0]])
            yield from _flatten_toc(entry[1])
        elif isinstance(entry, Link | Section) and entry.href:
            yield entry.href, collapse(entry.title or "")
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


# --- EPUB archive limits -------------------------------------------------------------------

MAX_EPUB_ENTRIES = 10_000
# Each entry's central-directory record is 46 bytes and its name; zipfile parses them all
# before anything can be counted, so the directory's size is checked first.
MAX_CENTRAL_DIRECTORY_BYTES = MAX_EPUB_ENTRIES * 512
# An entry (or the whole archive) may unpack to this much at any ratio; past it, to at
# most the ratio times its packed size. Text deflates 3 to 10 times; zeros, 1,000 times.
RATIO_FREE_BYTES = 1_000_000
MAX_ENTRY_RATIO = 100
MAX_ARCHIVE_RATIO = 100
INFLATE_CHUNK_BYTES = 256 * 1024
# The XHTML an EPUB's spine may hold for each character `BookLimits.characters` allows:
# markup and multi-byte characters included; it is parsed into a tree all at once.
MARKUP_BYTES_PER_CHARACTER = 6

_END_RECORD = struct.Struct("<4s4H2LH")  # end of central directory
_END_RECORD64_LOCATOR = struct.Struct("<4sLQL")
_END_RECORD64 = struct.Struct("<4sQ2H2L4Q")
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")


def _declared_directory(data: bytes) -> tuple[int, int]:
    """(entries, bytes) the end record declares for the central directory, found the way
    zipfile finds it (ZIP64 included); BookError when there is none."""
    at = len(data) - _END_RECORD.size
    if at < 0 or data[at : at + 4] != b"PK\x05\x06" or data[-2:] != b"\x00\x00":
        at = data.rfind(b"PK\x05\x06", max(0, len(data) - _END_RECORD.size - 0xFFFF))
    if at < 0 or at + _END_RECORD.size > len(data):
        raise BookError(
            "This EPUB could not be read (not a zip archive); check that it opens in a reader."
        )
    entries, size = _END_RECORD.unpack_from(data, at)[4:6]
    locator = at - _END_RECORD64_LOCATOR.size
    record = locator - _END_RECORD64.size
    if record >= 0 and data[locator : locator + 4] == b"PK\x06\x07":
        if data[record : record + 4] == b"PK\x06\x06":
            entries, size = _END_RECORD64.unpack_from(data, record)[7:9]
    return entries, size


def _open_archive(data: bytes) -> zipfile.ZipFile:
    """The archive, once its central directory is known to be of a sane size."""
    entries, directory_bytes = _declared_directory(data)
    if entries > MAX_EPUB_ENTRIES:
        raise BookTooLarge(
            f"This EPUB holds {entries:,} files; at most {MAX_EPUB_ENTRIES:,} are accepted."
        )
    if directory_bytes > MAX_CENTRAL_DIRECTORY_BYTES:
        raise BookTooLarge(
            f"This EPUB's list of files takes {directory_bytes:,} bytes, more than "
            f"{MAX_EPUB_ENTRIES:,} files (the most accepted) need; it was refused."
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except Exception as exc:  # zipfile raises many kinds on a damaged archive
        raise BookError(
            f"This EPUB could not be read ({exc}); check that it opens in a reader."
        ) from exc
    if len(archive.infolist()) > MAX_EPUB_ENTRIES:
        raise BookTooLarge(
            f"This EPUB holds {len(archive.infolist()):,} files; at most "
            f"{MAX_EPUB_ENTRIES:,} are accepted."
        )
    return archive


def _packed_data(data: bytes, info: zipfile.ZipInfo) -> memoryview:
    """An entry's packed bytes, located as zipfile locates them (its local header)."""
    at = info.header_offset
    if at < 0 or at + _LOCAL_HEADER.size > len(data):
        raise BookError(f"This EPUB is damaged: {_entry_name(info)} is missing.")
    header = _LOCAL_HEADER.unpack_from(data, at)
    if header[0] != b"PK\x03\x04":
        raise BookError(f"This EPUB is damaged: {_entry_name(info)} has no header.")
    start = at + _LOCAL_HEADER.size + header[10] + header[11]
    return memoryview(data)[start : start + info.compress_size]


def _entry_name(info: zipfile.ZipInfo) -> str:
    return repr(info.filename[:80])


def _check_expansion(data: bytes, archive: zipfile.ZipFile, limits: BookLimits) -> None:
    """Unpack every entry in chunks, keeping nothing, and raise BookTooLarge as soon as
    the archive passes `limits.expanded_bytes` or an entry (or the archive) expands more
    than its ratio allows. The bytes are counted as inflated, whatever sizes the archive
    declares; a declared total over the cap is refused without inflating anything.

    zipfile (under ebooklib) then reads the same bytes again: inflating twice costs about
    a second for the largest book accepted, where keeping them would double its memory.
    """
    cap = limits.expanded_bytes
    infos = archive.infolist()
    declared = sum(info.file_size for info in infos)
    if cap is not None and declared > cap:
        raise BookTooLarge(_too_large_message(cap))
    expanded = 0

    def count(entry_bytes: int, delta: int, info: zipfile.ZipInfo) -> None:
        nonlocal expanded
        expanded += delta
        if cap is not None and expanded > cap:
            raise BookTooLarge(_too_large_message(cap))
        if entry_bytes > RATIO_FREE_BYTES and entry_bytes > MAX_ENTRY_RATIO * max(
            info.compress_size, 1
        ):
            raise BookTooLarge(
                f"{_entry_name(info)} in this EPUB unpacks to more than {MAX_ENTRY_RATIO} "
                "times its packed size, as only a zip bomb does; the book was refused."
            )
        if expanded > RATIO_FREE_BYTES and expanded > MAX_ARCHIVE_RATIO * len(data):
            raise BookTooLarge(
                f"This EPUB unpacks to more than {MAX_ARCHIVE_RATIO} times its size, as only "
                "a zip bomb does; the book was refused."
            )

    for info in infos:
        if info.flag_bits & 0x1:
            raise BookError(f"{_entry_name(info)} in this EPUB is encrypted; it cannot be read.")
        packed = _packed_data(data, info)
        if info.compress_type == zipfile.ZIP_STORED:
            count(len(packed), len(packed), info)
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            _inflate_counting(packed, info, count)
        else:
            raise BookError(
                f"{_entry_name(info)} in this EPUB is compressed with method "
                f"{info.compress_type}; an EPUB's files are stored or deflated."
            )


def _inflate_counting(
    packed: memoryview, info: zipfile.ZipInfo, count: Callable[[int, int, zipfile.ZipInfo], None]
) -> None:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    entry_bytes = 0
    position = 0
    try:
        while not inflater.eof:
            if inflater.unconsumed_tail:
                chunk = inflater.decompress(inflater.unconsumed_tail, INFLATE_CHUNK_BYTES)
            elif position < len(packed):
                block = packed[position : position + INFLATE_CHUNK_BYTES]
                position += len(block)
                chunk = inflater.decompress(block, INFLATE_CHUNK_BYTES)
            else:
                break  # the data ends early: zipfile reports it when reading
            entry_bytes += len(chunk)
            count(entry_bytes, len(chunk), info)
    except zlib.error as exc:
        raise BookError(
            f"{_entry_name(info)} in this EPUB is damaged ({exc}); check that it opens in a reader."
        ) from exc


def _too_large_message(cap: int) -> str:
    return (
        f"This EPUB unpacks to more than {cap / 1_000_000:g} MB, the most accepted; make its "
        "images smaller or split the book into volumes."
    )


def _is_epub_zip(data: bytes) -> bool:
    """Whether `data` is a zip archive whose `mimetype` entry says EPUB (read no further
    than that, whatever the entry's size)."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return False
    try:
        with _open_archive(data) as archive, archive.open("mimetype") as entry:
            return entry.read(len(EPUB_MIMETYPE) + 64).strip() == EPUB_MIMETYPE
    except (BookError, KeyError, zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error):
        return False


def read_epub(data: bytes, *, limits: BookLimits = NO_LIMITS) -> Book:
    """An EPUB (2 or 3) read in spine order, chapter titles from its navigation.

    Left out: footnotes, endnotes and their markers (`epub:type`/`role` note values,
    `<sup>` holding only a link), `<aside>`, `<nav>`, scripts and styles, non-linear spine
    items, and documents with no text or marked as cover, toc or copyright page. A
    document with no navigation entry continues the previous chapter ("Chapter 1" when it
    comes first). A chapter's first paragraph is dropped when it repeats the title.

    Before ebooklib opens it, the archive must hold at most `MAX_EPUB_ENTRIES` files and
    unpack within `limits.expanded_bytes` and the ratios (BookTooLarge); its spine's XHTML
    must fit `MARKUP_BYTES_PER_CHARACTER` per character allowed before it is parsed, and
    its text `limits.characters` (BookTooLong); `limits.chapters` caps its chapters.
    """
    from ebooklib import epub

    with _open_archive(data) as archive:
        _check_expansion(data, archive, limits)
    try:
        epub_book = epub.read_epub(io.BytesIO(data), options={"ignore_ncx": True})
        titles = _navigation_titles(epub_book)
        spine = []
        for idref, linear in epub_book.spine:
            item = epub_book.get_item_with_id(idref)
            if item is None or isinstance(item, epub.EpubNav) or linear == "no":
                continue
            if not isinstance(item, epub.EpubHtml):
                continue
            spine.append(item)
        # `content`, the document as stored: ebooklib's get_content() builds a whole lxml
        # tree of it first (hundreds of bytes an element), which is what is guarded against.
        _check_markup(sum(len(item.content) for item in spine), limits)
        documents = []
        characters = 0
        paragraphs_left = limits.paragraphs
        for item in spine:
            paragraphs, skipped_kind = _document_paragraphs(item.content, paragraphs_left)
            if paragraphs_left is not None:
                paragraphs_left -= len(paragraphs)
            if not skipped_kind:
                characters += sum(len(p) for p in paragraphs)
                _check_length(characters, limits)
            documents.append((item.file_name, (paragraphs, skipped_kind)))
        metadata_titles = epub_book.get_metadata("DC", "title")
    except BookError:
        raise
    except Exception as exc:  # ebooklib, zipfile and lxml raise many kinds on bad input
        raise BookError(
            f"This EPUB could not be read ({exc}); check that it opens in a reader."
        ) from exc

    book_title = collapse(metadata_titles[0][0] or "") if metadata_titles else ""
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
    _check_chapters(len(chapters), limits)
    book = Book(
        title=book_title or None,
        chapters=tuple(Chapter(title, "\n\n".join(ps)) for title, ps in chapters),
    )
    for text in (
        book.title or "",
        *(c.title for c in book.chapters),
        *(c.text for c in book.chapters),
    ):
        _check_storable(text)
    return book


def _check_markup(markup_bytes: int, limits: BookLimits) -> None:
    if limits.characters is None:
        return
    cap = limits.characters * MARKUP_BYTES_PER_CHARACTER
    if markup_bytes > cap:
        raise BookTooLong(
            f"This EPUB's text documents hold {markup_bytes / 1_000_000:.1f} MB of XHTML, "
            f"more than a book of {limits.characters:,} characters (the most accepted) "
            "needs. Split it into volumes."
        )


def read_book(data: bytes, filename: str, *, limits: BookLimits = NO_LIMITS) -> Book:
    """Read an uploaded book: EPUB by its content, else .txt or .md/.markdown by name."""
    if not data.strip():
        raise BookError(f"{filename or 'The file'} is empty.")
    extension = posixpath.splitext(filename.lower())[1]
    if _is_epub_zip(data) or extension == ".epub":
        return read_epub(data, limits=limits)
    if extension == ".txt":
        return read_txt(data, limits=limits)
    if extension in (".md", ".markdown"):
        return read_markdown(data, limits=limits)
    raise UnsupportedBook(
        f"Cannot read {filename or 'this file'!r}: upload a .txt, .md/.markdown or .epub book."
    )
