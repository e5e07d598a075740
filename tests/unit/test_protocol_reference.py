"""The protocol reference stays true to the code: ``docs/asyncapi.json`` is what the generator
makes from the protocol's models now (byte for byte), it is a well-formed AsyncAPI 3.0 document
whose every ``$ref`` resolves and which names every event the server sends; ``docs/protocol.md``'s
generated tables are current, and each example exchange in it is made of events the protocol's
models take, in the order the server sends them."""

from __future__ import annotations

import ast
import json
import re
import typing
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from assistant import cli, errors, protocol
from assistant.config import AuthSettings, Settings
from assistant.protocol import CLIENT_EVENT_TYPES, ServerEvent, parse_client_event
from assistant.server import asyncapi, protocol_doc
from assistant.server.app import create_app
from assistant.testing.language_models import ScriptedLM
from assistant.testing.memory import MemoryStore
from tests.support.ws import VOICE_TURN_ORDER, assert_in_order

ROOT = Path(__file__).resolve().parents[2]
ASYNCAPI = ROOT / "docs" / "asyncapi.json"
PROTOCOL_MD = ROOT / "docs" / "protocol.md"
SERVER_MODELS = {asyncapi.event_type(m): m for m in asyncapi.event_models(ServerEvent)}


def resolve(document: dict[str, Any], ref: str) -> Any:
    """A local JSON pointer (``#/a/b``) in ``document``; KeyError when it points nowhere."""
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def problems(document: dict[str, Any]) -> list[str]:
    """What is wrong with an AsyncAPI 3.0 document's structure ([] when nothing)."""
    found = []
    if document.get("asyncapi") != "3.0.0":
        found.append("asyncapi is not 3.0.0")
    if not {"title", "version"} <= set(document.get("info", {})):
        found.append("info needs a title and a version")
    channels = document.get("channels", {})
    for name, channel in channels.items():
        if not channel.get("address", "").startswith("/"):
            found.append(f"channel {name} has no address")
    for name, operation in document.get("operations", {}).items():
        if operation.get("action") not in ("send", "receive"):
            found.append(f"operation {name}: action {operation.get('action')!r}")
        channel_ref = operation.get("channel", {}).get("$ref", "")
        if not channel_ref.startswith("#/channels/"):
            found.append(f"operation {name}: its channel is not a $ref to a channel")
        for message in operation.get("messages", []):  # a channel's own messages only
            if not message.get("$ref", "").startswith(f"{channel_ref}/messages/"):
                found.append(f"operation {name}: {message} is not one of its channel's")
    components = document.get("components", {})
    if not (components.get("messages") and components.get("schemas")):
        found.append("components.messages and components.schemas are needed")
    for key in (*components.get("messages", {}), *components.get("schemas", {})):
        if not re.fullmatch(r"[a-zA-Z0-9.\-_]+", key):
            found.append(f"component name {key!r}")
    for ref in refs(document):
        try:
            resolve(document, ref)
        except (KeyError, TypeError, AssertionError):
            found.append(f"$ref {ref} resolves to nothing")
    return found


# -- the committed files are what the generator makes ---------------------------------------------


def test_docs_asyncapi_json_is_the_generated_document():
    assert ASYNCAPI.read_text(encoding="utf-8") == asyncapi.render(), (
        f"docs/asyncapi.json is out of date; refresh it with: {protocol_doc.REFRESH}"
    )


def test_the_document_is_stable_and_its_keys_sorted():
    text = asyncapi.render()
    assert asyncapi.document() == asyncapi.document()
    assert json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n" == text


def test_docs_protocol_md_tables_are_the_generated_ones():
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    assert protocol_doc.refreshed(text) == text, (
        f"docs/protocol.md's tables are out of date; refresh them with: {protocol_doc.REFRESH}"
    )


def test_the_comparison_sees_a_stale_table_and_a_missing_block():
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    stale = text.replace("| `delta` | string | yes |", "| `delta` | integer | yes |", 1)
    assert stale != text and protocol_doc.refreshed(stale) == text
    without = re.sub(r"<!-- /?error-codes[^>]*-->", "", text)
    with pytest.raises(ValueError, match="error-codes"):
        protocol_doc.refreshed(without)


# -- the document's structure ---------------------------------------------------------------------


