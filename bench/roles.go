package main

import (
	"fmt"
	"os"
)

// The harness runs its own helpers (the sample model, the floor proxy, the telemetry sink) as
// child processes of its own executable, so that each has a pid whose CPU time and memory can
// be read apart from the load generator's. The role and its addresses travel in the environment.
const (
	roleEnv     = "SCOREGATE_BENCH_ROLE"
	listenEnv   = "SCOREGATE_BENCH_LISTEN"
	upstreamEnv = "SCOREGATE_BENCH_UPSTREAM"
)

// Roles a child process can take.
const (
	roleUpstream = "upstream"
	roleFloor    = "floor"
	roleSink     = "sink"
)

// runRoleFromEnv runs the helper named by the environment, if any, until it is signalled.
// handled is false in the harness itself.
func runRoleFromEnv() (handled bool, err error) {
	role := os.Getenv(roleEnv)
	if role == "" {
		return false, nil
	}
	addr := os.Getenv(listenEnv)
	switch role {
	case roleUpstream:
		return true, runUpstream(addr)
	case roleFloor:
		return true, runFloor(addr, os.Getenv(upstreamEnv))
	case roleSink:
		return true, runSink(addr)
	case roleGRPCModel:
		return true, runGRPCModel(addr)
	case roleGhz:
		return true, runGhzRole(os.Getenv(ghzEnv))
	}
	return true, fmt.Errorf("unknown %s %q", roleEnv, role)
}
