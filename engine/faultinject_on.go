//go:build faultinject

package engine

import (
	"fmt"
	"os"
)

// faultSkipSendDedup: see faultinject_off.go. This build is broken on
// purpose, for faults/brokenserver_test.go only.
const faultSkipSendDedup = true

func init() {
	fmt.Fprintln(os.Stderr, "parley: FAULT INJECTION BUILD (-tags faultinject): Apply does not deduplicate retried sends; never run this binary for real")
}
