"""How ``RedisCheckpointSaver`` lays a LangGraph thread out in plain Redis (no modules).

Every key of a thread lives under ``{prefix}:{tenant}:lg:{<thread>}:`` (the braces are a Redis
Cluster hash tag, so a thread's keys share one slot and each script below runs on a cluster too;
``<thread>`` is the thread id percent-encoded, so no ``{``, ``}`` or ``:`` of the id can change
the key's shape). Four keys, whatever the thread holds:

    cx  zset    ``<ns>\\0<checkpoint id>``, all scores 0: the thread's checkpoints, ordered by id
                within a namespace (ids are uuid6: time ordered), read with ZRANGEBYLEX
    cv  hash    ``<ns>\\0<id>`` -> the checkpoint record (checkpoint, metadata, parent id);
                ``<ns>\\0<id>\\0b`` -> the ``bv`` fields of its channel values, ``\\x1e`` between
    wx  zset    the pending writes, each one member ``<ns>\\0<id>\\0<task path>\\0<task id>\\0<idx>
                \\0<channel, value>``: a checkpoint's writes are one lex range, already in
                LangGraph's ``writes_sort_key`` order (``idx`` fixed width, offset so the
                special writes' negative indices sort first)
    bv  hash    ``<ns>\\0<channel>\\0<version>`` -> a channel's value at that version

Values are the saver's ``serde.dumps_typed`` pairs framed by ``pack`` (4-byte lengths). Each read
and each write is one Lua script (one round trip, atomic) that ends by refreshing the sliding time
to live of the four keys. A namespace, task path, task id or channel name holding a NUL byte is
refused (``\\0`` separates the parts).
"""

from __future__ import annotations

import struct
import urllib.parse

#: A key of the thread's, in the order every script takes them as KEYS.
KEY_NAMES = ("cx", "cv", "wx", "bv")
BLOBS_SEPARATOR = b"\x1e"
_IDX_OFFSET = 2**31
_LENGTH = struct.Struct(">I")

# Lua pieces shared by the scripts: KEYS are always cx, cv, wx, bv; ARGV[1] the TTL in ms (0: none).
_TOUCH = """
local function touch()
  local ttl = tonumber(ARGV[1])
  if ttl > 0 then for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ttl) end end
end
"""

#: ARGV: ttl, ns, checkpoint id ('' for the namespace's newest). Returns false (no such
#: checkpoint) or {id, record, writes, blob fields, blob values}.
READ = _TOUCH + """
local ns, id = ARGV[2], ARGV[3]
touch()
if id == '' then
  local last = redis.call('ZREVRANGEBYLEX', KEYS[1], '(' .. ns .. '\\1', '[' .. ns .. '\\0',
                          'LIMIT', 0, 1)
  if #last == 0 then return false end
  id = string.sub(last[1], #ns + 2)
end
local field = ns .. '\\0' .. id
local record = redis.call('HGET', KEYS[2], field)
if not record then return false end
local writes = redis.call('ZRANGEBYLEX', KEYS[3], '[' .. field .. '\\0', '(' .. field .. '\\1')
local names = redis.call('HGET', KEYS[2], field .. '\\0b') or ''
local values = {}
if #names > 0 then
  local fields = {}
  for name in string.gmatch(names, '[^\\30]+') do fields[#fields + 1] = name end
  values = redis.call('HMGET', KEYS[4], unpack(fields))
end
return {id, record, writes, names, values}
"""

#: ARGV: ttl, field, record, blob fields, then (bv field, value) pairs.
PUT = _TOUCH + """
redis.call('ZADD', KEYS[1], 0, ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3], ARGV[2] .. '\\0b', ARGV[4])
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1]) end
touch()
return 1
"""

