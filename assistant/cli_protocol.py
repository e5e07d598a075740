"""``assistant protocol-schema``: the realtime protocol's AsyncAPI 3.0 document (the one
``GET /v1/realtime/asyncapi.json`` serves), printed or written to a file, and the generated
tables of ``docs/protocol.md`` refreshed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_commands(commands: Any) -> None:
    schema = commands.add_parser(
        "protocol-schema",
        help="Print the realtime protocol's AsyncAPI 3.0 document (JSON).",
        description="Print the realtime protocol's AsyncAPI 3.0 document (JSON), made from the "
        "protocol's models; --out writes it to a file, --markdown refreshes the event and "
        "error tables of a protocol reference (docs/protocol.md).",
    )
    schema.add_argument("--out", help="write the document to this file (docs/asyncapi.json)")
    schema.add_argument("--markdown", help="refresh the generated tables in this Markdown file")
    schema.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from assistant.server import asyncapi, protocol_doc

    text = asyncapi.render()
    if not (args.out or args.markdown):
        sys.stdout.write(text)
        return 0
    try:
        if args.out:
            Path(args.out).write_text(text, encoding="utf-8")
            print(f"wrote {args.out}", file=sys.stderr)
        if args.markdown:
            path = Path(args.markdown)
            refreshed = protocol_doc.refreshed(path.read_text(encoding="utf-8"))
            path.write_text(refreshed, encoding="utf-8")
            print(f"refreshed the generated tables in {path}", file=sys.stderr)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
