"""The Lua scripts of the site's state: every one that touches ``shard:<id>``.

(The dispatcher lease keeps its own in :mod:`dispatcher.lease`: it touches only the
``lease``, ``epoch`` and ``identity`` keys it is handed.)

Each script is one atomic step against every other writer (the dispatcher, the
node that runs the shard, a node that restarts, the CLI). Callers register them
with ``client.register_script``; keys are named by :mod:`dmg.site.keys` (scripts
that get the prefix in ``ARGV[1]`` derive ``queued:<node>``, ``running:<node>``,
``pending``, ``wake`` and ``epoch`` from it, as that table spells them).

================== ================================= =======================================
script             called by                         what it does to ``shard:<id>``
================== ================================= =======================================
NEW_ATTEMPT        SiteState.new_attempt (placement) bumps ``attempt`` (or sends ``unsent``)
START_RUN          attempts.begin_run (a worker)     ``state`` running, counts a delivery
MARK_FINISHED      SiteState.mark_finished           ``state`` done/failed if current
FINISH_RUN         attempts.finish_run (a worker)    MARK_FINISHED, final report and result
FINISH_THEN_START  attempts.finish_run (a worker)    FINISH_RUN, then START_RUN of the next shard
REQUEUE            attempts.requeue                  bumps ``attempt``, kept ``unsent``
REISSUE            attempts.reissue (new dispatcher) bumps ``attempt`` on the same node
MOVE_QUEUED        dispatcher.rebalance.move_queued  bumps ``attempt``, moves the node
RECORD_PART        SplitObjects.record_part          reads ``attempt`` (fences a part)
TAKE_OVER, FINISH  SplitObjects                      the split commit marker only
SETTLE_REPORTS     dispatcher.reports (the sender)   none: ``placements``, fenced by ``epoch``
CLAIM_IDENTITY ... SiteState (identity stamp)        none: ``identity``, ``hb:<node>``
RECORD_PLAN        plans.record_plan (the planner)   creates it: ``attempt`` 0, ``spec``, queued
PLACE_SHARD        placing.place_shard (placement)   as NEW_ATTEMPT, + report, message, pending
PLACE_PACKED       placing.place_packed (placement)  PLACE_SHARD for several, one message
================== ================================= =======================================

``attempt`` only grows: every script that changes a shard's node or re-sends it
bumps it, which fences the older attempt (:mod:`dmg.site.fencing`).
"""

from __future__ import annotations

# KEYS: shard hash. ARGV: prefix, shard id, node, queued state, epoch ('' = unfenced).
NEW_ATTEMPT = """
if ARGV[5] ~= '' and redis.call('GET', ARGV[1] .. 'epoch') ~= ARGV[5] then
  return 0
end
local previous = redis.call('HGET', KEYS[1], 'node')
if previous and previous ~= '' then
  redis.call('SREM', ARGV[1] .. 'queued:' .. previous, ARGV[2])
  redis.call('SREM', ARGV[1] .. 'carried:' .. previous, ARGV[2])
  redis.call('SREM', ARGV[1] .. 'running:' .. previous, ARGV[2])
end
-- A requeued shard's attempt was bumped already and never sent: send that number.
local unsent = redis.call('HGET', KEYS[1], 'unsent')
local attempt
if unsent and unsent ~= '' and unsent == redis.call('HGET', KEYS[1], 'attempt') then
  attempt = tonumber(unsent)
else
  attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
end
redis.call('HDEL', KEYS[1], 'unsent', 'ended_reason', 'ended_at')
redis.call('HSET', KEYS[1], 'node', ARGV[3], 'state', ARGV[4], 'epoch', ARGV[5], 'deliveries', 0,
           'runner', '')
redis.call('SADD', ARGV[1] .. 'queued:' .. ARGV[3], ARGV[2])
return attempt
"""


