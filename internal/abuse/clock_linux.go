package abuse

import (
	"syscall"
	"time"
	"unsafe"
)

// The Linux release clock: CLOCK_MONOTONIC read and slept on directly, so
// the release goroutine wakes at absolute times with the kernel's timer
// precision (tens of microseconds), not the Go poller's millisecond.

const (
	clockMonotonic = 1 // CLOCK_MONOTONIC
	timerAbstime   = 1 // TIMER_ABSTIME
)

// sleepToNextTick blocks the calling thread until CLOCK_MONOTONIC reaches
// the next multiple of tick. Where those calls are refused (a sandbox), it
// sleeps a tick the Go way.
func sleepToNextTick() {
	var ts syscall.Timespec
	if _, _, errno := syscall.RawSyscall(syscall.SYS_CLOCK_GETTIME, clockMonotonic, uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		time.Sleep(tick)
		return
	}
	ts = syscall.NsecToTimespec((ts.Nano()/int64(tick) + 1) * int64(tick))
	for {
		_, _, errno := syscall.Syscall6(syscall.SYS_CLOCK_NANOSLEEP, clockMonotonic, timerAbstime, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
		switch errno {
		case 0:
			return
		case syscall.EINTR:
			continue
		}
		time.Sleep(tick)
		return
	}
}
