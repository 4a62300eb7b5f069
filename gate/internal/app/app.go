// Package app is terok-gate's command line (docs/gate.md, terok-gate flags): flags,
// the choice of listening mode, the detach re-exec and signal handling.
package app

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"terok.dev/sandbox/common/atomicfile"
	"terok.dev/sandbox/common/audit"
	cm "terok.dev/sandbox/common/metrics"
	"terok.dev/sandbox/common/sdactivation"
	"terok.dev/sandbox/common/taskend"
	"terok.dev/sandbox/common/version"
	"terok.dev/sandbox/gate/internal/health"
	"terok.dev/sandbox/gate/internal/listen"
	"terok.dev/sandbox/gate/internal/metrics"
	"terok.dev/sandbox/gate/internal/server"
	"terok.dev/sandbox/gate/internal/tokens"
)

// Exit statuses.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// Environment variables the gate reads.
const (
	EnvAdminToken = "TEROK_GATE_ADMIN_TOKEN"
	// envDetachedChild marks the re-executed background process of
	// --detach; descriptor 3 is then the bound listener and 4 the readiness
	// pipe. Internal: not a user interface.
	envDetachedChild = "TEROK_GATE_DETACHED_CHILD"
	detachTimeout    = 10 * time.Second
)

type options struct {
	basePath, tokenFile, bind, pidFile, adminToken, logFile string
	logFormat, logLevel, syslogSocket                       string
	auditFile, policyDir, taskEnds                          string
	metricsListen                                           string
	port                                                    int
	inetd, detach, foreground, accessLog, showVersion       bool
	secretScan                                              bool
	maxBackends                                             int
	maxBody                                                 int64
	queueWait, bodyIdle, requestTimeout, grace, idle        time.Duration
}

const usageText = `usage: terok-gate --base-path=DIR --token-file=FILE (--inetd | --detach | --foreground) [options]

Serves the bare repositories under --base-path over git smart HTTP to the
holders of per-task tokens in --token-file. Without --inetd/--detach/
--foreground it serves the listening socket systemd passed (LISTEN_FDS).
The admin token comes from --admin-token or $TEROK_GATE_ADMIN_TOKEN; prefer
the variable (a command line is visible to every local user).

`

