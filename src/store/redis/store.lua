-- The Redis store's one script (see keys.rs for the layout). KEYS[1] is the namespace's records
-- hash `a8r1:{<hex namespace>}:i` and KEYS[2] its migration guard `…:m`, never written (it keeps
-- the script from running while the slot migrates between cluster nodes); every other key of
-- the namespace is the same prefix plus a suffix, so all of them share the hash tag and one
-- cluster slot. ARGV[1] names the operation, ARGV[2] is
-- the calling node's id (for the change messages it publishes), ARGV[3] is "1" for a call through
-- the Eureka API. Time is Redis's own (TIME), in integer milliseconds.
local T = string.sub(KEYS[1], 1, -3)
local op = ARGV[1]
local node = ARGV[2]
local eureka = ARGV[3] == "1"

-- Heartbeats are most of the traffic: they take a short path before anything else is set up.
-- ARGV[4..] are the ids of every heartbeat of the namespace that arrived in one batch; one call
-- reads the time once, their deadlines and records in one command each, and writes the new
-- deadlines in one more. The result holds, per id, 1 (renewed, or OUT_OF_SERVICE: no deadline)
-- or 0 (unknown, or expired: left to the reapers).
if op == "hb" then
  local t = redis.call("TIME")
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if eureka then redis.call("SET", T .. ":f", "1", "PX", 86400000) end
  local ids = {}
  for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
  local deadlines = redis.call("ZMSCORE", T .. ":d", unpack(ids))
  local values = redis.call("HMGET", T .. ":i", unpack(ids))
  local results, renewed = {}, {}
  for j, id in ipairs(ids) do
    local value, deadline = values[j], deadlines[j]
    local ttl = value and tonumber(string.match(value, "^%x* %x* (%d+)\n"))
    if not deadline then
      results[j] = value and 1 or 0
    elseif tonumber(deadline) < now or not ttl then
      results[j] = 0
    else
      results[j] = 1
      renewed[#renewed + 1] = now + ttl
      renewed[#renewed + 1] = id
    end
  end
  if #renewed > 0 then redis.call("ZADD", T .. ":d", unpack(renewed)) end
  return {results, {}}
end

local RECORDS = T .. ":i"    -- hash id -> "<hex service> <hex status> <ttl ms>\n<record JSON>"
local INDEXES = T .. ":k"    -- hash id -> the index key suffixes the id is a member of
local DEADLINES = T .. ":d"  -- zset id -> deadline (ms); OUT_OF_SERVICE ids are absent
local SERVICES = T .. ":n"   -- hash hex service -> live instances
local STATUSES = T .. ":st"  -- hash hex status -> live instances
local VERSION = T .. ":v"    -- versions__delta
local INDEX = T .. ":ix"     -- the change index (X-A8-Index)
local FOLLOWED = T .. ":f"   -- present while Eureka calls touch the namespace
local LOG_TIMES = T .. ":lt" -- zset id -> time of its latest logged change (ms)
local LOG = T .. ":lr"       -- hash id -> kind letter .. stored value
local CHANNEL = "a8r1:changes"
local DAY_MS = 86400000
local RETENTION_MS = 180000
local REAP_BATCH = 256

local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function hex(s)
  return (string.gsub(s, ".", function(c) return string.format("%02x", string.byte(c)) end))
end

-- The service and status (hex-encoded, as stored) and the TTL of a stored value.
local function header(value)
  local service, status, ttl = string.match(value, "^(%x*) (%x*) (%d+)\n")
  return service, status, tonumber(ttl)
end

local function count(hash, field, by)
  local n = redis.call("HINCRBY", hash, field, by)
  if n <= 0 then redis.call("HDEL", hash, field) end
end

if eureka then redis.call("SET", FOLLOWED, "1", "PX", DAY_MS) end

-- The change index after this script's changes (nil until one is made or read).
local index_now
-- Redis's clock in microseconds: an index never starts below it, so an index that expired with
-- an idle namespace (or that Redis lost) starts again above every value it had (two changes a
-- microsecond apart are more than one script can make).
local function clock_micros()
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function clock_text()
  return t[1] .. string.format("%06d", tonumber(t[2]))
end

-- Moves the change index by one.
local function next_index()
  local n = redis.call("INCR", INDEX)
  if not index_now and n < clock_micros() then
    n = clock_micros()
    redis.call("SET", INDEX, clock_text())
  end
  index_now = n
  return string.format("%.0f", n)
end

-- The index as it stands. The key expires only once its namespace is empty (see `settled`),
-- so a namespace holding instances lacks it only if Redis lost it: it starts again from the
-- clock, stored, so every node reads the same one.
local function current_index()
  if index_now then return index_now end
  local held = redis.call("GET", INDEX)
  if held then return tonumber(held) end
  if redis.call("EXISTS", RECORDS) == 0 then return 0 end
  redis.call("SET", INDEX, clock_text())
  index_now = clock_micros()
  return index_now
end

-- The index key lives as long as the namespace holds instances, and 24 h after it empties.
local function settle_index()
  if not index_now then return end
  if redis.call("EXISTS", RECORDS) == 1 then
    redis.call("PERSIST", INDEX)
  else
    redis.call("PEXPIRE", INDEX, DAY_MS)
  end
end

-- Records one change: version, change log (when followed), index, message to the other nodes.
local function changed(kind, id, value)
  redis.call("INCR", VERSION)
  redis.call("PEXPIRE", VERSION, DAY_MS)
  if redis.call("EXISTS", FOLLOWED) == 1 then
    redis.call("ZADD", LOG_TIMES, now, id)
    redis.call("HSET", LOG, id, kind .. value)
    redis.call("PEXPIRE", LOG_TIMES, RETENTION_MS + 1000)
    redis.call("PEXPIRE", LOG, RETENTION_MS + 1000)
  end
  local service = header(value)
  redis.call("PUBLISH", CHANNEL, node .. " " .. string.sub(T, 7, -2) .. " " .. kind .. " " .. service .. " " .. hex(id) .. " " .. next_index())
end

local function prune_log()
  local old = redis.call("ZRANGEBYSCORE", LOG_TIMES, "-inf", "(" .. (now - RETENTION_MS))
  for _, id in ipairs(old) do redis.call("HDEL", LOG, id) end
  if #old > 0 then redis.call("ZREMRANGEBYSCORE", LOG_TIMES, "-inf", "(" .. (now - RETENTION_MS)) end
end

-- Takes an id out of the record, its indexes, its deadline and the counts; returns its value.
local function unlink(id)
  local value = redis.call("HGET", RECORDS, id)
  if not value then return nil end
  local service, status = header(value)
  local keys = redis.call("HGET", INDEXES, id)
  if keys then
    for suffix in string.gmatch(keys, "%S+") do redis.call("SREM", T .. ":" .. suffix, id) end
  end
  redis.call("HDEL", RECORDS, id)
  redis.call("HDEL", INDEXES, id)
  redis.call("ZREM", DEADLINES, id)
  count(SERVICES, service, -1)
  count(STATUSES, status, -1)
  return value
end

local function link(id, value, keys, ttl)
  local service, status = header(value)
  redis.call("HSET", RECORDS, id, value)
  redis.call("HSET", INDEXES, id, keys)
  for suffix in string.gmatch(keys, "%S+") do redis.call("SADD", T .. ":" .. suffix, id) end
  count(SERVICES, service, 1)
  count(STATUSES, status, 1)
  if ttl >= 0 then redis.call("ZADD", DEADLINES, now + ttl, id) end
end

-- Removes what expired before now, once: returns the values removed.
local function reap()
  local due = redis.call("ZRANGEBYSCORE", DEADLINES, "-inf", "(" .. now, "LIMIT", 0, REAP_BATCH)
  local gone = {}
  for _, id in ipairs(due) do
    local value = unlink(id)
    if value then
      changed("E", id, value)
      gone[#gone + 1] = value
    end
  end
  return gone
end

-- True while the id holds a record whose deadline has not passed.
local function live(id)
  if redis.call("HEXISTS", RECORDS, id) == 0 then return false end
  local deadline = redis.call("ZSCORE", DEADLINES, id)
  return (not deadline) or tonumber(deadline) >= now
end

-- Values and deadlines (-1: none) of ids, skipping ids whose deadline has passed.
local function read(ids)
  local out = {now}
  for i = 1, #ids, 512 do
    local chunk = {}
    for j = i, math.min(i + 511, #ids) do chunk[#chunk + 1] = ids[j] end
    local values = redis.call("HMGET", RECORDS, unpack(chunk))
    local deadlines = redis.call("ZMSCORE", DEADLINES, unpack(chunk))
    for j = 1, #chunk do
      local deadline = deadlines[j] and tonumber(deadlines[j]) or -1
      if values[j] and (deadline < 0 or deadline >= now) then
        out[#out + 1] = values[j]
        out[#out + 1] = deadline
      end
    end
  end
  return out
end

local gone = reap()
-- Every answer but a heartbeat's: the operation's result, the expiries reaped, the index after.
local function done(result)
  local index = current_index()
  settle_index()
  return {result, gone, index}
end
-- Reads that cannot filter by deadline themselves (service names, counts, the change log) need
-- every due instance gone first.
if op == "services" or op == "log" or op == "count" or op == "next" then
  while #gone > 0 and #gone % REAP_BATCH == 0 do
    local more = reap()
    if #more == 0 then break end
    for _, value in ipairs(more) do gone[#gone + 1] = value end
  end
end

if op == "reg" then
  -- ARGV: 4 id, 5 value, 6 index keys, 7 ttl ms (-1: never expires), 8 capacity (-1: none)
  local id, value, keys, ttl, capacity = ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
  local existing = live(id)
  if not existing and capacity >= 0 then
    local held = redis.call("HLEN", RECORDS) - redis.call("ZCOUNT", DEADLINES, "-inf", "(" .. now)
    if held >= capacity then return done("full") end
  end
  unlink(id)
  link(id, value, keys, ttl)
  local kind = existing and "P" or "R"
  changed(kind, id, value)
  prune_log()
  return done({kind, ttl >= 0 and now + ttl or -1})
elseif op == "dereg" then
  local id = ARGV[4]
  if not live(id) then return done(false) end
  local value = unlink(id)
  changed("D", id, value)
  prune_log()
  return done({value, redis.call("HLEN", RECORDS)})
elseif op == "mod" then
  -- ARGV: 4 id, 5 the value the edit started from, 6 new value, 7 ttl ms (-1: never expires)
  local id, before, value, ttl = ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
  if not live(id) then return done(0) end
  if redis.call("HGET", RECORDS, id) ~= before then return done(2) end
  local keys = redis.call("HGET", INDEXES, id) or ""
  unlink(id)
  link(id, value, keys, ttl)
  changed("M", id, value)
  prune_log()
  return done({1, ttl >= 0 and now + ttl or -1})
elseif op == "get" then
  return done(read({ARGV[4]}))
elseif op == "members" then
  -- ARGV: 4.. index key suffixes whose members are read (none: the whole namespace)
  if #ARGV < 4 then return done(read(redis.call("HKEYS", RECORDS))) end
  local ids, seen = {}, {}
  for i = 4, #ARGV do
    for _, id in ipairs(redis.call("SMEMBERS", T .. ":" .. ARGV[i])) do
      if not seen[id] then seen[id] = true; ids[#ids + 1] = id end
    end
  end
  return done(read(ids))
elseif op == "services" then
  return done(redis.call("HKEYS", SERVICES))
elseif op == "log" then
  prune_log()
  local version = tonumber(redis.call("GET", VERSION) or "0")
  local oldest = redis.call("ZRANGE", LOG_TIMES, 0, 0, "WITHSCORES")
  local earliest = redis.call("ZRANGE", DEADLINES, 0, 0, "WITHSCORES")
  return done({now, version, redis.call("HGETALL", STATUSES), redis.call("HVALS", LOG),
    oldest[2] or -1, earliest[2] or -1})
elseif op == "version" then
  return done(tonumber(redis.call("GET", VERSION) or "0"))
elseif op == "count" then
  return done(redis.call("HLEN", RECORDS))
elseif op == "index" then
  return done(false)
elseif op == "catalog" then
  -- ARGV: 4.. hex service names a read-only catalog changed on the calling node: the index
  -- moves once, and the other nodes hear of each service (kind "C", no id).
  local moved = next_index()
  for i = 4, #ARGV do
    redis.call("PUBLISH", CHANNEL, node .. " " .. string.sub(T, 7, -2) .. " C " .. ARGV[i] .. "  " .. moved)
  end
  return done(false)
elseif op == "next" then
  -- What the reaper's schedule needs: instances left, and the earliest deadline (-1: none).
  local earliest = redis.call("ZRANGE", DEADLINES, 0, 0, "WITHSCORES")
  return done({redis.call("HLEN", RECORDS), earliest[2] or -1})
end
return redis.error_reply("unknown operation " .. op)
