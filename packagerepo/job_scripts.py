"""The Lua scripts behind the job store's atomic state transitions.

Each runs in Redis as one step, so a redelivered message, a reaper and a
cancel request can never move a job backwards or out of a terminal state.
``packagerepo.jobs`` registers them; the KEYS and ARGV they take are listed
where it calls them.
"""


# Appends the event ARGV[n] to the log KEYS[log] and publishes it on the
# channel KEYS[channel] as "<seq> <event>"; shared by the scripts below.
def _append_event(log: int, channel: int, event: int, ttl: int) -> str:
    return f"""
local seq = redis.call('RPUSH', KEYS[{log}], ARGV[{event}])
redis.call('EXPIRE', KEYS[{log}], ARGV[{ttl}])
redis.call('PUBLISH', KEYS[{channel}], seq .. ' ' .. ARGV[{event}])
"""


# queued -> running; bumps attempts, records the worker, leases the job,
# appends the "running" event and answers {'claimed', field, value, ...}.
# A tenant already running its cap of jobs gets 'deferred' instead: the job
# waits in the tenant's deferred set until one of its jobs ends.
CLAIM = (
    """
-- A message for the job arrived: it is no longer "sent and unseen".
redis.call('ZREM', KEYS[8], ARGV[4])
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= '"queued"' then return status or false end
if redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[7]) then
  redis.call('ZADD', KEYS[4], 'NX', ARGV[8], ARGV[5])
  redis.call('EXPIRE', KEYS[4], ARGV[6])
  redis.call('SADD', KEYS[5], ARGV[9])
  return 'deferred'
end
redis.call('HSET', KEYS[1], 'status', '"running"', 'started_at', ARGV[1],
           'worker', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('SADD', KEYS[3], ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[6])
"""
    + _append_event(log=6, channel=7, event=10, ttl=11)
    + """
local job = redis.call('HGETALL', KEYS[1])
table.insert(job, 1, 'claimed')
return job
"""
)

# running|queued -> a terminal state, with the given fields; sets the TTL
# and appends the "done" event, so no job ends without one. With an owner
# (ARGV[5]) only the claim that holds the job may end it: a worker that was
# paused past its lease cannot end a job another worker re-ran.
FINISH = (
    """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= '"running"' and status ~= '"queued"' then return status or false end
if ARGV[5] ~= '' and redis.call('HGET', KEYS[1], 'worker') ~= ARGV[5] then
  return 'not-owner'
end
for i = 6, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('SREM', KEYS[3], string.match(ARGV[2], '/(.*)$'))
"""
    + _append_event(log=5, channel=6, event=3, ttl=4)
    + """
return 'finished'
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
RELEASE = """
local free = tonumber(ARGV[1]) - redis.call('SCARD', KEYS[1])
if free <= 0 then return {} end
local popped = redis.call('ZPOPMIN', KEYS[2], free)
local ids = {}
for i = 1, #popped, 2 do
  table.insert(ids, popped[i])
  redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2] .. '/' .. popped[i])
end
if redis.call('ZCARD', KEYS[2]) == 0 then redis.call('SREM', KEYS[3], ARGV[2]) end
return ids
"""

# Appends an event to the job's log and publishes it; answers its seq.
EVENT = _append_event(log=1, channel=2, event=1, ttl=2) + "return seq\n"

# A node ended: store the node log and progress, append its "node" event;
# only for the claim that holds the job (ARGV[5]).
RECORD_NODE = (
    """
if redis.call('HGET', KEYS[1], 'worker') ~= ARGV[5] then return 0 end
redis.call('HSET', KEYS[1], 'nodes', ARGV[1], 'progress', ARGV[2])
"""
    + _append_event(log=2, channel=3, event=3, ttl=4)
    + "return seq\n"
)
