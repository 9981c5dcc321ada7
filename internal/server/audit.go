package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/clientaddr"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/store"
)

// AuditLog appends audit events that no key write accompanies (store.Store
// is one).
type AuditLog interface {
	AppendAudit(ctx context.Context, a store.Audit) error
}

// source is the caller's address. REST calls arrive from the in-process
// gateway over its in-memory connection, and the gateway passes the HTTP
// client's address as the last x-forwarded-for entry; only those calls are
// trusted to say so, since any gRPC client can send that metadata.
func source(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	var a netip.Addr
	if isGateway(p.Addr) {
		md, _ := metadata.FromIncomingContext(ctx)
		a = clientaddr.Forwarded(md.Get("x-forwarded-for"), 1)
	} else {
		a = clientaddr.Parse(p.Addr.String())
	}
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// signInFailures records failed admin sign-ins in the audit trail, at most
// about perSecond a second: a flood of bad credentials must not turn into a
// flood of store writes. What it leaves out is counted into the next event.
type signInFailures struct {
	log       AuditLog // nil: not recorded
	logger    *slog.Logger
	perSecond int

	mu         sync.Mutex
	window     time.Time
	inWindow   int
	suppressed int
}

// signInTimeout bounds writing one failure event.
const signInTimeout = 2 * time.Second

func (f *signInFailures) record(ctx context.Context, method string, cause error) {
	if f == nil || f.log == nil {
		return
	}
	now := time.Now()
	f.mu.Lock()
	if now.Sub(f.window) >= time.Second {
		f.window, f.inWindow = now, 0
	}
	if f.inWindow >= f.perSecond {
		f.suppressed++
		f.mu.Unlock()
		return
	}
	f.inWindow++
	suppressed := f.suppressed
	f.suppressed = 0
	f.mu.Unlock()

	why := "no valid admin credential"
	if errors.Is(cause, keys.ErrPermissionDenied) {
		why = "credential lacks the keyward:admin scope"
	}
	detail := fmt.Sprintf("%s calling %s", why, method)
	if suppressed > 0 {
		detail += fmt.Sprintf(" (and %d more failures not recorded one by one)", suppressed)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), signInTimeout)
	defer cancel()
	err := f.log.AppendAudit(ctx, store.Audit{Action: audit.ActionSignInFailed, Source: source(ctx), Detail: detail})
	if err != nil {
		f.logger.WarnContext(ctx, "cannot record a failed sign-in in the audit trail", "err", err)
	}
}
