"""LangGraph's checkpoint types to and from what ``checkpoint_layout`` stores: the arguments of
the write scripts and the ``CheckpointTuple`` a read script's reply makes. No I/O here: the sync
and the async saver methods share all of it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    SerializerProtocol,
    get_checkpoint_metadata,
)

import adapters.langchain.checkpoint_layout as layout


def thread_and_ns(config: RunnableConfig) -> tuple[Any, str]:
    configurable = config.get("configurable") or {}
    if configurable.get("thread_id") is None:
        raise ValueError("a checkpoint config needs configurable.thread_id")
    return configurable["thread_id"], configurable.get("checkpoint_ns") or ""


def checkpoint_config(thread_id: Any, ns: str, checkpoint_id: str) -> RunnableConfig:
    return {
        "configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}
    }


def _blob_field(ns: str, channel: str, version: object) -> bytes:
    field = layout.joined(
        layout.part(ns, "checkpoint namespace"),
        layout.part(channel, "channel name"),
        layout.part(version, "channel version"),
    )
    if layout.BLOBS_SEPARATOR in field:
        raise ValueError(f"a LangGraph channel name may not hold \\x1e: {channel!r}")
    return field


def put_args(
    serde: SerializerProtocol,
    config: RunnableConfig,
    checkpoint: Checkpoint,
    metadata: CheckpointMetadata,
    new_versions: ChannelVersions,
) -> tuple[list[bytes], RunnableConfig]:
    """The PUT script's ARGV after the TTL, and the config naming the stored checkpoint."""
    thread_id, ns = thread_and_ns(config)
    stored = checkpoint.copy()
    values: dict[str, Any] = stored.pop("channel_values")  # type: ignore[misc]
    parent = (config.get("configurable") or {}).get("checkpoint_id") or ""
    field = layout.joined(layout.part(ns, "checkpoint namespace"), layout.part(stored["id"], "checkpoint id"))
    kind, data = serde.dumps_typed(stored)
    meta_kind, meta_data = serde.dumps_typed(get_checkpoint_metadata(config, metadata))
    record = layout.pack(kind.encode(), data, meta_kind.encode(), meta_data, str(parent).encode())
    names = layout.BLOBS_SEPARATOR.join(
        _blob_field(ns, channel, version)
        for channel, version in checkpoint["channel_versions"].items()
    )
    args = [field, record, names]
    for channel, version in new_versions.items():
        typed = serde.dumps_typed(values[channel]) if channel in values else ("empty", b"")
        args += [_blob_field(ns, channel, version), layout.pack_typed(typed)]
    return args, checkpoint_config(thread_id, ns, stored["id"])


def writes_args(
    serde: SerializerProtocol,
    config: RunnableConfig,
    writes: Sequence[tuple[str, Any]],
    task_id: str,
    task_path: str,
) -> list[bytes]:
    """The PUT_WRITES script's ARGV after the TTL."""
    _, ns = thread_and_ns(config)
    checkpoint_id = config["configurable"]["checkpoint_id"]
    field = layout.joined(layout.part(ns, "checkpoint namespace"), layout.part(checkpoint_id, "checkpoint id"))
    path, task = layout.part(task_path, "task path"), layout.part(task_id, "task id")
    args: list[bytes] = [field]
    for index, (channel, value) in enumerate(writes):
        idx = WRITES_IDX_MAP.get(channel, index)
        kind, data = serde.dumps_typed(value)
        value_part = layout.pack(layout.part(channel, "channel name"), kind.encode(), data)
        args += [path, task, layout.idx_part(idx), b"1" if idx < 0 else b"0", value_part]
    return args if writes else []


def record_metadata(serde: SerializerProtocol, record: bytes) -> CheckpointMetadata:
    _, _, meta_kind, meta_data, _ = layout.unpack(record)
    return serde.loads_typed((meta_kind.decode(), meta_data))


def tuple_from_reply(
    serde: SerializerProtocol,
    thread_id: Any,
    ns: str,
    reply: list[Any],
    config: RunnableConfig | None = None,
) -> CheckpointTuple:
    """A READ script's reply as LangGraph's tuple; ``config`` is the caller's when it named the
    checkpoint (InMemorySaver returns it as it came)."""
    raw_id, record, writes, names, values = reply
    checkpoint_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
    kind, data, meta_kind, meta_data, parent = layout.unpack(record)
    checkpoint = serde.loads_typed((kind.decode(), data))
    channel_values: dict[str, Any] = {}
    fields = names.split(layout.BLOBS_SEPARATOR) if names else []
    for field, value in zip(fields, values or [], strict=False):
        if value is None:
            continue
        typed = layout.unpack_typed(value)
        if typed[0] != "empty":
            channel = field.split(b"\0")[1].decode()
            channel_values[channel] = serde.loads_typed(typed)
    pending = []
    for member in writes:
        task, channel, typed = layout.split_write(member)
        pending.append((task, channel, serde.loads_typed(typed)))
    parent_id = parent.decode()
    return CheckpointTuple(
        config=config or checkpoint_config(thread_id, ns, checkpoint_id),
        checkpoint={**checkpoint, "channel_values": channel_values},
        metadata=serde.loads_typed((meta_kind.decode(), meta_data)),
        parent_config=checkpoint_config(thread_id, ns, parent_id) if parent_id else None,
        pending_writes=pending,
    )


def candidates(
    members: Sequence[bytes], *, descending: bool, checkpoint_id: str | None, before: str | None
) -> list[tuple[str, str]]:
    """(ns, id) of the ``cx`` members to list, newest first within each namespace. ``members``
    come newest first (one namespace's range) or in lex order (all namespaces)."""
    groups: dict[str, list[str]] = {}
    for member in members:
        ns, _, found = member.partition(b"\0")
        groups.setdefault(ns.decode(), []).append(found.decode())
    chosen = []
    for ns, ids in groups.items():
        for found in ids if descending else reversed(ids):
            if checkpoint_id and found != checkpoint_id:
                continue
            if before and found >= before:
                continue
            chosen.append((ns, found))
    return chosen


def matches(metadata: CheckpointMetadata, filter: dict[str, Any] | None) -> bool:
    return not filter or all(metadata.get(key) == value for key, value in filter.items())
