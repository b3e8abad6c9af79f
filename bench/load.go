package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"golang.org/x/sync/errgroup"
)

// Workloads.
const (
	wlIssue   = "issue"
	wlRefresh = "refresh"
	wlAged    = "refresh-aged"

	// In refresh-aged, even callers refresh aged families and odd callers
	// fresh ones, side by side, so both see the same machine.
	opAged       = "refresh-aged"
	opFresh      = "refresh-fresh"
	wlIntrospect = "introspect"
	wlRevoke     = "revoke"
	wlMix        = "mix"
)

var workloads = []string{wlIssue, wlRefresh, wlAged, wlIntrospect, wlRevoke, wlMix}

// Error codes the load generator adds to the service's OAuth codes.
const (
	codeNoResponders = "no_responders"
	codeTimeout      = "timeout"
	codeTransport    = "transport_error"
	codeInactive     = "inactive" // introspection answered active: false
	codeMalformed    = "malformed_reply"
)

// loadTarget is what a case drives: the service or the bare pipeline.
type loadTarget struct {
	kind     string // "service" or "bare"
	conns    []*nats.Conn
	prefix   string
	clientID string
	secret   string
	timeout  time.Duration
	pid      int        // for CPU and RSS; 0 when unknown
	proc     targetProc // for profiling; nil when not ours
	// shared: the target runs in the load generator's process (--in-process),
	// so its CPU and RSS include the load generator's.
	shared bool
}

// call sends one request and returns the reply and "" or an error code:
// the OAuth code of a service error, or one of the codes above.
func (t *loadTarget) call(nc *nats.Conn, subject string, body []byte) ([]byte, string) {
	msg, err := nc.Request(subject, body, t.timeout)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return nil, codeNoResponders
	case errors.Is(err, nats.ErrTimeout):
		return nil, codeTimeout
	case err != nil:
		return nil, codeTransport
	}
	if status := msg.Header.Get(micro.ErrorCodeHeader); status != "" {
		if code := jsonString(msg.Data, "error"); code != "" {
			return msg.Data, code
		}
		return msg.Data, "status_" + status
	}
	return msg.Data, ""
}

// window is the measured time of one target in Unix nanoseconds: its
// current (or last) slice, and the slices before it. An operation counts
// if it started in any.
type window struct {
	start, end atomic.Int64 // the current slice; end is MaxInt64 while open

	mu   sync.Mutex
	past [][2]int64 // earlier slices, [start, end)
}

// open starts a slice at t, after closing the current one.
func (w *window) open(t int64) {
	if s := w.start.Load(); s != math.MaxInt64 {
		w.mu.Lock()
		w.past = append(w.past, [2]int64{s, w.end.Load()})
		w.mu.Unlock()
	}
	w.start.Store(t)
	w.end.Store(math.MaxInt64)
}

