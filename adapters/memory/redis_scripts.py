"""The Lua scripts of the Redis session store. Each runs atomically in one round trip.

The session's limits (``SessionLimits``) are checked where a message is appended, in the same
script: the messages are ``msgs``' length, the bytes a counter in the meta hash (field
``#bytes``, not a ``SessionInfo`` field, incremented by each message stored).

KEYS are always meta, msgs, turns (and the lock fourth, the partial reply fifth, where a script
takes them). A lock's value is ``<process instance> <token>`` (``redis_owner.lock_value``); a
partial reply is ``<lock value>\n<once key>\n<JSON before the text>\n<JSON after it>\n<the text,
JSON-escaped>`` (``redis_turns.PartialWriter``), so a script stores it as a message by joining
three of its fields, and a writer extends it with APPEND.
"""

# Lua pieces shared by the scripts. KEYS[1..3] are always meta, msgs, turns (KEYS[4] the lock).
# append(json, once_key, extra, max_msgs, max_bytes): store a message once per key and count its
# bytes (its JSON's plus ``extra``, the images it brings) in meta's '#bytes' field. With a limit
# (> 0), a new message that would take the session past max_msgs messages or max_bytes bytes is not
# stored. Returns (1, nil) stored, (0, stored JSON) stored before, (-3, nil) refused for the
# number of messages, (-4, nil) for the bytes (nothing written).
HELPERS = """
local function append(json, once_key, extra, max_msgs, max_bytes)
  local index = redis.call('HGET', KEYS[3], once_key)
  if index then
    local stored = redis.call('LINDEX', KEYS[2], tonumber(index))
    if stored then return 0, stored end
  end
  if max_msgs > 0 and redis.call('LLEN', KEYS[2]) >= max_msgs then return -3, nil end
  local size = #json + extra
  local used = redis.call('HINCRBY', KEYS[1], '#bytes', size)
  if max_bytes > 0 and used > max_bytes then
    redis.call('HINCRBY', KEYS[1], '#bytes', -size)
    return -4, nil
  end
  local length = redis.call('RPUSH', KEYS[2], json)
  redis.call('HSET', KEYS[3], once_key, length - 1)
  return 1, nil
end
local function touch(ttl)
  for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ttl) end
end
local function publish(created, event, maxlen, ttl)
  if created ~= 1 or event == '' then return '' end
  local seq = redis.call('XADD', KEYS[6], 'MAXLEN', '~', maxlen, '*', 'e', event)
  redis.call('PEXPIRE', KEYS[6], ttl)
  return seq
end
"""

# recover(mine): a partial reply in KEYS[5] that another lock value wrote is stored as the message
# it describes (once, on its once key) and deleted; returns 1 when one was found.
RECOVER = """
local function recover(mine)
  local partial = redis.call('GET', KEYS[5])
  if not partial then return 0 end
  local fields, from = {}, 1
  for i = 1, 4 do
    local at = string.find(partial, '\\n', from, true)
    if not at then break end
    fields[i] = string.sub(partial, from, at - 1)
    from = at + 1
  end
  if fields[1] == mine then return 0 end
  redis.call('DEL', KEYS[5])
  if #fields < 4 then return 0 end
  append(fields[3] .. string.sub(partial, from) .. fields[4], fields[2], 0, 0, 0)
  return 1
end
"""

# ARGV: message JSON, once key, ttl ms, extra bytes, max messages, max bytes (0: no limit).
# Returns {-1} for an unknown session, {0, stored JSON} for a known turn id, {1} when stored,
# {-3} / {-4} when refused (the session's limits, see append).
APPEND = (
    HELPERS
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local created, stored = append(ARGV[1], ARGV[2], tonumber(ARGV[4]), tonumber(ARGV[5]),
                               tonumber(ARGV[6]))
touch(ARGV[3])
if created == 0 then return {0, stored} end
return {created}
"""
)

# Take (or keep) the lease, store a partial reply another writer left, append the user's message
# if any, return the history.
# ARGV: lock value, lease ms, message JSON ('' for none), once key, ttl ms, last N ('' for all, 0
# none), known (the caller holds messages [0, known) already: only later ones are sent), the
# lock value of a holder whose process is gone ('': none), taken over if it still holds the lease,
# then the message's extra bytes, max messages and max bytes (append's limits, 0: none), then
# the message's event JSON for the session's event stream KEYS[6] ('': none; appended when the
# message is created) and the stream's MAXLEN.
# Returns {-1} unknown session, {-2, holder} busy, {-3} / {-4} the message refused (the session's
# limits: nothing of it stored, the lease not kept unless it was the caller's already; a partial
# recovered on the way stays stored),
# else {created (-1: no message), stored, meta, msgs from index first, first, length, recovered,
# the event's stream id or ''};
# meta is HGETALL's flat list without the '#bytes' counter (the store parses it once per content).
BEGIN_TURN = (
    HELPERS
    + RECOVER
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local holder = redis.call('GET', KEYS[4])
if holder and holder ~= ARGV[1] and holder ~= ARGV[8] then return {-2, holder} end
redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[2])
local recovered = 0
if holder ~= ARGV[1] then recovered = recover(ARGV[1]) end
local created, stored = -1, false
if ARGV[3] ~= '' then
  created, stored = append(ARGV[3], ARGV[4], tonumber(ARGV[9]), tonumber(ARGV[10]),
                           tonumber(ARGV[11]))
end
touch(ARGV[5])
if created < -1 then
  if holder ~= ARGV[1] then redis.call('DEL', KEYS[4]) end
  return {created}
end
local length = redis.call('LLEN', KEYS[2])
local first = 0
if ARGV[6] ~= '' then first = math.max(length - tonumber(ARGV[6]), 0) end
local known = tonumber(ARGV[7])
if known > 0 and known <= length and known > first then first = known end
local msgs = {}
if first < length then msgs = redis.call('LRANGE', KEYS[2], first, -1) end
local meta = redis.call('HGETALL', KEYS[1])
for i = 1, #meta, 2 do
  if meta[i] == '#bytes' then
    table.remove(meta, i)
    table.remove(meta, i)
    break
  end
end
local seq = publish(created, ARGV[12], ARGV[13], ARGV[5])
return {created, stored or '', meta, msgs, first, length, recovered, seq}
"""
)

