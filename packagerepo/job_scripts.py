"""The Lua scripts behind the job store's atomic state transitions.

Each runs in Redis as one step, so a redelivered message, a reaper and a
cancel request can never move a job backwards or out of a terminal state.
``packagerepo.jobs`` registers them; the KEYS and ARGV they take are listed
where it calls them.
"""


# Appends the events ARGV[first..last] (Lua expressions) to the log
# KEYS[log] and publishes each on the channel KEYS[channel] as
# "<seq> <event>", leaving the last seq in `seq`; shared by the scripts below.
def _append_events(log: int, channel: int, first: str, last: str, ttl: str) -> str:
    return f"""
local seq = 0
for i = {first}, {last} do
  seq = redis.call('RPUSH', KEYS[{log}], ARGV[i])
  redis.call('PUBLISH', KEYS[{channel}], seq .. ' ' .. ARGV[i])
end
redis.call('EXPIRE', KEYS[{log}], {ttl})
"""


# Node events are numbered within a claim, from 1; the job's `node_events`
# field counts how many its log holds. Of the node events ARGV[first..last],
# numbered from ARGV[number] on, sets `from` to the first the log lacks and
# counts the rest as held: an event sent again (a write whose reply was lost,
# retried by redis-py or by the worker) is appended once.
def _unwritten_node_events(job: int, number: int, first: str, last: str) -> str:
    return f"""
local held = tonumber(redis.call('HGET', KEYS[{job}], 'node_events') or '0')
local from = {first} + math.max(0, held - tonumber(ARGV[{number}]) + 1)
local through = tonumber(ARGV[{number}]) + ({last}) - ({first})
if through > held then redis.call('HSET', KEYS[{job}], 'node_events', through) end
"""


def _append_event(log: int, channel: int, event: int, ttl: int) -> str:
    return _append_events(log, channel, str(event), str(event), f"ARGV[{ttl}]")


# Moves up to (cap - running) of a tenant's deferred jobs, oldest first,
# into the Lua table `released` (which the caller declares) and marks them
# sent; the caller re-sends their messages.
def _release_deferred(
    running: int,
    deferred: int,
    tenants: int,
    sent: int,
    cap: str,
    tenant: str,
    now: str,
) -> str:
    return f"""
local free = tonumber({cap}) - redis.call('SCARD', KEYS[{running}])
if free > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[{deferred}], free)
  for i = 1, #popped, 2 do
    table.insert(released, popped[i])
    redis.call('ZADD', KEYS[{sent}], {now}, {tenant} .. '/' .. popped[i])
  end
  if redis.call('ZCARD', KEYS[{deferred}]) == 0 then
    redis.call('SREM', KEYS[{tenants}], {tenant})
  end
end
"""


# A new queued job: its hash (field pairs ARGV[10..]), tenant pointer, index
# entry, "sent" mark and, unless ARGV[8] is empty, its queue message, all in
# one step. Does nothing and answers 0 when the job exists: a create sent
# again (redis-py repeats a command whose reply was lost) must not reset a
# job a worker has claimed or even finished, nor queue it twice. With a
# fence (ARGV[9], the Idempotency-Key record KEYS[6] must hold) it answers
# -1 and creates nothing when the key names another job.
CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if ARGV[9] ~= '' and redis.call('GET', KEYS[6]) ~= ARGV[9] then return -1 end
redis.call('HSET', KEYS[1], unpack(ARGV, 10))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -tonumber(ARGV[6]) - 1)
redis.call('EXPIRE', KEYS[3], ARGV[7])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[5])
if ARGV[8] ~= '' then redis.call('LPUSH', KEYS[5], ARGV[8]) end
return 1
"""

# queued -> running; bumps attempts, records the worker, leases the job,
# appends the "running" event and answers {'claimed', value, ...}: the values
# of the fields named in ARGV[12..], as the job now has them.
# A tenant already running its cap of jobs gets 'deferred' instead: the job
# waits in the tenant's deferred set until one of its jobs ends.
CLAIM = (
    """
-- A message for the job arrived: it is no longer "sent and unseen".
redis.call('ZREM', KEYS[8], ARGV[4])
local status = redis.call('HGET', KEYS[1], 'status')
-- The same claim sent again (its reply was lost) claims again.
local again = status == '"running"'
  and redis.call('HGET', KEYS[1], 'worker') == ARGV[2]