# KEYS: shard hash, queued set, running set, started set, identity hash, the run's
#       cancel flag (optional), the run's bandwidth limit (optional, with KEYS[6]).
# ARGV: attempt, shard id, node, running state, my runner, runner seen, seen alive (1/0),
#       epoch of the message ('' when unknown), staging id, identity token ('' = none:
#       nothing checked nor stamped), identity JSON, the node's carried set ('' = the
#       message carries this shard alone).
# -> {outcome, deliveries, spec, cancelled (1/0, with KEYS[6]), bandwidth limit ('' = none
#    set, with KEYS[7])}; 'retry' when the runner
#    changed since the caller looked;
#    {'foreign', 0, owner JSON} when the namespace is another gateway's (nothing written).
#    The identity is checked (and an empty namespace stamped) first, as CLAIM_IDENTITY does,
#    so a worker starts an attempt in one round trip.
START_RUN = """
local token = ARGV[10]
if token ~= '' then
  local stamp = redis.call('HGET', KEYS[5], 'token')
  if not stamp then
    redis.call('HSET', KEYS[5], 'token', token, 'json', ARGV[11])
  elseif stamp ~= token then
    return {'foreign', 0, redis.call('HGET', KEYS[5], 'json') or stamp}
  end
end
local h = redis.call('HMGET', KEYS[1], 'attempt', 'state', 'runner', 'epoch', 'node', 'spec')
if h[1] ~= ARGV[1] then return {'stale', 0} end
if ARGV[8] ~= '' and h[4] and h[4] ~= '' and h[4] ~= ARGV[8] then return {'stale', 0} end
if h[2] == 'done' or h[2] == 'failed' then return {'stale', 0} end
if h[5] and h[5] ~= '' and h[5] ~= ARGV[3] then return {'stale', 0} end
local runner = h[3] or ''
if runner ~= ARGV[6] then return {'retry', 0} end
if h[2] == ARGV[4] and runner ~= '' and ARGV[7] == '1' then
  redis.call('HINCRBY', KEYS[1], 'duplicates', 1)
  return {'duplicate', 0}
end
local deliveries = redis.call('HINCRBY', KEYS[1], 'deliveries', 1)
redis.call('HSET', KEYS[1], 'state', ARGV[4], 'runner', ARGV[5], 'node', ARGV[3])
redis.call('SREM', KEYS[2], ARGV[2])
if ARGV[12] and ARGV[12] ~= '' then
  redis.call('SREM', ARGV[12], ARGV[2])
end
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('SADD', KEYS[4], ARGV[9])
local cancelled = 0
local limit = ''
if KEYS[7] then
  -- The cancel flag and the limit are plain strings (SET): both in one read.
  local flags = redis.call('MGET', KEYS[6], KEYS[7])
  if flags[1] then cancelled = 1 end
  limit = flags[2] or ''
elseif KEYS[6] then
  cancelled = redis.call('EXISTS', KEYS[6])
end
return {'started', deliveries, h[6] or '', cancelled, limit}
"""


# KEYS: shard hash, queued set, running set, started set.
# ARGV: attempt, shard id, node, end state, staging id.
MARK_FINISHED = """
redis.call('SREM', KEYS[4], ARGV[5])
local current = redis.call('HGET', KEYS[1], 'attempt') == ARGV[1]
if not current and redis.call('HGET', KEYS[1], 'node') == ARGV[3] then
  return 0
end
redis.call('SREM', KEYS[2], ARGV[2])
redis.call('SREM', KEYS[3], ARGV[2])
if current then
  redis.call('HSET', KEYS[1], 'state', ARGV[4])
end
return 1
"""


