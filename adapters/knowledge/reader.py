"""The document reader: Markdown by its headings (langchain-text-splitters'
``MarkdownHeaderTextSplitter``), HTML through BeautifulSoup into the same, PDF page by page
(pypdf; page numbers kept), each section cut by ``RecursiveCharacterTextSplitter``."""

from __future__ import annotations

import io
import os
from typing import Any

try:
    from langchain_text_splitters import MarkdownHeaderTextSplitter, RecursiveCharacterTextSplitter
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"knowledge bases need: pip install 'assistant[kb]' ({exc})") from exc

from assistant.errors import DocumentError, MissingDependencyError, shown
from assistant.ports.retrieval import DocumentReader, ReadDocument, Section

_HEADERS = [("#", "h1"), ("##", "h2"), ("###", "h3")]


class SplittingReader(DocumentReader):
    def __init__(self, chunk_chars: int = 800, overlap: int = 120) -> None:
        self._split = RecursiveCharacterTextSplitter(
            chunk_size=chunk_chars, chunk_overlap=min(overlap, chunk_chars // 2)
        )
        self._markdown = MarkdownHeaderTextSplitter(_HEADERS, strip_headers=True)

    def read(self, filename: str, data: bytes, fmt: str) -> ReadDocument:
        if fmt == "pdf":
            return self._pdf(filename, data)
        text = _decode(filename, data)
        if fmt == "html":
            title, text = _html_to_markdown(text)
        else:
            title = ""
        if fmt == "text":
            sections = [Section(text)]
        else:
            sections = self._sections(text)
            title = title or next((s.heading.split(" > ")[0] for s in sections if s.heading), "")
        title = title or _first_line(text) or os.path.basename(filename)
        return ReadDocument(title, fmt, self._pieces(sections))

    def _sections(self, markdown: str) -> list[Section]:
        sections = []
        for doc in self._markdown.split_text(markdown):
            path = " > ".join(doc.metadata[k] for _, k in _HEADERS if k in doc.metadata)
            sections.append(Section(doc.page_content, heading=path))
        return sections

    def _pieces(self, sections: list[Section]) -> tuple[Section, ...]:
        return tuple(
            Section(piece, s.heading, s.page)
            for s in sections
            for piece in self._split.split_text(s.text)
            if piece.strip()
        )

    def _pdf(self, filename: str, data: bytes) -> ReadDocument:
        try:
            from pypdf import PdfReader
            from pypdf.errors import PdfReadError
        except ImportError as exc:  # pragma: no cover
            raise MissingDependencyError(f"PDFs need: pip install 'assistant[kb]' ({exc})") from exc
        try:
            pdf = PdfReader(io.BytesIO(data))
            if pdf.is_encrypted and not pdf.decrypt(""):
                raise DocumentError(
                    f"{shown(filename)} is encrypted; add it without its password",
                    code="encrypted_document",
                )
            pages = [
                Section(page.extract_text() or "", page=n + 1) for n, page in enumerate(pdf.pages)
            ]
            title = str((pdf.metadata or {}).get("/Title") or "")
        except DocumentError:
            raise
        except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
            raise DocumentError(f"{shown(filename)} cannot be read as a PDF: {exc}") from exc
        text = "\n".join(p.text for p in pages)
        if not text.strip():
            raise DocumentError(f"{shown(filename)} holds no text (a scan?)", code="empty_document")
        return ReadDocument(title or _first_line(text), "pdf", self._pieces(pages))


def _decode(filename: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DocumentError(f"{shown(filename)} is not UTF-8 text") from None


def _first_line(text: str) -> str:
    return next(
        (line.strip().lstrip("#").strip()[:120] for line in text.splitlines() if line.strip()), ""
    )


def _html_to_markdown(html: str) -> tuple[str, str]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "nav", "footer", "head"]):
        if tag.name != "head":
            tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    lines: list[str] = []
    body: Any = soup.body or soup
    for tag in body.find_all(["h1", "h2", "h3", "h4", "p", "li", "pre", "td", "dt", "dd"]):
        if tag.find_parent(["li", "td", "dd"]) is not None and tag.name in ("p", "li"):
            continue
        text = tag.get_text(" ", strip=True)
        if not text:
            continue
        if tag.name in ("h1", "h2", "h3"):
            lines.append(f"\n{'#' * int(tag.name[1])} {text}\n")
        else:
            lines.append(f"- {text}" if tag.name == "li" else text)
    return title, "\n".join(lines)


def build(settings: Any) -> SplittingReader:
    return SplittingReader(settings.knowledge.chunk_chars, settings.knowledge.chunk_overlap)
