// Command sizing measures what a ledger of a given size costs on this
// machine, for the sizing table of docs/operations.md:
//
//  1. It starts `tokenledger serve` (embedded NATS, --sync-always=false so
//     the fill is quick) on a fresh data directory and fills its ledger
//     with synthetic but valid families: each issued, then rotated, with
//     real-sized hashes and sealed successors, hash-chained and encoded
//     exactly as the service appends them (jsstore.Store.FamilyMsg).
//
//  2. It waits until the instance's view has caught up and a checkpoint
//     covers the ledger, and reads the stream sizes, the checkpoint's size
//     and the instance's memory.
//
//  3. It restarts the instance twice and times process start to /readyz:
//     once from the checkpoint, once with checkpoints ignored (a rebuild
//     from the first event), in the same run.
//
//     go build -o /tmp/tl ./cmd/tokenledger
//     go run ./scripts/sizing -bin /tmp/tl -families 2000000 -events 5000000 -dir /tmp/tlsize
//
// It prints one JSON object (and a line per step on stderr).
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/tokenledger/tokenledger/ledger"
	"github.com/tokenledger/tokenledger/ledger/jsstore"
	"github.com/tokenledger/tokenledger/projections"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sizing:", err)
		os.Exit(1)
	}
}

type config struct {
	bin, dir  string
	families  int
	events    int
	chunk     int
	serveArgs []string
	// natsURL, when set, is a running NATS server serve connects to
	// instead of starting its embedded one on the data directory.
	natsURL string
}

// Result is what one run measured.
type Result struct {
	Families      int     `json:"families"`
	Events        uint64  `json:"events"`
	FillSeconds   float64 `json:"fill_seconds"`
	StreamBytes   uint64  `json:"stream_bytes"`
	BytesPerEvent float64 `json:"stream_bytes_per_event"`
	ArchiveBytes  uint64  `json:"archive_bytes,omitempty"`
	// On disk after the last stop (the file store compresses a block with
	// S2 once it is full).
	DiskBytes         uint64  `json:"disk_bytes"`
	DiskBytesPerEvent float64 `json:"disk_bytes_per_event"`
	ArchiveDiskBytes  uint64  `json:"archive_disk_bytes"`
	CheckpointBytes   uint64  `json:"checkpoint_bytes"`
	CheckpointSeq     uint64  `json:"checkpoint_seq"`
	// The instance with its embedded NATS server, after its view folded
	// every event of the fill: resident set and Go heap in use (from
	// /metrics).
	RSSBytes    uint64  `json:"rss_bytes"`
	HeapInUse   uint64  `json:"heap_inuse_bytes"`
	FirstReadyS float64 `json:"first_start_ready_seconds"`
	// Process start to /readyz: the embedded server and the instance
	// from the checkpoint; the instance alone against a running NATS
	// server (ServerStartS is that server's own recovery), from the
	// checkpoint and rebuilding from the first event.
	EmbeddedRestartS float64 `json:"embedded_restart_ready_seconds"`
	// The instance alone (NATS in another process), just restarted from
	// the checkpoint.
	InstanceRSS   uint64  `json:"instance_rss_bytes"`
	InstanceHeap  uint64  `json:"instance_heap_inuse_bytes"`
	ServerStartS  float64 `json:"nats_server_start_seconds"`
	RestartReadyS float64 `json:"restart_from_checkpoint_ready_seconds"`
	RebuildReadyS float64 `json:"rebuild_ready_seconds"`
	Machine       string  `json:"machine"`
}

