-- leave.lua: a member that stops gives its share back at once.
-- KEYS[1] members hash; ARGV[1] member id. Returns 1 if it was a member.
return redis.call('HDEL', KEYS[1], ARGV[1])
