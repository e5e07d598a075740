"""The admin API of a tenant's knowledge bases and bot profile (an ``admin`` key; a key of
another scope is refused with 403, and every route reads the caller's own tenant only: another
tenant's knowledge base is not found):

    POST   /v1/knowledge/{kb}/documents             multipart, one or more ``file`` parts
    GET    /v1/knowledge/{kb}/documents             the documents
    DELETE /v1/knowledge/{kb}/documents/{document}  by id or file name
    GET    /v1/knowledge/{kb}/search?q=...&k=3      the best passages, with their scores
    GET    /v1/knowledge                            the tenant's knowledge base names
    GET    /v1/bot/profile, PUT /v1/bot/profile     the tenant's bot (``knowledge.answer``)

An upload is all or nothing: every file is read and split first, and if any cannot be ingested
the answer is 400 with the first one's code and a report of each file, and nothing is stored.
Its body may take ``knowledge.max_upload_files`` x ``knowledge.max_document_bytes`` and the
form's overhead (``documents_body_limit``); ``BodyLimit`` refuses more as it streams in (413)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from assistant.auth.principal import Principal
from assistant.config import Settings
from assistant.errors import (
    AssistantError,
    DocumentError,
    InvalidRequestError,
    KnowledgeNotFoundError,
    shown,
)
from assistant.knowledge.answer import BotProfile
from assistant.knowledge.ingest import Prepared, check_kb, document_id
from assistant.knowledge.service import KnowledgeService
from assistant.ports.retrieval import Document
from assistant.server.body_limit import upload_body_limit
from assistant.server.knowledge_schema import (
    KB_PATTERN,
    PROFILE_RESPONSES,
    PUT_PROFILE_RESPONSES,
    READ_RESPONSES,
    UPLOAD_FORM,
    UPLOAD_RESPONSES,
    BotProfileBody,
    BotProfileRecord,
    DeletedDocument,
    DocumentList,
    KnowledgeBaseList,
    SearchResults,
    UploadResults,
)
from assistant.server.rest import error_detail, error_response
from assistant.server.security import requires

router = APIRouter(tags=["knowledge"])

DOCUMENTS_PATH = "/v1/knowledge/{kb}/documents"
SEARCH_PATH = "/v1/knowledge/{kb}/search"
#: The upload's path for ``BodyLimit`` (its ``{kb}`` is any one path segment).
DOCUMENTS_PATH_PATTERN = re.compile(r"/v1/knowledge/[^/]+/documents")
_MAX_FILENAME = 255

Kb = Annotated[str, Path(pattern=KB_PATTERN, max_length=64, description="a knowledge base")]
Admin = Annotated[Principal, Depends(requires("admin"))]


def documents_body_limit(settings: Settings) -> int:
    """The body an upload may take: its files at their largest, and the form around them."""
    knowledge = settings.knowledge
    return upload_body_limit(knowledge.max_upload_files * knowledge.max_document_bytes)


async def _service(request: Request, principal: Principal) -> KnowledgeService:
    return await request.app.state.components.knowledge.for_tenant(principal.tenant)


async def _existing(service: KnowledgeService, kb: str) -> str:
    """``kb`` when the caller's tenant has it (another tenant's is not found either)."""
    if check_kb(kb) not in await service.store.knowledge_bases():
        raise KnowledgeNotFoundError(
            f"no knowledge base {shown(kb)}", code="knowledge_base_not_found"
        )
    return kb


@router.post(
    DOCUMENTS_PATH, response_model=UploadResults, responses=UPLOAD_RESPONSES,
    openapi_extra=UPLOAD_FORM,
)  # fmt: skip
async def upload_documents(kb: Kb, request: Request, principal: Admin) -> Any:
    """Add files (Markdown, plain text, HTML, PDF) to a knowledge base, which is created by its
    first file. Each file is ``added``, ``replaced`` (a file of the same name with other bytes:
    its old chunks go) or ``unchanged`` (the same bytes)."""
    service = await _service(request, principal)
    check_kb(kb)
    files = await _read_files(request, service.settings.max_upload_files)
    max_bytes = service.settings.max_document_bytes
    prepared: list[Prepared] = []
    reports: list[dict[str, Any]] = []
    first: AssistantError | None = None
    for index, (name, data) in enumerate(files):
        try:
            if data is None:
                raise DocumentError(f"{shown(name)} passes {max_bytes} bytes, the limit",
                                    code="document_too_large")  # fmt: skip
            prepared.append(await service.prepare(name, data))
            reports.append({"filename": name, "status": "not_stored", "error": None})
        except DocumentError as exc:
            exc.param = f"file[{index}]"
            first = first or exc
            reports.append({"filename": name, "status": "error", "error": error_detail(exc)})
    if first is not None:
        refused = error_response(first)
        body = {"error": error_detail(first), "files": reports}
        return JSONResponse(body, status_code=refused.status_code)
    added = [await service.put(kb, item) for item in prepared]
    data_out = [{"filename": a.document.filename, "status": a.outcome,
                 "document": _document(a.document)} for a in added]  # fmt: skip
    return {"object": "list", "data": data_out}


async def _read_files(request: Request, max_files: int) -> list[tuple[str, bytes | None]]:
    """The form's ``file`` parts: (name, bytes), bytes None for a file past the size limit (not
    read). The parts were spooled to disk as they came (Starlette: past 1 MB each)."""
    try:
        form = await request.form(max_files=max_files, max_fields=16)
    except HTTPException as exc:  # Starlette: too many files or fields, a malformed body
        raise InvalidRequestError(f"cannot read the form: {exc.detail}", param="file") from None
    try:
        uploads = form.getlist("file")
        if not uploads:
            raise InvalidRequestError("the form has no 'file' part (multipart/form-data)",
                                      param="file")  # fmt: skip
        limit = request.app.state.settings.knowledge.max_document_bytes
        files: list[tuple[str, bytes | None]] = []
        for upload in uploads:
            if not isinstance(upload, UploadFile) or not upload.filename:
                raise InvalidRequestError("each 'file' part must be a file with a name",
                                          param="file")  # fmt: skip
            name = upload.filename.strip()
            if not name or len(name) > _MAX_FILENAME:
                raise InvalidRequestError(f"a file name is 1-{_MAX_FILENAME} characters",
                                          param="file")  # fmt: skip
            if name in (n for n, _ in files):
                raise InvalidRequestError(f"two files are named {shown(name)}", param="file")
            too_big = upload.size is not None and upload.size > limit
            files.append((name, None if too_big else await upload.read()))
        return files
    finally:
        await form.close()


def _document(doc: Document) -> dict[str, Any]:
    return {**doc.as_dict(), "object": "knowledge.document"}


@router.get("/v1/knowledge", response_model=KnowledgeBaseList, responses=PROFILE_RESPONSES)
async def knowledge_bases(request: Request, principal: Admin) -> Any:
    """The caller's tenant's knowledge base names."""
    service = await _service(request, principal)
    return {"object": "list", "data": await service.store.knowledge_bases()}


@router.get(DOCUMENTS_PATH, response_model=DocumentList, responses=READ_RESPONSES)
async def list_documents(kb: Kb, request: Request, principal: Admin) -> Any:
    """A knowledge base's documents, by file name."""
    service = await _service(request, principal)
    docs = await service.documents(await _existing(service, kb))
    return {"object": "list", "data": [_document(d) for d in docs]}