// contains reports whether an operation that started at s counts: an
// operation still running when its target's next slice opens is judged by
// the slice it started in.
func (w *window) contains(s int64) bool {
	start := w.start.Load()
	if s >= start {
		return s < w.end.Load()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, iv := range w.past {
		if iv[0] <= s && s < iv[1] {
			return true
		}
	}
	return false
}

type opStats struct {
	lat  []int64 // nanoseconds, successful operations
	errs map[string]int
}

// recorder is one caller's tally, merged after the case.
type recorder struct {
	w   *window
	ops map[string]*opStats
}

func (r *recorder) add(kind string, start time.Time, code string) {
	s := start.UnixNano()
	if !r.w.contains(s) {
		return
	}
	d := time.Since(start)
	st := r.ops[kind]
	if st == nil {
		st = &opStats{lat: make([]int64, 0, 1<<14), errs: map[string]int{}}
		r.ops[kind] = st
	}
	if code == "" {
		st.lat = append(st.lat, int64(d))
	} else {
		st.errs[code]++
	}
}

// caller is one simulated caller. It keeps its own family: the newest
// refresh token and access token it was given.
type caller struct {
	t        *loadTarget
	nc       *nats.Conn
	id       int
	workload string
	rng      *rand.Rand
	mix      []MixWeight
	subj     map[string]string
	issueReq []byte
	buf      []byte
	rt, at   string
	// aged: in refresh-aged, this caller's family was rotated first.
	aged bool
}

func newCaller(t *loadTarget, id int, workload string, mix []MixWeight) *caller {
	w := &caller{
		t: t, nc: t.conns[id%len(t.conns)], id: id, workload: workload, mix: mix,
		rng:  rand.New(rand.NewPCG(uint64(id), uint64(time.Now().UnixNano()))),
		subj: map[string]string{},
		buf:  make([]byte, 0, 512),
		aged: workload == wlAged && id%2 == 0,
	}
	for _, ep := range []string{"issue", "refresh", "introspect", "revoke"} {
		w.subj[ep] = t.prefix + "." + ep
	}
	w.issueReq = slices.Clone(w.body("subject", "bench-user-"+strconv.Itoa(id), "", ""))
	return w
}

// body builds a request with the client's credentials and up to two more
// string members; values need no escaping (tokens, ids).
func (w *caller) body(k1, v1, k2, v2 string) []byte {
	b := w.buf[:0]
	b = append(b, `{"client_id":"`...)
	b = append(b, w.t.clientID...)
	b = append(b, `","client_secret":"`...)
	b = append(b, w.t.secret...)
	b = append(b, `","`...)
	b = append(b, k1...)
	b = append(b, `":"`...)
	b = append(b, v1...)
	if k2 != "" {
		b = append(b, `","`...)
		b = append(b, k2...)
		b = append(b, `":"`...)
		b = append(b, v2...)
	}
	b = append(b, `"}`...)
	w.buf = b
	return b // nc.Request copies it into the connection's buffer
}

func (w *caller) grant(data []byte) string {
	rt, at := jsonString(data, "refresh_token"), jsonString(data, "access_token")
	if rt == "" || at == "" {
		return codeMalformed
	}
	w.rt, w.at = rt, at
	return ""
}

func (w *caller) issue() string {
	data, code := w.t.call(w.nc, w.subj["issue"], w.issueReq)
	if code != "" {
		return code
	}
	return w.grant(data)
}

func (w *caller) refresh() string {
	data, code := w.t.call(w.nc, w.subj["refresh"], w.body("refresh_token", w.rt, "", ""))
	if code != "" {
		return code
	}
	return w.grant(data)
}

func (w *caller) introspect() string {
	data, code := w.t.call(w.nc, w.subj["introspect"], w.body("token", w.at, "token_type_hint", "access_token"))
	if code != "" {
		return code
	}
	if !bytes.Contains(data, []byte(`"active":true`)) {
		return codeInactive
	}
	return ""
}

func (w *caller) revoke() string {
	_, code := w.t.call(w.nc, w.subj["revoke"], w.body("token", w.rt, "token_type_hint", "refresh_token"))
	return code
}

// setupError is a case that could not start; code is the failing call's.
type setupError struct {
	subject, code string
}

func (e *setupError) Error() string {
	if e.code == codeNoResponders {
		return fmt.Sprintf("no responders on %s: the endpoint is not served (not implemented in this build, or the service is down)", e.subject)
	}
	return fmt.Sprintf("%s failed during setup: %s", e.subject, e.code)
}

func (w *caller) check(ep, code string) error {
	if code != "" {
		return &setupError{subject: w.subj[ep], code: code}
	}
	return nil
}

// setup gives the caller its family and checks that the endpoints its
// workload needs answer. In refresh-aged, an aged caller rotates its
// family prior times first.
func (w *caller) setup(ctx context.Context, prior int, progress func()) error {
	if err := w.check("issue", w.issue()); err != nil {
		return err
	}
	switch w.workload {
	case wlAged:
		if !w.aged {
			return nil
		}
		for i := range prior {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err := w.check("refresh", w.refresh()); err != nil {
				return fmt.Errorf("prior rotation %d: %w", i+1, err)
			}
			progress()
		}
	case wlIntrospect:
		return w.check("introspect", w.introspect())
	case wlRevoke:
		if err := w.check("revoke", w.revoke()); err != nil {
			return err
		}
		return w.check("issue", w.issue())
	}
	return nil
}

// step runs one operation of the workload and records it.
func (w *caller) step(r *recorder) {
	switch w.workload {
	case wlIssue:
		start := time.Now()
		r.add(wlIssue, start, w.issue())
	case wlRefresh, wlAged:
		w.timedRefresh(r)
	case wlIntrospect:
		start := time.Now()
		r.add(wlIntrospect, start, w.introspect())
	case wlRevoke:
		// Each revoke needs a live token: issue one, untimed.
		if code := w.issue(); code != "" {
			r.add("setup-issue", time.Now(), code)
			return
		}
		start := time.Now()
		r.add(wlRevoke, start, w.revoke())
	case wlMix:
		w.mixStep(r)
	}
}

func (w *caller) timedRefresh(r *recorder) {
	kind := wlRefresh
	if w.workload == wlAged {
		kind = opFresh
		if w.aged {
			kind = opAged
		}
	}
	start := time.Now()
	code := w.refresh()
	r.add(kind, start, code)
	if code == "invalid_grant" || code == codeMalformed {
		// The chain broke (revoked, expired): start a new family, untimed.
		w.issue()
	}
}

// MixWeight is one operation of the mix workload and its share.
type MixWeight struct {
	Op     string // issue, refresh, introspect or revoke
	Weight int
}

// ParseMix parses a mix, "operation=weight,...", such as
// "refresh=60,introspect=30,issue=8,revoke=2".
func ParseMix(s string) ([]MixWeight, error) {
	var m []MixWeight
	total := 0
	for _, part := range splitList(s) {
		op, n, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("mix %q: want op=weight,...", s)
		}
		wgt, err := strconv.Atoi(n)
		if err != nil || wgt < 0 {
			return nil, fmt.Errorf("mix %q: weight of %s", s, op)
		}
		switch op {
		case wlIssue, wlRefresh, wlIntrospect, wlRevoke:
		default:
			return nil, fmt.Errorf("mix: unknown operation %q (issue, refresh, introspect, revoke)", op)
		}
		m = append(m, MixWeight{Op: op, Weight: wgt})
		total += wgt
	}
	if total == 0 {
		return nil, fmt.Errorf("mix %q: weights sum to zero", s)
	}
	return m, nil
}