# KEYS: shard hash. ARGV: prefix, shard id, node, epoch ('' = not the dispatcher), pending state,
#       why the old attempt ended, when (POSIX seconds).
# -> the new attempt; 0 when the shard is not queued/running on that node; -1 when the epoch
#    is superseded. The new attempt is *unsent*: placement sends it without a second bump.
REQUEUE = """
if ARGV[4] ~= '' and redis.call('GET', ARGV[1] .. 'epoch') ~= ARGV[4] then return -1 end
redis.call('SREM', ARGV[1] .. 'queued:' .. ARGV[3], ARGV[2])
redis.call('SREM', ARGV[1] .. 'carried:' .. ARGV[3], ARGV[2])
redis.call('SREM', ARGV[1] .. 'running:' .. ARGV[3], ARGV[2])
local h = redis.call('HMGET', KEYS[1], 'node', 'state')
if h[1] ~= ARGV[3] or (h[2] ~= 'queued' and h[2] ~= 'running') then return 0 end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'node', '', 'state', ARGV[5], 'deliveries', 0, 'runner', '',
           'unsent', attempt, 'ended_reason', ARGV[6], 'ended_at', ARGV[7])
redis.call('LREM', ARGV[1] .. 'pending', 0, ARGV[2])
redis.call('LPUSH', ARGV[1] .. 'pending', ARGV[2])
if redis.call('LPUSH', ARGV[1] .. 'wake', 1) > 1 then
  redis.call('LTRIM', ARGV[1] .. 'wake', 0, 0)
end
return attempt
"""


# KEYS: shard hash. ARGV: prefix, node, epoch, attempt seen, queued state, shard id.
# -> the new attempt; 0 when the shard moved on (started, finished, elsewhere); -1 superseded.
REISSUE = """
if redis.call('GET', ARGV[1] .. 'epoch') ~= ARGV[3] then return -1 end
local h = redis.call('HMGET', KEYS[1], 'node', 'state', 'attempt')
if h[1] ~= ARGV[2] or h[2] ~= ARGV[5] or h[3] ~= ARGV[4] then return 0 end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'deliveries', 0, 'runner', '', 'epoch', ARGV[3])
-- The new attempt goes in a message of its own: no longer carried by a packed one.
redis.call('SREM', ARGV[1] .. 'carried:' .. ARGV[2], ARGV[6])
return attempt
"""


# KEYS: shard hash. ARGV: prefix, shard id, donor, target, epoch ('' = unfenced), attempt seen,
#       queued state. -> the new attempt; 0 when the shard moved on; -1 when the epoch is superseded.
MOVE_QUEUED = """
if ARGV[5] ~= '' and redis.call('GET', ARGV[1] .. 'epoch') ~= ARGV[5] then return -1 end
local h = redis.call('HMGET', KEYS[1], 'node', 'state', 'attempt')
if h[1] ~= ARGV[3] or h[2] ~= ARGV[7] or h[3] ~= ARGV[6] then return 0 end
redis.call('SREM', ARGV[1] .. 'queued:' .. ARGV[3], ARGV[2])
redis.call('SREM', ARGV[1] .. 'carried:' .. ARGV[3], ARGV[2])
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'node', ARGV[4], 'epoch', ARGV[5], 'deliveries', 0, 'runner', '')
redis.call('SADD', ARGV[1] .. 'queued:' .. ARGV[4], ARGV[2])
return attempt
"""


# KEYS: shard hash, parts hash, commit marker.
# ARGV: attempt, part number, part JSON, parts total, owner, ttl.
RECORD_PART = """
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 'stale' end
local marker = redis.call('GET', KEYS[3])
if marker == 'done' or marker == 'aborted' then return marker end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[6])
if marker then return 'held' end
if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[4]) then
  redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[6])
  return 'commit'
end
return 'recorded'
"""


# KEYS: commit marker. ARGV: the owner seen, the new owner, ttl. -> 1 when taken over.
TAKE_OVER = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""


