"""What Sluice sends to Redis, a single server or a cluster alike: the key
of each limit, and the two Lua scripts that admit and settle a call.

Keys: `<key_prefix><kind>:{<scope>}<rest>`, where a limit's key is
`<scope>/<limit>` (the limits stage's `route:gpt/requests`; a key without a
`/` is its own scope). The braces are a Redis Cluster hash tag: every key of
one scope (its buckets, lease set and budget total) lives in one slot, so a
script over one scope's keys runs on one node, atomically. A single Redis
ignores the braces.

Both scripts read the time from the Redis server (`TIME`), so replicas whose
clocks disagree still agree on buckets, leases and windows; every key they
touch is passed in KEYS (none is derived inside a script, as a cluster
requires), and every key expires once it no longer matters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sluice.state.base import (
    Addition,
    Admission,
    BudgetLimit,
    Charge,
    ConcurrencyLimit,
    Lease,
    RateLimit,
)

Args = list[bytes | str | int | float]


def scope_of(key: str) -> str:
    """The scope of a limit's key: what comes before its last `/`."""
    return key.rpartition("/")[0] or key


def state_key(prefix: str, kind: str, key: str) -> str:
    """The Redis key of `key`'s limit of `kind` (rate | leases | total); the
    kind keeps a bucket, a lease set and a total of one key apart, as
    MemoryState keeps them in separate maps."""
    scope = scope_of(key)
    return f"{prefix}{kind}:{{{scope}}}{key[len(scope) :]}"


# What both scripts share: the server's time in seconds, and the limit math
# of MemoryState. A bucket's key holds its TAT and lives until the TAT
# passes, when the bucket is full again. A lease set is a sorted set of lease
# ids scored by expiry, living as long as its last lease. A total's key is a
# hash of its window's index (since the epoch) and its total, so one key
# serves every window: a total of another window reads as 0. It expires
# when its window ends.
_COMMON = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local function num(x) return string.format('%.17g', x) end
local function tat_after(key, count, period, cost)
  local stored = tonumber(redis.call('GET', key)) or now
  return math.max(stored, now) + cost * (period / count)
end
local function set_tat(key, tat)
  redis.call('SET', key, num(tat), 'PX', math.max(1, math.ceil((tat - now) * 1000)))
end
local function window_total(key, period)
  local index = math.floor(now / period)
  local stored = redis.call('HMGET', key, 'window', 'total')
  if tonumber(stored[1]) == index then return tonumber(stored[2]) or 0, index end
  return 0, index
end
"""

# admit: every limit of a call in one script. KEYS: the rate buckets, the
# budget totals, the lease sets. ARGV: how many of each, then per rate count,
# period, cost, take (1 | 0); per budget period, usd; per lease set limit,
# lease_seconds, the new lease id. Returns {1} when admitted (rates with take
# taken, a lease added to each set), else {0, the 1-based index in KEYS of
# the limit that refused, its wait ('' when waiting cannot help)}, having
# taken nothing.
ADMIT = (
    _COMMON
    + """
