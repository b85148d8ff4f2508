package main

import (
	"fmt"
	"syscall"
)

// disableCoreDumps sets RLIMIT_CORE to 0, soft and hard, so that a crash
// of the gateway never writes its memory (the agency's private key,
// session keys, decrypted packages) to a core file, whatever the
// supervisor's or the shell's limits say. The hard limit goes too, so
// nothing in the process can raise it again.
func disableCoreDumps() error {
	if err := syscall.Setrlimit(syscall.RLIMIT_CORE, &syscall.Rlimit{Cur: 0, Max: 0}); err != nil {
		return fmt.Errorf("disable core dumps (RLIMIT_CORE 0): %w", err)
	}
	return nil
}
