-- update.lua: one member's refresh of a fleet's shared budget. Run with
-- EVALSHA (EVAL when the server has not cached it); atomic, like every
-- script. The clock is the server's own (TIME), so the members' clocks
-- never matter, made never to go back (skew, below).
--
-- KEYS[1]  members hash: member id -> "seq demand weight expiry goodput
--          thr_epoch thr_count joined updated granted" (times in ms;
--          granted, the lease last returned to the member, may be absent)
-- KEYS[2]  state hash: the budget (budget, max, t, k, grow_at, cut_at,
--          dirty_at, gen, cuts, throttles), the server's last call
--          (last_call) and what its clock has stepped back (skew), the members known before a loss of state
--          (ghost_w, ghost_until), and the allocation (alloc_at, level,
--          spare, n, live_w, want, took, next_exp: when its first member
--          expires)
-- ARGV     member, seq, demand, weight, goodput, thr_epoch, thr_count,
--          capacity, hint_budget, hint_known, hint_weight, min_rate,
--          member_ttl_ms, period_ms, beta, recover_ms, key_ttl_ms,
--          want_members
--
-- Returns strings: lease, budget, members, weight, epoch, now_ms,
-- demand, applied (1: the report was new; 0: a retry or an older report,
-- which changes nothing), throttles, then, when want_members is 1, six
-- strings per member: id, weight, demand, lease, joined_ms, updated_ms.
--
-- The budget (units/s): with a configured capacity it is the capacity.
-- Otherwise it is learned: a throttle reported under the current epoch
-- cuts it to beta of what the fleet took (at least half the budget), at
-- most once per cooldown of two periods, and starts a new epoch, so that
-- throttles of sends made before the cut, or reported again by a retried
-- call, cannot cut twice. A period without a throttle report in which the
-- members wanted more than the budget grows it: doubling before the first
-- cut, then along a cubic curve back to the level of the last cut
-- (cautious near it) and past it.
--
-- The allocation is weighted max-min (fleet.Allocate), kept as its water
-- level: members short of their demand get level x weight, the others
-- their demand, and when nobody is short the rest of the budget is spread
-- by weight (spare per unit of weight). Reading every member costs
-- O(members); it is done at most four times per period, and at once when
-- a member joins or leaves or the budget moves, so that a fleet of N
-- members costs the server O(N) per period, not O(N^2). In between, a
-- member's lease follows its own new demand at the last level.

local mkey, skey = KEYS[1], KEYS[2]
local id = ARGV[1]
local seq = tonumber(ARGV[2])
local demand = tonumber(ARGV[3])
local weight = tonumber(ARGV[4])
local goodput = tonumber(ARGV[5])
local thr_epoch = ARGV[6]
local thr_count = tonumber(ARGV[7])
local capacity = tonumber(ARGV[8])
local hint_budget = tonumber(ARGV[9])
local hint_known = ARGV[10] == '1'
local hint_weight = tonumber(ARGV[11])
local min_rate = tonumber(ARGV[12])
local member_ttl = tonumber(ARGV[13])
local period = tonumber(ARGV[14])
local beta = tonumber(ARGV[15])
local recover = tonumber(ARGV[16])
local key_ttl = tonumber(ARGV[17])
local want_members = ARGV[18] == '1'

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- Numbers are written in fixed notation: Lua implementations differ in
-- what tostring gives and whether tonumber reads exponents.
local function num(x) return string.format('%.6f', x) end
local function int(x) return string.format('%d', x) end
-- A lease is rounded down, so that the leases never sum to more than the
-- budget.
local function down(x) return string.format('%.6f', math.floor(x * 1e6) / 1e6) end

-- State.
local st = {}
local raw = redis.call('HGETALL', skey)
for i = 1, #raw, 2 do st[raw[i]] = raw[i + 1] end
local gen = st.gen
local budget, lastmax, grown, grow_at, cut_at, dirty_at, cuts, last_call, ghost_w, ghost_until, throttles
local alloc_at, level, spare, n, live_w, want, took, next_exp
-- reseed starts the budget from the one this member knew, taken back whole
-- and not added again, on the plateau of its curve, and reserves the
-- members known then a share until they are back, so that the first to
-- return does not take them all.
local function reseed()
	budget, lastmax, grown = hint_budget, hint_budget, recover
	ghost_w, ghost_until = math.max(ghost_w, hint_weight), now + member_ttl
