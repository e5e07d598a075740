"""The knowledge base REST routes on a real ``assistant serve`` (scripted model, the real
all-MiniLM-L6-v2, a real redis-server, auth on): the test corpus uploaded in one request (all
four formats), listed, searched, re-uploaded (unchanged, replaced), deleted; each bad file refused
with its code and nothing of its request stored; a 200 MB upload refused with 413 as it streams
in, without the server holding it in memory; admin scope and tenants enforced on every route;
the bot profile; the routes in /openapi.json."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx
import pytest

from assistant.server.auth_routes import make_key
from tests.support.pdf import encrypted_pdf, text_pdf
from tests.support.processes import children
from tests.support.server import ServerProcess, serve_env

pytestmark = pytest.mark.integration

CORPUS = Path(__file__).resolve().parents[1] / "data" / "kb"
SECRET = "kb-rest-server-secret-0123456789abcdef"
MIB = 1024 * 1024
GOOD = ("good.md", b"# Opening hours\n\nThe shop is open 9 to 5 on weekdays.")


@pytest.fixture(scope="module")
def server(redis_server, tmp_path_factory):
    env = serve_env(
        tmp_path_factory.mktemp("kb-rest"), ASSISTANT_LLM__ADAPTER="scripted",
        ASSISTANT_LLM__MODEL="a scripted reply", ASSISTANT_REDIS_URL=redis_server.url,
        ASSISTANT_AUTH__OPEN="false", ASSISTANT_AUTH__SECRET=SECRET, HF_HUB_OFFLINE="1",
    )  # fmt: skip
    with ServerProcess(env) as running:
        yield running


async def new_key(redis_url: str, tenant: str, *scopes: str) -> dict[str, str]:
    """A secret key of ``tenant`` with ``scopes``, as the Authorization header."""
    import redis.asyncio as aioredis

    from adapters.memory.redis_keys import RedisKeyStore

    client = aioredis.from_url(redis_url, decode_responses=True)
    try:
        _, key = await make_key(RedisKeyStore(client), SECRET.encode(), tenant, "secret",
                                scopes, (), "")  # fmt: skip
    finally:
        await client.aclose()
    return {"Authorization": f"Bearer {key}"}


def corpus_files() -> list[tuple[str, tuple[str, bytes]]]:
    paths = sorted(p for p in CORPUS.glob("*.*") if p.suffix != ".jsonl")
    return [("file", (p.name, p.read_bytes())) for p in paths]


@pytest.fixture
async def http(server):
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
        yield client


async def test_upload_list_search_replace_and_delete(server, redis_server, http):
    admin = await new_key(redis_server.url, "acme-docs", "admin")
    added = await http.post("/v1/knowledge/help/documents", files=corpus_files(), headers=admin)
    assert added.status_code == 200, added.text
    statuses = {d["filename"]: d["status"] for d in added.json()["data"]}
    assert statuses == dict.fromkeys(
        ["account.txt", "payments.pdf", "returns.md", "shipping.md", "warranty.html"], "added"
    )
    listed = await http.get("/v1/knowledge/help/documents", headers=admin)
    docs = {d["filename"]: d for d in listed.json()["data"]}
    assert {d["format"] for d in docs.values()} == {"markdown", "text", "html", "pdf"}
    assert docs["warranty.html"]["title"] == "Warranty and repairs"
    found = await http.get("/v1/knowledge/help/search", params={"q": "what does E-517 mean", "k": 1},
                           headers=admin)  # fmt: skip
    [hit] = found.json()["data"]
    assert hit["chunk"]["filename"] == "payments.pdf" and hit["chunk"]["page"] == 1
    assert hit["score"] >= 0.22 and "E-517" in hit["chunk"]["text"]

    returns = (CORPUS / "returns.md").read_bytes()
    again = await http.post("/v1/knowledge/help/documents", headers=admin,
                            files=[("file", ("returns.md", returns))])  # fmt: skip
    assert [d["status"] for d in again.json()["data"]] == ["unchanged"]
    changed = returns + b"\n\n## Gift returns\n\nGifts are refunded as a voucher code GV-7731.\n"
    replaced = await http.post("/v1/knowledge/help/documents", headers=admin,
                               files=[("file", ("returns.md", changed))])  # fmt: skip
    assert [d["status"] for d in replaced.json()["data"]] == ["replaced"]
    found = await http.get("/v1/knowledge/help/search", params={"q": "GV-7731"}, headers=admin)
    assert found.json()["data"][0]["chunk"]["filename"] == "returns.md"

    by_name = await http.delete("/v1/knowledge/help/documents/payments.pdf", headers=admin)
    assert by_name.status_code == 200 and by_name.json()["id"] == docs["payments.pdf"]["id"]
    by_id = await http.delete(f"/v1/knowledge/help/documents/{docs['account.txt']['id']}",
                              headers=admin)  # fmt: skip
    assert by_id.json() == {"id": docs["account.txt"]["id"],
                            "object": "knowledge.document.deleted", "deleted": True}  # fmt: skip
    gone = await http.delete("/v1/knowledge/help/documents/payments.pdf", headers=admin)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "document_not_found"
    left = await http.get("/v1/knowledge/help/documents", headers=admin)
    assert sorted(d["filename"] for d in left.json()["data"]) == [
        "returns.md", "shipping.md", "warranty.html"
    ]  # fmt: skip
    found = await http.get("/v1/knowledge/help/search", params={"q": "E-517"}, headers=admin)
    assert "payments.pdf" not in [h["chunk"]["filename"] for h in found.json()["data"]]
    assert (await http.get("/v1/knowledge", headers=admin)).json()["data"] == ["help"]


BAD_FILES = [
    ("report.docx", b"PK\x03\x04 not a document we read", "unsupported_document_type"),
    ("empty.md", b"  \n", "empty_document"),
    ("headings.md", b"# Only\n## Headings\n", "empty_document"),
    ("scan.pdf", text_pdf([[]]), "empty_document"),
    ("locked.pdf", encrypted_pdf(["secret text"]), "encrypted_document"),
    ("fake.pdf", b"not a pdf at all", "invalid_document"),
    ("broken.pdf", b"%PDF-1.4\nrubbish", "invalid_document"),
    ("big.txt", b"x" * (20 * MIB + 1), "document_too_large"),
]


async def test_each_bad_file_is_refused_with_its_code_and_nothing_is_stored(
    server, redis_server, http
):
    admin = await new_key(redis_server.url, "acme-bad", "admin")
    for name, data, code in BAD_FILES:
        answer = await http.post("/v1/knowledge/bad/documents", headers=admin,
                                 files=[("file", GOOD), ("file", (name, data))])  # fmt: skip
        assert answer.status_code == 400, (name, answer.text)
        body = answer.json()
        assert body["error"]["code"] == code and body["error"]["param"] == "file[1]", name
        assert body["error"]["type"] == "invalid_request_error"
        assert [(f["filename"], f["status"]) for f in body["files"]] == [
            ("good.md", "not_stored"), (name, "error")
        ]  # fmt: skip
        assert body["files"][1]["error"]["code"] == code
    for form, code in [
        ({"data": {"file": "not a file"}}, "invalid_request"),
        ({"files": [("file", GOOD), ("file", GOOD)]}, "invalid_request"),  # the same name twice
        ({"files": [("file", GOOD)] * 6}, "invalid_request"),  # more than max_upload_files
        ({"json": {"file": "x"}}, "invalid_request"),
    ]:
        answer = await http.post("/v1/knowledge/bad/documents", headers=admin, **form)
        assert answer.status_code == 400 and answer.json()["error"]["code"] == code, answer.text
    bad_name = await http.post("/v1/knowledge/..x/documents", headers=admin, files=[("file", GOOD)])
    assert bad_name.status_code == 400 and bad_name.json()["error"]["code"] == "invalid_request"
    listed = await http.get("/v1/knowledge/bad/documents", headers=admin)
    assert listed.status_code == 404
    assert listed.json()["error"]["code"] == "knowledge_base_not_found"
    assert (await http.get("/v1/knowledge", headers=admin)).json()["data"] == []


def _peak_rss_kb(pid: int) -> int:
    """The largest VmHWM of ``pid`` and its children (the worker that parses the upload)."""
    peaks = []
    for each in [pid, *children(pid)]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]))
    return max(peaks)


async def _read_answer(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))  # fmt: skip
    return head + await reader.readexactly(length)


async def _stream_upload(port: int, headers: dict[str, str], total: int, *, declared: bool):
    """POST a ``total``-byte multipart upload until the server answers: with its
    ``Content-Length`` declared and no body sent, or chunked, made as it is sent (never held
    whole). (The answer's head and body, bytes of the body sent by then.)"""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        "POST /v1/knowledge/huge/documents HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: {headers['Authorization']}\r\n"
        "Content-Type: multipart/form-data; boundary=zzz\r\n"
        + (f"Content-Length: {total}\r\n" if declared else "Transfer-Encoding: chunked\r\n")
        + "\r\n"
    )
    writer.write(head.encode())
    answer = asyncio.ensure_future(_read_answer(reader))
    part = b'--zzz\r\nContent-Disposition: form-data; name="file"; filename="huge.txt"\r\n\r\n'
    sent, piece = 0, b"x" * MIB
    try:
        while not declared and sent < total and not answer.done():
            data = part if sent == 0 else piece[: total - sent]
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            sent += len(data)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            await asyncio.sleep(0)  # let the answer's read run
        raw = await asyncio.wait_for(answer, 60)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return raw.decode(errors="replace"), sent


