"""The Lua scripts of the Redis session store. Each runs atomically in one round trip.

KEYS are always meta, msgs, turns (and the lock fourth, where a script takes one).
"""

# Lua pieces shared by the scripts. KEYS[1..3] are always meta, msgs, turns (KEYS[4] the lock).
# append(json, once_key): store a message once per key; returns (created, stored JSON or nil).
HELPERS = """
local function append(json, once_key)
  local index = redis.call('HGET', KEYS[3], once_key)
  if index then
    local stored = redis.call('LINDEX', KEYS[2], tonumber(index))
    if stored then return 0, stored end
  end
  local length = redis.call('RPUSH', KEYS[2], json)
  redis.call('HSET', KEYS[3], once_key, length - 1)
  return 1, nil
end
local function touch(ttl)
  for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ttl) end
end
"""

# ARGV: message JSON, once key, ttl ms.
# Returns {-1} for an unknown session, {0, stored JSON} for a known turn id, {1} when stored.
APPEND = HELPERS + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local created, stored = append(ARGV[1], ARGV[2])
touch(ARGV[3])
if created == 0 then return {0, stored} end
return {1}
"""

# Take (or keep) the lease, append the user's message if any, return the history.
# ARGV: token, lease ms, message JSON ('' for none), once key, ttl ms, last N ('' for all, 0 none),
# known (the caller holds messages [0, known) already: only later ones are sent).
# Returns {-1} unknown session, {-2} busy,
# else {created (-1: no message), stored, meta, msgs from index first, first, length}.
BEGIN_TURN = HELPERS + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local holder = redis.call('GET', KEYS[4])
if holder and holder ~= ARGV[1] then return {-2} end
redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[2])
local created, stored = -1, false
if ARGV[3] ~= '' then created, stored = append(ARGV[3], ARGV[4]) end
touch(ARGV[5])
local length = redis.call('LLEN', KEYS[2])
local first = 0
if ARGV[6] ~= '' then first = math.max(length - tonumber(ARGV[6]), 0) end
local known = tonumber(ARGV[7])
if known > 0 and known <= length and known > first then first = known end
local msgs = {}
if first < length then msgs = redis.call('LRANGE', KEYS[2], first, -1) end
return {created, stored or '', redis.call('HGETALL', KEYS[1]), msgs, first, length}
"""

# Append the reply if any and release the lease if it is still the token's.
# ARGV: token, message JSON ('' for none), once key, ttl ms.
# Returns {-1} unknown session, else {created (-1: no message), stored JSON or ''}.
END_TURN = HELPERS + """
if redis.call('GET', KEYS[4]) == ARGV[1] then redis.call('DEL', KEYS[4]) end
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local created, stored = -1, false
if ARGV[2] ~= '' then created, stored = append(ARGV[2], ARGV[3]) end
touch(ARGV[4])
return {created, stored or ''}
"""

# KEYS: meta, msgs, turns. ARGV: ttl ms, then field, JSON value pairs. Returns the new HGETALL.
UPDATE_INFO = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if #ARGV > 1 then redis.call('HSET', KEYS[1], unpack(ARGV, 2)) end
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: lock. ARGV: token, ttl ms.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
