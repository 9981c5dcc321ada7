package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	keywardv1 "github.com/keyward/keyward/gen/keyward/v1"
)

// A history-based checker of the revocation contract, shared by the
// revocation test and the fault matrix: the tests record every Validate and
// Check they make (secret, instance, start, end, answer) and every write
// that changes whether a secret is valid (sent, returned, outcome); after the
// run, judge decides each call from the writes alone. A call is judged only
// if it overlaps no write of its secret: then the last write that returned
// before it started says what it must answer. A violation of the contract is
// a call that started after a revocation (DisableKey, DeleteKey,
// RegenerateKey for the old secret) returned and accepted the secret.

// fullFlag selects the reliability tests' full sizes; KEYWARD_FULL=1 does too.
var fullFlag = flag.Bool("full", false, "run the reliability tests (revocation checker, fault matrix) at full size; also KEYWARD_FULL=1")

// fullSize reports whether the reliability tests run at full size.
func fullSize() bool { return *fullFlag || os.Getenv("KEYWARD_FULL") == "1" }

// histOp is a write as it affects one secret.
type histOp uint8

const (
	histCreate      histOp = iota // CreateKey, or RegenerateKey for the new secret: valid
	histEnable                    // valid
	histDisable                   // refused, REASON_DISABLED
	histDelete                    // refused, REASON_NOT_FOUND
	histRegenerate                // the old secret: refused, REASON_NOT_FOUND
	histExpire                    // not a write: the key's expire_time passed; refused, REASON_EXPIRED
	histNeverIssued               // not a write: a well-formed secret no key has; refused, REASON_NOT_FOUND
)

var histOpNames = [...]string{"CreateKey", "EnableKey", "DisableKey", "DeleteKey", "RegenerateKey", "expiry", "never issued"}

func (o histOp) String() string { return histOpNames[o] }

// revokes reports whether the secret must be refused after o.
func (o histOp) revokes() bool { return o >= histDisable }

// revocation reports whether o is one of the revoking RPCs.
func (o histOp) revocation() bool { return o == histDisable || o == histDelete || o == histRegenerate }

func (o histOp) reason() keywardv1.ValidateResponse_Reason {
	switch o {
	case histCreate, histEnable:
		return keywardv1.ValidateResponse_REASON_VALID
	case histDisable:
		return keywardv1.ValidateResponse_REASON_DISABLED
	case histExpire:
		return keywardv1.ValidateResponse_REASON_EXPIRED
	}
	return keywardv1.ValidateResponse_REASON_NOT_FOUND
}

// histWrite is one write to a secret, times on the history's clock. A failed
// write (ok false) is assumed to have done nothing — the fault matrix checks
// that in the store — but the calls after it are not judged until a write
// succeeds again: whether it did anything is for that check to say.
type histWrite struct {
	op             histOp
	sent, returned int64
	ok             bool
	inst           string
}

// hsecret is one secret and the writes that changed its validity. Only the
// goroutine that owns the secret's key appends writes, and judge reads them
// after every goroutine has stopped.
type hsecret struct {
	id     int32
	keyID  string
	secret string
	writes []histWrite
	warm   bool // in every tier of every instance when the run began
}

// histMethod is how a call asked.
type histMethod uint8

const (
	viaValidate histMethod = iota // keyward.v1.KeyService/Validate
	viaCheck                      // envoy.service.auth.v3.Authorization/Check
)

func (m histMethod) String() string { return [...]string{"Validate", "Check"}[m] }

// histOutcome is what a call answered.
type histOutcome uint8

const (
	accepted histOutcome = iota
	refused
	failed // an error, or Check's 503 "cannot verify"
)

// histCall is one recorded Validate or Check.
type histCall struct {
	secret     int32
	inst       uint8
	method     histMethod
	outcome    histOutcome
	reason     keywardv1.ValidateResponse_Reason // Validate's refusal reason
	code       codes.Code                        // when failed
	start, end int64
}

