"""Hostile books: zip bombs, lying archives, too many files, chapters or characters, text
no database stores; and, for any bytes at all, nothing escapes but a BookError."""

from __future__ import annotations

import io
import random
import struct
import tracemalloc
import zipfile

import pytest
from ebooklib import epub
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.worker.test_book import make_epub
from worker.audiobook import book as book_module
from worker.audiobook.book import (
    INFLATE_CHUNK_BYTES,
    MAX_ENTRY_RATIO,
    MAX_EPUB_ENTRIES,
    BookError,
    BookLimits,
    BookTooLarge,
    BookTooLong,
    Chapter,
    TooManyChapters,
    TooManyParagraphs,
    read_book,
    read_epub,
    read_markdown,
    read_txt,
    split_chapters,
)

MB = 1_000_000
LIMITS = BookLimits(expanded_bytes=200 * MB, characters=5_000_000, chapters=2000)
EXPECTED = read_epub(make_epub())  # the small EPUB's chapters, read without limits


def with_entries(epub_data: bytes, entries: list[tuple[str, bytes]]) -> bytes:
    """`epub_data` with more files appended, deflated."""
    out = io.BytesIO(epub_data)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries:
            archive.writestr(name, content)
    return out.getvalue()


def declare_sizes(data: bytes, size: int) -> bytes:
    """The archive with every entry's uncompressed size declared as `size` (a lie), in
    its central directory and its local headers."""
    patched = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            struct.pack_into("<L", patched, info.header_offset + 22, size)
    position = patched.find(b"PK\x01\x02")
    while position >= 0:
        struct.pack_into("<L", patched, position + 24, size)
        position = patched.find(b"PK\x01\x02", position + 4)
    return bytes(patched)


