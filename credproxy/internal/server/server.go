// Package server is terok-credential-proxy's process: flags
// (docs/credential-proxy.md, Operating it), startup, listeners, the HTTP
// application, OAuth refresh, the SSH agent child and graceful shutdown
// (docs/credential-proxy.md, Design).
package server

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/common/sdactivation"
	"terok.dev/sandbox/common/taskend"
	"terok.dev/sandbox/common/version"
	"terok.dev/sandbox/credproxy/internal/agentchild"
	"terok.dev/sandbox/credproxy/internal/auditq"
	"terok.dev/sandbox/credproxy/internal/listen"
	"terok.dev/sandbox/credproxy/internal/logfmt"
	"terok.dev/sandbox/credproxy/internal/logline"
	"terok.dev/sandbox/credproxy/internal/metrics"
	"terok.dev/sandbox/credproxy/internal/proxy"
	"terok.dev/sandbox/credproxy/internal/refresh"
	"terok.dev/sandbox/credproxy/internal/routes"
	"terok.dev/sandbox/credproxy/internal/usage"
)

// Program is the binary and logger name.
const Program = "terok-credential-proxy"

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// idleTrimEvery is how often an idle proxy checks whether to hand freed
// memory back to the OS.
const idleTrimEvery = 15 * time.Second

// shutdownGrace bounds how long in-flight exchanges may finish after SIGTERM.
const shutdownGrace = 10 * time.Second

// Flags are the parsed command line.
type Flags struct {
	SocketPath   string
	DBPath       string
	RoutesFile   string
	Port         int
	SSHAgentPort int
	SSHKeysFile  string
	PIDFile      string
	LogLevel     string
	LogFile      string
	LogFormat    string // text, json or classic (logfmt.Parse)
	// Tuning (defaults are the spec's): upstream connect and read
	// inactivity timeouts, refresh interval.
	ConnectTimeout  time.Duration
	ReadTimeout     time.Duration
	RefreshInterval time.Duration
	// AllowStaticMarker accepts the static phantom marker (proxy.Options);
	// the runner passes it when config.toml sets proxy_static_marker.
	AllowStaticMarker bool
	// AuditFile is where the audit records go (docs/audit.md, Files, rotation, modes):
	// "off" writes none; "" is config.AuditFile("proxy"), or none when
	// config.toml sets audit = false.
	AuditFile string
	// MetricsListen is the loopback address of the Prometheus metrics
	// (docs/credential-proxy.md, Metrics); "" serves none.
	MetricsListen string
	// TaskEnds is the task-ends directory (common/taskend); "" is
	// <state_dir>/task-ends of the configuration.
	TaskEnds string
}

// AuditOff is the --audit-file value that turns the records off.
const AuditOff = "off"

type usageErr struct{ msg string }

func (u usageErr) Error() string { return u.msg }