// history is the record of one run.
type history struct {
	base time.Time
	mu   sync.Mutex
	secs []*hsecret
	recs []*recorder
}

func newHistory() *history { return &history{base: time.Now()} }

// now is the history's clock: nanoseconds since it began.
func (h *history) now() int64 { return int64(time.Since(h.base)) }

// secret registers a secret that a write made valid (CreateKey, or
// RegenerateKey for the new one) between sent and returned.
func (h *history) secret(keyID, secret string, sent, returned int64, inst string) *hsecret {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := &hsecret{id: int32(len(h.secs)), keyID: keyID, secret: secret,
		writes: []histWrite{{op: histCreate, sent: sent, returned: returned, ok: true, inst: inst}}}
	h.secs = append(h.secs, s)
	return s
}

// neverIssued registers a well-formed secret that no key has.
func (h *history) neverIssued(secret string) *hsecret {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := &hsecret{id: int32(len(h.secs)), keyID: "(never issued)", secret: secret,
		writes: []histWrite{{op: histNeverIssued, ok: true, inst: "-"}}}
	h.secs = append(h.secs, s)
	return s
}

// expired records that s's key expired at at (history clock), before any
// call that is to be judged by it.
func (s *hsecret) expired(at int64) {
	s.writes = append(s.writes, histWrite{op: histExpire, sent: at, returned: at, ok: true, inst: "-"})
}

// recorder collects one goroutine's calls, without locking.
type recorder struct {
	h     *history
	calls []histCall
}

func (h *history) recorder() *recorder {
	r := &recorder{h: h}
	h.mu.Lock()
	h.recs = append(h.recs, r)
	h.mu.Unlock()
	return r
}

// histTarget is an instance the recorders call: its index in the run and
// its Validate and Check clients.
type histTarget struct {
	idx   uint8
	name  string
	kc    keywardv1.KeyServiceClient
	authz authv3.AuthorizationClient
}

// histTargets makes the targets of c's instances; the Check clients have
// their own connections, closed when t ends.
func histTargets(t interface {
	Fatal(...any)
	Cleanup(func())
}, c *cluster) []*histTarget {
	var out []*histTarget
	for i, in := range c.insts {
		cc, err := grpc.NewClient(in.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		out = append(out, &histTarget{idx: uint8(i), name: in.name, kc: in.kc, authz: authv3.NewAuthorizationClient(cc)})
	}
	return out
}

// checkRequestFor is the CheckRequest of a request carrying secret in
// x-api-key, as Envoy would send it.
func checkRequestFor(secret string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "192.0.2.10", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 50412}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/orders", Host: "api.example.com", Scheme: "http", Protocol: "HTTP/1.1",
			Headers: map[string]string{"x-api-key": secret},
		}},
	}}
}

// call validates s on tg by m with deadline timeout, records the call and
// returns its outcome and duration.
func (r *recorder) call(tg *histTarget, m histMethod, s *hsecret, timeout time.Duration) (histOutcome, time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := histCall{secret: s.id, inst: tg.idx, method: m}
	t0 := time.Now()
	c.start = r.h.now()
	switch m {
	case viaValidate:
		resp, err := tg.kc.Validate(ctx, &keywardv1.ValidateRequest{Key: s.secret})
		c.end = r.h.now()
		switch {
		case err != nil:
			c.outcome, c.code = failed, status.Code(err)
		case resp.GetValid():
			c.outcome = accepted
		default:
			c.outcome, c.reason = refused, resp.GetReason()
		}
	case viaCheck:
		resp, err := tg.authz.Check(ctx, checkRequestFor(s.secret))
		c.end = r.h.now()
		switch {
		case err != nil:
			c.outcome, c.code = failed, status.Code(err)
		case resp.GetOkResponse() != nil && resp.GetStatus().GetCode() == int32(codes.OK):
			c.outcome = accepted
		case resp.GetDeniedResponse().GetStatus().GetCode() == typev3.StatusCode_ServiceUnavailable:
			c.outcome, c.code = failed, codes.Unavailable // "cannot verify": an answer, but not a verdict
		default:
			c.outcome = refused
		}
	}
	r.calls = append(r.calls, c)
	return c.outcome, time.Since(t0)
}