// mixStep picks an operation by weight. A revoke ends the caller's family,
// so a timed issue (recorded as issue) follows it.
func (w *caller) mixStep(r *recorder) {
	total := 0
	for _, m := range w.mix {
		total += m.Weight
	}
	n := w.rng.IntN(total)
	op := w.mix[len(w.mix)-1].Op
	for _, m := range w.mix {
		if n < m.Weight {
			op = m.Op
			break
		}
		n -= m.Weight
	}
	start := time.Now()
	switch op {
	case wlIssue:
		r.add(wlIssue, start, w.issue())
	case wlRefresh:
		w.timedRefresh(r)
	case wlIntrospect:
		r.add(wlIntrospect, start, w.introspect())
	case wlRevoke:
		r.add(wlRevoke, start, w.revoke())
		start = time.Now()
		r.add(wlIssue, start, w.issue())
	}
}

// Case is one measurement: a workload at a concurrency on a target.
type Case struct {
	Workload    string // one of Workloads
	Concurrency int    // callers, 1 to 4096
}

// ParseCases parses cases to run in order, "workload@concurrency,...",
// such as StandardSuite.
func ParseCases(s string) ([]Case, error) {
	var pairs [][2]string
	for _, part := range splitList(s) {
		wl, n, ok := strings.Cut(part, "@")
		if !ok {
			return nil, fmt.Errorf("case %q: want workload@concurrency", part)
		}
		pairs = append(pairs, [2]string{wl, n})
	}
	return casesOf(pairs)
}

// CrossCases is every workload of the list wls at every concurrency of
// the list ns, the workloads varying fastest.
func CrossCases(wls, ns string) ([]Case, error) {
	var pairs [][2]string
	for _, n := range splitList(ns) {
		for _, wl := range splitList(wls) {
			pairs = append(pairs, [2]string{wl, n})
		}
	}
	return casesOf(pairs)
}