# KEYS: commit marker. ARGV: the final state, ttl. -> 1 unless already done/aborted.
FINISH = """
local marker = redis.call('GET', KEYS[1])
if marker == 'done' or marker == 'aborted' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


# The stamp check every identity-checked write begins with. KEYS[1]: the identity hash;
# ARGV[1], ARGV[2]: our token ('' = unknown: nothing checked nor stamped) and JSON.
# Stamps an empty namespace; the owner's JSON when the namespace is another gateway's,
# else false.
FOREIGN = """
local function foreign()
  if ARGV[1] == '' then
    return false
  end
  local token = redis.call('HGET', KEYS[1], 'token')
  if not token then
    redis.call('HSET', KEYS[1], 'token', ARGV[1], 'json', ARGV[2])
    return false
  end
  if token ~= ARGV[1] then
    return redis.call('HGET', KEYS[1], 'json') or token
  end
  return false
end
"""


CLAIM_IDENTITY = FOREIGN + "return foreign()"


# KEYS: identity, heartbeat, nodes. ARGV: token, identity JSON, beat, ttl ms, node.
CHECKED_HEARTBEAT = FOREIGN + """
local owner = foreign()
if owner then
  return owner
end
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
redis.call('SADD', KEYS[3], ARGV[5])
return false
"""


# KEYS: a report list, the lease epoch key. ARGV: the sender's epoch, how many reports to
# remove from the head, reports to put back at the tail (to be sent again later).
# -> 1; 0 (nothing changed) when the epoch is no longer the sender's.
SETTLE_REPORTS = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('LTRIM', KEYS[1], tonumber(ARGV[2]), -1)
for i = 3, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
return 1
"""


# KEYS: plan record, placements list, cancelled flag, pending list, wake list, then one shard
# hash per shard. ARGV: plan JSON, plan TTL s, the plan's entry of the placements list, queued
# state, then one (shard id, spec JSON) pair per shard hash.
# -> 0: a plan was recorded already (nothing written); 1: recorded and queued; 2: recorded,
#    not queued (the run was cancelled meanwhile).
RECORD_PLAN = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return 0
end
local shards = #KEYS - 5
for i = 1, shards do
  local key = KEYS[5 + i]
  if redis.call('EXISTS', key) == 0 then
    -- A new shard (the usual case): its hash in one command.
    redis.call('HSET', key, 'attempt', 0, 'spec', ARGV[4 + 2 * i], 'state', ARGV[4])
  else
    redis.call('HSETNX', key, 'attempt', 0)
    redis.call('HSET', key, 'spec', ARGV[4 + 2 * i])
    redis.call('HSETNX', key, 'state', ARGV[4])
  end
end
redis.call('RPUSH', KEYS[2], ARGV[3])
if redis.call('EXISTS', KEYS[3]) == 1 then
  return 2
end
for i = 1, shards do
  redis.call('RPUSH', KEYS[4], ARGV[3 + 2 * i])
end
-- The wake list holds one entry at most: trimmed only when it held one already.
if shards > 0 and redis.call('LPUSH', KEYS[5], 1) > 1 then
  redis.call('LTRIM', KEYS[5], 0, 0)
end
return 1
"""


# The placement of one shard in one step (dmg.site.placing.place_shard): the new attempt (as
# NEW_ATTEMPT, only if it is the attempt the caller built the message for), its placement
# report, the pending entry dropped, and the Celery message on the node's queue with its
# task-sent event, so no attempt exists without its report and its message, nor the reverse.
# KEYS: shard hash, placements list, pending list, the node's broker queue.
# ARGV: prefix, shard id, node, queued state, epoch ('' = unfenced), attempt expected,
#       report entry ('' = none), message, event channel ('' = none), event.
# -> the attempt; 0 when the epoch is superseded; -1 when the shard changed since the caller
#    read it (placed, requeued, gone): nothing is written then.
PLACE_SHARD = """
if ARGV[5] ~= '' and redis.call('GET', ARGV[1] .. 'epoch') ~= ARGV[5] then
  return 0