async def test_a_200_mb_upload_is_refused_as_it_streams_in(server, redis_server, http):
    admin = await new_key(redis_server.url, "acme-huge", "admin")
    await http.post("/v1/knowledge/warm/documents", headers=admin, files=[("file", GOOD)])
    before = _peak_rss_kb(server.pid)
    total = 200 * 1000 * 1000
    for declared in (True, False):
        raw, sent = await _stream_upload(server.port, admin, total, declared=declared)
        assert raw.startswith("HTTP/1.1 413"), raw[:300]
        assert '"code":"request_too_large"' in raw.replace(" ", ""), raw
        assert sent < total, (declared, sent)  # answered before the end of the body
    grown_mb = (_peak_rss_kb(server.pid) - before) / 1024
    assert grown_mb < 64, f"the server's peak memory grew {grown_mb:.0f} MB"
    listed = await http.get("/v1/knowledge/huge/documents", headers=admin)
    assert listed.json()["error"]["code"] == "knowledge_base_not_found"


async def test_admin_scope_and_the_callers_tenant_on_every_route(server, redis_server, http):
    acme = await new_key(redis_server.url, "acme-iso", "admin")
    globex = await new_key(redis_server.url, "globex-iso", "admin", "agent", "client")
    upload = await http.post(
        "/v1/knowledge/help/documents",
        headers=acme,
        files=[("file", ("returns.md", (CORPUS / "returns.md").read_bytes()))],
    )
    doc_id = upload.json()["data"][0]["document"]["id"]
    routes = [
        ("GET", "/v1/knowledge/help/documents", {}),
        ("GET", "/v1/knowledge/help/search", {"params": {"q": "refund"}}),
        ("DELETE", f"/v1/knowledge/help/documents/{doc_id}", {}),
        ("DELETE", "/v1/knowledge/help/documents/returns.md", {}),
    ]
    for method, path, extra in routes:  # another tenant's admin: not found, not confirmed
        theirs = await http.request(method, path, headers=globex, **extra)
        assert theirs.status_code == 404, (method, path, theirs.text)
        assert theirs.json()["error"]["code"] == "knowledge_base_not_found"
    assert (await http.get("/v1/knowledge", headers=globex)).json()["data"] == []
    own = await http.post("/v1/knowledge/help/documents", headers=globex, files=[("file", GOOD)])
    assert own.status_code == 200
    mine = await http.get("/v1/knowledge/help/documents", headers=acme)
    assert [d["filename"] for d in mine.json()["data"]] == ["returns.md"]

    everything = [
        *routes,
        ("POST", "/v1/knowledge/help/documents", {"files": [("file", GOOD)]}),
        ("GET", "/v1/knowledge", {}),
        ("GET", "/v1/bot/profile", {}),
        ("PUT", "/v1/bot/profile", {"json": {"name": "Pip"}}),
    ]
    for scopes in (("client",), ("agent", "client")):
        user = await new_key(redis_server.url, "acme-iso", *scopes)
        for method, path, extra in everything:
            refused = await http.request(method, path, headers=user, **extra)
            assert refused.status_code == 403, (scopes, method, path, refused.text)
            assert refused.json()["error"]["code"] == "insufficient_scope"
    anonymous = await http.get("/v1/knowledge/help/documents")
    assert anonymous.status_code == 401
    still = await http.get("/v1/knowledge/help/documents", headers=acme)
    assert [d["filename"] for d in still.json()["data"]] == ["returns.md"]


