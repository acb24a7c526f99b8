/**
 * The Lua scripts the fleet runs in Redis (protocol/fleet.md#keys). Each is atomic
 * (Redis runs a script alone), so a flush is applied whole or not at all. The
 * time of a device's last sighting is Redis's own (TIME), so the instances' clocks
 * do not have to agree for it. Standalone Redis / Valkey: the keys of one call may
 * live in different cluster slots, so Redis Cluster is not supported.
 *
 * Numbers pass as decimal strings; byte counts stay below 2^53 (Lua's doubles are
 * exact there: 8 PiB per user and instance).
 */

export interface ScriptDef {
  name: string;
  lua: string;
}

/** The Lua prelude every script that reads the time uses: Redis's clock in ms. */
const NOW_MS = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

/**
 * SYNC: one instance's usage and live devices for a batch of users.
 *   KEYS  per user: u:<user> (hash), d:<user> (sorted set)
 *   ARGV  instance, device TTL ms, then per user: own up, own down ("" for a read
 *         only), n, n IPs
 * The instance's own counts are absolute (its cumulative bytes, from its state file):
 * the fleet totals `up`/`down` grow by the difference to what the store held for it,
 * and only upwards. Sent twice, the second changes nothing (a lost reply is harmless);
 * after an empty restart, the first flush puts the instance's whole count back.
 * Returns per user: fleet up, fleet down, own up and down as they were before this
 * call (to reconcile a state file), own up and down as stored now, devices.
 */
export const SYNC: ScriptDef = {
  name: 'brookSync',
  lua: `${NOW_MS}
local inst, ttl = ARGV[1], tonumber(ARGV[2])
local fields = {inst .. ':up', inst .. ':down'}
local totals = {'up', 'down'}
local out, a = {}, 3
for i = 1, #KEYS / 2 do
  local uk, dk = KEYS[2 * i - 1], KEYS[2 * i]
  local have = redis.call('HMGET', uk, fields[1], fields[2])
  local before = {have[1] or '0', have[2] or '0'}
  for j = 1, 2 do
    local want, h = tonumber(ARGV[a + j - 1]), tonumber(have[j] or '0')
    if want and want > h then
      redis.call('HINCRBY', uk, totals[j], string.format('%.0f', want - h))
      redis.call('HSET', uk, fields[j], ARGV[a + j - 1])
      have[j] = ARGV[a + j - 1]
    end
  end
  local n = tonumber(ARGV[a + 2])
  for k = 1, n do redis.call('ZADD', dk, now, ARGV[a + 2 + k]) end
  a = a + 3 + n
  redis.call('ZREMRANGEBYSCORE', dk, '-inf', now - ttl)
  if n > 0 then redis.call('PEXPIRE', dk, ttl) end
  local fleet = redis.call('HMGET', uk, totals[1], totals[2])
  out[#out + 1] = fleet[1] or '0'
  out[#out + 1] = fleet[2] or '0'
  out[#out + 1] = before[1]
  out[#out + 1] = before[2]
  out[#out + 1] = have[1] or '0'
  out[#out + 1] = have[2] or '0'
  out[#out + 1] = redis.call('ZCARD', dk)
end
return out`,
};

/**
 * ADMIT: may this client IP use this user now? (the device limit across the fleet)
 *   KEYS  d:<user>      ARGV  ip, device TTL ms, limit
 * Drops sightings older than the TTL; an IP already there is refreshed and admitted;
 * a new one is admitted while fewer than `limit` are there. Returns {admitted 0|1, devices}.
 */
export const ADMIT: ScriptDef = {
  name: 'brookAdmit',
  lua: `${NOW_MS}
local k, ip, ttl, limit = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', k, '-inf', now - ttl)
local n = redis.call('ZCARD', k)
if not redis.call('ZSCORE', k, ip) then
  if n >= limit then return {0, n} end
  n = n + 1
end
redis.call('ZADD', k, now, ip)
redis.call('PEXPIRE', k, ttl)
return {1, n}`,
};

/**
 * PUSH: record nonces accepted while the store was out (or lost by an empty restart).
 *   KEYS  r:<nonce>...   ARGV  instance, then one TTL ms per key
 * Returns how many were held by another instance: replays that got through meanwhile
 * (a key holding this instance's own name is a record of ours that had landed late).
 */
export const PUSH: ScriptDef = {
  name: 'brookPush',
  lua: `local taken = 0
for i = 1, #KEYS do
  if not redis.call('SET', KEYS[i], ARGV[1], 'NX', 'PX', ARGV[i + 1]) then
    if redis.call('GET', KEYS[i]) ~= ARGV[1] then taken = taken + 1 end
  end
end
return taken`,
};

export const SCRIPTS: readonly ScriptDef[] = [SYNC, ADMIT, PUSH];
