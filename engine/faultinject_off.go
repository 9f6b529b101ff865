//go:build !faultinject

package engine

// faultSkipSendDedup breaks Apply on purpose: a send retried with its
// client_msg_id is stored again instead of answered with the original
// result (DESIGN guarantee 3). It is a constant, false in every build but
// one made with -tags faultinject (faultinject_on.go), which the fault
// tests use to prove they catch a broken server; the compiler drops the
// broken path from every other build.
const faultSkipSendDedup = false
