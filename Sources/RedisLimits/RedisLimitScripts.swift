import Redis

/// The GCRA of ``GCRA`` as Lua scripts run in Redis, so every gateway host takes from one
/// bucket per key atomically, on Redis's own clock (`TIME`, microseconds since the epoch).
///
/// The arithmetic is ``GCRA``'s, step for step: a bucket is one number, its theoretical
/// arrival time (TAT); the caller passes the ``GCRA/emissionInterval`` and
/// ``GCRA/tolerance`` it computed from the key's rate, so the rate-to-interval rule exists
/// once, in Swift. A missing key is a full bucket. Sums and products saturate at 2⁵³ − 1
/// (the largest whole number a Lua double holds exactly) where Swift saturates at
/// `UInt64.max`: a debt that large is years of refusals either way.
///
/// Every write sets the key to expire once its bucket is full again (plus a second of
/// margin): an expired bucket is indistinguishable from a fresh one, so idle keys cost no
/// memory and expiry never grants an extra request.
///
/// Each script returns one bucket's answer as four integers — see ``RedisLimitReply`` —
/// and ``admit`` returns four or eight.
public enum RedisLimitScripts {
    /// What every script starts with: the clock, saturating arithmetic, the bucket's TAT.
    static let prelude = """
        if redis.replicate_commands then redis.replicate_commands() end
        local MAX = 9007199254740991
        local function add(a, b) local s = a + b; if s > MAX then return MAX end; return s end
        local function mul(a, b) local p = a * b; if p > MAX then return MAX end; return p end
        local clock = redis.call('TIME')
        local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
        local function load_tat(key)
          local value = redis.call('GET', key)
          if value then return tonumber(value) end
          return now
        end
        local function store(key, tat)
          local ttl = 1000
          if tat > now then ttl = ttl + math.ceil((tat - now) / 1000) end
          redis.call('SET', key, string.format('%d', tat), 'PX', string.format('%d', ttl))
        end
        local function reset(tat) if tat > now then return tat - now end; return 0 end
        local function remaining(tat, interval, tolerance)
          local room = add(tolerance, interval)
          local ahead = reset(tat)
          if ahead >= room then return 0 end
          return math.floor((room - ahead) / interval)
        end
        local function take(key, interval, tolerance, cost)
          local tat = load_tat(key)
          local new_tat = add(math.max(tat, now), mul(interval, cost))
          local limit = add(add(now, tolerance), interval)
          if new_tat > limit then return {0, new_tat - limit, 0, reset(tat)} end
          store(key, new_tat)
          return {1, 0, remaining(new_tat, interval, tolerance), reset(new_tat)}
        end
        local function check(key, interval, tolerance)
          local tat = load_tat(key)
          local ahead = reset(tat)
          if ahead > tolerance then return {0, ahead - tolerance, 0, reset(tat)} end
          return {1, 0, remaining(tat, interval, tolerance), reset(tat)}
        end
        local function charge(key, interval, tolerance, cost)
          local new_tat = add(math.max(load_tat(key), now), mul(interval, cost))
          store(key, new_tat)
          return {1, 0, remaining(new_tat, interval, tolerance), reset(new_tat)}
        end

        """

    /// `KEYS[1]` a bucket; `ARGV` interval, tolerance, cost: takes `cost` cells if the
    /// bucket holds them (``GCRA/take(tat:now:cost:)``).
    public static let take = RedisScript(
        prelude + "return take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))\n")

    /// `KEYS[1]` a bucket; `ARGV` interval, tolerance: allowed while the bucket is not in
    /// debt, taking nothing (``GCRA/check(tat:now:)``).
    public static let check = RedisScript(prelude + "return check(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))\n")

    /// `KEYS[1]` a bucket; `ARGV` interval, tolerance, cost: charges `cost` cells, into debt
    /// if need be (``GCRA/charge(tat:now:cost:)``); always allowed.
    public static let charge = RedisScript(
        prelude + "return charge(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))\n")

    /// A request's admission in one round trip, as ``RequestLimiter/admit(_:now:)`` does it:
    /// `KEYS[1]` the request bucket, `KEYS[2]` the token bucket (same hash slot); `ARGV`
    /// request interval, request tolerance, token interval, token tolerance (interval `0`:
    /// no token limit). Takes one request; when that was allowed and there is a token
    /// limit, checks the token bucket too. Four integers (the request bucket's answer), or
    /// eight (then the token bucket's).
    public static let admit = RedisScript(
        prelude + """
            local answer = take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), 1)
            local token_interval = tonumber(ARGV[3])
            if answer[1] == 0 or token_interval == 0 then return answer end
            local tokens = check(KEYS[2], token_interval, tonumber(ARGV[4]))
            for i = 1, 4 do answer[4 + i] = tokens[i] end
            return answer

            """)

    /// Every script, for a `SCRIPT LOAD` at connect (not required: `EVALSHA` loads on `NOSCRIPT`).
    public static let all = [take, check, charge, admit]
}