local nrates, nbudgets, nleases = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local arg = 4
local refused, wait = nil, -1
local taken = {}
for i = 1, nrates do
  local count, period, cost = tonumber(ARGV[arg]), tonumber(ARGV[arg + 1]), tonumber(ARGV[arg + 2])
  local over
  if cost > count then
    over = math.huge
  else
    local tat = tat_after(KEYS[i], count, period, cost)
    over = tat - now - period
    if over <= 1e-9 then
      over = nil
      if ARGV[arg + 3] == '1' then taken[#taken + 1] = {KEYS[i], tat} end
    end
  end
  if over and over > wait then refused, wait = i, over end
  arg = arg + 4
end
for i = nrates + 1, nrates + nbudgets do
  local period = tonumber(ARGV[arg])
  if window_total(KEYS[i], period) >= tonumber(ARGV[arg + 1]) then
    local left = period - now % period
    if left > wait then refused, wait = i, left end
  end
  arg = arg + 2
end
if refused then
  if wait == math.huge then return {0, refused, ''} end
  return {0, refused, num(wait)}
end
local first = nrates + nbudgets
for i = first + 1, first + nleases do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', num(now))
  if redis.call('ZCARD', KEYS[i]) >= tonumber(ARGV[arg + 3 * (i - first - 1)]) then
    return {0, i, ''}
  end
end
for _, take in ipairs(taken) do set_tat(take[1], take[2]) end
for i = first + 1, first + nleases do
  redis.call('ZADD', KEYS[i], num(now + tonumber(ARGV[arg + 1])), ARGV[arg + 2])
  local last = redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')
  redis.call('PEXPIRE', KEYS[i], math.max(1, math.ceil((tonumber(last[2]) - now) * 1000)))
  arg = arg + 3
end
return {1}
"""
)

# settle: what ends a call in one script. KEYS: the lease sets, the rate
# buckets, the budget totals. ARGV: how many of each, then per lease its id;
# per charge count, period, cost; per addition period, amount.
SETTLE = (
    _COMMON
    + """
local nleases, ncharges, nadditions = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local arg = 4
for i = 1, nleases do
  redis.call('ZREM', KEYS[i], ARGV[arg])
  arg = arg + 1
end
for i = nleases + 1, nleases + ncharges do
  local count, period, cost = tonumber(ARGV[arg]), tonumber(ARGV[arg + 1]), tonumber(ARGV[arg + 2])
  set_tat(KEYS[i], tat_after(KEYS[i], count, period, cost))
  arg = arg + 3
end
for i = nleases + ncharges + 1, nleases + ncharges + nadditions do
  local period = tonumber(ARGV[arg])
  local total, index = window_total(KEYS[i], period)
  redis.call('HSET', KEYS[i], 'window', string.format('%.0f', index),
    'total', num(total + tonumber(ARGV[arg + 1])))
  redis.call('PEXPIREAT', KEYS[i], string.format('%.0f', math.ceil((index + 1) * period * 1000)))
  arg = arg + 2
end
return 1
"""
)


def admit_arguments(
    prefix: str,
    rates: Sequence[RateLimit],
    budgets: Sequence[BudgetLimit],
    concurrency: Sequence[ConcurrencyLimit],
    leases: Sequence[Lease],
) -> tuple[list[str], Args]:
    """KEYS and ARGV of ADMIT for these limits, `leases` the ones it adds."""
    keys = [state_key(prefix, "rate", rate.key) for rate in rates]
    keys += [state_key(prefix, "total", budget.key) for budget in budgets]
    keys += [state_key(prefix, "leases", sessions.key) for sessions in concurrency]
    args: Args = [len(rates), len(budgets), len(concurrency)]
    for rate in rates:
        args += [rate.rate.count, rate.rate.period, rate.cost, int(rate.take)]
    for budget in budgets:
        args += [budget.period, budget.usd]
    for sessions, lease in zip(concurrency, leases, strict=True):
        args += [sessions.limit, sessions.lease_seconds, lease.id]
    return keys, args


def admission_of(
    answer: Sequence[Any],
    limits: Sequence[RateLimit | BudgetLimit | ConcurrencyLimit],
    leases: tuple[Lease, ...],
) -> Admission:
    """What ADMIT's `answer` decided; `limits` in the order of its KEYS."""
    if answer[0]:
        return Admission(leases=leases)
    wait = answer[2]
    return Admission(
        refused=limits[int(answer[1]) - 1].key, retry_after=float(wait) if wait else None
    )


def settle_arguments(
    prefix: str,
    leases: Sequence[Lease],
    charges: Sequence[Charge],
    additions: Sequence[Addition],
) -> tuple[list[str], Args]:
    """KEYS and ARGV of SETTLE."""
    keys = [state_key(prefix, "leases", lease.key) for lease in leases]
    keys += [state_key(prefix, "rate", charge.key) for charge in charges]
    keys += [state_key(prefix, "total", addition.key) for addition in additions]
    args: Args = [len(leases), len(charges), len(additions)]
    for lease in leases:
        args.append(lease.id)
    for charge in charges:
        args += [charge.rate.count, charge.rate.period, charge.cost]
    for addition in additions:
        args += [addition.period, addition.amount]
    return keys, args