end
if gen == nil then
	-- A new fleet, or one whose Redis lost its state: start from what this
	-- member knows (reseed).
	gen = 'g' .. t[1] .. '.' .. t[2]
	budget, lastmax, grown = 0, 0, 0
	ghost_w, ghost_until = 0, 0
	if hint_known and hint_budget > 0 then
		reseed()
	end
	grow_at, cut_at, dirty_at, cuts, last_call, throttles = now, 0, 0, 0, now, 0
	alloc_at, level, spare, n, live_w, want, took, next_exp = 0, -1, 0, 0, 0, 0, 0, 0
else
	budget, lastmax, grown = tonumber(st.budget), tonumber(st.max), tonumber(st.t)
	grow_at, cut_at, dirty_at = tonumber(st.grow_at), tonumber(st.cut_at), tonumber(st.dirty_at)
	cuts, last_call, throttles = tonumber(st.cuts), tonumber(st.last_call), tonumber(st.throttles)
	ghost_w, ghost_until = tonumber(st.ghost_w), tonumber(st.ghost_until)
	alloc_at, level, spare = tonumber(st.alloc_at), tonumber(st.level), tonumber(st.spare)
	n, live_w, want, took = tonumber(st.n), tonumber(st.live_w), tonumber(st.want), tonumber(st.took)
	next_exp = tonumber(st.next_exp or 0)
end
-- The server's clock may step back (a failover to a replica whose clock
-- is behind, an NTP step). Every time the state holds would then lie in
-- the future: a dead member would keep its share, and the budget be
-- neither cut nor grown, for as long as the step. The fleet's clock is the
-- server's plus what it has stepped back, so it never goes back and runs
-- on with the server's from the step on.
local skew = tonumber(st.skew or 0)
now = now + skew
if now < last_call then
	skew = skew + last_call - now
	now = last_call
end
local epoch = gen .. ':' .. cuts
local budget0 = budget
-- The budget's curve after a cut: lastmax (1 + cubic (t - k)^3), at t = 0
-- the cut, at t = k back to lastmax; a cut by beta takes recover.
local cubic = (1 - beta) / ((recover / 1000) ^ 3)
local k = tonumber(st.k or recover)

-- Nobody reached the server for a whole member TTL: it was stopped or cut
-- off, not every member dead. Members are not blamed for its absence.
local renew = now - last_call > member_ttl

