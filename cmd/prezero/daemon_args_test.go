package main

import (
	"strings"
	"testing"
	"time"
)

// TestChildArgs: the mount server gets every flag that changes how the
// source is read, including those kept in package variables.
func TestChildArgs(t *testing.T) {
	saved := []any{crossCheck, noCrossCheck, mapMemory, nbdTimeout}
	t.Cleanup(func() {
		crossCheck, noCrossCheck = saved[0].(bool), saved[1].(bool)
		mapMemory, nbdTimeout = saved[2].(memoryFlag), saved[3].(time.Duration)
	})
	crossCheck, noCrossCheck, mapMemory, nbdTimeout = true, true, 1<<30, 5*time.Second
	got := strings.Join(childArgs(mountOptions{}, "/src.img", "/mnt"), " ")
	for _, want := range []string{"--crosscheck", "--no-crosscheck", "--max-map-memory 1073741824", "--nbd-timeout 5s", "-- /src.img /mnt"} {
		if !strings.Contains(got, want) {
			t.Errorf("child args %q lack %q", got, want)
		}
	}
	// Flags left at their defaults are not written out.
	crossCheck, noCrossCheck, mapMemory, nbdTimeout = false, false, defaultMapMemory, saved[3].(time.Duration)
	got = strings.Join(childArgs(mountOptions{}, "/src.img", "/mnt"), " ")
	for _, not := range []string{"crosscheck", "max-map-memory", "nbd-timeout"} {
		if strings.Contains(got, not) {
			t.Errorf("child args %q have %q", got, not)
		}
	}
}