def test_the_document_is_well_formed_asyncapi_3():
    document = json.loads(ASYNCAPI.read_text(encoding="utf-8"))
    assert problems(document) == []
    actions = {op["action"]: op for op in document["operations"].values()}
    assert set(actions) == {"send", "receive"}
    channel = resolve(document, actions["receive"]["channel"]["$ref"])
    assert channel["address"] == "/v1/realtime"
    assert set(channel["bindings"]["ws"]["query"]["properties"]) == {"session_id"}
    for message in channel["messages"].values():
        assert "payload" in resolve(document, message["$ref"])


def test_the_structure_check_finds_what_is_wrong():
    document = json.loads(ASYNCAPI.read_text(encoding="utf-8"))
    document["asyncapi"] = "2.6.0"
    operation = next(iter(document["operations"].values()))
    operation["action"] = "publish"
    operation["messages"].append({"$ref": "#/components/messages/session.update"})
    document["components"]["schemas"]["SessionUpdate"]["properties"]["session"] = {
        "$ref": "#/components/schemas/NoSuchModel"
    }
    found = problems(document)
    assert "asyncapi is not 3.0.0" in found
    assert any("action 'publish'" in p for p in found)
    assert any("is not one of its channel's" in p for p in found)
    assert any("NoSuchModel resolves to nothing" in p for p in found)


def test_every_event_is_a_message_in_its_direction():
    document = asyncapi.document()
    operations = {op["action"]: op for op in document["operations"].values()}
    names = {
        action: {ref["$ref"].rsplit("/", 1)[-1] for ref in op["messages"]}
        for action, op in operations.items()
    }
    assert names["receive"] == CLIENT_EVENT_TYPES | {asyncapi.BINARY_AUDIO}
    assert names["send"] == set(SERVER_MODELS)


def test_the_error_codes_are_the_error_tree():
    document = asyncapi.document()
    codes = [row["code"] for row in document["components"]["messages"]["error"]["x-error-codes"]]
    tree = [code for listed in errors.documented_codes().values() for code in listed]
    assert codes == list(dict.fromkeys(tree))
    wire_error = document["components"]["schemas"]["WireError"]["properties"]
    assert wire_error["code"]["enum"] == codes