// casesOf makes the cases of (workload, concurrency) pairs.
func casesOf(pairs [][2]string) ([]Case, error) {
	var cs []Case
	for _, p := range pairs {
		spec, err := newCase(p[0], p[1])
		if err != nil {
			return nil, err
		}
		cs = append(cs, spec)
	}
	if len(cs) == 0 {
		return nil, errors.New("no cases")
	}
	return cs, nil
}

// newCase checks one case.
func newCase(wl, n string) (Case, error) {
	known := false
	for _, w := range workloads {
		known = known || w == wl
	}
	if !known {
		return Case{}, fmt.Errorf("workload %q: want one of %s", wl, strings.Join(workloads, ", "))
	}
	c, err := strconv.Atoi(n)
	if err != nil || c < 1 || c > 4096 {
		return Case{}, fmt.Errorf("concurrency %q: want 1 to 4096", n)
	}
	return Case{Workload: wl, Concurrency: c}, nil
}

// OpResult is the outcome of one kind of operation.
type OpResult struct {
	Ops          int            `json:"ops"`
	Errors       int            `json:"errors"`
	OpsPerSec    float64        `json:"ops_per_sec"`
	Latency      LatencyMS      `json:"latency_ms"`
	ErrorsByCode map[string]int `json:"errors_by_code,omitempty"`
}

// LatencyMS are latency percentiles in milliseconds (nearest rank over
// every successful operation of the window).
type LatencyMS struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// Ratios compare a result with its baseline: result / baseline.
type Ratios struct {
	Against  string   `json:"against"`
	Ops      float64  `json:"ops_per_sec"`
	P50      float64  `json:"p50"`
	P99      float64  `json:"p99"`
	CPUPerOp *float64 `json:"cpu_per_op,omitempty"`
}

// CaseResult is one case's report.
type CaseResult struct {
	Name           string  `json:"name"`
	Target         string  `json:"target"`
	Workload       string  `json:"workload"`
	Concurrency    int     `json:"concurrency"`
	PriorRotations int     `json:"prior_rotations,omitempty"`
	DurationS      float64 `json:"duration_s"`
	OpResult
	PerOp map[string]OpResult `json:"per_op,omitempty"`
	// The process under load (service or bare pipeline), over the window.
	// With SharedProcess (--in-process) that process is the bench's own:
	// CPU and RSS then include the load generator, and the loadgen_*
	// fields are the same process again.
	SharedProcess bool     `json:"shared_process,omitempty"`
	CPUPerOpUS    *float64 `json:"cpu_per_op_us,omitempty"`
	CPUCores      *float64 `json:"cpu_cores,omitempty"`
	PeakRSSBytes  int64    `json:"peak_rss_bytes,omitempty"`
	PeakRSSScope  string   `json:"peak_rss_scope,omitempty"`
	// The load generator (this process), over the window.
	LoadgenCPUPerOpUS float64 `json:"loadgen_cpu_per_op_us"`
	LoadgenCPUCores   float64 `json:"loadgen_cpu_cores"`
	// OtherCPUCores is the machine's busy CPU over the window that neither
	// the process under load nor the load generator used: other programs
	// (and the idle other child). Above a few tenths the case is noisy.
	OtherCPUCores *float64 `json:"other_cpu_cores,omitempty"`
	VsBare        *Ratios  `json:"vs_bare,omitempty"`
	VsFresh       *Ratios  `json:"vs_fresh,omitempty"`
	Profile       string   `json:"cpu_profile,omitempty"`
	Error         string   `json:"error,omitempty"`
}

func caseName(kind string, spec Case) string {
	wl := spec.Workload
	if kind == "bare" {
		wl = bareName(spec.Workload)
	}
	return fmt.Sprintf("%s/c=%d", wl, spec.Concurrency)
}

// bareName is the bare pipeline a workload compares with ("" for none).
func bareName(workload string) string {
	switch workload {
	case wlIssue:
		return "bare-issue"
	case wlRefresh, wlAged, wlRevoke:
		return "bare-rotate"
	case wlIntrospect:
		return "bare-echo"
	}
	return ""
}