end
local h = redis.call('HMGET', KEYS[1], 'node', 'attempt', 'unsent', 'spec', 'ended_reason', 'ended_at')
if not h[4] or (h[1] and h[1] ~= '') then
  return -1
end
local current = tonumber(h[2] or '0') or 0
local attempt = current + 1
if h[3] and h[3] ~= '' and h[3] == h[2] then
  attempt = current
end
if attempt ~= tonumber(ARGV[6]) then
  return -1
end
-- A first attempt has none of these: no HDEL then (a command per placement).
if h[3] or h[5] or h[6] then
  redis.call('HDEL', KEYS[1], 'unsent', 'ended_reason', 'ended_at')
end
redis.call('HSET', KEYS[1], 'attempt', attempt, 'node', ARGV[3], 'state', ARGV[4], 'epoch', ARGV[5],
           'deliveries', 0, 'runner', '')
redis.call('SADD', ARGV[1] .. 'queued:' .. ARGV[3], ARGV[2])
if ARGV[7] ~= '' then
  redis.call('RPUSH', KEYS[2], ARGV[7])
end
redis.call('LREM', KEYS[3], 1, ARGV[2])
redis.call('LPUSH', KEYS[4], ARGV[8])
if ARGV[9] ~= '' then
  redis.call('PUBLISH', ARGV[9], ARGV[10])
end
return attempt
"""


# The placement of several small shards carried by ONE Celery message (dmg.site.placing.
# place_packed): for each shard what PLACE_SHARD does (attempt, report, pending entry), every
# shard but the first also in ``carried:<node>``, then the one message and its event. All or
# nothing: every shard is checked before anything is written.
# KEYS: placements list, pending list, the node's broker queue, then one shard hash per shard.
# ARGV: prefix, node, queued state, epoch ('' = unfenced), message, event channel ('' = none),
#       event, then per shard: shard id, attempt expected, report entry ('' = none).
# -> the number of shards placed; 0 when the epoch is superseded; -i when shard i (1-based)
#    changed since the caller read it: nothing is written then.
PLACE_PACKED = """
if ARGV[4] ~= '' and redis.call('GET', ARGV[1] .. 'epoch') ~= ARGV[4] then
  return 0
end
local count = #KEYS - 3
local cleanup = {}
for i = 1, count do
  local h = redis.call('HMGET', KEYS[3 + i], 'node', 'attempt', 'unsent', 'spec', 'ended_reason', 'ended_at')
  if not h[4] or (h[1] and h[1] ~= '') then
    return -i
  end
  local current = tonumber(h[2] or '0') or 0
  local attempt = current + 1
  if h[3] and h[3] ~= '' and h[3] == h[2] then
    attempt = current
  end
  if attempt ~= tonumber(ARGV[6 + 3 * i]) then
    return -i
  end
  cleanup[i] = h[3] or h[5] or h[6]
end
local queued = ARGV[1] .. 'queued:' .. ARGV[2]
local carried = ARGV[1] .. 'carried:' .. ARGV[2]
for i = 1, count do
  local shard_id = ARGV[5 + 3 * i]
  if cleanup[i] then
    redis.call('HDEL', KEYS[3 + i], 'unsent', 'ended_reason', 'ended_at')
  end
  redis.call('HSET', KEYS[3 + i], 'attempt', ARGV[6 + 3 * i], 'node', ARGV[2], 'state', ARGV[3],
             'epoch', ARGV[4], 'deliveries', 0, 'runner', '')
  redis.call('SADD', queued, shard_id)
  if i > 1 then
    redis.call('SADD', carried, shard_id)
  end
  if ARGV[7 + 3 * i] ~= '' then
    redis.call('RPUSH', KEYS[1], ARGV[7 + 3 * i])
  end
  redis.call('LREM', KEYS[2], 1, shard_id)
end
redis.call('LPUSH', KEYS[3], ARGV[5])
if ARGV[6] ~= '' then
  redis.call('PUBLISH', ARGV[6], ARGV[7])