// Main runs terok-gate and returns the exit status.
func Main(args []string, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("terok-gate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.basePath, "base-path", "", "directory holding the bare repositories `<project>.git` (required)")
	fs.StringVar(&o.tokenFile, "token-file", "", "gate tokens file tokens.json (required)")
	fs.IntVar(&o.port, "port", 9418, "listen port (--detach, --foreground)")
	fs.StringVar(&o.bind, "bind", "127.0.0.1", "listen address (--detach, --foreground); 0.0.0.0 exposes the gate beyond this host")
	fs.BoolVar(&o.inetd, "inetd", false, "serve the one connection on descriptor 0, then exit (Accept=yes units)")
	fs.BoolVar(&o.detach, "detach", false, "bind, then serve in the background until SIGTERM")
	fs.BoolVar(&o.foreground, "foreground", false, "bind and serve in the foreground until SIGTERM/SIGINT")
	fs.StringVar(&o.pidFile, "pid-file", "", "where --detach writes the background process id")
	fs.StringVar(&o.adminToken, "admin-token", "", "token opening every repository (default $"+EnvAdminToken+")")
	fs.StringVar(&o.logFile, "log-file", "", "append logs to this file instead of syslog (--detach) or stderr")
	fs.BoolVar(&o.accessLog, "access-log", false, "log successful requests too (tokens only by prefix; info level)")
	fs.StringVar(&o.logFormat, "log-format", "text", "log line format: text or json")
	fs.StringVar(&o.logLevel, "log-level", "info", "least severe level logged: debug, info, warn or error")
	fs.StringVar(&o.syslogSocket, "syslog-socket", "/dev/log", "syslog socket of the --detach gate without --log-file")
	fs.IntVar(&o.maxBackends, "max-processes", server.DefaultMaxBackends, "concurrent git processes; more requests queue")
	fs.DurationVar(&o.queueWait, "queue-wait", server.DefaultQueueWait, "how long a request waits for a git slot before 503")
	fs.Int64Var(&o.maxBody, "max-body", server.DefaultMaxBody, "request body limit in bytes (also after gzip decoding); more is 413")
	fs.DurationVar(&o.bodyIdle, "body-idle-timeout", server.DefaultBodyIdle, "longest pause while a request body is read")
	fs.DurationVar(&o.requestTimeout, "request-timeout", server.DefaultRequestTimeout, "hard limit for one request")
	fs.DurationVar(&o.idle, "idle-timeout", listen.DefaultTimeouts.Idle, "keep-alive idle timeout")
	fs.DurationVar(&o.grace, "shutdown-grace", listen.DefaultTimeouts.Grace, "on SIGTERM, how long in-flight requests may finish")
	fs.StringVar(&o.auditFile, "audit-file", "", "audit records (JSONL) of every git operation and refusal, or off (default <base-path>/../audit/gate.jsonl)")
	fs.BoolVar(&o.secretScan, "secret-scan", true, "refuse task pushes whose new files hold a credential (--secret-scan=false turns it off)")
	fs.StringVar(&o.policyDir, "policy-dir", "", "directory of the projects' push policies <project>.json (default <base-path>/policy)")
	fs.StringVar(&o.taskEnds, "task-ends", "", "task-ends directory: tokens bound to a container whose end is recorded there are refused (default <base-path>/../task-ends)")
	fs.StringVar(&o.metricsListen, "metrics-listen", "", "serve Prometheus metrics at http://ADDR/metrics, ADDR a loopback IP and port (off by default)")
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if o.showVersion {
		fmt.Fprintln(os.Stdout, version.String("terok-gate"))
		return exitOK
	}
	usage := func(msg string) int {
		fmt.Fprintf(stderr, "terok-gate: %s\n%s", msg, usageText)
		return exitUsage
	}
	if fs.NArg() > 0 {
		return usage(fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	}
	if o.inetd && o.detach {
		return usage("--inetd and --detach are mutually exclusive")
	}
	if o.foreground && (o.inetd || o.detach) {
		return usage("--foreground excludes --inetd and --detach")
	}
	if o.basePath == "" || o.tokenFile == "" {
		return usage("--base-path and --token-file are required")
	}
	if o.port < 1 || o.port > 65535 {
		return usage(fmt.Sprintf("--port %d is out of range (1-65535)", o.port))
	}
	if o.maxBackends < 1 || o.maxBody < 1 {
		return usage("--max-processes and --max-body must be positive")
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		return usage(fmt.Sprintf("--log-format %q is neither text nor json", o.logFormat))
	}
	if _, ok := parseLevel(o.logLevel); !ok {
		return usage(fmt.Sprintf("--log-level %q is none of debug, info, warn, error", o.logLevel))
	}
	if o.metricsListen != "" {
		if err := cm.CheckListen(o.metricsListen); err != nil {
			return usage(err.Error())
		}
		if o.inetd {
			// One process per connection: its counters would die with it.
			return usage("--metrics-listen needs a long-running gate (--foreground, --detach or socket activation), not --inetd")
		}
	}
	if o.adminToken == "" {
		o.adminToken = os.Getenv(EnvAdminToken)
	}
	// Nothing the gate starts needs the admin token.
	os.Unsetenv(EnvAdminToken)

	// Paths become absolute: the detached child runs in "/", and logs and
	// the PID file should name real locations.
	for _, name := range []string{"base-path", "token-file", "pid-file", "log-file", "syslog-socket", "audit-file", "policy-dir"} {
		if v := fs.Lookup(name).Value.String(); v != "" && v != "off" && !filepath.IsAbs(v) {
			abs, err := filepath.Abs(v)
			if err != nil {
				return usage(fmt.Sprintf("--%s %q: %v", name, v, err))
			}
			if fs.Set(name, abs) != nil {
				return usage(fmt.Sprintf("--%s %q cannot be made absolute", name, v))
			}
		}
	}
	switch {
	case o.detach && os.Getenv(envDetachedChild) == "1":
		os.Unsetenv(envDetachedChild)
		return runDetachedChild(o)
	case o.detach:
		return detach(o, fs, stderr)
	case o.inetd:
		return run(o, stderr, modeInetd, nil)
	case o.foreground:
		return run(o, stderr, modeForeground, nil)
	}
	lns, err := sdactivation.Listeners(ActivationSocket)
	if err != nil {
		fmt.Fprintf(stderr, "terok-gate: %v\n", err)
		return exitError
	}
	if lns == nil {
		return usage("One of --inetd or --detach is required")
	}
	return run(o, stderr, modeActivated, lns[0])
}

// ActivationSocket is the one socket terok-gate.socket passes
// (FileDescriptorName=gate; docs/install.md, Socket activation and
// readiness). A unit without the name passes it as its only descriptor.
var ActivationSocket = sdactivation.Socket{Name: "gate", Network: "tcp"}

// readableTokens checks that the tokens file can be read before the gate
// reports ready: a file that exists but cannot be read would refuse every
// task token while systemd shows the unit as healthy. A missing file is
// fine (no task has a token yet).
func readableTokens(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("gate tokens file: %w", err)
	}
	return f.Close()
}

type mode int

const (
	modeInetd mode = iota
	modeForeground
	modeActivated
	modeDetached
)

// auditPath is where the records go: --audit-file, or the audit directory
// beside the base path, which for the runner's layout (<state>/gate) is
// config.AuditFile("gate") (docs/audit.md, Files). "" is off.
func (o options) auditPath() string {
	switch o.auditFile {
	case "off":
		return ""
	case "":
		return filepath.Join(filepath.Dir(filepath.Clean(o.basePath)), "audit", "gate.jsonl")
	}
	return o.auditFile
}

// handler is the git server behind the unauthenticated health answer
// (docs/gate.md, Health).
func (o options) handler(log *slog.Logger, met *metrics.Metrics) (http.Handler, error) {
	taskEnds := o.taskEnds
	if taskEnds == "" {
		taskEnds = filepath.Join(filepath.Dir(filepath.Clean(o.basePath)), "task-ends")
	}
	store := tokens.New(o.tokenFile, o.adminToken, log).WithTaskEnds(taskend.NewWatcher(taskEnds, log))
	var aw *audit.Writer
	if p := o.auditPath(); p != "" {
		w, err := audit.Open(p, audit.Options{})
		switch {
		case err == nil:
			aw = w
		case o.auditFile != "":
			return nil, fmt.Errorf("%w; fix the directory or pass --audit-file=PATH (or off)", err)
		default:
			// The default place may be outside what an older unit lets
			// the gate write (ReadWritePaths): serve, but say so loudly.
			log.Error("audit records are off: cannot open the default audit file", "error", err.Error(),
				"next", "make its directory writable for the gate, or pass --audit-file=PATH (or off)")
		}
	}
	policyDir := o.policyDir
	if policyDir == "" {
		policyDir = filepath.Join(o.basePath, "policy")
	}
	h, err := server.New(server.Options{
		Audit:          aw,
		PolicyDir:      policyDir,
		SecretScan:     o.secretScan,
		BasePath:       o.basePath,
		Store:          store,
		MaxBackends:    o.maxBackends,
		QueueWait:      o.queueWait,
		MaxBody:        o.maxBody,
		BodyIdle:       o.bodyIdle,
		RequestTimeout: o.requestTimeout,
		Log:            log,
		AccessLog:      o.accessLog,
		Metrics:        met,
	})
	if err != nil {
		return nil, err
	}
	check := health.Checker{BasePath: o.basePath, TokenFile: o.tokenFile, Version: version.Version}
	return health.Wrap(h, check, func(err error) { log.Error("health check failed", "error", err.Error()) }), nil
}

func (o options) timeouts(met *metrics.Metrics) listen.Timeouts {
	t := listen.Timeouts{ReadHeader: listen.DefaultTimeouts.ReadHeader, Idle: o.idle, Grace: o.grace}
	if met != nil {
		t.ConnState = met.ConnState
	}
	return t
}

// metricsListener binds --metrics-listen before the gate reports ready, so
// a taken port fails the start loudly. Without the flag both are nil.
func (o options) metricsListener() (*metrics.Metrics, net.Listener, error) {
	if o.metricsListen == "" {
		return nil, nil, nil
	}
	l, err := net.Listen("tcp", o.metricsListen)
	if err != nil {
		return nil, nil, fmt.Errorf("metrics listener: %w; free the port or choose another --metrics-listen", err)
	}
	return metrics.New(), l, nil
}

// signalContext is cancelled by SIGTERM or SIGINT.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
}