// bareWorkload is the workload that drives a bare pipeline.
func bareWorkload(workload string) string {
	switch workload {
	case wlIssue:
		return wlIssue
	case wlRefresh, wlAged, wlRevoke:
		return wlRefresh
	case wlIntrospect:
		return wlIntrospect
	}
	return ""
}

type runSettings struct {
	duration, warmup time.Duration
	prior            int
	mix              []MixWeight
	profileDir       string
	log              func(format string, args ...any)
}

// runCase measures one case on its own: set the workers up, warm up,
// measure a window of the configured duration, stop.
func runCase(ctx context.Context, t *loadTarget, spec Case, rs runSettings) CaseResult {
	return measure(ctx, []*part{{t: t, spec: spec}}, rs, 1)[0]
}

// runInterleaved measures a service case and its bare counterpart in the
// same window: the measured time is cut into slices that alternate
// between the two (bare first), each after a settling time in which the
// callers of the other target are paused. Drift in the machine's speed
// or in foreign load then falls on both alike, so their ratio moves far
// less from run to run than with one measured after the other.
func runInterleaved(ctx context.Context, bare, svc *loadTarget, bareSpec, spec Case, rs runSettings, slices int) (CaseResult, CaseResult) {
	r := measure(ctx, []*part{{t: bare, spec: bareSpec}, {t: svc, spec: spec}}, rs, slices)
	return r[0], r[1]
}

// settle is the unmeasured time a target gets, when its turn comes again,
// for its callers' pipeline to fill.
func settle(slice time.Duration) time.Duration { return min(slice/5, 250*time.Millisecond) }

// part is one target's side of a measurement.
type part struct {
	t    *loadTarget
	spec Case
	res  CaseResult

	workers []*caller
	recs    []*recorder
	win     window
	wg      sync.WaitGroup

	mu   sync.Mutex
	cond *sync.Cond
	on   atomic.Bool // callers may send (under mu when set)
	stop bool        // under mu

	// Sums over the measured slices.
	elapsed, cpu, self, host time.Duration
	cpuErr, hostErr          error
	scope                    string
}

// prepare sets the callers up (families, prior rotations) and starts them
// paused.
func (p *part) prepare(ctx context.Context, rs runSettings) error {
	t, spec := p.t, p.spec
	p.workers = make([]*caller, spec.Concurrency)
	for i := range p.workers {
		p.workers[i] = newCaller(t, i, spec.Workload, rs.mix)
	}
	var done atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(64)
	stopProgress := make(chan struct{})
	if spec.Workload == wlAged && rs.prior > 0 {
		total := int64(rs.prior * ((spec.Concurrency + 1) / 2))
		go func() {
			tick := time.NewTicker(2 * time.Second)
			defer tick.Stop()
			for {
				select {
				case <-stopProgress:
					return
				case <-tick.C:
					rs.log("  %s: prior rotations %d/%d", p.res.Name, done.Load(), total)
				}
			}
		}()
	}
	for _, w := range p.workers {
		g.Go(func() error { return w.setup(gctx, rs.prior, func() { done.Add(1) }) })
	}
	err := g.Wait()
	close(stopProgress)
	if err != nil {
		return err
	}

	p.cond = sync.NewCond(&p.mu)
	p.win.start.Store(math.MaxInt64)
	p.win.end.Store(math.MaxInt64)
	p.recs = make([]*recorder, len(p.workers))
	for i, w := range p.workers {
		p.recs[i] = &recorder{w: &p.win, ops: map[string]*opStats{}}
		p.wg.Go(func() {
			for ctx.Err() == nil && p.wait() {
				w.step(p.recs[i])
			}
		})
	}
	if t.pid > 0 {
		p.scope = "case"
		if resetPeakRSS(t.pid) != nil {
			p.scope = "process"
		}
	}
	return nil
}