def counted_inflation(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes inflated by the expansion check, entry by entry, as the check sees them."""
    seen: list[int] = []
    original = book_module._inflate_counting

    def spy(packed, info, count):  # type: ignore[no-untyped-def]
        def counting(entry_bytes: int, delta: int, info: zipfile.ZipInfo) -> None:
            seen.append(delta)
            count(entry_bytes, delta, info)

        original(packed, info, counting)

    monkeypatch.setattr(book_module, "_inflate_counting", spy)
    return seen


# --- zip bombs -----------------------------------------------------------------------------


def test_read_epub_zip_bomb_refused_while_inflating(monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = with_entries(make_epub(), [("OEBPS/zeros.bin", bytes(60 * MB))])
    assert len(bomb) < 200_000  # 60 MB of zeros deflate to about 60 KB
    seen = counted_inflation(monkeypatch)
    with pytest.raises(BookTooLarge, match="times its packed size") as refused:
        read_book(bomb, "bomb.epub", limits=LIMITS)
    assert "zeros.bin" in str(refused.value)
    # Stopped once past 100 times the entry's packed size (about 6 MB), not after 60 MB.
    packed = zipfile.ZipFile(io.BytesIO(bomb)).getinfo("OEBPS/zeros.bin").compress_size
    assert sum(seen) <= MAX_ENTRY_RATIO * packed + INFLATE_CHUNK_BYTES + len(make_epub()) * 10
    assert sum(seen) < 10 * MB


def test_read_epub_lying_sizes_still_refused_by_counting() -> None:
    bomb = with_entries(make_epub(), [("OEBPS/zeros.bin", bytes(60 * MB))])
    with pytest.raises(BookTooLarge, match="zeros.bin"):
        read_epub(declare_sizes(bomb, 100), limits=LIMITS)


def test_read_epub_total_over_cap_refused_even_when_sizes_lie() -> None:
    # Entries that deflate only about 4 times, but unpack past the 2 MB cap together.
    text = b"".join(b"%08d the quick brown fox jumps\n" % n for n in range(40_000))
    data = with_entries(make_epub(), [(f"OEBPS/part{n}.txt", text) for n in range(3)])
    limits = BookLimits(expanded_bytes=2 * MB)
    with pytest.raises(BookTooLarge, match="more than 2 MB"):
        read_epub(data, limits=limits)  # the declared total is over the cap
    with pytest.raises(BookTooLarge, match="more than 2 MB"):
        read_epub(declare_sizes(data, 10), limits=limits)  # counted as inflated
    assert read_epub(data, limits=BookLimits(expanded_bytes=20 * MB)).chapters


def test_read_epub_archive_ratio_over_many_small_entries() -> None:
    # Each entry stays under the 1 MB an entry may unpack to freely; together they are
    # a bomb of the whole archive.
    data = with_entries(make_epub(), [(f"OEBPS/z{n}.bin", bytes(900_000)) for n in range(8)])
    with pytest.raises(BookTooLarge, match="times its size"):
        read_epub(data, limits=LIMITS)


def test_read_epub_too_many_entries() -> None:
    data = with_entries(make_epub(), [(f"x/{n}", b"") for n in range(MAX_EPUB_ENTRIES)])
    with pytest.raises(BookTooLarge, match=f"at most {MAX_EPUB_ENTRIES:,}"):
        read_epub(data, limits=LIMITS)
    # As any upload: read_book must not take it for something else.
    with pytest.raises(BookTooLarge):
        read_book(data, "big.epub", limits=LIMITS)


def test_read_epub_mimetype_bomb_is_not_read_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("mimetype", b"application/epub+zip" + bytes(50 * MB))
    seen = counted_inflation(monkeypatch)
    with pytest.raises(BookTooLarge):
        read_book(out.getvalue(), "book.epub", limits=LIMITS)
    assert sum(seen) < 10 * MB


def test_read_epub_under_the_limits_reads_as_before() -> None:
    assert read_epub(make_epub(), limits=LIMITS) == EXPECTED
    # Pictures that do not deflate (ratio 1) are fine up to the cap.
    picture = random.Random(0).randbytes(3 * MB)
    pictures = with_entries(make_epub(), [("OEBPS/cover.jpg", picture)])
    assert read_epub(pictures, limits=LIMITS) == EXPECTED


# --- characters, chapters, storable text -------------------------------------------------


def test_split_chapters_caps_chapters_from_headings() -> None:
    text = "".join(f"Chapter {n}\n\nText {n}.\n\n" for n in range(1, 2002))
    with pytest.raises(TooManyChapters, match="at most 2,000") as refused:
        split_chapters(text, limits=LIMITS)
    assert not isinstance(refused.value, BookTooLong)
    assert len(split_chapters(text, limits=BookLimits(chapters=2001)).chapters) == 2001
    capped = "".join(f"# H{n}\n\nText {n}.\n\n" for n in range(1, 2002)).encode()
    for reader in (read_txt, read_markdown):
        with pytest.raises(TooManyChapters):
            reader(capped, limits=LIMITS)


def test_read_epub_caps_chapters() -> None:
    assert len(EXPECTED.chapters) == 3
    with pytest.raises(TooManyChapters, match="at most 2 "):
        read_epub(make_epub(), limits=BookLimits(chapters=2))
    assert read_epub(make_epub(), limits=BookLimits(chapters=3)) == EXPECTED


def test_text_over_the_character_limit_refused_before_reading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("read a text already known to be too long")

    monkeypatch.setattr(book_module, "_heading_title", never)
    monkeypatch.setattr(book_module, "_markdown_lines", never)
    limits = BookLimits(characters=1000)
    for reader in (read_txt, read_markdown):
        with pytest.raises(BookTooLong, match="1,001 characters; at most 1,000"):
            reader(b"x" * 1001, limits=limits)
    with pytest.raises(BookTooLong):
        split_chapters("y" * 1001, limits=limits)


def one_chapter_epub(text: str) -> bytes:
    book = epub.EpubBook()
    book.set_identifier("long")
    book.set_title("Long")
    page = epub.EpubHtml(title="One", file_name="one.xhtml")
    page.content = f"<html><body><p>{text}</p></body></html>"
    book.add_item(page)
    book.add_item(epub.EpubNav())
    book.toc = [epub.Link("one.xhtml", "One", "one")]
    book.spine = ["nav", page]
    out = io.BytesIO()
    epub.write_epub(out, book, {"raise_exceptions": True})
    return out.getvalue()


def test_read_epub_caps_characters_and_markup(monkeypatch: pytest.MonkeyPatch) -> None:
    data = one_chapter_epub("It rained. " * 200)
    assert read_epub(data, limits=BookLimits(characters=2200)).chapters[0].title == "One"
    with pytest.raises(BookTooLong, match="at most 1,000 are accepted"):
        read_epub(data, limits=BookLimits(characters=1000))
    # XHTML far bigger than the text allowed is refused before it is parsed.
    parsed: list[bytes] = []
    monkeypatch.setattr(book_module, "_document_paragraphs", parsed.append)
    with pytest.raises(BookTooLong, match="XHTML"):
        read_epub(data, limits=BookLimits(characters=300))
    assert parsed == []


@pytest.mark.parametrize(
    "data",
    [
        # (a NUL in the first 8 KB is a binary file: UnsupportedBook, 415)
        b"Chapter 1\n\n" + b"Words. " * 2000 + b"A NUL \x00 past the sniffed start.",
        "Chapter 1\n\nA NUL \x00 after a BOM.".encode("utf-16"),
        b"\xef\xbb\xbfChapter 1\n\nNUL \x00 too.",
    ],
)
def test_text_no_database_stores_is_refused(data: bytes) -> None:
    for name in ("book.txt", "book.md"):
        with pytest.raises(BookError, match="NUL") as refused:
            read_book(data, name, limits=LIMITS)
        assert type(refused.value) is BookError
    with pytest.raises(BookError, match="lone surrogate"):
        split_chapters("Chapter 1\n\nHalf a pair: \ud800.")


def test_read_epub_nul_in_text_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    source = zipfile.ZipFile(io.BytesIO(make_epub()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for info in source.infolist():
            content = source.read(info).replace(b"Last words.", b"Last &#0;words\x00.")
            archive.writestr(info, content)
    # The XHTML parser already turns a NUL into U+FFFD...
    assert read_epub(out.getvalue(), limits=LIMITS).chapters[-1].text == "Last \ufffdwords\ufffd."
    # ...and whatever a parser lets through is refused before it is stored.
    monkeypatch.setattr(book_module, "_document_paragraphs", lambda *_: (["A \x00 B"], False))
    with pytest.raises(BookError, match="NUL"):
        read_epub(make_epub(), limits=LIMITS)


# --- anything else: a BookError and nothing else -----------------------------------------

SMALL_EPUB = make_epub()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000), st.sampled_from(["book.epub", "book.txt", "book.md", "x"]))
def test_read_book_random_bytes_raise_only_book_errors(data: bytes, filename: str) -> None:
    try:
        book = read_book(data, filename, limits=LIMITS)
    except BookError:
        return
    assert all(isinstance(chapter, Chapter) for chapter in book.chapters)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(0, len(SMALL_EPUB) - 1), st.integers(0, 255)),
        min_size=1,
        max_size=8,
    ),
    st.integers(0, len(SMALL_EPUB)),
)
def test_read_epub_mutated_zips_raise_only_book_errors(
    changes: list[tuple[int, int]], keep: int
) -> None:
    mutated = bytearray(SMALL_EPUB)
    for position, value in changes:
        mutated[position] = value
    for data in (bytes(mutated), bytes(mutated[:keep])):
        try:
            read_epub(data, limits=LIMITS)
        except BookError:
            pass


@settings(max_examples=80, deadline=None)
@given(st.text(alphabet=st.sampled_from("Chapter 1#\n\r \t.:-=*_`>IVXa\x00\u2014"), max_size=400))
def test_split_chapters_random_text_raises_only_book_errors(text: str) -> None:
    try:
        book = split_chapters(text, limits=BookLimits(characters=300, chapters=5))
    except BookError:
        return
    assert 1 <= len(book.chapters) <= 5


def test_markdown_lines_are_capped_before_they_are_read() -> None:
    from worker.audiobook.book import MARKDOWN_MAX_LINES, read_markdown

    with pytest.raises(BookError, match="lines"):
        read_markdown(b"*a* b\n" * MARKDOWN_MAX_LINES)
    assert read_markdown(b"*a* b\n" * (MARKDOWN_MAX_LINES - 1)).chapters


def test_an_epub_document_of_many_elements_is_read_without_a_tree() -> None:
    """A document's text comes from the parser's events: memory grows with its text, not
    with a tree of its elements (BeautifulSoup took 2 GB for 1.2 million of them)."""
    elements = "".join(f"<p><b>w{n % 97}</b></p>\n" for n in range(60_000))
    content = f"<html><body>{elements}</body></html>".encode()
    tracemalloc.start()
    try:
        paragraphs, skipped = book_module._document_paragraphs(content)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(paragraphs) == 60_000 and not skipped
    assert paragraphs[:2] == ["w0", "w1"]
    # The paragraphs themselves (60,000 strings) and the text; a tree took 200 times this.
    assert peak < 10 * len(content), peak


def test_an_epub_with_more_paragraphs_than_its_cap_stops_there() -> None:
    elements = "".join(f"<p>w{n}</p>" for n in range(1_001))
    with pytest.raises(TooManyParagraphs, match="1,000 paragraphs"):
        book_module._document_paragraphs(f"<html><body>{elements}</body></html>".encode(), 1_000)
    data = one_chapter_epub("One. \n\nTwo. \n\nThree.")
    assert read_epub(data, limits=BookLimits(paragraphs=3)).chapters