async def test_the_bot_profile_is_the_tenants_over_the_server_default(server, redis_server, http):
    acme = await new_key(redis_server.url, "acme-bot", "admin")
    globex = await new_key(redis_server.url, "globex-bot", "admin")
    default = (await http.get("/v1/bot/profile", headers=acme)).json()
    assert default["name"] == "Assistant" and default["knowledge_base"] == ""
    assert default["threshold"] == 0.22 and default["fallback"].startswith("I can't find")
    put = await http.put(
        "/v1/bot/profile",
        headers=acme,
        json={"name": "Pip", "knowledge_base": "help", "threshold": 0.3},
    )
    assert put.status_code == 200
    assert put.json() == {**default, "name": "Pip", "knowledge_base": "help", "threshold": 0.3}
    assert (await http.get("/v1/bot/profile", headers=acme)).json()["name"] == "Pip"
    assert (await http.get("/v1/bot/profile", headers=globex)).json() == default
    for body, param in [
        ({"threshold": 2}, "threshold"),
        ({"knowledge_base": "../etc"}, "knowledge_base"),
        ({"name": "Pip", "colour": "green"}, "colour"),
        ({"name": ""}, "name"),
    ]:
        bad = await http.put("/v1/bot/profile", headers=acme, json=body)
        assert bad.status_code == 400, (body, bad.text)
        assert bad.json()["error"]["code"] == "invalid_request"
        assert bad.json()["error"]["param"] == param
    reset = await http.put("/v1/bot/profile", headers=acme, json={})  # the server's defaults
    assert reset.json() == default


async def test_the_routes_are_in_the_openapi_document(server, redis_server, http):
    admin = await new_key(redis_server.url, "acme-docs2", "admin")
    paths = (await http.get("/openapi.json", headers=admin)).json()["paths"]
    upload = paths["/v1/knowledge/{kb}/documents"]["post"]
    assert {"400", "401", "403", "413", "429"} <= set(upload["responses"])
    assert "multipart/form-data" in upload["requestBody"]["content"]
    assert "404" in paths["/v1/knowledge/{kb}/documents"]["get"]["responses"]
    assert "404" in paths["/v1/knowledge/{kb}/documents/{document}"]["delete"]["responses"]
    assert {"q", "k"} <= {
        p["name"] for p in paths["/v1/knowledge/{kb}/search"]["get"]["parameters"]
    }
    assert {"get", "put"} <= set(paths["/v1/bot/profile"])