func run(ctx context.Context, args []string) error {
	var c config
	fs := flag.NewFlagSet("sizing", flag.ContinueOnError)
	fs.StringVar(&c.bin, "bin", "", "the tokenledger binary to measure (required)")
	fs.StringVar(&c.dir, "dir", "", "data directory, created fresh (required)")
	fs.IntVar(&c.families, "families", 100000, "families to issue")
	fs.IntVar(&c.events, "events", 250000, "events in all (issues plus rotations; at least -families)")
	fs.IntVar(&c.chunk, "chunk", 50000, "families filled together (their events interleave)")
	extra := fs.String("serve-args", "", "extra flags for serve, space separated")
	skipFill := fs.Bool("skip-fill", false, "measure a -dir an earlier run filled (its sizes and the restarts again)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.bin == "" || c.dir == "" || c.events < c.families || c.families <= 0 {
		fs.Usage()
		return errors.New("-bin and -dir are required, and -events must be at least -families")
	}
	c.serveArgs = strings.Fields(*extra)
	if _, err := os.Stat(c.dir); err == nil && !*skipFill {
		return fmt.Errorf("-dir %s exists: give a new one (or -skip-fill)", c.dir)
	}
	res := Result{Families: c.families, Machine: machine()}

	// 1. Fill.
	started := time.Now()
	inst, err := start(ctx, c, "fill")
	if err != nil {
		return err
	}
	res.FirstReadyS = time.Since(started).Seconds()
	if !*skipFill {
		if err := fill(ctx, c, inst.natsURL); err != nil {
			inst.stop()
			return err
		}
	}

	// 2. Caught up and checkpointed.
	nc, js, err := connect(inst.natsURL)
	if err != nil {
		inst.stop()
		return err
	}
	last, err := lastSeq(ctx, js)
	if err != nil {
		return err
	}
	res.Events = last
	res.FillSeconds = time.Since(started).Seconds()
	step("filled %d events in %.0f s; waiting for the view and a checkpoint", last, res.FillSeconds)
	if err := inst.waitReady(ctx, 30*time.Minute); err != nil {
		return err
	}
	if res.CheckpointSeq, res.CheckpointBytes, err = waitCheckpoint(ctx, js, last); err != nil {
		return err
	}
	if res.RSSBytes, err = rss(inst.cmd.Process.Pid); err != nil {
		return err
	}
	if res.HeapInUse, err = inst.metric("go_memstats_heap_inuse_bytes"); err != nil {
		return err
	}
	if res.StreamBytes, err = streamBytes(ctx, js, jsstore.DefaultStream); err != nil {
		return err
	}
	res.BytesPerEvent = float64(res.StreamBytes) / float64(last)
	res.ArchiveBytes, _ = streamBytes(ctx, js, jsstore.DefaultStream+"_ARCHIVE")
	nc.Close()
	if err := inst.stop(); err != nil {
		return err
	}

	// 3. Restarts, in this run: the embedded server and the instance
	// together from the checkpoint; then, against a NATS server that
	// keeps running (as in production, where an instance restarts and
	// the cluster does not), the instance alone from the checkpoint and
	// the instance alone rebuilding from the first event.
	if res.EmbeddedRestartS, err = timeStart(ctx, c, "embedded-restart"); err != nil {
		return err
	}
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true,
		StoreDir: filepath.Join(c.dir, "data", "jetstream"), MaxPayload: 1 << 20, NoSigs: true})
	if err != nil {
		return err
	}
	t0 := time.Now()
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Minute) {
		ns.Shutdown()
		return errors.New("nats server not ready")
	}
	res.ServerStartS = time.Since(t0).Seconds()
	step("nats server on the ledger: ready in %.2f s", res.ServerStartS)
	ext := c
	ext.natsURL = ns.ClientURL()
	var mem [2]uint64
	if res.RestartReadyS, mem, err = timeStartMem(ctx, ext, "restart"); err == nil {
		res.InstanceRSS, res.InstanceHeap = mem[0], mem[1]
		ext.serveArgs = append(append([]string{}, c.serveArgs...), rebuildArgs...)
		res.RebuildReadyS, err = timeStart(ctx, ext, "rebuild")
	}
	ns.Shutdown()
	ns.WaitForShutdown()
	if err != nil {
		return err
	}
	streams := filepath.Join(c.dir, "data", "jetstream", "jetstream", "$G", "streams")
	if res.DiskBytes, err = dirSize(filepath.Join(streams, jsstore.DefaultStream)); err != nil {
		return err
	}
	res.DiskBytesPerEvent = float64(res.DiskBytes) / float64(res.Events)
	res.ArchiveDiskBytes, _ = dirSize(filepath.Join(streams, jsstore.DefaultStream+"_ARCHIVE"))
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(res)
}

