package freemap

import "sync/atomic"

// The memory limit is process-wide: every Builder charges the memory of the
// chunks it encodes to one counter, and coarsens itself while the counter is
// over the limit. prezero's commands set it from --max-map-memory; a library
// user who sets nothing gets exact maps of any size.
var (
	limitBytes atomic.Int64 // 0: no limit
	usedBytes  atomic.Int64
)

// SetMemoryLimit sets how many bytes all maps built from now on may hold
// together (0: no limit) and returns the previous limit. Maps already built
// keep their memory and count against it until released with Map.Release.
func SetMemoryLimit(n int64) int64 { return limitBytes.Swap(max(n, 0)) }

// MemoryInUse returns the bytes currently charged by maps and builders.
func MemoryInUse() int64 { return usedBytes.Load() }

func chargeBytes(n int64) { usedBytes.Add(n) }
func uncharge(n int64)    { usedBytes.Add(-n) }

func overLimit() bool {
	l := limitBytes.Load()
	return l > 0 && usedBytes.Load() > l
}
