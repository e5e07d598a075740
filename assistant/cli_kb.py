"""``assistant kb add | list | rm | search``: a tenant's knowledge bases, straight in Redis
(``ASSISTANT_REDIS_URL``, else the data directory's private redis-server, as ``keys`` does).

    assistant kb add docs/help/ --kb help          # folders recursively, with a progress bar
    assistant kb list --kb help
    assistant kb search "where is my order PP-204816" --kb help
    assistant kb rm returns.md --kb help
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from assistant.config import Settings


def add_commands(commands: Any, add: Any) -> None:
    kb = add("kb", "Knowledge bases: add files (md, txt, html, pdf), list, rm, search.")
    actions = kb.add_subparsers(dest="action", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_text)
        sub.add_argument("--kb", default="default", help="the knowledge base (default: default)")
        sub.add_argument("--tenant", help="the tenant (default ASSISTANT_MEMORY__TENANT)")
        return sub

    adding = action("add", "add files or folders (a changed file replaces its old chunks)")
    adding.add_argument("paths", nargs="+", help="files, or folders searched recursively")
    adding.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    action("list", "list the documents")
    removing = action("rm", "remove a document (its file name or id)")
    removing.add_argument("document")
    searching = action("search", "the best passages for a query, with their scores")
    searching.add_argument("query")
    searching.add_argument("-k", type=int, default=3, help="passages (default 3)")
    kb.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = {"data_dir": Path(args.data_dir).expanduser()} if args.data_dir else {}
    return asyncio.run(_run(args, Settings(**overrides)))  # type: ignore[arg-type]


def files_of(paths: list[str]) -> list[tuple[str, Path]]:
    """(name stored, path): a file by its own name, a folder's files by their path inside it."""
    from assistant.knowledge.ingest import FORMATS

    found: list[tuple[str, Path]] = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            for item in sorted(path.rglob("*")):
                if item.is_file() and item.suffix.lower() in FORMATS:
                    found.append((item.relative_to(path).as_posix(), item))
        else:
            found.append((path.name, path))
    return found


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    from assistant.cli_keys import _redis_url
    from assistant.registry import build_knowledge

    with _redis_url(settings) as url:
        service = await asyncio.to_thread(build_knowledge, settings, redis_url=url)
        if args.tenant:
            service.store = service.store.for_tenant(args.tenant)
            service.retriever.store = service.store
        try:
            return await _act(args, service)
        finally:
            await service.store.aclose()


async def _act(args: argparse.Namespace, service: Any) -> int:
    from assistant.errors import AssistantError

    if args.action == "add":
        files = files_of(args.paths)
        failed = 0
        progress = None
        if not args.quiet and len(files) > 1:
            from tqdm import tqdm

            progress = tqdm(total=len(files), unit="file", file=sys.stderr)
        for name, path in files:
            try:
                added = await service.add(args.kb, name, path.read_bytes())
                line = f"{added.outcome}: {name} ({added.document.chunks} chunks)"
            except (AssistantError, OSError) as exc:
                failed += 1
                code = getattr(exc, "code", "unreadable")
                line = f"error [{code}]: {name}: {getattr(exc, 'message', exc)}"
            (progress.write if progress is not None else print)(line)
            if progress is not None:
                progress.update()
        if progress is not None:
            progress.close()
        return 2 if failed else 0
    if args.action == "list":
        for doc in await service.documents(args.kb):
            print(f"{doc.id}  {doc.format:8}  {doc.chunks:4} chunks  {doc.filename}  {doc.title}")
    elif args.action == "rm":
        await service.remove(args.kb, args.document)
        print(f"removed {args.document}")
    else:
        for n, hit in enumerate(await service.search(args.kb, args.query, args.k), 1):
            where = " > ".join(x for x in (hit.chunk.title, hit.chunk.heading) if x)
            page = f", p. {hit.chunk.page}" if hit.chunk.page else ""
            print(f"[{n}] {hit.score:.3f} (semantic {hit.semantic:.3f}, lexical "
                  f"{hit.lexical:.3f})  {hit.chunk.filename}{page}: {where}")  # fmt: skip
            print(f"    {hit.chunk.text[:200]!r}")
    return 0
