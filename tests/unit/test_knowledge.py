"""Knowledge base ingestion and search on the real reader (pypdf, BeautifulSoup, the LangChain
splitters) with the hashing embedder and the in-memory store from assistant.testing."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from assistant.config import KnowledgeSettings
from assistant.errors import DocumentError, KnowledgeNotFoundError
from assistant.knowledge.lexical import BM25, tokens
from assistant.knowledge.service import KnowledgeService
from tests.support.knowledge import fake_knowledge
from tests.support.pdf import text_pdf

CORPUS = Path(__file__).resolve().parents[1] / "data" / "kb"


def _service(**settings) -> KnowledgeService:
    return fake_knowledge(KnowledgeSettings(**settings))


async def test_all_four_formats_keep_title_heading_and_page():
    service = _service()
    for path in sorted(CORPUS.glob("*.*")):
        if path.suffix != ".jsonl":
            assert (await service.add("help", path.name, path.read_bytes())).outcome == "added"
    docs = {d.filename: d for d in await service.documents("help")}
    assert {d.format for d in docs.values()} == {"markdown", "text", "html", "pdf"}
    assert docs["warranty.html"].title == "Warranty and repairs"
    snapshot = await service.store.load("help")
    by_file = {}
    for chunk in snapshot.chunks:
        by_file.setdefault(chunk.filename, []).append(chunk)
    assert by_file["returns.md"][1].heading == "Returns and refunds > Refund times"
    assert [c.page for c in by_file["payments.pdf"]] == [1, 2]
    assert "Pine Points" in by_file["payments.pdf"][1].text
    assert not any(
        "Copyright" in c.text or "Home | Help" in c.text for c in by_file["warranty.html"]
    )
    assert snapshot.vectors.shape == (len(snapshot.chunks), 64)


async def test_re_adding_unchanged_is_a_no_op_and_changed_replaces():
    service = _service()
    await service.add("help", "faq.md", b"# FAQ\n\nOpening hours are 9 to 5.")
    version = await service.store.version("help")
    again = await service.add("help", "faq.md", b"# FAQ\n\nOpening hours are 9 to 5.")
    assert again.outcome == "unchanged" and await service.store.version("help") == version
    changed = await service.add("help", "faq.md", b"# FAQ\n\nOpening hours are 8 to 6.")
    assert changed.outcome == "replaced"
    texts = [c.text for c in (await service.store.load("help")).chunks]
    assert texts == ["Opening hours are 8 to 6."]
    await service.remove("help", "faq.md")
    assert await service.documents("help") == []
    with pytest.raises(KnowledgeNotFoundError):
        await service.remove("help", "faq.md")


def _encrypted_pdf() -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(text_pdf([["secret text"]]))))
    writer.encrypt("letmein", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "code"),
    [
        ("report.docx", b"PK\x03\x04...", "unsupported_document_type"),
        ("empty.md", b"  \n", "empty_document"),
        ("empty.pdf", text_pdf([[]]), "empty_document"),
        ("locked.pdf", _encrypted_pdf(), "encrypted_document"),
        ("fake.pdf", b"not a pdf at all", "invalid_document"),
        ("broken.pdf", b"%PDF-1.4\nrubbish", "invalid_document"),
        ("big.txt", b"x" * 5000, "document_too_large"),
        ("headings.md", b"# Only\n## Headings\n", "empty_document"),
        ("latin1.txt", "caf\xe9".encode("latin-1"), "invalid_document"),
    ],
)
async def test_bad_documents_are_refused_with_a_code_and_nothing_stored(name, data, code):
    service = _service(max_document_bytes=4096)
    with pytest.raises(DocumentError) as caught:
        await service.add("help", name, data)
    assert caught.value.code == code
    assert await service.documents("help") == [] and await service.store.version("help") == 0


async def test_a_bad_knowledge_base_name_is_refused():
    with pytest.raises(DocumentError) as caught:
        await _service().add("../etc", "a.md", b"# A\n\ntext")
    assert caught.value.code == "invalid_knowledge_base"


def test_codes_are_tokens_whole_and_in_parts():
    assert tokens("Order PP-204816, error E-402!") == [
        "order", "pp-204816", "pp", "204816", "error", "e-402", "e", "402"
    ]  # fmt: skip
    index = BM25(["your order PP-204816 shipped", "order PP-999999 shipped", "nothing here"])
    scores = index.scores("where is PP-204816")
    assert scores.argmax() == 0 and 0 < scores[0] <= 1 and scores[2] == 0


async def test_the_retriever_reloads_when_the_version_changes():
    service = _service()
    await service.add("help", "a.md", b"# Returns\n\nReturns are free within 30 days.")
    retriever = service.retriever
    assert (await service.search("help", "returns"))[0].chunk.filename == "a.md"
    assert (await service.search("help", "returns"))[0].chunk.filename == "a.md"
    assert retriever.reloads == 1
    await service.add("help", "b.md", b"# Gift cards\n\nGift cards never expire.")
    hits = await service.search("help", "do gift cards expire")
    assert hits[0].chunk.filename == "b.md" and retriever.reloads == 2
    assert await service.search("other", "gift cards") == []


async def test_grounding_numbers_sources_cites_them_and_falls_back():
    from assistant.config import BotSettings
    from assistant.knowledge.answer import BotProfile, ground

    service = _service()
    await service.add("help", "returns.md", (CORPUS / "returns.md").read_bytes())
    await service.add("help", "payments.pdf", (CORPUS / "payments.pdf").read_bytes())
    default = BotProfile.from_settings(BotSettings())
    assert await ground(service.retriever, default, "default", "refund", 3) is None  # no kb
    profile = BotProfile.from_stored({"knowledge_base": "help", "threshold": 0.3}, default)
    grounding = await ground(service.retriever, profile, "default", "error code E-402", 2)
    assert grounding.answerable and grounding.passages[0].chunk.filename == "payments.pdf"
    text = grounding.user_text("What is E-402?")
    assert text.startswith("Question: What is E-402?\n\nAnswer it from these sources")
    assert text.splitlines()[3].startswith("[1] Payments and checkout")
    cited = grounding.citations("Your bank declined it [1].")
    assert [(c.filename, c.page, c.index, c.number) for c in cited] == [("payments.pdf", 1, 22, 1)]
    assert "E-402" in cited[0].quote and cited[0].type == "file_citation"
    assert len(grounding.citations("Declined.")) == len(grounding.passages)  # none cited: all
    nothing = await ground(service.retriever, profile, "default", "poem about the sea", 2)
    assert not nothing.answerable and nothing.fallback == BotSettings().fallback
