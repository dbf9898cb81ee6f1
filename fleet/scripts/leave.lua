-- leave.lua: a member that stops gives its share back at once.
-- KEYS[1] members hash, KEYS[2] state hash; ARGV[1] member id. The next
-- call of any member allocates afresh. Returns 1 if it was a member.
local gone = redis.call('HDEL', KEYS[1], ARGV[1])
if gone == 1 and redis.call('EXISTS', KEYS[2]) == 1 then
	redis.call('HSET', KEYS[2], 'alloc_at', '0')
end
return gone
