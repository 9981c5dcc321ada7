package loadgen

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"time"
)

// CPU is where the machine's CPU time went during a measured window, in
// cores (CPU seconds per second). On a shared machine Other says whether
// the figures beside it can be trusted: it is everything that is neither the
// server under test, the load generator, nor the Postgres and Redis serving
// it. Steal is time the hypervisor gave to other guests.
type CPU struct {
	Server   float64 `json:"server"`
	Load     float64 `json:"load"`
	Services float64 `json:"services"` // Postgres (this bench's backends and its background processes) and Redis
	Other    float64 `json:"other"`
	Steal    float64 `json:"steal"`
	Idle     float64 `json:"idle"`
}

// clkTck is USER_HZ, 100 on every Linux that Go supports.
const clkTck = 100

type cpuSnap struct {
	ok                bool
	busy, steal, idle uint64
	server, self      uint64
	services          uint64
}

// cpuProbe takes snapshots of /proc; it is a no-op where there is none.
type cpuProbe struct {
	serverPIDs []int
	dbName     string
}

func (p cpuProbe) snap() cpuSnap {
	var s cpuSnap
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return s
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return s
	}
	v := make([]uint64, len(f))
	for i := 1; i < len(f); i++ {
		v[i], _ = strconv.ParseUint(f[i], 10, 64)
	}
	// user nice system idle iowait irq softirq steal
	s.busy = v[1] + v[2] + v[3] + v[6] + v[7]
	s.idle = v[4] + v[5]
	s.steal = v[8]
	s.self = procJiffies(os.Getpid())
	for _, pid := range p.serverPIDs {
		if pid > 0 {
			s.server += procJiffies(pid)
		}
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, _ := os.ReadFile("/proc/" + e.Name() + "/comm")
		switch strings.TrimSpace(string(comm)) {
		case "redis-server":
			s.services += procJiffies(pid)
		case "postgres":
			cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			c := string(cmdline)
			// A client backend's title names its database and client
			// ("postgres: 15/main: user db 127.0.0.1(port) idle"): count
			// only this bench's; background processes serve everyone.
			client := strings.Contains(c, "127.0.0.1(") || strings.Contains(c, "[local]") || strings.Contains(c, "::1(")
			if !client || (p.dbName != "" && strings.Contains(c, " "+p.dbName+" ")) {
				s.services += procJiffies(pid)
			}
		}
	}
	s.ok = true
	return s
}

// procJiffies is utime+stime of every thread of pid.
func procJiffies(pid int) uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	// After the comm: state(3) ... utime(14) stime(15), 1-based in proc(5).
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return u + st
}

func cpuBetween(a, b cpuSnap, seconds float64) CPU {
	if !a.ok || !b.ok || seconds <= 0 {
		return CPU{}
	}
	d := func(x, y uint64) float64 {
		if y < x {
			return 0
		}
		return float64(y-x) / clkTck / seconds
	}
	c := CPU{
		Server:   d(a.server, b.server),
		Load:     d(a.self, b.self),
		Services: d(a.services, b.services),
		Steal:    d(a.steal, b.steal),
		Idle:     d(a.idle, b.idle),
	}
	c.Other = max(0, d(a.busy, b.busy)-c.Server-c.Load-c.Services)
	return c
}

// ForeignCPU measures, over window, the cores used by processes other than
// this one, pids, and the Postgres and Redis serving the bench (dbName is
// the bench database). It returns -1 where /proc is not available.
func ForeignCPU(ctx context.Context, pids []int, dbName string, window time.Duration) float64 {
	probe := cpuProbe{serverPIDs: pids, dbName: dbName}
	a := probe.snap()
	start := time.Now()
	sleep(ctx, window)
	b := probe.snap()
	if !a.ok || !b.ok {
		return -1
	}
	return cpuBetween(a, b, time.Since(start).Seconds()).Other
}

// CPUMeter accounts for the CPU over a window, as a load step does, with
// pids as the servers.
type CPUMeter struct {
	probe cpuProbe
	start time.Time
	snap  cpuSnap
}

// StartCPU starts a CPUMeter.
func StartCPU(pids []int, dbName string) *CPUMeter {
	m := &CPUMeter{probe: cpuProbe{serverPIDs: pids, dbName: dbName}}
	m.snap, m.start = m.probe.snap(), time.Now()
	return m
}

// Stop returns where the CPU went since StartCPU.
func (m *CPUMeter) Stop() CPU {
	end := m.probe.snap()
	return cpuBetween(m.snap, end, time.Since(m.start).Seconds())
}