// ParseFlags parses args (without the program name).
func ParseFlags(args []string, stderr io.Writer) (Flags, error) {
	var f Flags
	fs := flag.NewFlagSet(Program, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var port, sshPort string
	fs.StringVar(&f.SocketPath, "socket-path", "", "Unix socket to listen on (required)")
	fs.StringVar(&f.DBPath, "db-path", "", "credentials database (required)")
	fs.StringVar(&f.RoutesFile, "routes-file", "", "routes JSON (required)")
	fs.StringVar(&port, "port", "", "also listen on 127.0.0.1:PORT")
	fs.StringVar(&sshPort, "ssh-agent-port", "", "serve the SSH agent on 127.0.0.1:PORT")
	fs.StringVar(&f.SSHKeysFile, "ssh-keys-file", "", "ssh-keys.json for the SSH agent")
	fs.StringVar(&f.PIDFile, "pid-file", "", "write the PID here; removed on clean exit")
	fs.StringVar(&f.LogLevel, "log-level", "INFO", "DEBUG, INFO, WARNING, ERROR or CRITICAL")
	fs.StringVar(&f.LogFile, "log-file", "", "append log lines here instead of stderr")
	fs.StringVar(&f.LogFormat, "log-format", "text", "text, json or classic (the earlier proxy's line format)")
	fs.BoolVar(&f.AllowStaticMarker, "allow-static-marker", false,
		"compatibility switch: accept the static phantom marker for the default credential (any container that reaches the proxy gets it)")
	fs.StringVar(&f.AuditFile, "audit-file", "",
		"append one audit record per request here, or \"off\" (default <state_dir>/audit/proxy.jsonl; off when config.toml sets audit = false)")
	fs.StringVar(&f.TaskEnds, "task-ends", "", "task-ends directory: tokens bound to a container whose end is recorded there are refused (default <state_dir>/task-ends)")
	fs.StringVar(&f.MetricsListen, "metrics-listen", "", "serve Prometheus metrics at http://ADDR/metrics, a loopback IP:PORT only (default: off)")
	fs.DurationVar(&f.ConnectTimeout, "upstream-connect-timeout", proxy.DefaultConnectTimeout, "upstream connect timeout")
	fs.DurationVar(&f.ReadTimeout, "upstream-read-timeout", proxy.DefaultReadTimeout, "upstream read inactivity timeout")
	fs.DurationVar(&f.RefreshInterval, "oauth-refresh-interval", refresh.DefaultInterval, "OAuth refresh pass interval")
	usage := func() {
		fmt.Fprintf(stderr, "usage: %s --socket-path=PATH --db-path=PATH --routes-file=PATH\n"+
			"       [--port=N] [--ssh-agent-port=N --ssh-keys-file=PATH]\n"+
			"       [--pid-file=PATH] [--log-level=LEVEL] [--log-file=PATH] [--log-format=text|json|classic]\n"+
			"       [--allow-static-marker]\n"+
			"       [--audit-file=PATH|off] [--metrics-listen=127.0.0.1:PORT]\n\n", Program)
		fs.SetOutput(stderr)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	fail := func(msg string) (Flags, error) {
		fmt.Fprintf(stderr, "%s: %s\n", Program, msg)
		usage()
		return Flags{}, usageErr{msg}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage()
			return Flags{}, flag.ErrHelp
		}
		return fail(err.Error())
	}
	if fs.NArg() > 0 {
		return fail(fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	}
	parsePort := func(v string) (int, bool) {
		if v == "" {
			return 0, true
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 65535 {
			return 0, false
		}
		return n, true
	}
	var ok bool
	if f.Port, ok = parsePort(port); !ok {
		return fail("--port must be between 1 and 65535")
	}
	if f.SSHAgentPort, ok = parsePort(sshPort); !ok {
		return fail("--ssh-agent-port must be between 1 and 65535")
	}
	if (sshPort == "") != (f.SSHKeysFile == "") {
		return fail("--ssh-agent-port and --ssh-keys-file must be provided together")
	}
	for _, r := range []struct{ name, v string }{{"--socket-path", f.SocketPath}, {"--db-path", f.DBPath}, {"--routes-file", f.RoutesFile}} {
		if r.v == "" {
			return fail(r.name + " is required")
		}
	}
	if f.AuditFile != "" && f.AuditFile != AuditOff && !filepath.IsAbs(f.AuditFile) {
		return fail("--audit-file must be an absolute path or off (example: --audit-file=/var/lib/terok/audit/proxy.jsonl)")
	}
	var err error
	if f.LogFormat, err = logfmt.Parse(f.LogFormat); err != nil {
		return fail(err.Error())
	}
	if f.MetricsListen != "" {
		if err := metrics.CheckListen(f.MetricsListen); err != nil {
			return fail(err.Error())
		}
	}
	if f.ConnectTimeout <= 0 || f.ReadTimeout <= 0 || f.RefreshInterval <= 0 {
		return fail("timeouts and intervals must be positive durations")
	}
	return f, nil
}

// Main runs the process and returns its exit status.
func Main(args []string, stderr io.Writer) int {
	if len(args) == 1 && (args[0] == "--version" || args[0] == "-version") {
		fmt.Fprintln(os.Stdout, version.String(Program))
		return exitOK
	}
	f, err := ParseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := Run(ctx, f, stderr); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", Program, err)
		return exitError
	}
	return exitOK
}

// Run starts the proxy and serves until ctx ends (SIGTERM/SIGINT), then
// shuts down gracefully. Startup errors are returned (and logged).
func Run(ctx context.Context, f Flags, stderr io.Writer) (err error) {
	logOut := stderr
	if f.LogFile != "" {
		if err := os.MkdirAll(filepath.Dir(f.LogFile), 0o700); err != nil {
			return fmt.Errorf("create log directory for %s: %w", f.LogFile, err)
		}
		lf, err := os.OpenFile(f.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("open log file %s: %w", f.LogFile, err)
		}
		defer lf.Close()
		logOut = lf
	}
	// Under systemd stderr is the journal, which stamps records itself.
	journal := f.LogFile == "" && os.Getenv("JOURNAL_STREAM") != ""
	log := logfmt.New(logOut, f.LogFormat, Program, logline.ParseLevel(f.LogLevel), journal)
	defer func() {
		if err != nil && f.LogFile != "" {
			log.Error("Startup failed: " + err.Error())
		}
	}()

	if f.PIDFile != "" {
		if err := listen.WritePID(f.PIDFile); err != nil {
			return err
		}
		defer os.Remove(f.PIDFile)
	}
	table, err := routes.Load(f.RoutesFile)
	if err != nil {
		return fmt.Errorf("%w; fix the routes file and start the proxy again", err)
	}
	db, err := creddb.Open(f.DBPath)
	if err != nil {
		return err
	}
	defer db.Close()
	ends, err := taskEndsDir(f.TaskEnds)
	if err != nil {
		return err
	}
	db.SetTaskEnds(taskend.NewWatcher(ends, log))
	// Sealed credentials are opened in memory only; a locked store would
	// answer every request with an error, so the proxy does not start
	// (docs/secrets-at-rest.md, Daemons).
	if err := db.Vault().Ready(); err != nil {
		return err
	}

	var agentPath string
	if f.SSHAgentPort > 0 {
		if agentPath, err = agentchild.Find(); err != nil {
			return err
		}
	}

	ls, err := listen.Open(f.SocketPath, f.Port)
	if err != nil {
		return err
	}
	defer ls.Close()
	if ls.Inherited {
		log.Info("Using systemd-inherited Unix socket")
		log.Info("Using systemd-inherited TCP socket")
	} else {
		log.Info("Listening on " + f.SocketPath)
		if ls.TCP != nil {
			log.Info("Listening on " + ls.TCP.Addr().String())
		}
	}
	log.Info("Credential proxy ready", "routes", len(table), "version", version.Version)
	if f.AllowStaticMarker {
		log.Warn("COMPATIBILITY SWITCH --allow-static-marker is on: any container that reaches the proxy gets the default credential " +
			"with the static phantom marker, without a token and without revocation; every use is logged as project __static__. " +
			"Disable it with proxy_static_marker = false in config.toml and restart the proxy")
	}

	// Token lookups go through a Resolver: as fresh as a query per request
	// (checked against the database's data_version on every request) but
	// without re-running the query while nothing changed.
	auditPath, err := auditPath(f.AuditFile)
	if err != nil {
		return err
	}
	var aw *audit.Writer
	if auditPath != "" {
		if aw, err = audit.Open(auditPath, audit.Options{}); err != nil {
			return fmt.Errorf("%w; fix the audit directory's permissions or pass --audit-file=off", err)
		}
		log.Info("Writing audit records to " + auditPath)
	} else {
		log.Info("Audit records are off")
	}
	// The queue outlives the HTTP server and the refresher (deferred
	// first, closed last): every record of a clean shutdown is written.
	q := auditq.New(aw, proxy.EncodeEntry, 0, log)
	defer q.Close()
	var rec proxy.Recorder
	if aw != nil {
		rec = q
	}
	marks := &proxy.RefreshMarks{}
	var met *metrics.Metrics
	var metricsL net.Listener
	if f.MetricsListen != "" {
		met = metrics.New()
		if metricsL, err = net.Listen("tcp", f.MetricsListen); err != nil {
			return fmt.Errorf("metrics listener: %w; free the port or choose another --metrics-listen", err)
		}
		defer metricsL.Close()
		log.Info("Serving metrics on http://" + metricsL.Addr().String() + "/metrics")
	}

	// Quota usage is read back (a restart keeps counting where the last
	// write left off); a malformed row is named here and its token
	// refused on every request (docs/credential-proxy.md, Token quotas).
	qrows, err := db.QuotaRows(ctx)
	if err != nil {
		return err
	}
	tracker := usage.New(db, log)
	if bad := tracker.Load(qrows); len(qrows) > 0 {
		log.Info("Token quotas loaded", "tokens", len(qrows), "malformed", bad)
	}

	res := db.NewResolver()
	defer res.Close()
	p := proxy.New(proxy.Options{
		Usage:             tracker,
		Audit:             rec,
		Metrics:           met,
		Refreshed:         marks,
		Store:             resolverStore{res, db},
		DBConcurrency:     -1, // the Resolver serialises its lookups itself
		Routes:            table,
		Log:               log,
		ConnectTimeout:    f.ConnectTimeout,
		ReadTimeout:       f.ReadTimeout,
		AllowStaticMarker: f.AllowStaticMarker,
	})
	defer p.Close()
	act := &activity{}
	srv := &http.Server{
		Handler:           act.wrap(p),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    1 << 20,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	if met != nil {
		srv.ConnState = met.ConnState
	}

	var wg sync.WaitGroup
	serveErr := make(chan error, 2)
	serve := func(l net.Listener) {
		defer wg.Done()
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			serveErr <- err
		}
	}
	for _, l := range []net.Listener{ls.Unix, ls.TCP} {
		if l != nil {
			wg.Add(1)
			go serve(l)
		}
	}

	bg, cancelBG := context.WithCancel(context.Background())
	var bgWG sync.WaitGroup
	ref := refresh.New(refresh.Options{Store: refresh.DBStore{DB: db}, Routes: table, Log: log, Interval: f.RefreshInterval,
		OnRefresh: func(set, provider string, err error) {
			if err == nil {
				marks.Mark(set, provider)
			}
			met.Refresh(err == nil)
			if rec != nil {
				rec.Put(refreshRecord(set, provider, err))
			}
		}})
	bgWG.Add(1)
	go func() { defer bgWG.Done(); ref.Run(bg) }()
	bgWG.Add(1)
	go func() { defer bgWG.Done(); act.trimWhenIdle(bg, idleTrimEvery) }()
	// Stopped after the HTTP server drained, so its final write has every
	// request's count.
	bgWG.Add(1)
	go func() { defer bgWG.Done(); tracker.Run(bg, usage.DefaultFlushEvery) }()
	if metricsL != nil {
		bgWG.Add(1)
		go func() {
			defer bgWG.Done()
			if err := metrics.Serve(bg, met.Server(), metricsL); err != nil {
				log.Error("Metrics listener failed; metrics are unavailable until the proxy restarts", "error", err.Error())
			}
		}()
	}
	if agentPath != "" {
		bgWG.Add(1)
		go func() {
			defer bgWG.Done()
			agentchild.Run(bg, agentchild.Config{
				Path: agentPath, DBPath: f.DBPath, KeysFile: f.SSHKeysFile, Port: f.SSHAgentPort,
				LogLevel: childLevel(f.LogLevel), LogFile: f.LogFile, Stderr: stderr, Log: log,
				AuditFile: agentAuditFile(auditPath), LogFormat: childFormat(f.LogFormat), TaskEnds: ends,
			})
		}()
	}

	// Type=notify (terok-credential-proxy.service): active once the
	// listeners serve and the database and its store are open.
	if err := sdactivation.Ready(); err != nil {
		log.Warn("Cannot notify systemd", "error", err.Error())
	}
	var runErr error
	select {
	case <-ctx.Done():
		log.Info("SIGTERM received, shutting down")
	case runErr = <-serveErr:
		log.Error("Listener failed; shutting down so a supervisor can restart the proxy", "error", runErr.Error())
	}
	if err := sdactivation.Stopping(); err != nil {
		log.Warn("Cannot notify systemd", "error", err.Error())
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("Some requests were still running at shutdown; closing them", "error", err.Error())
		_ = srv.Close()
	}
	cancel()
	wg.Wait()
	cancelBG()
	bgWG.Wait()
	log.Info("Credential proxy stopped")
	if runErr != nil {
		return fmt.Errorf("serve: %w", runErr)
	}
	return nil
}

// taskEndsDir resolves --task-ends (docs/security-model.md, Tokens that
// die with their task).
func taskEndsDir(flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	cfg, err := config.Load(config.FromOS(), "")
	if err != nil {
		return "", fmt.Errorf("read the configuration for the task-ends directory: %w; fix it or pass --task-ends=DIR", err)
	}
	return cfg.TaskEndsDir(), nil
}

// auditPath resolves --audit-file: "" when the records are off.
func auditPath(flagValue string) (string, error) {
	switch flagValue {
	case AuditOff:
		return "", nil
	case "":
		cfg, err := config.Load(config.FromOS(), "")
		if err != nil {
			return "", fmt.Errorf("read the configuration for the default audit file: %w; fix it or pass --audit-file=PATH|off", err)
		}
		if !cfg.Audit {
			return "", nil
		}
		return cfg.AuditFile("proxy"), nil
	}
	return flagValue, nil
}

// agentAuditFile is the SSH agent child's --audit-file: ssh.jsonl beside
// the proxy's own audit file (both are config.AuditFile(channel) by
// default), off when the proxy's records are off (docs/audit.md, Files).
func agentAuditFile(proxyAudit string) string {
	if proxyAudit == "" {
		return AuditOff
	}
	return filepath.Join(filepath.Dir(proxyAudit), "ssh.jsonl")
}

// refreshRecord is the audit record of one background OAuth refresh
// (docs/audit.md, Channel proxy).
func refreshRecord(set, provider string, err error) proxy.Entry {
	r := proxy.Entry{Event: "oauth-refresh", Outcome: "ok", Provider: provider, CredentialSet: set}
	if err != nil {
		r.Outcome, r.Reason = "error", "refresh-failed"
	}
	return r
}

// resolverStore answers token lookups from the Resolver and the static
// marker's credential from the database.
type resolverStore struct {
	res *creddb.Resolver
	db  *creddb.DB
}

func (s resolverStore) Resolve(ctx context.Context, tok string) (creddb.TokenInfo, creddb.Credential, error) {
	return s.res.Resolve(ctx, tok)
}

func (s resolverStore) LoadCredential(ctx context.Context, key creddb.CredentialKey) (creddb.Credential, error) {
	return s.db.LoadCredential(ctx, key)
}

// childFormat is the SSH agent child's --log-format: the agent knows text
// and json (classic is the proxy's own).
func childFormat(f string) string {
	if f == "json" {
		return "json"
	}
	return "text"
}

// childLevel normalises the level for terok-ssh-agent, which knows DEBUG,
// INFO, WARNING and ERROR and refuses anything else: a bad --log-level must
// not turn into a crash-looping child.
func childLevel(s string) string {
	name := logline.LevelName(logline.ParseLevel(s))
	if name == "CRITICAL" {
		return "ERROR"
	}
	return name
}

// activity counts requests so an idle proxy can return the memory a burst
// of traffic left behind (the Go runtime otherwise keeps it for a while).
type activity struct {
	total    atomic.Uint64
	inflight atomic.Int64
}

func (a *activity) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.total.Add(1)
		a.inflight.Add(1)
		defer a.inflight.Add(-1)
		h.ServeHTTP(w, r)
	})
}

// trimWhenIdle returns freed memory to the OS on the first few checks
// after traffic stops (pooled upstream connections retire during that time).
func (a *activity) trimWhenIdle(ctx context.Context, every time.Duration) {
	const trims = 4
	t := time.NewTicker(every)
	defer t.Stop()
	last, idleChecks := a.total.Load(), trims
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n := a.total.Load()
		switch {
		case n != last || a.inflight.Load() != 0:
			idleChecks = 0
		case idleChecks < trims:
			debug.FreeOSMemory()
			idleChecks++
		}
		last = n
	}
}