#: ARGV: ttl, the checkpoint's field, then (task path, task id, idx, '1' to replace a write stored
#: before | '0' to keep it, value) 5-tuples. As InMemorySaver, a write is one per (task id, idx):
#: a regular one (idx >= 0) stored before is kept, a special one (an error, an interrupt) replaced.
PUT_WRITES = _TOUCH + """
local field = ARGV[2]
local stored = {}
for _, member in ipairs(redis.call('ZRANGEBYLEX', KEYS[3], '[' .. field .. '\\0',
                                   '(' .. field .. '\\1')) do
  local rest = string.sub(member, #field + 2)
  local a = string.find(rest, '\\0', 1, true)
  local b = string.find(rest, '\\0', a + 1, true)
  local c = string.find(rest, '\\0', b + 1, true)
  stored[string.sub(rest, a + 1, c - 1)] = member
end
for i = 3, #ARGV, 5 do
  local id = ARGV[i + 1] .. '\\0' .. ARGV[i + 2]
  local old = stored[id]
  if not old or ARGV[i + 3] == '1' then
    if old then redis.call('ZREM', KEYS[3], old) end
    local member = field .. '\\0' .. ARGV[i] .. '\\0' .. id .. '\\0' .. ARGV[i + 4]
    redis.call('ZADD', KEYS[3], 0, member)
    stored[id] = member
  end
end
touch()
return 1
"""

#: ARGV: ttl. Refreshes the TTL of a thread that is listed (its checkpoints are then read one by one).
TOUCH = _TOUCH + """
touch()
return 1
"""


def thread_part(thread_id: object) -> str:
    """The thread id as it stands in a key: percent-encoded (``{``, ``}``, ``:`` included)."""
    return urllib.parse.quote(str(thread_id), safe="")


def thread_keys(root: str, thread_id: object) -> list[str]:
    """The four keys of a thread (``root`` is ``{prefix}:{tenant}:lg``)."""
    base = f"{root}:{{{thread_part(thread_id)}}}"
    return [f"{base}:{name}" for name in KEY_NAMES]


def thread_pattern(root: str) -> str:
    """A SCAN pattern matching every thread's ``cx`` key under ``root``."""
    escaped = "".join(f"\\{c}" if c in "*?[]\\" else c for c in root)
    return f"{escaped}:{{*}}:cx"


def thread_of_key(root: str, key: str | bytes) -> str:
    """The thread id of a key ``thread_pattern`` matched."""
    text = key.decode() if isinstance(key, bytes) else key
    inner = text[len(root) + 2 : text.rindex("}:")]
    return urllib.parse.unquote(inner)


def part(value: object, what: str) -> bytes:
    """One \\0-separated part of a field or member (a NUL in it is refused)."""
    data = str(value).encode()
    if b"\0" in data:
        raise ValueError(f"a LangGraph {what} may not hold a NUL byte: {value!r}")
    return data


def joined(*parts: bytes) -> bytes:
    return b"\0".join(parts)


def idx_part(idx: int) -> bytes:
    """A write's index, fixed width so that lex order is numeric order (negative ones first)."""
    return b"%010d" % (idx + _IDX_OFFSET)


def pack(*parts: bytes) -> bytes:
    """Byte strings framed by their lengths (``unpack`` takes them apart)."""
    return b"".join(_LENGTH.pack(len(p)) + p for p in parts)


def unpack(data: bytes) -> list[bytes]:
    parts, offset = [], 0
    while offset < len(data):
        (size,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        parts.append(data[offset : offset + size])
        offset += size
    return parts


def pack_typed(typed: tuple[str, bytes]) -> bytes:
    return pack(typed[0].encode(), typed[1])


def unpack_typed(data: bytes) -> tuple[str, bytes]:
    kind, payload = unpack(data)
    return kind.decode(), payload


def split_write(member: bytes) -> tuple[str, str, tuple[str, bytes]]:
    """A ``wx`` member -> (task id, channel, typed value)."""
    _ns, _id, _path, task_id, _idx, value = member.split(b"\0", 5)
    channel, kind, payload = unpack(value)
    return task_id.decode(), channel.decode(), (kind.decode(), payload)


def lex_range(ns: str, before: str | None = None) -> tuple[bytes, bytes]:
    """(max, min) of a ZREVRANGEBYLEX over one namespace's checkpoints, older than ``before``."""
    prefix = part(ns, "checkpoint namespace")
    high = b"(" + prefix + (b"\0" + part(before, "checkpoint id") if before else b"\x01")
    return high, b"[" + prefix + b"\0"
