"""The generated parts of ``docs/protocol.md``: a table of fields for every client and server
event and every object they hold, made from the same schemas as the AsyncAPI document
(``server.asyncapi``), and the error codes' table (``errors.codes_markdown``).

Each part sits between two markers in the file, ``<!-- NAME: ... -->`` and ``<!-- /NAME -->``;
``assistant protocol-schema --markdown docs/protocol.md`` writes them anew and leaves the prose
around them as it is.
"""

from __future__ import annotations

import json
import re
from typing import Any

from assistant import errors
from assistant.server import asyncapi

REFRESH = "assistant protocol-schema --out docs/asyncapi.json --markdown docs/protocol.md"
BLOCKS = ("protocol-events", "error-codes")
_CONSTRAINTS = (
    ("minLength", "at least {} characters"), ("maxLength", "at most {} characters"),
    ("minItems", "at least {} items"), ("maxItems", "at most {} items"),
    ("minimum", ">= {}"), ("exclusiveMinimum", "> {}"),
    ("maximum", "<= {}"), ("exclusiveMaximum", "< {}"),
)  # fmt: skip


def _anchor(name: str) -> str:
    """GitHub's anchor of a heading ``#### name``."""
    return re.sub(r"[^a-z0-9_\- ]", "", name.lower()).replace(" ", "-")


def type_of(schema: dict[str, Any]) -> str:
    """A schema as a reader says its type: ``string``, ``list of [InputText](#inputtext)``,
    ``"session.update"``, ``integer or null``."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{_anchor(name)})"
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema and schema["enum"] == [row["code"] for row in asyncapi.error_codes()]:
        return "string: one of the [error codes](#error-codes)"
    if "enum" in schema:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            variants = [type_of(s) for s in schema[key] if s.get("type") != "null"]
            nullable = len(variants) < len(schema[key])
            return " or ".join(variants) + (" or null" if nullable else "")
    kind = schema.get("type")
    if kind == "array":
        return f"list of {type_of(schema.get('items', {}))}"
    return str(kind) if kind else "any"


def _notes(schema: dict[str, Any], required: bool) -> str:
    inner = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
    bounds = inner[0] if len(inner) == 1 else schema
    notes = [schema["description"]] if schema.get("description") else []
    notes += [text.format(bounds[key]) for key, text in _CONSTRAINTS if key in bounds]
    if not required and schema.get("default") is not None and "const" not in schema:
        notes.append(f"default `{json.dumps(schema['default'])}`")
    return "; ".join(notes).replace("|", "\\|").replace("\n", " ")


def fields_table(schema: dict[str, Any]) -> str:
    """A model's schema as a table: field, type, required, notes."""
    required = set(schema.get("required", ()))
    rows = ["| field | type | required | notes |", "|---|---|---|---|"]
    for name, prop in schema.get("properties", {}).items():
        needed = name in required
        rows.append(f"| `{name}` | {type_of(prop)} | {'yes' if needed else 'no'} | "
                    f"{_notes(prop, needed)} |")  # fmt: skip
    return "\n".join(rows)


def _section(title: str, schema: dict[str, Any]) -> list[str]:
    description = " ".join((schema.get("description") or "").split())
    return [f"#### {title}", "", *([description, ""] if description else []),
            fields_table(schema), ""]  # fmt: skip


def events_markdown() -> str:
    """Every event and every object the events hold, a section and a table each."""
    schemas = asyncapi.schemas()
    messages = asyncapi.messages()
    lines: list[str] = []
    events: set[str] = set()
    for direction, heading in (("client", "Client events"), ("server", "Server events")):
        lines += [f"### {heading}", ""]
        for name, message in messages.items():
            if message["x-direction"] != direction:
                continue
            if "$ref" not in message["payload"]:  # the binary audio frame
                lines += [f"#### {message['title']}", "", message["summary"], ""]
                continue
            model = message["payload"]["$ref"].rsplit("/", 1)[-1]
            events.add(model)
            lines += _section(f"`{name}`", schemas[model])
    lines += ["### Objects", "", "What the events hold (`-Input`: as a client sends it, "
              "`-Output`: as the server sends it).", ""]  # fmt: skip
    for model in sorted(set(schemas) - events):
        lines += _section(model, schemas[model])
    return "\n".join(lines).rstrip() + "\n"


def blocks() -> dict[str, str]:
    return {"protocol-events": events_markdown(), "error-codes": errors.codes_markdown() + "\n"}


def refreshed(text: str) -> str:
    """``text`` with every generated block written anew (a file without a block's markers is
    an error: the block would silently go missing)."""
    for name, body in blocks().items():
        pattern = re.compile(rf"(<!-- {name}:[^>]*-->\n)(.*?)(<!-- /{name} -->)", re.DOTALL)
        if not pattern.search(text):
            raise ValueError(f"no '<!-- {name}: ... -->' ... '<!-- /{name} -->' markers")
        text = pattern.sub(lambda m, body=body: m[1] + body + m[3], text, count=1)
    return text