end
return count
"""


# A Celery task result stored as workers.resultstore stores it: ``value`` (the encoded meta)
# under ``key`` for ``keep`` seconds (0: forever), published on the key's channel (a waiting
# AsyncResult.get wakes), unless the key holds a SUCCESS already (Celery's rule: a late
# duplicate never overwrites it). -> 0 when a stored SUCCESS was kept, 1 when written.
STORE_RESULT = """
local function store_result(key, value, keep)
  local old = redis.call('GET', key)
  if old then
    local ok, meta = pcall(cjson.decode, old)
    if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then
      return 0
    end
  end
  keep = tonumber(keep)
  if keep > 0 then
    redis.call('SETEX', key, keep, value)
  else
    redis.call('SET', key, value)
  end
  redis.call('PUBLISH', key, value)
  return 1
end
"""


# The end of an attempt on its node in one step: its final report queued in the node's
# outbox (waking the outbox's sender when the outbox was empty), the bytes it moved
# counted, MARK_FINISHED, the dispatcher's placement loop woken (a slot freed up), and
# (optional) the task's result stored (STORE_RESULT).
# KEYS: shard hash, queued set, running set, started set (as MARK_FINISHED), outbox list,
#       outbox wake list, moved hash, dispatcher wake list, the task's result key (optional).
# ARGV: attempt, shard id, node, end state, staging id (as MARK_FINISHED), outbox entry
#       JSON ('' = none), bytes moved, the result's value and seconds to keep it (with KEYS[9]).
# -> MARK_FINISHED's answer.
_FINISH_RUN_BODY = """
local function mark_finished()
""" + MARK_FINISHED + """
end
if KEYS[9] then
  store_result(KEYS[9], ARGV[8], ARGV[9])
end
if ARGV[6] ~= '' and redis.call('RPUSH', KEYS[5], ARGV[6]) == 1 then
  redis.call('LPUSH', KEYS[6], 1)
  redis.call('LTRIM', KEYS[6], 0, 0)
end
if tonumber(ARGV[7]) > 0 then
  redis.call('HINCRBY', KEYS[7], 'in', ARGV[7])
  redis.call('HINCRBY', KEYS[7], 'out', ARGV[7])
end
local marked = mark_finished()
if redis.call('LPUSH', KEYS[8], 1) > 1 then
  redis.call('LTRIM', KEYS[8], 0, 0)
end
return marked
"""
FINISH_RUN = STORE_RESULT + _FINISH_RUN_BODY


# The end of one attempt and the start of the next shard a packed message carries, in one
# round trip (dmg.site.attempts.finish_run's ``then_start``): FINISH_RUN, then START_RUN, each
# on its own part of KEYS and ARGV, exactly as when called alone (the next shard is checked and
# fenced on its own; its start happens after the end, as when the worker asks for it next).
# KEYS: FINISH_RUN's, then START_RUN's. ARGV: how many of KEYS and of the rest of ARGV are
# FINISH_RUN's, FINISH_RUN's ARGV, then START_RUN's. -> START_RUN's answer.
FINISH_THEN_START = STORE_RESULT + """
local function finish_part(KEYS, ARGV)
""" + _FINISH_RUN_BODY + """
end
local function start_part(KEYS, ARGV)
""" + START_RUN + """
end
local finish_keys, finish_args = tonumber(ARGV[1]), tonumber(ARGV[2])
local fk, fa, sk, sa = {}, {}, {}, {}
for i = 1, #KEYS do
  if i <= finish_keys then fk[#fk + 1] = KEYS[i] else sk[#sk + 1] = KEYS[i] end
end
for i = 3, #ARGV do
  if i <= 2 + finish_args then fa[#fa + 1] = ARGV[i] else sa[#sa + 1] = ARGV[i] end
end
finish_part(fk, fa)
return start_part(sk, sa)
"""