if not again and status ~= '"queued"' then return status or false end
if again then
  local job = redis.call('HMGET', KEYS[1], unpack(ARGV, 12))
  table.insert(job, 1, 'claimed')
  return job
end
if redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[7]) then
  redis.call('ZADD', KEYS[4], 'NX', ARGV[8], ARGV[5])
  redis.call('EXPIRE', KEYS[4], ARGV[6])
  redis.call('SADD', KEYS[5], ARGV[9])
  return 'deferred'
end
redis.call('HSET', KEYS[1], 'status', '"running"', 'started_at', ARGV[1],
           'worker', ARGV[2])
redis.call('HDEL', KEYS[1], 'node_events')
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('SADD', KEYS[3], ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[6])
"""
    + _append_event(log=6, channel=7, event=10, ttl=11)
    + """
local job = redis.call('HMGET', KEYS[1], unpack(ARGV, 12))
table.insert(job, 1, 'claimed')
return job
"""
)

# running|queued -> a terminal state, with the given fields; sets the TTL,
# appends the node events the runner still held (ARGV[10..9+n], n = ARGV[8],
# numbered from ARGV[9]; those the log has are skipped) and then the "done"
# event, so no job ends without one. With an owner (ARGV[5]) only the claim
# that holds the job may end it: a worker that was paused past its lease
# cannot end a job another worker re-ran. With a cap
# (ARGV[6]) the tenant's deferred jobs that now fit are released in the same
# step: answers {'finished', released id, ...}. Field pairs follow the events.
# The owner that ended the job is kept in ``ended_by``.
# The end is announced on the channel of all ended jobs (KEYS[10]).
FINISH = (
    """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= '"running"' and status ~= '"queued"' then
  -- The same end sent again (its reply was lost) still counts as this
  -- claim's end; its released jobs are left to the reapers.
  if ARGV[5] ~= '' and redis.call('HGET', KEYS[1], 'ended_by') == ARGV[5] then
    return {'finished'}
  end
  return status or false
end
if ARGV[5] ~= '' and redis.call('HGET', KEYS[1], 'worker') ~= ARGV[5] then
  return 'not-owner'
end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'ended_by', ARGV[5]) end
local events = tonumber(ARGV[8])
if #ARGV >= 10 + events then redis.call('HSET', KEYS[1], unpack(ARGV, 10 + events)) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('SREM', KEYS[3], string.match(ARGV[2], '/(.*)$'))
"""
    + _unwritten_node_events(job=1, number=9, first="10", last="9 + events")
    + _append_events(log=5, channel=6, first="from", last="9 + events", ttl="ARGV[4]")
    + _append_event(log=5, channel=6, event=3, ttl=4)
    + """
redis.call('PUBLISH', KEYS[10], ARGV[2])
local released = {}
if ARGV[6] ~= '' then
"""
    + _release_deferred(
        running=3,
        deferred=7,
        tenants=8,
        sent=9,
        cap="ARGV[6]",
        tenant="string.match(ARGV[2], '^(.-)/')",
        now="ARGV[7]",
    )
    + """
end
table.insert(released, 1, 'finished')
return released
"""
)

# running -> queued again (lease lapsed); the reaper re-enqueues the message.
REQUEUE = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= '"running"' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return status or false
end
redis.call('HSET', KEYS[1], 'status', '"queued"', 'worker', 'null')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], string.match(ARGV[1], '/(.*)$'))
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
return 'requeued'
"""

# Up to (cap - running) deferred jobs of a tenant, oldest first, to re-send.
RELEASE = (
    "local released = {}\n"
    + _release_deferred(
        running=1,
        deferred=2,
        tenants=3,
        sent=4,
        cap="ARGV[1]",
        tenant="ARGV[2]",
        now="ARGV[3]",
    )
    + "return released\n"
)

# Appends an event to the job's log and publishes it; answers its seq.
EVENT = _append_event(log=1, channel=2, event=1, ttl=2) + "return seq\n"

# Nodes ended: store the node log and progress, append their "node" events
# (ARGV[6..], numbered from ARGV[5]; those the log has are skipped); only
# for the claim that holds the job (ARGV[4]).
RECORD_NODES = (
    """
if redis.call('HGET', KEYS[1], 'worker') ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[1], 'nodes', ARGV[1], 'progress', ARGV[2])
"""
    + _unwritten_node_events(job=1, number=5, first="6", last="#ARGV")
    + _append_events(log=2, channel=3, first="from", last="#ARGV", ttl="ARGV[3]")
    + "return 1\n"
)
