package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// child is a process the bench starts: the service under test or the bare
// pipeline. Its stderr goes to a log file; with control on, its stdin and
// stdout carry the profiling protocol of ControlLoop.
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	ctlIn   io.WriteCloser
	ctlOut  *bufio.Reader
	done    chan struct{}
	waitErr error
}

// Child process names: `tokenledger bench NAME ...` runs RunChild.
const (
	// BareChild is the bare pipeline's process.
	BareChild = "bare-child"
	// ServeChild is the service's process when the bench profiles it:
	// `tokenledger serve` with the profiling control loop on stdin.
	ServeChild = "serve-child"
)

// IsChild reports whether arg names one of the bench's child processes.
func IsChild(arg string) bool { return arg == BareChild || arg == ServeChild }

// RunChild runs the child process that args[0] names (BareChild or
// ServeChild) with the flags after it until ctx ends. ctl and ctlOut are
// the child's stdin and stdout: they carry the profiling protocol of
// ControlLoop.
func RunChild(ctx context.Context, args []string, w Wiring, ctl io.Reader, ctlOut io.Writer) error {
	if len(args) == 0 || !IsChild(args[0]) {
		return fmt.Errorf("bench: not a child process: %q", args)
	}
	if args[0] == BareChild {
		return runBare(ctx, args[1:], w.StartServer, ctl, ctlOut)
	}
	if w.Serve == nil {
		return errors.New("bench: " + ServeChild + " without a serve function")
	}
	go ControlLoop(ctl, ctlOut)
	return w.Serve(ctx, args[1:])
}

// startChild starts exe with args and environment env, its stderr going to
// logPath; with control, its stdin and stdout carry the profiling protocol.
func startChild(name, exe string, args, env []string, logPath string, control bool) (*child, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = env
	cmd.Stderr = logFile
	c := &child{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	if control {
		if c.ctlIn, err = cmd.StdinPipe(); err != nil {
			logFile.Close()
			return nil, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			logFile.Close()
			return nil, err
		}
		c.ctlOut = bufio.NewReader(out)
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		c.waitErr = cmd.Wait()
		logFile.Close()
		close(c.done)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// exited reports whether the child is gone, with its log's tail.
func (c *child) exited() error {
	select {
	case <-c.done:
		return fmt.Errorf("%s exited (%v); log %s:\n%s", c.name, c.waitErr, c.logPath, tail(c.logPath, 2000))
	default:
		return nil
	}
}

// stop asks the child to shut down and waits, killing it after a while.
func (c *child) stop() error {
	if c.ctlIn != nil {
		c.ctlIn.Close()
	}
	select {
	case <-c.done:
		return nil
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return nil
	case <-time.After(20 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
		return fmt.Errorf("%s did not stop within 20s; killed", c.name)
	}
}

// control sends one line of the profiling protocol and waits for "ok".
func (c *child) control(line string) error {
	if c.ctlIn == nil {
		return errors.New("no control channel")
	}
	if _, err := io.WriteString(c.ctlIn, line+"\n"); err != nil {
		return err
	}
	reply, err := c.ctlOut.ReadString('\n')
	if err != nil {
		return fmt.Errorf("%s control: %w", c.name, err)
	}
	if reply = strings.TrimSpace(reply); reply != "ok" {
		return fmt.Errorf("%s control %q: %s", c.name, line, reply)
	}
	return nil
}

// ControlLoop runs in a child: "start PATH" starts a CPU profile written to
// PATH, "stop" ends it and writes the live heap at that moment to
// PATH.heap; each line is answered "ok" or an error on stdout.
// It returns when stdin closes.
func ControlLoop(in io.Reader, out io.Writer) {
	var p profiler
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		if err := p.do(strings.TrimSpace(sc.Text())); err != nil {
			fmt.Fprintln(out, "error:", err)
		} else {
			fmt.Fprintln(out, "ok")
		}
	}
	_ = p.do("stop")
}

// profiler carries out the profiling protocol's commands in this process.
type profiler struct {
	mu   sync.Mutex
	f    *os.File
	path string
}

func (p *profiler) do(line string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	cmd, arg, _ := strings.Cut(line, " ")
	switch cmd {
	case "start":
		if p.f != nil {
			return errors.New("profile already running")
		}
		f, err := os.Create(arg)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return err
		}
		p.f, p.path = f, arg
		return nil
	case "stop":
		if p.f == nil {
			return errors.New("no profile running")
		}
		pprof.StopCPUProfile()
		err := p.f.Close()
		p.f = nil
		return errors.Join(err, writeHeapProfile(p.path+".heap"))
	default:
		return fmt.Errorf("unknown control command %q", cmd)
	}
}

// writeHeapProfile writes the live heap, after a collection, to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	return errors.Join(pprof.WriteHeapProfile(f), f.Close())
}

// inProcess is a target run as goroutines of the bench's own process
// (--in-process): the service or the bare pipeline with its embedded
// server, as in the reference measurements, where server, client and load
// share one process. It answers the same calls as child.
type inProcess struct {
	name   string
	cancel context.CancelFunc
	done   chan struct{}
	err    error
	prof   *profiler
}

func startInProcess(ctx context.Context, name string, run func(context.Context) error, prof *profiler) *inProcess {
	ctx, cancel := context.WithCancel(ctx)
	p := &inProcess{name: name, cancel: cancel, done: make(chan struct{}), prof: prof}
	go func() {
		defer close(p.done)
		p.err = run(ctx)
	}()
	return p
}

func (p *inProcess) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s stopped: %v", p.name, p.err)
	default:
		return nil
	}
}

func (p *inProcess) stop() error {
	p.cancel()
	select {
	case <-p.done:
		if p.err != nil && !errors.Is(p.err, context.Canceled) {
			return fmt.Errorf("%s: %w", p.name, p.err)
		}
		return nil
	case <-time.After(20 * time.Second):
		return fmt.Errorf("%s did not stop within 20s", p.name)
	}
}

func (p *inProcess) control(line string) error { return p.prof.do(line) }

// targetProc is where a target the bench started runs: a child process
// or goroutines of this one.
type targetProc interface {
	exited() error
	stop() error
	control(line string) error
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// clockTicks is USER_HZ, 100 on every Linux the project runs on.
const clockTicks = 100

// procCPU is the CPU time (user + system) a process has used so far,
// from /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// Fields after ")" start at field 3 (state); utime is 14, stime 15.
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// procMem returns VmHWM (peak resident set) and VmRSS in bytes.
func procMem(pid int) (peak, rss int64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "VmHWM":
			peak = n << 10
		case "VmRSS":
			rss = n << 10
		}
	}
	if peak == 0 {
		return 0, 0, errors.New("no VmHWM in /proc status")
	}
	return peak, rss, nil
}

// resetPeakRSS resets VmHWM to the current RSS (Linux clear_refs value 5),
// so the peak read after a case is that case's.
func resetPeakRSS(pid int) error {
	return os.WriteFile("/proc/"+strconv.Itoa(pid)+"/clear_refs", []byte("5"), 0)
}

// selfCPU is this process's CPU time so far (the load generator's).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// hostBusy is the CPU time every core of the machine has spent busy
// (everything but idle and iowait), from /proc/stat.
func hostBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, errors.New("malformed /proc/stat")
	}
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 8 { // guest time is already in user
			break
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, err
		}
		busy += n
	}
	return time.Duration(busy) * time.Second / clockTicks, nil
}
