"""Retrieval ports: what a knowledge base is made of, and the three things behind it.

    DocumentReader   a file's bytes -> its sections (text, heading path, page), split into chunks
    Embedder         texts -> unit vectors (N, D) float32 (cosine = dot product)
    KnowledgeStore   per tenant and knowledge base: documents, their chunks and vectors, a
                     version that changes with every write; and the tenant's bot profile
    Retriever        a query -> the best passages of a knowledge base, scored 0..1

The embedded default ``Retriever`` (``assistant.knowledge.retriever``) searches an in-memory
matrix of the store's vectors; a vector engine (Redis 8's query engine, Qdrant, ...) would
implement ``Retriever`` itself over its own index.
"""

from __future__ import annotations

import abc
import asyncio
import re
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from assistant.ports.store_calls import store_call

_T = TypeVar("_T")

#: A knowledge base's name: 1-64 letters, digits, ``_``, ``.`` or ``-``, first a letter or digit.
KB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class Section:
    """A stretch of a document's text under one heading path (and on one page, for a PDF)."""

    text: str
    heading: str = ""  #: "Returns > Refund times"
    page: int | None = None  #: 1-based, PDFs only


@dataclass(frozen=True)
class Chunk:
    """A piece of a document small enough to embed and to quote."""

    id: str  #: "<document id>:<n>"
    document_id: str
    filename: str
    title: str
    text: str
    heading: str = ""
    page: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "document_id": self.document_id, "filename": self.filename,
            "title": self.title, "text": self.text, "heading": self.heading, "page": self.page,
        }  # fmt: skip


@dataclass(frozen=True)
class Document:
    """A knowledge base's record of one added file."""

    id: str
    filename: str
    title: str
    format: str  #: markdown | text | html | pdf
    sha256: str  #: of the file's bytes: the same bytes again are a no-op
    chunks: int
    bytes: int
    added_at: int  #: unix ms

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Passage:
    """A chunk found for a query: ``score`` is what the threshold is compared with (0..1), from
    ``semantic`` (cosine) and ``lexical`` (BM25 over the query's best possible, 0..1)."""

    chunk: Chunk
    score: float
    semantic: float = 0.0
    lexical: float = 0.0


@dataclass(frozen=True)
class KnowledgeSnapshot:
    """Every chunk of a knowledge base and its vectors (row i is chunk i's), at ``version``."""

    version: int
    chunks: tuple[Chunk, ...] = ()
    vectors: Any = None  # (N, D) float32 numpy array, None when empty


@dataclass(frozen=True)
class ReadDocument:
    """What a reader got out of a file: its title and its sections, split into chunk texts."""

    title: str
    format: str
    pieces: tuple[Section, ...] = field(default=())


class DocumentReader(abc.ABC):
    """Extracts and splits a file of a known format (``markdown``, ``text``, ``html``, ``pdf``).
    Raises ``InvalidRequestError`` codes ``empty_document``, ``encrypted_document`` or
    ``invalid_document`` for a file it cannot read."""

    @abc.abstractmethod
    def read(self, filename: str, data: bytes, fmt: str) -> ReadDocument:
        """Blocking (PDFs take a while): call it off the event loop."""


class Embedder(abc.ABC):
    """A sentence embedding model. ``embed`` runs the model off the event loop."""

    name: str = "embedder"
    dimensions: int = 0

    async def embed(self, texts: Sequence[str]) -> Any:
        """(len(texts), dimensions) float32, each row of unit length."""
        return await asyncio.to_thread(self.embed_blocking, list(texts))

    def embed_blocking(self, texts: list[str]) -> Any:
        return self._embed_impl(texts)

    @abc.abstractmethod
    def _embed_impl(self, texts: list[str]) -> Any: ...

    def close(self) -> None:
        """Release the model (nothing by default)."""


class KnowledgeStore(abc.ABC):
    """Knowledge bases of one tenant (``tenant``); ``for_tenant`` gives another's. Writes of a
    document are atomic: its chunks, vectors and record, and the version's bump, all or nothing."""

    name: str = "knowledge_store"
    tenant: str = "default"
    backend_errors: tuple[type[Exception], ...] = ()

    @abc.abstractmethod
    def for_tenant(self, tenant: str) -> KnowledgeStore: ...

    async def version(self, kb: str) -> int:
        """Changes with every write to ``kb`` (0 for a knowledge base never written)."""
        return await self._call(self._version_impl(kb))

    async def load(self, kb: str) -> KnowledgeSnapshot:
        return await self._call(self._load_impl(kb))

    async def document(self, kb: str, document_id: str) -> Document | None:
        return await self._call(self._document_impl(kb, document_id))

    async def documents(self, kb: str) -> list[Document]:
        docs = await self._call(self._documents_impl(kb))
        return sorted(docs, key=lambda d: (d.filename, d.id))

    async def put_document(
        self, kb: str, document: Document, chunks: Sequence[Chunk], vectors: Any
    ) -> None:
        """Store (or replace) ``document`` with its chunks and their vectors, in one step."""
        await self._call(self._put_impl(kb, document, list(chunks), vectors))

    async def delete_document(self, kb: str, document_id: str) -> bool:
        """False when ``kb`` has no such document."""
        return await self._call(self._delete_impl(kb, document_id))

    async def knowledge_bases(self) -> list[str]:
        return sorted(await self._call(self._kbs_impl()))

    async def profile(self) -> dict[str, Any] | None:
        """The tenant's bot profile as stored (JSON fields), None when it has none."""
        return await self._call(self._profile_impl())

    async def set_profile(self, profile: dict[str, Any]) -> None:
        await self._call(self._set_profile_impl(profile))

    async def aclose(self) -> None:
        """Release what the store opened itself (nothing by default)."""

    def _call(self, awaitable: Awaitable[_T]) -> Awaitable[_T]:
        return store_call(self.name, "knowledge base", awaitable, self.backend_errors)

    @abc.abstractmethod
    async def _version_impl(self, kb: str) -> int: ...
    @abc.abstractmethod
    async def _load_impl(self, kb: str) -> KnowledgeSnapshot: ...
    @abc.abstractmethod
    async def _document_impl(self, kb: str, document_id: str) -> Document | None: ...
    @abc.abstractmethod
    async def _documents_impl(self, kb: str) -> list[Document]: ...
    @abc.abstractmethod
    async def _put_impl(
        self, kb: str, document: Document, chunks: list[Chunk], vectors: Any
    ) -> None: ...
    @abc.abstractmethod
    async def _delete_impl(self, kb: str, document_id: str) -> bool: ...
    @abc.abstractmethod
    async def _kbs_impl(self) -> list[str]: ...
    @abc.abstractmethod
    async def _profile_impl(self) -> dict[str, Any] | None: ...
    @abc.abstractmethod
    async def _set_profile_impl(self, profile: dict[str, Any]) -> None: ...


class Retriever(abc.ABC):
    """Search a tenant's knowledge base: the ``k`` best passages, best first."""

    @abc.abstractmethod
    async def search(self, tenant: str, kb: str, query: str, k: int) -> list[Passage]: ...