// run serves in the foreground modes (inetd, foreground, activated).
func run(o options, stderr io.Writer, m mode, ln net.Listener) int {
	log, closeLog, err := o.logger(stderr, m)
	if err != nil {
		fmt.Fprintf(stderr, "terok-gate: %v\n", err)
		return exitError
	}
	defer closeLog()
	met, ml, err := o.metricsListener()
	if err != nil {
		log.Error("cannot start", "error", err.Error())
		fmt.Fprintf(stderr, "terok-gate: %v\n", err)
		return exitError
	}
	h, err := o.handler(log, met)
	if err != nil {
		if ml != nil {
			ml.Close()
		}
		log.Error("cannot start", "error", err.Error())
		fmt.Fprintf(stderr, "terok-gate: %v\n", err)
		return exitError
	}
	ctx, stop := signalContext()
	defer stop()
	switch m {
	case modeInetd:
		conn, err := listen.InetdConn()
		if err != nil {
			log.Error("cannot start", "error", err.Error())
			fmt.Fprintf(stderr, "terok-gate: %v\n", err)
			return exitError
		}
		log.Debug("serving one connection", "mode", "inetd", "version", version.Version)
		if err := listen.ServeConn(ctx, conn, h, o.timeouts(nil), log); err != nil {
			log.Warn("connection ended with an error", "error", err.Error())
		}
		return exitOK
	case modeForeground:
		l, err := bind(o)
		if err != nil {
			log.Error("cannot start", "error", err.Error())
			fmt.Fprintf(stderr, "terok-gate: %v\n", err)
			return exitError
		}
		ln = l
	}
	if err := readableTokens(o.tokenFile); err != nil {
		ln.Close()
		log.Error("cannot start", "error", err.Error())
		fmt.Fprintf(stderr, "terok-gate: %v\n", err)
		return exitError
	}
	// Type=notify (terok-gate.service): active once the listener is up
	// and the tokens are readable; deactivating while requests drain.
	if err := sdactivation.Ready(); err != nil {
		log.Warn("cannot notify systemd", "error", err.Error())
	}
	stopNotify := context.AfterFunc(ctx, func() {
		if err := sdactivation.Stopping(); err != nil {
			log.Warn("cannot notify systemd", "error", err.Error())
		}
	})
	defer stopNotify()
	mname := "foreground"
	if m == modeActivated {
		mname = "systemd"
	}
	return serve(ctx, o, ln, h, log, mname, nil, met, ml)
}

