//go:build race

package main

// raceEnabled says the harness was built with the race detector, which slows its helpers (the
// model, the floor, the load generators) several times: such a run checks the harness, its
// numbers are not to be quoted.
const raceEnabled = true