// write runs a write affecting secrets (each with its own op), records it
// on each with its times and outcome, and returns the error.
func (h *history) write(inst string, run func() error, ops map[*hsecret]histOp) (sent, returned int64, err error) {
	sent = h.now()
	err = run()
	returned = h.now()
	for s, op := range ops {
		s.writes = append(s.writes, histWrite{op: op, sent: sent, returned: returned, ok: err == nil, inst: inst})
	}
	return sent, returned, err
}

// verdict is judge's result.
type verdict struct {
	secrets, calls   int
	byMethod         [2]int
	judgedRevoked    int // calls that had to refuse
	judgedValid      int // calls that had to accept
	unjudged         int // overlapped a write, or followed a failed one
	violations       int // accepted a secret after its revocation returned
	staleRefusals    int // refused a secret after the write making it valid returned
	wrongReasons     int // Validate refused for another reason than the last write's
	errors           map[string]int
	revocations      int      // successful revocations
	coveredAllInsts  int      // revocations judged, afterwards, on every instance
	samples          []string // the first few of any kind
	violationSamples []string // the first few accepted revoked secrets
	errorSamples     []string
	// Filled in by runRevocations.
	writeErrs []string
	localHits float64
}

func (v *verdict) errorCount() int {
	n := 0
	for _, c := range v.errors {
		n += c
	}
	return n
}

func (v *verdict) String() string {
	errs := make([]string, 0, len(v.errors))
	for k, n := range v.errors {
		errs = append(errs, fmt.Sprintf("%s=%d", k, n))
	}
	sort.Strings(errs)
	return fmt.Sprintf("%d secrets, %d revocations (%d checked afterwards on every instance); %d calls (%d Validate, %d Check): "+
		"%d had to refuse, %d had to accept, %d overlapped a write; violations: accepted after revocation %d, "+
		"refused after a write made valid %d, wrong reason %d; errors %d %v",
		v.secrets, v.revocations, v.coveredAllInsts, v.calls, v.byMethod[viaValidate], v.byMethod[viaCheck],
		v.judgedRevoked, v.judgedValid, v.unjudged, v.violations, v.staleRefusals, v.wrongReasons, v.errorCount(), errs)
}

// phaseFig are the figures of the calls that started in one phase of a run.
type phaseFig struct {
	name   string
	from   int64 // history clock
	calls  int
	wrong  int            // violations, stale refusals and wrong reasons
	errors map[string]int // "<instance> <method>/<code>"
	lat    durations
}

func (p *phaseFig) errorCount() int {
	n := 0
	for _, c := range p.errors {
		n += c
	}
	return n
}