func step(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s sizing: %s\n", time.Now().UTC().Format(time.TimeOnly), fmt.Sprintf(format, args...))
}

// timeStart starts serve, waits until it is ready and stops it: the
// seconds from process start to /readyz.
func timeStart(ctx context.Context, c config, name string) (float64, error) {
	took, _, err := timeStartMem(ctx, c, name)
	return took, err
}

// timeStartMem is timeStart that also reads the instance's memory once
// ready: resident set and Go heap in use.
func timeStartMem(ctx context.Context, c config, name string) (float64, [2]uint64, error) {
	var mem [2]uint64
	t0 := time.Now()
	inst, err := start(ctx, c, name)
	if err != nil {
		return 0, mem, err
	}
	took := time.Since(t0).Seconds()
	step("%s: ready in %.2f s", name, took)
	var errs [2]error
	mem[0], errs[0] = rss(inst.cmd.Process.Pid)
	mem[1], errs[1] = inst.metric("go_memstats_heap_inuse_bytes")
	return took, mem, errors.Join(errs[0], errs[1], inst.stop())
}

// instance is one `tokenledger serve` process.
type instance struct {
	cmd      *exec.Cmd
	natsURL  string
	httpAddr string
	done     chan error
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func start(ctx context.Context, c config, name string) (*instance, error) {
	listen, err := freePort()
	if err != nil {
		return nil, err
	}
	httpAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(c.dir, name+".log"))
	if err != nil {
		return nil, err
	}
	args := []string{"serve", "--data", filepath.Join(c.dir, "data"), "--listen", listen, "--sync-always=false"}
	if c.natsURL != "" {
		listen = strings.TrimPrefix(c.natsURL, "nats://")
		args = []string{"serve", "--nats-url", c.natsURL, "--kek-file", filepath.Join(c.dir, "data", "kek")}
	}
	args = append(append(args, "--http", httpAddr, "--log-level", "info"), c.serveArgs...)
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	inst := &instance{cmd: cmd, natsURL: "nats://" + listen, httpAddr: httpAddr, done: make(chan error, 1)}
	go func() { inst.done <- cmd.Wait(); logf.Close() }()
	if err := inst.waitReady(ctx, 30*time.Minute); err != nil {
		inst.stop()
		return nil, fmt.Errorf("%s: %w (log: %s)", name, err, logf.Name())
	}
	return inst, nil
}

// waitReady polls /readyz until it answers 200.
func (i *instance) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case err := <-i.done:
			return fmt.Errorf("serve exited: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		resp, err := http.Get("http://" + i.httpAddr + "/readyz")
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return nil
		}
	}
	return errors.New("not ready in time")
}

// metric reads one unlabelled gauge from /metrics.
func (i *instance) metric(name string) (uint64, error) {
	resp, err := http.Get("http://" + i.httpAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return uint64(f), err
		}
	}
	return 0, fmt.Errorf("metric %s not found", name)
}

// stop sends SIGTERM and waits for the exit.
func (i *instance) stop() error {
	_ = i.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-i.done:
		return nil
	case <-time.After(60 * time.Second):
		_ = i.cmd.Process.Kill()
		return errors.New("serve did not stop within 60 s of SIGTERM")
	}
}

func rss(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmRSS")
}

func machine() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s, %d CPUs", host, runtime.NumCPU())
}

func connect(url string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(url, nats.Name("tokenledger-sizing"))
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(8192))
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

func lastSeq(ctx context.Context, js jetstream.JetStream) (uint64, error) {
	s, err := js.Stream(ctx, jsstore.DefaultStream)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.LastSeq, nil
}

func streamBytes(ctx context.Context, js jetstream.JetStream, name string) (uint64, error) {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Bytes, nil
}

