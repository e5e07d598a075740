"""Tenants: a store (and an orchestrator) scoped to one tenant sees nothing of another's."""

from __future__ import annotations

import pytest

from assistant.config import LLMSettings, MemorySettings, PromptSettings
from assistant.errors import SessionNotFoundError
from assistant.messages import Message, SessionInfo
from assistant.orchestrator import Orchestrator
from assistant.testing.language_models import ScriptedLM
from assistant.testing.memory import MemoryStore


def orchestrator(store: MemoryStore) -> Orchestrator:
    return Orchestrator(
        ScriptedLM("hello"), store, llm_settings=LLMSettings(), prompt_settings=PromptSettings(),
        memory_settings=MemorySettings(),
    )  # fmt: skip


async def test_a_session_of_one_tenant_is_not_found_by_another():
    root = orchestrator(MemoryStore())
    acme, globex = root.for_tenant("acme"), root.for_tenant("globex")
    session = await acme.open_session()
    await acme.add_item(session.id, Message.from_text("user", "my order is 1234"))
    with pytest.raises(SessionNotFoundError):
        await globex.open_session(session.id)
    with pytest.raises(SessionNotFoundError):
        await globex.add_item(session.id, Message.from_text("user", "and mine?"))
    with pytest.raises(SessionNotFoundError):
        await root.open_session(session.id)  # the default tenant is a tenant like the others
    assert (await acme.open_session(session.id)).id == session.id
    assert acme.store.tenant == "acme" and globex.store.tenant == "globex"
    assert root.for_tenant("acme") is acme  # views are kept, not rebuilt per request


async def test_store_views_share_nothing_but_their_views():
    store = MemoryStore()
    acme = store.for_tenant("acme")
    await acme.create(SessionInfo(id="s1"))
    await acme.put_blob("abc", b"image")
    other = store.for_tenant("globex")
    assert await other.load("s1") is None and await other.get_blob("abc") is None
    assert await acme.for_tenant("default").load("s1") is None
    assert acme.for_tenant("globex") is other


@pytest.mark.parametrize("name", ["", "a b", "x" * 65, "-lead", "tenant:colon", "{tag}"])
def test_a_tenant_name_that_could_break_a_key_is_refused(name):
    with pytest.raises(ValueError):
        MemoryStore().for_tenant(name)
