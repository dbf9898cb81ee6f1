// Package sidecar is a running sluice: it reads the configuration from
// SLUICE_* variables (Config, LoadConfig), builds the parts and wires them
// together (NewServer), serves the proxy and the admin API on their
// listeners, runs the control loop, and shuts down gracefully (Run).
//
// It owns the configuration, the lifecycle and the metrics registry. What
// happens to a write is package proxy's (and pipeline's); the admin
// endpoints are package admin's; the control law is package limiter's; job
// state is package state's. A program that embeds sluice uses this package;
// one that only wants the controller imports limiter alone.
package sidecar
