"""What the knowledge base and bot profile routes (``server.knowledge_routes``) take and answer,
as the OpenAPI schema tells it: documents, upload reports, search hits, the bot profile."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from assistant.ports.retrieval import KB_NAME
from assistant.server.rest_schema import AUTH_ERRORS, ErrorDetail, errors

#: A knowledge base's name in a path or a profile (anchored: JSON Schema patterns search).
KB_PATTERN = f"^{KB_NAME.pattern}$"


class DocumentRecord(BaseModel):
    id: str  #: ``file_`` and 24 hex digits, from the file's name
    object: Literal["knowledge.document"] = "knowledge.document"
    filename: str
    title: str
    format: Literal["markdown", "text", "html", "pdf"]
    sha256: str  #: of the file's bytes: the same bytes again are ``unchanged``
    chunks: int
    bytes: int
    added_at: int  #: unix ms


class DocumentList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DocumentRecord]


class KnowledgeBaseList(BaseModel):
    object: Literal["list"] = "list"
    data: list[str]  #: the tenant's knowledge base names


class Uploaded(BaseModel):
    filename: str
    status: Literal["added", "replaced", "unchanged"]
    document: DocumentRecord


class UploadResults(BaseModel):
    object: Literal["list"] = "list"
    data: list[Uploaded]


class FileReport(BaseModel):
    """A file of a refused upload: its error, or ``not_stored`` (it was fine, but another file
    of the same request was not, and nothing of a refused request is stored)."""

    filename: str
    status: Literal["error", "not_stored"]
    error: ErrorDetail | None = None


class UploadErrorBody(BaseModel):
    error: ErrorDetail  #: the first file's error (``param``: ``file[i]``)
    files: list[FileReport] | None = None  #: every file, when the form could be read


class DeletedDocument(BaseModel):
    id: str
    object: Literal["knowledge.document.deleted"] = "knowledge.document.deleted"
    deleted: bool = True


class ChunkRecord(BaseModel):
    id: str
    document_id: str
    filename: str
    title: str
    text: str
    heading: str = ""
    page: int | None = None


class SearchHit(BaseModel):
    score: float  #: what the bot's threshold is compared with (0..1)
    semantic: float
    lexical: float
    chunk: ChunkRecord


class SearchResults(BaseModel):
    object: Literal["list"] = "list"
    data: list[SearchHit]


class BotProfileBody(BaseModel):
    """``PUT /v1/bot/profile``: a field left out follows the server's ``ASSISTANT_BOT__*``.
    Strict: ``"threshold": true`` or ``"handoff_after_unanswered": 2.5`` is refused, not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field("Assistant", min_length=1, max_length=100)
    #: The persona: the system prompt of a turn that sets none.
    instructions: str = Field("", max_length=8_000)
    welcome: str = Field("", max_length=2_000)
    #: The knowledge base turns are answered from; empty: none (the plain assistant).
    knowledge_base: str = Field("", pattern=f"^$|{KB_PATTERN}")
    threshold: float = Field(0.22, ge=0.0, le=1.0)
    fallback: str = Field("", max_length=2_000)
    #: Phrases of a customer asking for a person (whole words, any case).
    handoff_phrases: list[str] = Field([], max_length=100)
    #: ``unanswered`` replies in a row that hand the conversation to a person; 0: never.
    handoff_after_unanswered: int = Field(2, ge=0, le=100)
    #: What the customer is told while a person has the conversation.
    handoff_reply: str = Field("", max_length=2_000)


class BotProfileRecord(BaseModel):
    name: str
    instructions: str
    welcome: str
    knowledge_base: str
    threshold: float
    fallback: str
    handoff_phrases: list[str]
    handoff_after_unanswered: int
    handoff_reply: str


#: A route of a tenant's knowledge (an admin key; Redis behind it: 500 without, 503 when down).
_ADMIN = (*AUTH_ERRORS, 500, 503)
READ_RESPONSES = errors(400, *_ADMIN, 404)
PROFILE_RESPONSES = errors(*_ADMIN)
PUT_PROFILE_RESPONSES = errors(400, *_ADMIN, 413)
UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    **errors(*_ADMIN, 413),
    400: {"model": UploadErrorBody, "description": "A file cannot be ingested (each reported), "
          "or the form cannot be read; nothing of the request is stored"},
}  # fmt: skip
#: ``openapi_extra`` of the upload: the route reads its form itself (one or more ``file`` parts).
UPLOAD_FORM: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "array", "minItems": 1,
                                 "items": {"type": "string", "format": "binary"}},
                    },
                },
                "encoding": {"file": {"style": "form", "explode": True}},
            },
        },
    },
}  # fmt: skip