# Append the reply if any (never refused for the session's limits; its bytes are counted), release
# the lease if it is still the lock value's, and delete the partial reply the lock value wrote
# (only looked for when the writer flushed one).
# ARGV: lock value, message JSON ('' for none), once key, ttl ms, '1' when a partial was written,
# the reply's event JSON for the session's event stream KEYS[6] ('': none) and its MAXLEN.
# Returns {-1} unknown session, else {created (-1: no message), stored JSON or '', stream id or ''}.
END_TURN = (
    HELPERS
    + """
if redis.call('GET', KEYS[4]) == ARGV[1] then redis.call('DEL', KEYS[4]) end
if ARGV[5] == '1' and redis.call('GETRANGE', KEYS[5], 0, #ARGV[1]) == ARGV[1] .. '\\n' then
  redis.call('DEL', KEYS[5])
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local created, stored = -1, false
if ARGV[2] ~= '' then created, stored = append(ARGV[2], ARGV[3], 0, 0, 0) end
touch(ARGV[4])
return {created, stored or '', publish(created, ARGV[6], ARGV[7], ARGV[4])}
"""
)

# KEYS: meta, msgs, turns. ARGV: ttl ms, then field, JSON value pairs. Returns the new HGETALL.
UPDATE_INFO = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if #ARGV > 1 then redis.call('HSET', KEYS[1], unpack(ARGV, 2)) end
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
return redis.call('HGETALL', KEYS[1])
"""

# Renew the lease if it is still the lock value's and record the reply streamed so far.
# KEYS: lock, partial. ARGV: lock value, lease ms, ttl ms, offset ('' to only renew), value: at
# offset 0 the whole partial, else the text to APPEND to the partial if it holds offset bytes.
# Returns -1 when the lease is not the lock value's (nothing written), -2 when the partial is not
# the offset long (a write went missing: the writer sends it whole next time), 0 when only
# renewed, else the partial's length.
RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if ARGV[4] == '' then return 0 end
if ARGV[4] == '0' then
  redis.call('SET', KEYS[2], ARGV[5], 'PX', ARGV[3])
  return #ARGV[5]
end
if redis.call('STRLEN', KEYS[2]) ~= tonumber(ARGV[4]) then return -2 end
local length = redis.call('APPEND', KEYS[2], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return length
"""

# Give the summary claim back if it is still the token's, then store the summary unless the
# session is gone or was created again (its created_at differs) or it has one covering as many
# messages or more. KEYS: meta, msgs, turns, summary claim. ARGV: token, created_at (as stored:
# JSON), ttl ms, then ('' for none) the summary's JSON and the number of messages it covers.
# Returns 1 when stored, else 0.
FINISH_SUMMARY = """
if redis.call('GET', KEYS[4]) == ARGV[1] then redis.call('DEL', KEYS[4]) end
if ARGV[4] == '' or redis.call('HGET', KEYS[1], 'created_at') ~= ARGV[2] then return 0 end
local covered = redis.call('HGET', KEYS[1], '#summary_upto')
if covered and tonumber(covered) >= tonumber(ARGV[5]) then return 0 end
redis.call('HSET', KEYS[1], '#summary', ARGV[4], '#summary_upto', ARGV[5])
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
return 1
"""

# The handoff's one status change (``adapters.memory.redis_conversations``): a compare-and-set on
# the status in the session's meta hash (field ``status``, JSON like every meta field, absent:
# "bot"), the new state beside it (field ``handoff``) and the change's event appended to the
# session's stream, all or nothing.
# KEYS: meta, events. ARGV: ttl ms, stream max length (approximate), the expected statuses
# (space separated), the new status (JSON), the new state (JSON), the event (JSON).
# Returns {-1} unknown session, {0, current status JSON, current state JSON or ''} not applied,
# {1, the event's stream id} applied.
TRANSITION = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local current = redis.call('HGET', KEYS[1], 'status') or '"bot"'
local expected = false
for status in string.gmatch(ARGV[3], '%S+') do
  if '"' .. status .. '"' == current then expected = true end
end
if not expected then return {0, current, redis.call('HGET', KEYS[1], 'handoff') or ''} end
redis.call('HSET', KEYS[1], 'status', ARGV[4], 'handoff', ARGV[5])
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return {1, id}
"""
