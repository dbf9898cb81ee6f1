// Package proxy is the loader-facing side of sluice: a reverse proxy that
// forwards each write to the store and never tells the loader a write
// succeeded unless the store took it whole.
//
// It owns the exchange of one loader request: reading its body (in memory
// within the buffer budget, so it can be retried, or streamed once),
// admission through the job manager and the limiter (in the write's flow:
// its job, weight and priority class, see flowOf), each attempt with its
// deadline, the classification of the store's answer (through the store
// profile) and its report to the limiter and the job, the retries (and in
// hold mode the hold, see retryPolicy), and the answer the loader gets,
// including sluice's own pushback. It also caps the loaders' idle
// connections.
//
// It does not own the control law (package limiter), the store profiles
// (package classify), credentials (package auth), the job state machine
// (package state), or pipelined connections (package pipeline).
package proxy