// serve logs the start with the listen address, serves until ctx ends and
// logs the end: the gate always says where it listens (docs/gate.md, Logs).
// ready, when set, is called once the start is logged.
//
// With met, the metrics listener ml is served beside it and stopped with it.
func serve(ctx context.Context, o options, ln net.Listener, h http.Handler, log *slog.Logger, mode string, ready func(),
	met *metrics.Metrics, ml net.Listener) int {
	log.Info("serving", "addr", ln.Addr().String(), "mode", mode, "base_path", o.basePath, "version", version.Version)
	if met != nil {
		mctx, stopMetrics := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := cm.Serve(mctx, met.Server(), ml); err != nil {
				log.Error("metrics listener failed; metrics are unavailable until the gate restarts", "error", err.Error())
			}
		}()
		defer wg.Wait()
		defer stopMetrics()
		log.Info("serving metrics", "addr", "http://"+ml.Addr().String()+"/metrics")
	}
	if ready != nil {
		ready()
	}
	if err := listen.Serve(ctx, ln, h, o.timeouts(met), log); err != nil {
		log.Error("server stopped", "error", err.Error())
		return exitError
	}
	log.Info("stopped", "addr", ln.Addr().String())
	return exitOK
}

func bind(o options) (net.Listener, error) {
	// Go listeners set SO_REUSEADDR, so a restart does not wait for TIME_WAIT.
	addr := net.JoinHostPort(o.bind, strconv.Itoa(o.port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("bind %s: %w; is another gate (or another service) using the port? choose another with --port", addr, err)
	}
	return ln, nil
}

// detach binds, re-executes itself in a new session with the bound listener
// as descriptor 3, waits until the child reports that it serves, writes the
// PID file and returns. The child's argv keeps --pid-file=<path> so the
// runner's /proc identity check recognises it (docs/gate.md, Operating it); the
// admin token travels only in its environment.
func detach(o options, fs *flag.FlagSet, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintf(stderr, "terok-gate: %v\n", err)
		return exitError
	}
	ln, err := bind(o)
	if err != nil {
		return fail(err)
	}
	lf, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		return fail(fmt.Errorf("pass listener to the background process: %w", err))
	}
	defer lf.Close()
	rd, wr, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	defer rd.Close()
	self, err := os.Executable()
	if err != nil {
		wr.Close()
		return fail(fmt.Errorf("find own executable: %w", err))
	}
	var args []string
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "admin-token" {
			return
		}
		args = append(args, "--"+f.Name+"="+f.Value.String())
	})
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), envDetachedChild+"=1")
	if o.adminToken != "" {
		cmd.Env = append(cmd.Env, EnvAdminToken+"="+o.adminToken)
	}
	cmd.ExtraFiles = []*os.File{lf, wr}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		wr.Close()
		return fail(fmt.Errorf("start background gate: %w", err))
	}
	wr.Close()
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(rd).ReadString('\n')
		ready <- strings.TrimSpace(line)
	}()
	select {
	case line := <-ready:
		if line != "ready" {
			cmd.Process.Kill()
			cmd.Wait()
			msg := strings.TrimPrefix(line, "error: ")
			if msg == "" {
				msg = "exited before it was ready"
			}
			return fail(fmt.Errorf("background gate failed: %s", msg))
		}
	case <-time.After(detachTimeout):
		cmd.Process.Kill()
		cmd.Wait()
		return fail(fmt.Errorf("background gate did not become ready within %s", detachTimeout))
	}
	if o.pidFile != "" {
		if err := os.MkdirAll(filepath.Dir(o.pidFile), 0o700); err != nil {
			cmd.Process.Signal(syscall.SIGTERM)
			return fail(fmt.Errorf("create PID file directory: %w", err))
		}
		if err := atomicfile.WriteFile(o.pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
			cmd.Process.Signal(syscall.SIGTERM)
			return fail(fmt.Errorf("write PID file: %w", err))
		}
	}
	// The child lives on in its own session; do not reap it here.
	cmd.Process.Release()
	return exitOK
}

// runDetachedChild is the background half of --detach.
func runDetachedChild(o options) int {
	readyPipe := os.NewFile(4, "ready")
	report := func(msg string) {
		if readyPipe != nil {
			fmt.Fprintln(readyPipe, msg)
			readyPipe.Close()
			readyPipe = nil
		}
	}
	defer report("error: background gate stopped during start-up")
	lf := os.NewFile(3, "listener")
	ln, err := net.FileListener(lf)
	lf.Close()
	if err != nil {
		report("error: inherited listener: " + err.Error())
		return exitError
	}
	log, closeLog, err := o.logger(io.Discard, modeDetached)
	if err != nil {
		report("error: " + err.Error())
		return exitError
	}
	defer closeLog()
	met, ml, err := o.metricsListener()
	if err != nil {
		log.Error("cannot start", "error", err.Error())
		report("error: " + err.Error())
		return exitError
	}
	h, err := o.handler(log, met)
	if err != nil {
		if ml != nil {
			ml.Close()
		}
		log.Error("cannot start", "error", err.Error())
		report("error: " + err.Error())
		return exitError
	}
	ctx, stop := signalContext()
	defer stop()
	return serve(ctx, o, ln, h, log, "detached", func() { report("ready") }, met, ml)
}
