// Package fleet is sluice's fleet mode: many sidecars writing to one store
// share its capacity through Redis, fairly, and keep writing when Redis is
// slow, down, restarted or flushed.
//
// It owns the protocol (two Lua scripts run with EVALSHA on Redis or a
// server that speaks its protocol: the members of a shared budget, with
// each one's demand, weight and expiry on the server's own clock; the
// budget, configured or learned by the fleet once; each member's lease by
// weighted max-min allocation, Allocate), and Client, the loop of one
// sidecar that reports its demand about once a second and sets the lease
// as a ceiling on its limiter.Controller. It leaves to others the control
// law (package limiter: each sidecar still reacts to a throttle within a
// round trip), the write path (a write never waits for Redis: nothing
// here runs on it) and the configuration (package sidecar).
//
// A fleet is named by its resource ("dynamodb:orders", "s3:bucket/prefix"):
// every sidecar writing to the same store capacity uses the same one. The
// keys are sluice:fleet:{resource}:members and sluice:fleet:{resource}:state.
package fleet