@router.delete(
    DOCUMENTS_PATH + "/{document}", response_model=DeletedDocument,
    responses=READ_RESPONSES,
)  # fmt: skip
async def delete_document(kb: Kb, document: str, request: Request, principal: Admin) -> Any:
    """Remove a document (its id, or its file name; one with a ``/`` in it, as a folder added
    with ``assistant kb add`` names its files, by its id) and its chunks."""
    service = await _service(request, principal)
    await _existing(service, kb)
    for doc_id in (document, document_id(document)):
        if await service.store.delete_document(kb, doc_id):
            return {"id": doc_id, "object": "knowledge.document.deleted", "deleted": True}
    raise KnowledgeNotFoundError(f"no document {shown(document)} in {shown(kb)}")


@router.get(SEARCH_PATH, response_model=SearchResults, responses=READ_RESPONSES)
async def search(
    kb: Kb, request: Request, principal: Admin,
    q: Annotated[str, Query(min_length=1, max_length=2_000, description="the query")],
    k: Annotated[int | None, Query(ge=1, le=20, description="passages (knowledge.top_k)")] = None,
) -> Any:  # fmt: skip
    """The best passages for a query, best first, with their scores (what the bot's threshold
    is compared with), whatever their score."""
    service = await _service(request, principal)
    hits = await service.search(await _existing(service, kb), q, k)
    data = [{"score": h.score, "semantic": h.semantic, "lexical": h.lexical,
             "chunk": h.chunk.as_dict()} for h in hits]  # fmt: skip
    return {"object": "list", "data": data}


@router.get("/v1/bot/profile", response_model=BotProfileRecord, responses=PROFILE_RESPONSES)
async def bot_profile(request: Request, principal: Admin) -> Any:
    """The tenant's bot: as stored, over the server's ``ASSISTANT_BOT__*`` defaults."""
    service = await _service(request, principal)
    return await _profile(service, request.app.state.settings)


@router.put("/v1/bot/profile", response_model=BotProfileRecord, responses=PUT_PROFILE_RESPONSES)
async def set_bot_profile(body: BotProfileBody, request: Request, principal: Admin) -> Any:
    """Replace the tenant's bot profile; a field left out follows the server's default."""
    service = await _service(request, principal)
    await service.store.set_profile(body.model_dump(exclude_unset=True))
    grounder = request.app.state.components.orchestrator.grounder
    if grounder is not None:
        grounder.forget(principal.tenant)  # this worker's turns use it at once
    return await _profile(service, request.app.state.settings)


async def _profile(service: KnowledgeService, settings: Settings) -> dict[str, Any]:
    default = BotProfile.from_settings(settings.bot)
    return dict(BotProfile.from_stored(await service.store.profile(), default).__dict__)
