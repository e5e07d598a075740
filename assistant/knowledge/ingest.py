"""Ingestion: a file's format from its name (and its first bytes), its content hash, its chunks
with their document, title, heading path and page. Extraction and splitting are the reader's
(``ports.retrieval.DocumentReader``); nothing is stored here (``knowledge.service`` does that,
in one atomic write per document)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from assistant.errors import DocumentError, shown
from assistant.messages import now_ms
from assistant.ports.retrieval import KB_NAME, Chunk, Document, DocumentReader

#: File name endings -> format.
FORMATS = {
    ".md": "markdown", ".markdown": "markdown", ".txt": "text", ".text": "text",
    ".html": "html", ".htm": "html", ".pdf": "pdf",
}  # fmt: skip


def check_kb(name: str) -> str:
    if not KB_NAME.fullmatch(name):
        raise DocumentError(
            f"a knowledge base name is 1-64 letters, digits, '_', '.' or '-', got {shown(name)}",
            code="invalid_knowledge_base",
        )
    return name


def detect_format(filename: str, data: bytes) -> str:
    """``markdown``, ``text``, ``html`` or ``pdf``; ``unsupported_document_type`` otherwise."""
    if data[:5] == b"%PDF-":
        return "pdf"
    ext = os.path.splitext(filename)[1].lower()
    fmt = FORMATS.get(ext)
    if fmt is None:
        known = ", ".join(sorted(FORMATS))
        raise DocumentError(
            f"{shown(filename)} is not a supported document type (known: {known})",
            code="unsupported_document_type",
        )
    if fmt == "pdf":
        raise DocumentError(f"{shown(filename)} is not a PDF file", code="invalid_document")
    return fmt


def document_id(filename: str) -> str:
    """A document's id from its name: adding a file of the same name replaces it."""
    return "file_" + hashlib.sha256(filename.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Prepared:
    document: Document
    chunks: tuple[Chunk, ...]


def prepare(reader: DocumentReader, filename: str, data: bytes, *, max_bytes: int) -> Prepared:
    """Blocking: check, read and split ``data``; ``DocumentError`` for what cannot be ingested."""
    if len(data) > max_bytes:
        raise DocumentError(
            f"{shown(filename)} is {len(data)} bytes; the limit is {max_bytes}",
            code="document_too_large",
        )
    fmt = detect_format(filename, data)
    if not data.strip():
        raise DocumentError(f"{shown(filename)} is empty", code="empty_document")
    read = reader.read(filename, data, fmt)
    doc_id = document_id(filename)
    chunks = tuple(
        Chunk(id=f"{doc_id}:{n}", document_id=doc_id, filename=filename, title=read.title,
              text=piece.text, heading=piece.heading, page=piece.page)
        for n, piece in enumerate(p for p in read.pieces if p.text.strip())
    )  # fmt: skip
    if not chunks:
        raise DocumentError(f"{shown(filename)} holds no text", code="empty_document")
    document = Document(
        id=doc_id, filename=filename, title=read.title, format=fmt,
        sha256=hashlib.sha256(data).hexdigest(), chunks=len(chunks), bytes=len(data),
        added_at=now_ms(),
    )  # fmt: skip
    return Prepared(document, chunks)


def embedding_text(chunk: Chunk) -> str:
    """What is embedded for a chunk: its title and heading path give it context."""
    head = " > ".join(x for x in (chunk.title, chunk.heading) if x)
    return f"{head}\n{chunk.text}" if head else chunk.text