def test_every_server_event_the_server_builds_is_in_the_union():
    """The server's events are built as the models of ``protocol.server`` (and, on the hot path,
    as JSON by ``protocol.fast_json``): each one built anywhere is in ``ServerEvent``, so in the
    document."""
    client = set(asyncapi.event_models(protocol.ClientEvent))
    models = {
        name for name, value in vars(protocol).items()
        if isinstance(value, type) and issubclass(value, BaseModel) and value not in client
        and {"event_id", "type"} <= set(value.model_fields)
        and typing.get_origin(value.model_fields["type"].annotation) is typing.Literal
    }  # fmt: skip
    built = set()
    for path in [*(ROOT / "assistant" / "server").glob("*.py"), *(ROOT / "assistant").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                if node.func.id in models:
                    built.add(getattr(protocol, node.func.id))
    fast_json = (ROOT / "assistant" / "protocol" / "fast_json.py").read_text()
    literal_types = set(re.findall(r'"type": "([a-z_.]+)"', fast_json))
    literal_types |= set(re.findall(r'"(response\.output_text\.[a-z]+)"', fast_json))
    assert built and literal_types
    assert built <= set(SERVER_MODELS.values())
    assert literal_types <= set(SERVER_MODELS)


# -- the examples in docs/protocol.md -------------------------------------------------------------


def exchanges() -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Each ``## A ... turn`` section's example: (direction, event) in order."""
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    found: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for section in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:
        title, _, body = section.partition("\n")
        lines = re.findall(r"^([→←]) (\{.*\})$", body, flags=re.MULTILINE)
        if lines:
            found[title] = [(arrow, json.loads(line)) for arrow, line in lines]
    return found


def within(given: Any, sent: Any, where: str = "") -> list[str]:
    """Keys of ``given`` that ``sent`` (the model's dump) does not have, or values it differs in."""
    if isinstance(given, dict):
        if not isinstance(sent, dict):
            return [f"{where}: not an object"]
        return [p for k, v in given.items() for p in (
            within(v, sent[k], f"{where}.{k}") if k in sent else [f"{where}.{k}: no such field"]
        )]  # fmt: skip
    if isinstance(given, list):
        if not isinstance(sent, list) or len(sent) != len(given):
            return [f"{where}: not the same list"]
        return [
            p for i, (a, b) in enumerate(zip(given, sent)) for p in within(a, b, f"{where}[{i}]")
        ]
    return [] if given == sent else [f"{where}: {given!r} is sent as {sent!r}"]


def check_server_event(event: dict[str, Any]) -> list[str]:
    model = SERVER_MODELS.get(event.get("type", ""))
    if model is None:
        return [f"no server event {event.get('type')!r}"]
    return within(event, model.model_validate(event).model_dump(mode="json"))


def test_the_document_has_a_text_a_voice_and_an_image_turn():
    found = exchanges()
    assert {"A text turn", "A voice turn", "An image turn"} <= set(found)
    voice = [event["type"] for _, event in found["A voice turn"]]
    assert_in_order(voice, VOICE_TURN_ORDER)
    assert "response.output_audio.delta" in voice
    assert "conversation.item.input_audio_transcription.delta" in voice
    image = [event for arrow, event in found["An image turn"] if arrow == "→"]
    parts = image[0]["item"]["content"]
    assert any(p["type"] == "input_image" and p["image_url"].startswith("data:") for p in parts)


def test_every_example_event_is_one_the_models_take():
    """A client event the protocol refuses must be answered by an ``error`` with its code."""
    for title, events in exchanges().items():
        for (arrow, event), (_, reply) in zip(events, [*events[1:], ("", {})]):
            if arrow == "←":
                assert check_server_event(event) == [], (title, event)
                continue
            try:
                parse_client_event(json.dumps(event))
            except errors.AssistantError as exc:
                assert reply.get("type") == "error", (title, event, exc.code)
                assert reply["error"]["code"] == exc.code, (title, event)
                assert reply["error"]["event_id"] == event.get("event_id")


def test_the_example_check_finds_a_made_up_field_and_a_made_up_event():
    assert check_server_event({"type": "response.finished"}) == [
        "no server event 'response.finished'"
    ]
    wrong = {"type": "input_audio_buffer.committed", "item_id": "msg_1", "item": "msg_1"}
    assert check_server_event(wrong) == [".item: no such field"]


def test_the_event_names_in_the_prose_are_real_ones():
    prose = re.sub(r"<!-- protocol-events.*?<!-- /protocol-events -->", "",
                   PROTOCOL_MD.read_text(encoding="utf-8"), flags=re.DOTALL)  # fmt: skip
    named = set(re.findall(r"`([a-z_]+(?:\.[a-z_]+)+)`", prose))
    assert named and named <= CLIENT_EVENT_TYPES | set(SERVER_MODELS), named - (
        CLIENT_EVENT_TYPES | set(SERVER_MODELS)
    )


# -- where it is served and printed ---------------------------------------------------------------


def test_assistant_protocol_schema_prints_and_writes_it(capsys, tmp_path):
    assert cli.main(["protocol-schema"]) == 0
    assert capsys.readouterr().out == asyncapi.render()
    markdown = tmp_path / "protocol.md"
    markdown.write_text(protocol_doc.refreshed(PROTOCOL_MD.read_text()).replace("`delta`", "`d`"))
    out = tmp_path / "asyncapi.json"
    assert cli.main(["protocol-schema", "--out", str(out), "--markdown", str(markdown)]) == 0
    assert out.read_text() == asyncapi.render()
    assert markdown.read_text() == PROTOCOL_MD.read_text()
    markdown.write_text("no markers here\n")
    assert cli.main(["protocol-schema", "--markdown", str(markdown)]) == 2
    assert "protocol-events" in capsys.readouterr().err


def test_the_server_serves_it(tmp_path):
    settings = Settings(data_dir=tmp_path, auth=AuthSettings(open=True))
    with TestClient(create_app(settings, llm=ScriptedLM("hi"), store=MemoryStore())) as client:
        answer = client.get("/v1/realtime/asyncapi.json")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.content == ASYNCAPI.read_bytes()
    closed = Settings(data_dir=tmp_path, auth=AuthSettings(open=False))
    with TestClient(create_app(closed, llm=ScriptedLM("hi"), store=MemoryStore())) as client:
        answer = client.get("/v1/realtime/asyncapi.json")
    assert answer.status_code == 401  # like /openapi.json: an admin key, or public_docs