local function parse(s)
	local f = {}
	for w in string.gmatch(s, '%S+') do f[#f + 1] = w end
	return {
		seq = tonumber(f[1]), demand = tonumber(f[2]), weight = tonumber(f[3]),
		expiry = tonumber(f[4]), goodput = tonumber(f[5]), thr_epoch = f[6],
		thr_count = tonumber(f[7]), joined = tonumber(f[8]), updated = tonumber(f[9]),
		granted = tonumber(f[10] or ''),
	}
end
local function format(m)
	return table.concat({
		int(m.seq), num(m.demand), num(m.weight), int(m.expiry), num(m.goodput), m.thr_epoch,
		int(m.thr_count), int(m.joined), int(m.updated), m.granted and down(m.granted) or nil,
	}, ' ')
end

-- This member's report. seq orders one member's reports: a retried call
-- (the same seq) or an older one that arrives late changes nothing.
local me = nil
local raw_me = redis.call('HGET', mkey, id)
if raw_me then
	me = parse(raw_me)
	if me.expiry < now and not renew then me = nil end -- dropped: it joins again
end
local joined = me == nil
local applied = joined or seq > me.seq
-- This member's lease in the allocation in force, before this report: a
-- report that raises its demand may not raise its lease until the
-- members are read again, or it would take what the others hold.
local held = nil
-- The lease in force for a member that already reported since the last
-- allocation is the one it was granted then: its stored demand is one the
-- allocation never saw, and a lease computed from it at the old level
-- would take what the others hold.
local function in_force(m)
	if m.granted ~= nil and m.updated >= alloc_at then return m.granted end
	return nil
end
-- A member that expired since the last allocation gives its share back
-- at the first call after, not up to a quarter period later: its lease
-- has lapsed (the members' leases end before their membership does).
local recompute = joined or renew or now - alloc_at >= period / 4 or now > next_exp
if applied then
	local prev = 0
	if joined then
		me = { joined = now }
		if capacity <= 0 and lastmax == 0 then
			if hint_known and hint_budget > budget then
				-- It knew a larger budget than the state's, which grows
				-- until its first cut: Redis lost the state and a member
				-- that knew no budget (one started while Redis was away)
				-- made it anew. Re-seed it as if this member had been
				-- first.
				reseed()
			elseif hint_known then
				-- It rejoins: the budget it knew was the whole fleet's.
			else
				-- Before the first throttle each member brings its own
				-- start.
				budget = budget + hint_budget
			end
		end
	else
		if level >= 0 then
			held = math.min(me.demand, level * me.weight)
		else
			held = me.demand + spare * me.weight
		end
		local g = in_force(me)
		if g ~= nil then held = math.min(held, g) end
		if me.thr_epoch == thr_epoch then prev = me.thr_count end
		-- The allocation's sums follow this member's report at once.
		want = want + demand - me.demand
		took = took + goodput - me.goodput
		live_w = live_w + weight - me.weight
	end
	me.seq, me.demand, me.weight, me.goodput = seq, demand, weight, goodput
	me.thr_epoch, me.thr_count = thr_epoch, thr_count
	me.expiry, me.updated = now + member_ttl, now
	local fresh = thr_count - prev
	if fresh > 0 then
		throttles = throttles + fresh
		dirty_at = now
		if capacity <= 0 and thr_epoch == epoch and now - cut_at >= 2 * period then
			-- A throttle seen under the current budget: cut it, from what
			-- the fleet actually took if that is less, but no deeper than
			-- half.
			local base = budget
			if took > 0 and took < base then base = math.max(took, budget / 2) end
			if lastmax == 0 then
				-- The first cut, of a budget that doubled each period: the
				-- store's capacity lies between its half and itself, and
				-- the fleet's goodput, measured over the last second or
				-- two, still lags the last doubling. The curve climbs back
				-- to the budget that was cut.
				lastmax = budget
			else
				-- Later cuts: the budget may have grown past the store's
				-- capacity for as long as the throttle took to be
				-- reported; what the fleet took is the level.
				lastmax = base
			end
			budget = base * beta
			-- The curve's time back to the last level, longer the deeper the
			-- cut (as the limiter's probe.cutTo).
			k = ((1 - budget / lastmax) / cubic) ^ (1 / 3) * 1000
			grown, cut_at, grow_at = 0, now, now
			cuts = cuts + 1
			epoch = gen .. ':' .. cuts
		end
	end
	redis.call('HSET', mkey, id, format(me))
end

-- Growth, once per period, when nothing was throttled in it and the
-- members wanted more than the budget. The members' calls are jittered:
-- a step is due a little before the period is over, lest one in two be
-- missed; the curve follows the time that passed all the same.
if capacity <= 0 and now - grow_at >= 0.8 * period then
	local dt = math.min(now - grow_at, 2 * period)
	grow_at = now
	if now - dirty_at >= period and want > budget then
		if lastmax == 0 then
			budget = budget * 2
		else
			grown = grown + dt
			local x = (grown - k) / 1000
			local target = lastmax * (1 + cubic * x * x * x)
			if budget >= 2 * lastmax then target = budget * 2 end
			budget = math.min(math.max(budget, target), budget * 2)
		end
	end
end

-- Read every member: for a new allocation, or for the list.
local members = nil
local function read_members()
	local list = {}
	local recs = redis.call('HGETALL', mkey)
	for i = 1, #recs, 2 do
		if recs[i] ~= id then
			local m = parse(recs[i + 1])
			m.id = recs[i]
			if renew and m.expiry < now + member_ttl then
				m.expiry = now + member_ttl
				redis.call('HSET', mkey, m.id, format(m))
			end
			if m.expiry < now then
				redis.call('HDEL', mkey, m.id)
			else
				list[#list + 1] = m
			end
		end
	end
	me.id = id
	list[#list + 1] = me
	return list
end

local function floor_budget(count)
	if capacity > 0 then
		budget = capacity
	else
		budget = math.max(budget, min_rate * count)
	end
end

local allocated = recompute or budget ~= budget0
if allocated then
	members = read_members()
	n, live_w, want, took = #members, 0, 0, 0
	next_exp = math.huge
	for _, m in ipairs(members) do
		next_exp = math.min(next_exp, m.expiry)
		live_w = live_w + m.weight
		want = want + m.demand
		took = took + m.goodput
	end
	floor_budget(n)
	-- Allocation: weighted max-min (water-filling), as fleet.Allocate.
	local claims = {}
	for _, m in ipairs(members) do claims[#claims + 1] = { id = m.id, d = math.max(m.demand, 0), w = m.weight } end
	if now < ghost_until and ghost_w > live_w then
		-- Members known before a loss of state that are not back yet.
		claims[#claims + 1] = { id = '', d = math.huge, w = ghost_w - live_w }
	end
	table.sort(claims, function(a, b)
		local ra, rb = a.d / a.w, b.d / b.w
		if ra ~= rb then return ra < rb end
		return a.id < b.id
	end)
	local wsum = 0
	for _, c in ipairs(claims) do wsum = wsum + c.w end
	local total = wsum
	local remaining = budget
	level = -1
	for _, c in ipairs(claims) do
		local share = remaining * c.w / wsum
		if c.d > share then
			-- The first claim short of its demand sets the level: it and
			-- all after it get this much per unit of weight.
			level = remaining / wsum
			remaining = 0
			break
		end
		remaining = remaining - c.d
		wsum = wsum - c.w
	end
	spare = 0
	if level < 0 and remaining > 0 and total > 0 then spare = remaining / total end
	-- Kept rounded down as stored, so that leases from it never sum to
	-- more than the budget.
	if level > 0 then level = math.floor(level * 1e6) / 1e6 end
	spare = math.floor(spare * 1e6) / 1e6
	alloc_at = now
else
	floor_budget(n)
end

local function lease_of(m)
	if level >= 0 then return math.min(m.demand, level * m.weight) end
	return m.demand + spare * m.weight
end

redis.call('HSET', skey, 'budget', num(budget), 'max', num(lastmax), 't', num(grown),
	'grow_at', int(grow_at), 'cut_at', int(cut_at), 'dirty_at', int(dirty_at), 'gen', gen,
	'cuts', int(cuts), 'last_call', int(now), 'skew', int(skew), 'ghost_w', num(ghost_w), 'ghost_until', int(ghost_until),
	'throttles', int(throttles), 'k', num(k), 'alloc_at', int(alloc_at), 'next_exp', int(next_exp),
	'level', num(level), 'spare', num(spare),
	'n', int(n), 'live_w', num(live_w), 'want', num(want), 'took', num(took))
redis.call('PEXPIRE', mkey, key_ttl)
redis.call('PEXPIRE', skey, key_ttl)

local my_lease = lease_of(me)
if not allocated then
	if held == nil and not joined then
		-- A retried or older report: the lease it was granted stands.
		held = in_force(me)
	end
	if held ~= nil then my_lease = math.min(my_lease, held) end
end
me.granted = math.floor(my_lease * 1e6) / 1e6
redis.call('HSET', mkey, id, format(me))
local out = {
	down(my_lease), num(budget), int(n), num(live_w), epoch,
	int(now), num(want), applied and '1' or '0', int(throttles),
}
if want_members then
	if members == nil then members = read_members() end
	for _, m in ipairs(members) do
		out[#out + 1] = m.id
		out[#out + 1] = num(m.weight)
		out[#out + 1] = num(m.demand)
		out[#out + 1] = down(m == me and my_lease or lease_of(m))
		out[#out + 1] = int(m.joined)
		out[#out + 1] = int(m.updated)
	end
end
return out