// wait blocks while the part is paused; false once it is stopped.
func (p *part) wait() bool {
	if p.on.Load() {
		return true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for !p.on.Load() && !p.stop {
		p.cond.Wait()
	}
	return !p.stop
}

func (p *part) setRunning(on bool) {
	p.mu.Lock()
	p.on.Store(on)
	p.mu.Unlock()
	p.cond.Broadcast()
}

// end stops the callers for good and waits for them.
func (p *part) end() {
	p.mu.Lock()
	p.stop = true
	p.on.Store(false)
	p.mu.Unlock()
	p.cond.Broadcast()
	p.wg.Wait()
}

// slice measures one slice of d: operations that start in it count.
func (p *part) slice(ctx context.Context, d time.Duration) {
	t := p.t
	var cpu0, cpu1 time.Duration
	var cpuErr error
	if t.pid > 0 {
		cpu0, cpuErr = procCPU(t.pid)
	}
	self0 := selfCPU()
	host0, hostErr := hostBusy()
	t0 := time.Now()
	p.win.open(t0.UnixNano())
	sleepCtx(ctx, d)
	t1 := time.Now()
	p.win.end.Store(t1.UnixNano())
	self1 := selfCPU()
	host1, hostErr1 := hostBusy()
	if t.pid > 0 && cpuErr == nil {
		cpu1, cpuErr = procCPU(t.pid)
	}
	p.elapsed += t1.Sub(t0)
	p.self += self1 - self0
	p.cpu += cpu1 - cpu0
	p.host += host1 - host0
	p.cpuErr = errors.Join(p.cpuErr, cpuErr)
	p.hostErr = errors.Join(p.hostErr, hostErr, hostErr1)
}

// measure prepares the parts, then runs slices rounds in which each part
// in turn settles (the warm-up, the first time) and is measured for its
// share of the duration, and returns the parts' results in order.
func measure(ctx context.Context, parts []*part, rs runSettings, slices int) []CaseResult {
	slices = max(1, slices)
	out := make([]CaseResult, len(parts))
	for _, p := range parts {
		p.res = CaseResult{
			Name: caseName(p.t.kind, p.spec), Target: p.t.kind, Workload: p.spec.Workload,
			Concurrency: p.spec.Concurrency, SharedProcess: p.t.shared,
		}
		if p.spec.Workload == wlAged {
			p.res.PriorRotations = rs.prior
		}
	}
	for i, p := range parts {
		if err := p.prepare(ctx, rs); err != nil {
			for _, q := range parts[:i] {
				q.end()
			}
			for j, q := range parts {
				out[j] = q.res
				out[j].Error = fmt.Sprintf("setting up %s: %v", p.res.Name, err)
			}
			return out
		}
	}
	// A profile covers a part's whole measured time; one at a time, so a
	// profiled measurement is never interleaved (see bench's --slices).
	profile := rs.profileDir != "" && len(parts) == 1 && parts[0].t.proc != nil
	if profile {
		p := parts[0]
		path := rs.profileDir + "/" + profileFile(p.res.Name, p.t.kind)
		p.setRunning(true)
		sleepCtx(ctx, rs.warmup)
		if err := p.t.proc.control("start " + path); err != nil {
			rs.log("  profile: %v", err)
		} else {
			p.res.Profile = path
		}
	}
	slice := rs.duration / time.Duration(slices)
	for i := range slices {
		for _, p := range parts {
			if ctx.Err() != nil {
				break
			}
			if !profile {
				p.setRunning(true)
				if i == 0 {
					sleepCtx(ctx, rs.warmup)
				} else {
					sleepCtx(ctx, settle(slice))
				}
			}
			p.slice(ctx, slice)
			if len(parts) > 1 {
				p.setRunning(false)
			}
		}
	}
	for _, p := range parts {
		if p.res.Profile != "" {
			if err := p.t.proc.control("stop"); err != nil {
				rs.log("  profile: %v", err)
				p.res.Profile = ""
			}
		}
	}
	for i, p := range parts {
		var peak int64
		if p.t.pid > 0 {
			peak, _, _ = procMem(p.t.pid)
		}
		if p.t.shared && len(parts) > 1 {
			p.scope = "process" // one peak for both targets and the load
		}
		p.end()
		out[i] = p.finish(peak)
	}
	return out
}

// finish turns the part's tallies into its result.
func (p *part) finish(peak int64) CaseResult {
	t, spec, res := p.t, p.spec, p.res
	recs, elapsed := p.recs, p.elapsed
	cpuErr, hostErr := p.cpuErr, p.hostErr
	scope := p.scope
	res.DurationS = elapsed.Seconds()
	merged := map[string]*opStats{}
	for _, r := range recs {
		for kind, st := range r.ops {
			m := merged[kind]
			if m == nil {
				m = &opStats{errs: map[string]int{}}
				merged[kind] = m
			}
			m.lat = append(m.lat, st.lat...)
			for c, n := range st.errs {
				m.errs[c] += n
			}
		}
	}
	all := &opStats{errs: map[string]int{}}
	for _, m := range merged {
		all.lat = append(all.lat, m.lat...)
		for c, n := range m.errs {
			all.errs[c] += n
		}
	}
	res.OpResult = summarize(all, elapsed)
	if len(merged) > 1 || spec.Workload == wlMix {
		res.PerOp = map[string]OpResult{}
		for kind, m := range merged {
			res.PerOp[kind] = summarize(m, elapsed)
		}
	}
	res.LoadgenCPUCores = round2(float64(p.self) / float64(elapsed))
	if t.pid > 0 && cpuErr == nil && hostErr == nil {
		ours := p.cpu + p.self
		if t.shared {
			ours = p.self
		}
		other := round2(max(0, float64(p.host-ours)/float64(elapsed)))
		res.OtherCPUCores = &other
	}
	if res.Ops > 0 {
		res.LoadgenCPUPerOpUS = round2(float64(p.self) / float64(time.Microsecond) / float64(res.Ops))
		if t.pid > 0 && cpuErr == nil {
			perOp := round2(float64(p.cpu) / float64(time.Microsecond) / float64(res.Ops))
			cores := round2(float64(p.cpu) / float64(elapsed))
			res.CPUPerOpUS, res.CPUCores = &perOp, &cores
		}
	}
	if peak > 0 {
		res.PeakRSSBytes, res.PeakRSSScope = peak, scope
	}
	if a, f := res.PerOp[opAged], res.PerOp[opFresh]; a.Ops > 0 && f.Ops > 0 {
		// Per caller: there are ceil(c/2) aged callers and floor(c/2) fresh.
		nAged, nFresh := float64((spec.Concurrency+1)/2), float64(spec.Concurrency/2)
		res.VsFresh = &Ratios{
			Against: "fresh families in the same window",
			Ops:     round3((a.OpsPerSec / nAged) / (f.OpsPerSec / nFresh)),
			P50:     round3(a.Latency.P50 / f.Latency.P50),
			P99:     round3(a.Latency.P99 / f.Latency.P99),
		}
	}
	if res.Ops == 0 && res.Errors > 0 {
		res.Error = "every operation failed"
		if res.ErrorsByCode[codeNoResponders] > 0 {
			res.Error += ": no responders (endpoint not served)"
		}
	}
	return res
}

func summarize(st *opStats, elapsed time.Duration) OpResult {
	r := OpResult{Ops: len(st.lat)}
	for c, n := range st.errs {
		r.Errors += n
		if r.ErrorsByCode == nil {
			r.ErrorsByCode = map[string]int{}
		}
		r.ErrorsByCode[c] = n
	}
	if r.Ops == 0 {
		return r
	}
	r.OpsPerSec = round2(float64(r.Ops) / elapsed.Seconds())
	lat := st.lat
	slices.Sort(lat)
	var sum float64
	for _, v := range lat {
		sum += float64(v)
	}
	ms := func(ns int64) float64 { return round3(float64(ns) / 1e6) }
	r.Latency = LatencyMS{
		P50: ms(rank(lat, 0.50)), P90: ms(rank(lat, 0.90)), P99: ms(rank(lat, 0.99)),
		Max: ms(lat[len(lat)-1]), Mean: round3(sum / float64(len(lat)) / 1e6),
	}
	return r
}

// rank is the nearest-rank percentile of sorted values.
func rank(sorted []int64, q float64) int64 {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }
func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

func profileFile(name, kind string) string {
	b := []byte(kind + "-" + name + ".pprof")
	for i, c := range b {
		if c == '/' || c == '=' {
			b[i] = '_'
		}
	}
	return string(b)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// splitList splits a list separated by commas or spaces.
func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' })
}