// fill appends c.events events to c.families families, c.chunk families at
// a time: each chunk is issued, then rotated round by round until its
// share of rotations is spent, so a chunk's events interleave.
func fill(ctx context.Context, c config, url string) error {
	nc, js, err := connect(url)
	if err != nil {
		return err
	}
	defer nc.Close()
	store, err := jsstore.NewStore(ctx, js, jsstore.StoreConfig{})
	if err != nil {
		return err
	}
	rotations := c.events - c.families
	now := time.Now().UTC()
	sent, lastReport := 0, time.Now()
	publish := func(st ledger.State, e ledger.Event) (ledger.State, error) {
		msg, next, err := store.FamilyMsg(st, e)
		if err != nil {
			return st, err
		}
		if _, err := js.PublishMsgAsync(msg, jetstream.WithStallWait(time.Minute)); err != nil {
			return st, fmt.Errorf("publish: %w", err)
		}
		sent++
		if time.Since(lastReport) > 10*time.Second {
			step("%d of %d events sent", sent, c.events)
			lastReport = time.Now()
		}
		return next, nil
	}
	for first := 0; first < c.families; first += c.chunk {
		n := min(c.chunk, c.families-first)
		states := make([]ledger.State, n)
		for i := range n {
			e := issued(first+i, now)
			if states[i], err = publish(ledger.State{}, e); err != nil {
				return err
			}
		}
		// This chunk's share of the rotations, spread over its families.
		share := rotations * (first + n) / c.families
		share -= rotations * first / c.families
		for share > 0 {
			for i := 0; i < n && share > 0; i++ {
				if states[i], err = publish(states[i], rotated(states[i], now)); err != nil {
					return err
				}
				share--
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

var (
	day    = 24 * time.Hour
	scope  = "openid profile email"
	client = "sizing-web"
)

func randText(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func newID(t time.Time) string { return ulid.MustNew(ulid.Timestamp(t), rand.Reader).String() }

func issued(i int, now time.Time) ledger.Event {
	return ledger.Event{
		ID: newID(now), FamilyID: newID(now), OccurredAt: now,
		Cause: ledger.Cause{Kind: ledger.CauseRequest, ID: newID(now)},
		Data: ledger.FamilyIssued{
			ClientID: client, Subject: fmt.Sprintf("user-%08d@example.com", i), Scope: scope,
			Audience: []string{"api"}, Version: 1, TokenHash: randText(32),
			RefreshExpiresAt: now.Add(14 * day), ExpiresAt: now.Add(90 * day),
			Access: ledger.AccessGrant{JTI: newID(now), Scope: scope, ExpiresAt: now.Add(15 * time.Minute)},
		},
	}
}

func rotated(st ledger.State, now time.Time) ledger.Event {
	return ledger.Event{
		ID: newID(now), FamilyID: st.FamilyID, OccurredAt: now,
		Cause: ledger.Cause{Kind: ledger.CauseRequest, ID: newID(now)},
		Data: ledger.RefreshRotated{
			FromGeneration: st.Generation, ToGeneration: st.Generation + 1,
			PresentedHash: st.TokenHash, TokenHash: randText(32), SealedSuccessor: randText(104),
			RefreshExpiresAt: now.Add(14 * day), Version: st.Version,
			Access: ledger.AccessGrant{JTI: newID(now), Scope: scope, ExpiresAt: now.Add(15 * time.Minute)},
		},
	}
}

// rebuildArgs make serve ignore checkpoints: every start rebuilds.
var rebuildArgs = []string{"--checkpoint-every", "0", "--checkpoint-interval", "0"}

// waitCheckpoint waits for a checkpoint within the default checkpoint
// distance of last and returns its sequence and size.
func waitCheckpoint(ctx context.Context, js jetstream.JetStream, last uint64) (uint64, uint64, error) {
	store, err := projections.OpenCheckpointStore(ctx, js, projections.DefaultCheckpointBucket)
	if err != nil {
		return 0, 0, err
	}
	deadline := time.Now().Add(30 * time.Minute)
	for time.Now().Before(deadline) {
		infos, err := store.List(ctx)
		if err != nil {
			return 0, 0, err
		}
		for _, in := range infos {
			if in.Seq+projections.DefaultCheckpointEvery >= last {
				return in.Seq, in.Size, nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	return 0, 0, errors.New("no checkpoint near the end of the ledger in 30 minutes")
}

// dirSize is the bytes of the files under dir.
func dirSize(dir string) (uint64, error) {
	var n uint64
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err == nil {
			n += uint64(info.Size())
		}
		return err
	})
	return n, err
}