// judge decides every recorded call; call it once every recorder and
// writer has stopped. insts names the instances by index, for messages.
// phases, if any, are filled with the figures of the calls that started in
// each; they must be in order of from.
func (h *history) judge(insts []string, phases ...*phaseFig) *verdict {
	h.mu.Lock()
	defer h.mu.Unlock()
	v := &verdict{secrets: len(h.secs), errors: map[string]int{}}
	for _, p := range phases {
		p.errors = map[string]int{}
	}
	phaseOf := func(start int64) *phaseFig {
		cur := &phaseFig{errors: map[string]int{}} // before the first phase: not reported
		for _, p := range phases {
			if p.from <= start {
				cur = p
			}
		}
		return cur
	}
	// covered[secret][write index]: the instances that judged a call after
	// that revocation, as a bit set.
	covered := make([]map[int]uint64, len(h.secs))
	ms := func(ns int64) time.Duration { return round(time.Duration(ns)) }
	for _, r := range h.recs {
		for _, c := range r.calls {
			v.calls++
			v.byMethod[c.method]++
			p := phaseOf(c.start)
			p.calls++
			p.lat.d = append(p.lat.d, time.Duration(c.end-c.start))
			if c.outcome == failed {
				v.errors[c.method.String()+"/"+c.code.String()]++
				p.errors[insts[c.inst]+" "+c.method.String()+"/"+c.code.String()]++
				if len(v.errorSamples) < 10 {
					v.errorSamples = append(v.errorSamples, fmt.Sprintf("%s on %s at %v: %v",
						c.method, insts[c.inst], ms(c.start), c.code))
				}
				continue
			}
			s := h.secs[c.secret]
			w, ok := s.judgeable(c)
			if !ok {
				v.unjudged++
				continue
			}
			var wrong string
			if w.op.revokes() {
				v.judgedRevoked++
				if covered[c.secret] == nil {
					covered[c.secret] = map[int]uint64{}
				}
				covered[c.secret][w.index] |= 1 << c.inst
				switch {
				case c.outcome == accepted:
					v.violations++
					wrong = fmt.Sprintf("%s on %s accepted %s's secret %v after %s on %s returned (call %v–%v)",
						c.method, insts[c.inst], s.keyID, ms(c.start-w.returned), w.op, w.inst, ms(c.start), ms(c.end))
					if len(v.violationSamples) < 10 {
						v.violationSamples = append(v.violationSamples, wrong)
					}
				case c.method == viaValidate && c.reason != w.op.reason():
					v.wrongReasons++
					wrong = fmt.Sprintf("%s on %s refused %s for %v %v after %s, want %v",
						c.method, insts[c.inst], s.keyID, c.reason, ms(c.start-w.returned), w.op, w.op.reason())
				}
			} else {
				v.judgedValid++
				if c.outcome != accepted {
					v.staleRefusals++
					wrong = fmt.Sprintf("%s on %s refused %s (%v) %v after %s on %s returned",
						c.method, insts[c.inst], s.keyID, c.reason, ms(c.start-w.returned), w.op, w.inst)
				}
			}
			if wrong != "" {
				p.wrong++
				if len(v.samples) < 10 {
					v.samples = append(v.samples, wrong)
				}
			}
		}
	}
	all := uint64(1)<<len(insts) - 1
	for i, s := range h.secs {
		for j, w := range s.writes {
			if w.ok && w.op.revocation() {
				v.revocations++
				if covered[i][j] == all {
					v.coveredAllInsts++
				}
			}
		}
	}
	return v
}

// judgedWrite is the write that decides a call, and its index.
type judgedWrite struct {
	histWrite
	index int
}

// judgeable returns the write that decides what c must answer: the last one
// that returned before c started, if it succeeded and no write overlaps c.
func (s *hsecret) judgeable(c histCall) (judgedWrite, bool) {
	last := -1
	for i, w := range s.writes {
		if w.sent <= c.end && w.returned >= c.start {
			return judgedWrite{}, false
		}
		if w.returned < c.start {
			last = i
		}
	}
	if last < 0 || !s.writes[last].ok {
		return judgedWrite{}, false
	}
	return judgedWrite{s.writes[last], last}, true
}

// dump writes the history as text (one line per write and per call) for a
// post-mortem; the secrets themselves are left out.
func (h *history) dump(path string, insts []string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	var b strings.Builder
	for _, s := range h.secs {
		for _, w := range s.writes {
			fmt.Fprintf(&b, "write secret=%d key=%s op=%s inst=%s sent=%d returned=%d ok=%v\n",
				s.id, s.keyID, w.op, w.inst, w.sent, w.returned, w.ok)
		}
	}
	for _, r := range h.recs {
		for _, c := range r.calls {
			fmt.Fprintf(&b, "call secret=%d inst=%s method=%s start=%d end=%d outcome=%d reason=%v code=%v\n",
				c.secret, insts[c.inst], c.method, c.start, c.end, c.outcome, c.reason, c.code)
		}
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
