//go:build !linux

package abuse

import "time"

// Elsewhere the release clock is Go's own: the grid is kept, but wake-ups
// are only as precise as the runtime's timers (about a millisecond when the
// process is idle), so timing is equalised less tightly than on Linux.

var origin = time.Now()

func sleepToNextTick() {
	now := time.Since(origin)
	time.Sleep((now/tick+1)*tick - now)
}
