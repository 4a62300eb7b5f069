// Package app is the terok-ssh-agent command line: the agent server (default)
// and the in-container bridge (`bridge`). main only calls Main.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"terok.dev/sandbox/common/atomicfile"
	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/creddb"
	cm "terok.dev/sandbox/common/metrics"
	"terok.dev/sandbox/common/sdactivation"
	"terok.dev/sandbox/common/secretstore"
	"terok.dev/sandbox/common/sshkeys"
	"terok.dev/sandbox/common/taskend"
	"terok.dev/sandbox/common/version"
	"terok.dev/sandbox/sshagent/internal/bridge"
	"terok.dev/sandbox/sshagent/internal/keys"
	"terok.dev/sandbox/sshagent/internal/metrics"
	"terok.dev/sandbox/sshagent/internal/server"
)

// Program is the binary and logger name.
const Program = "terok-ssh-agent"

// Environment variables of the bridge (docs/ssh-agent.md, The bridge (inside a container)).
const (
	EnvToken  = "TEROK_SSH_AGENT_TOKEN"
	EnvPort   = "TEROK_SSH_AGENT_PORT"
	EnvSocket = "TEROK_SSH_AGENT_SOCKET" // optional: a mounted agent socket instead of TCP
	EnvHost   = "TEROK_SSH_AGENT_HOST"   // optional: host name override
)

// DefaultKnownHostsName is the known_hosts file beside ssh-keys.json that
// resolves host-pattern destinations (docs/ssh-agent.md, Destination-bound keys).
const DefaultKnownHostsName = "ssh_known_hosts"

// DefaultAgentHost is where a container reaches the host's loopback.
const DefaultAgentHost = "host.containers.internal"

// Env is the process environment; tests pass their own.
type Env struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	Environ        func() []string
	// Signals delivers termination requests; nil means SIGTERM/SIGINT.
	Signals <-chan os.Signal
}

// Main runs the program and returns the exit status.
func Main(args []string) int {
	return Run(args, Env{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv, Environ: os.Environ})
}

// Run dispatches to the server or the bridge.
func Run(args []string, env Env) int {
	if len(args) > 1 {
		switch args[1] {
		case "--version", "-version", "version":
			fmt.Fprintln(env.Stdout, version.String(Program))
			return 0
		case "bridge":
			return runBridge(args[2:], env)
		}
	}
	return runServer(args[1:], env)
}

type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }

func usage(format string, a ...any) error {
	return exitError{2, fmt.Errorf(format, a...)}
}

func finish(env Env, err error) int {
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		fmt.Fprintf(env.Stderr, "%s: %v\n", Program, ee.err)
		return ee.code
	}
	fmt.Fprintf(env.Stderr, "%s: %v\n", Program, err)
	return 1
}

// ParseLevel accepts the usual names case-insensitively (WARNING = WARN,
// CRITICAL = ERROR).
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToUpper(strings.TrimSpace(s)) {
	case "DEBUG":
		return slog.LevelDebug, nil
	case "INFO", "":
		return slog.LevelInfo, nil
	case "WARN", "WARNING":
		return slog.LevelWarn, nil
	case "ERROR", "CRITICAL":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("unknown log level %q (use DEBUG, INFO, WARNING or ERROR)", s)
}

// ParseLogFormat accepts "text" (the default) or "json".
func ParseLogFormat(s string) (string, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "text", "":
		return "text", nil
	case "json":
		return "json", nil
	}
	return "", fmt.Errorf("unknown log format %q (use text or json)", s)
}

// newLogger logs in the given format; under systemd's journal (journal true:
// $JOURNAL_STREAM set and logging to stderr) records carry no time, the
// journal stamps them itself.
func newLogger(w io.Writer, level slog.Level, format string, journal bool) *slog.Logger {
	o := &slog.HandlerOptions{Level: level}
	if journal {
		o.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	var h slog.Handler = slog.NewTextHandler(w, o)
	if format == "json" {
		h = slog.NewJSONHandler(w, o)
	}
	return slog.New(h).With("logger", Program)
}

func signals(env Env) (<-chan os.Signal, func()) {
	if env.Signals != nil {
		return env.Signals, func() {}
	}
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	return ch, func() { signal.Stop(ch) }
}

func runServer(args []string, env Env) int {
	fs := flag.NewFlagSet(Program, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.Stderr, "usage: %s --db-path=PATH --ssh-keys-file=PATH [flags]\n       %s bridge [flags] [-- COMMAND...]\n\nflags:\n", Program, Program)
		fs.PrintDefaults()
	}
	dbPath := fs.String("db-path", "", "credentials database (phantom token lookup) [required]")
	keysFile := fs.String("ssh-keys-file", "", "ssh-keys.json [required]")
	port := fs.Int("port", config.DefaultSSHAgentPort, "TCP port (1..65535)")
	bind := fs.String("bind", "127.0.0.1", "TCP listen address")
	sockPath := fs.String("socket-path", "", "also listen on this unix socket (mode 0600)")
	pidFile := fs.String("pid-file", "", "write the PID here once listening")
	logLevel := fs.String("log-level", "INFO", "DEBUG, INFO, WARNING or ERROR")
	logFile := fs.String("log-file", "", "append logs here instead of stderr")
	logFormat := fs.String("log-format", "text", "text or json")
	maxConns := fs.Int("max-connections", server.DefaultMaxConns, "concurrent sessions")
	idle := fs.Duration("idle-timeout", server.DefaultIdleTimeout, "close a session after this long without a request")
	grace := fs.Duration("shutdown-grace", 10*time.Second, "on SIGTERM, wait this long for sessions to end")
	knownHosts := fs.String("known-hosts", "", "known_hosts file resolving the host patterns of key destinations (default ssh_known_hosts beside --ssh-keys-file)")
	taskEnds := fs.String("task-ends", "", "task-ends directory: tokens bound to a container whose end is recorded there are refused (default <state_dir>/task-ends)")
	auditFile := fs.String("audit-file", "", "audit records (JSONL) go here, or off (default <state_dir>/audit/ssh.jsonl; docs/audit.md)")
	metricsListen := fs.String("metrics-listen", "", "serve Prometheus metrics at http://ADDR/metrics, ADDR a loopback IP and port (off by default)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	switch {
	case fs.NArg() > 0:
		return finish(env, usage("unexpected argument %q", fs.Arg(0)))
	case *dbPath == "":
		return finish(env, usage("--db-path is required"))
	case *keysFile == "":
		return finish(env, usage("--ssh-keys-file is required"))
	case *port < 1 || *port > 65535:
		return finish(env, usage("--port must be 1..65535, got %d", *port))
	case *maxConns < 1:
		return finish(env, usage("--max-connections must be positive"))
	case *idle <= 0 || *grace < 0:
		return finish(env, usage("--idle-timeout must be positive and --shutdown-grace not negative"))
	}
	if *metricsListen != "" {
		if err := cm.CheckListen(*metricsListen); err != nil {
			return finish(env, usage("%v", err))
		}
	}
	level, err := ParseLevel(*logLevel)
	if err != nil {
		return finish(env, usage("%v", err))
	}
	format, err := ParseLogFormat(*logFormat)
	if err != nil {
		return finish(env, usage("%v", err))
	}
	logOut := env.Stderr
	if *logFile != "" {
		f, err := os.OpenFile(*logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return finish(env, fmt.Errorf("open log file: %w", err))
		}
		defer f.Close()
		logOut = f
	}
	log := newLogger(logOut, level, format, *logFile == "" && env.Getenv("JOURNAL_STREAM") != "")
	keysAbs, err := filepath.Abs(*keysFile)
	if err != nil {
		return finish(env, err)
	}

	auditW, auditPath, err := openAudit(*auditFile, env)
	if err != nil {
		log.Error("cannot open the audit file; fix it or pass --audit-file=off", "err", err)
		return finish(env, err)
	}

	db, err := creddb.Open(*dbPath)
	if err != nil {
		log.Error("cannot open the credentials database", "path", *dbPath, "err", err)
		return finish(env, err)
	}
	defer db.Close()
	endsDir := *taskEnds
	if endsDir == "" {
		cfg, err := config.Load(config.Env{Getenv: env.Getenv, EUID: os.Geteuid(), Home: homeDir(env)}, "")
		if err != nil {
			log.Error("cannot read the configuration for the task-ends directory; fix it or pass --task-ends=DIR", "err", err)
			return finish(env, err)
		}
		endsDir = cfg.TaskEndsDir()
	}
	db.SetTaskEnds(taskend.NewWatcher(endsDir, log))
	// The keystore lives beside the database (docs/secrets-at-rest.md):
	// with one present the key files are sealed, and a locked store means
	// no key could be served, so the agent does not start.
	vault := secretstore.OpenVault(filepath.Dir(db.Path()))
	if err := vault.Ready(); err != nil {
		log.Error("cannot start: "+err.Error(), "keystore", vault.KeystorePath())
		return finish(env, err)
	}
	// Destination-bound keys (docs/ssh-agent.md): a key whose destinations
	// cannot be used would have to be served unrestricted or not at all;
	// the agent refuses to start so the operator sees it at once.
	if m, err := sshkeys.Read(keysAbs); err == nil {
		if err := sshkeys.Check(m); err != nil {
			log.Error("cannot start: ssh-keys.json has unusable destinations; fix them (terok-sandbox ssh restrict)", "path", keysAbs, "err", err)
			return finish(env, fmt.Errorf("unusable destinations in %s: %w", keysAbs, err))
		}
	}
	khPath := *knownHosts
	if khPath == "" {
		khPath = filepath.Join(filepath.Dir(keysAbs), DefaultKnownHostsName)
	} else if _, err := os.Stat(khPath); err != nil {
		log.Error("cannot start: --known-hosts", "err", err)
		return finish(env, fmt.Errorf("--known-hosts: %w", err))
	}
	keyStore := keys.NewStore(keysAbs, log)
	keyStore.SetVault(vault)
	keyStore.SetKnownHosts(khPath)

	// The metrics listener is bound before the agent reports ready, so a
	// taken port fails the start loudly.
	var met *metrics.Metrics
	var metricsL net.Listener
	if *metricsListen != "" {
		if metricsL, err = net.Listen("tcp", *metricsListen); err != nil {
			log.Error("cannot listen for metrics; free the port or choose another --metrics-listen", "err", err)
			return finish(env, fmt.Errorf("metrics listener: %w", err))
		}
		defer metricsL.Close()
		met = metrics.New()
	}
	srv, err := server.New(server.Options{
		Tokens: db, TaskGone: db.TaskGone, TaskEnd: db.TaskEnd, Keys: keyStore, Log: log,
		MaxConns: *maxConns, IdleTimeout: *idle, Audit: auditW, Metrics: met,
	})
	if err != nil {
		return finish(env, err)
	}

	lns, err := listeners(*bind, *port, *sockPath)
	if err != nil {
		log.Error("cannot listen", "err", err)
		return finish(env, err)
	}
	var addrs []net.Addr
	for _, ln := range lns {
		addrs = append(addrs, ln.Addr())
	}
	if *pidFile != "" {
		if err := atomicfile.WriteFile(*pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
			closeAll(lns)
			return finish(env, fmt.Errorf("write pid file: %w", err))
		}
		defer removeOwnPIDFile(*pidFile)
	}
	log.Info("terok-ssh-agent listening", "addrs", fmt.Sprint(addrs), "keys_file", keysAbs, "known_hosts", khPath, "audit_file", auditPath, "version", version.Version)

	sig, stopSig := signals(env)
	defer stopSig()
	errc := make(chan error, len(lns))
	for _, ln := range lns {
		go func() { errc <- srv.Serve(ln) }()
	}
	if met != nil {
		mctx, stopMetrics := context.WithCancel(context.Background())
		mdone := make(chan struct{})
		go func() {
			defer close(mdone)
			if err := cm.Serve(mctx, met.Server(), metricsL); err != nil {
				log.Error("metrics listener failed; metrics are unavailable until the agent restarts", "err", err)
			}
		}()
		defer func() { stopMetrics(); <-mdone }()
		log.Info("serving metrics", "addr", "http://"+metricsL.Addr().String()+"/metrics")
	}
	// Type=notify (terok-ssh-agent.service): active once the listeners
	// are up and the database and keystore are open.
	if err := sdactivation.Ready(); err != nil {
		log.Warn("cannot notify systemd", "err", err)
	}
	var runErr error
	select {
	case s := <-sig:
		log.Info("stopping", "signal", s.String())
	case runErr = <-errc:
		log.Error("listener failed; stopping", "err", runErr)
	}
	if err := sdactivation.Stopping(); err != nil {
		log.Warn("cannot notify systemd", "err", err)
	}
	closeAll(lns)
	ctx, cancel := context.WithTimeout(context.Background(), *grace)
	srv.Shutdown(ctx)
	cancel()
	log.Info("stopped")
	return finish(env, runErr)
}

// openAudit opens the audit writer of --audit-file (docs/audit.md, Files):
// "off" writes nothing; "" is the configuration's AuditFile("ssh"), or
// nothing when the configuration says audit = false. The path returned is
// what the start-up log names ("off" when disabled).
func openAudit(flagValue string, env Env) (*audit.Writer, string, error) {
	path := flagValue
	switch path {
	case "off":
		return nil, "off", nil
	case "":
		cfg, err := config.Load(config.Env{Getenv: env.Getenv, EUID: os.Geteuid(), Home: homeDir(env)}, "")
		if err != nil {
			return nil, "", fmt.Errorf("default audit file: %w", err)
		}
		if !cfg.Audit {
			return nil, "off", nil
		}
		path = cfg.AuditFile("ssh")
	}
	w, err := audit.Open(path, audit.Options{})
	if err != nil {
		return nil, "", err
	}
	return w, path, nil
}

func homeDir(env Env) string {
	if h := env.Getenv("HOME"); h != "" {
		return h
	}
	if h, err := os.UserHomeDir(); err == nil {
		return h
	}
	return "/"
}

func closeAll(lns []net.Listener) {
	for _, ln := range lns {
		ln.Close()
	}
}

// ActivationSocket is the one socket terok-ssh-agent.socket passes
// (FileDescriptorName=ssh-agent; docs/install.md, Socket activation and
// readiness). A unit without the name passes it as its only descriptor.
var ActivationSocket = sdactivation.Socket{Name: "ssh-agent", Network: "tcp"}

// listeners returns the systemd-activated socket if any (then --bind and
// --port are not used), else the TCP listener; plus the unix socket if asked.
func listeners(bind string, port int, sockPath string) ([]net.Listener, error) {
	lns, err := sdactivation.Listeners(ActivationSocket)
	if err != nil {
		return nil, err
	}
	if len(lns) == 0 {
		ln, err := net.Listen("tcp", net.JoinHostPort(bind, strconv.Itoa(port)))
		if err != nil {
			return nil, fmt.Errorf("listen on %s:%d (is another agent running? choose another --port): %w", bind, port, err)
		}
		lns = append(lns, ln)
	}
	if sockPath != "" {
		ln, err := listenUnix(sockPath)
		if err != nil {
			closeAll(lns)
			return nil, err
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

func listenUnix(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket; remove it or choose another --socket-path", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s is in use by another process", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	}
	if err := atomicfile.MkdirPrivate(filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return ln, nil
}

func removeOwnPIDFile(path string) {
	data, err := os.ReadFile(path)
	if err == nil && strings.TrimSpace(string(data)) == strconv.Itoa(os.Getpid()) {
		_ = os.Remove(path)
	}
}

// DefaultBridgeSocket is used when neither --listen nor SSH_AUTH_SOCK is set.
func DefaultBridgeSocket() string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("terok-ssh-agent-%d", os.Geteuid()), "agent.sock")
}

func runBridge(args []string, env Env) int {
	fs := flag.NewFlagSet(Program+" bridge", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.Stderr, "usage: %s bridge [flags] [-- COMMAND [ARGS...]]\n\n"+
			"Serves SSH_AUTH_SOCK inside a container and relays each client to the host agent\n"+
			"with the phantom token from $%s. With a COMMAND, runs it with SSH_AUTH_SOCK set\n"+
			"and exits with its status; otherwise prints SSH_AUTH_SOCK=<path> once ready and\n"+
			"serves until SIGTERM.\n\nflags:\n", Program, EnvToken)
		fs.PrintDefaults()
	}
	listen := fs.String("listen", "", "unix socket for clients (default $SSH_AUTH_SOCK, else "+DefaultBridgeSocket()+")")
	host := fs.String("agent-host", "", "agent host (default $"+EnvHost+", else "+DefaultAgentHost+")")
	portStr := fs.String("agent-port", "", "agent TCP port (default $"+EnvPort+", else 18732)")
	agentSock := fs.String("agent-socket", "", "connect to this unix socket instead of TCP (default $"+EnvSocket+")")
	attempts := fs.Int("attempts", 30, "connection attempts per client while the agent is starting")
	interval := fs.Duration("interval", time.Second, "wait between attempts")
	logLevel := fs.String("log-level", "WARNING", "DEBUG, INFO, WARNING or ERROR")
	logFormat := fs.String("log-format", "text", "text or json")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	level, err := ParseLevel(*logLevel)
	if err != nil {
		return finish(env, usage("%v", err))
	}
	format, err := ParseLogFormat(*logFormat)
	if err != nil {
		return finish(env, usage("%v", err))
	}
	if *attempts < 1 || *interval <= 0 {
		return finish(env, usage("--attempts and --interval must be positive"))
	}
	log := newLogger(env.Stderr, level, format, env.Getenv("JOURNAL_STREAM") != "").With("mode", "bridge")
	token := env.Getenv(EnvToken)
	if token == "" {
		return finish(env, usage("$%s is not set; the orchestrator must pass the task's SSH phantom token", EnvToken))
	}
	if *listen == "" {
		*listen = env.Getenv("SSH_AUTH_SOCK")
	}
	if *listen == "" {
		*listen = DefaultBridgeSocket()
	}
	if *agentSock == "" {
		*agentSock = env.Getenv(EnvSocket)
	}
	var dial func(ctx context.Context) (net.Conn, error)
	var target string
	if *agentSock != "" {
		target = "unix:" + *agentSock
		p := *agentSock
		dial = func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", p)
		}
	} else {
		if *portStr == "" {
			*portStr = env.Getenv(EnvPort)
		}
		if *portStr == "" {
			*portStr = strconv.Itoa(config.DefaultSSHAgentPort)
		}
		port, err := strconv.Atoi(*portStr)
		if err != nil || port < 1 || port > 65535 || strings.TrimSpace(*portStr) != *portStr {
			return finish(env, usage("agent port %q is not a number in 1..65535 (check $%s)", *portStr, EnvPort))
		}
		if *host == "" {
			*host = env.Getenv(EnvHost)
		}
		if *host == "" {
			*host = DefaultAgentHost
		}
		addr := net.JoinHostPort(*host, strconv.Itoa(port))
		target = "tcp:" + addr
		dial = func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		}
	}
	b, err := bridge.Listen(bridge.Options{
		Listen: *listen, Dial: dial, Token: token,
		Attempts: *attempts, Interval: *interval, Log: log,
	})
	if err != nil {
		return finish(env, err)
	}
	log.Info("bridge listening", "socket", b.Addr(), "agent", target)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- b.Serve(ctx) }()
	sig, stopSig := signals(env)
	defer stopSig()

	if fs.NArg() == 0 {
		fmt.Fprintf(env.Stdout, "SSH_AUTH_SOCK=%s\n", b.Addr())
		select {
		case <-sig:
			cancel()
			return finish(env, <-served)
		case err := <-served:
			return finish(env, err)
		}
	}

	cmd := exec.Command(fs.Arg(0), fs.Args()[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, env.Stdout, env.Stderr
	cmd.Env = childEnv(env, b.Addr())
	if err := cmd.Start(); err != nil {
		cancel()
		<-served
		return finish(env, fmt.Errorf("start %s: %w", fs.Arg(0), err))
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	var werr error
	for done := false; !done; {
		select {
		case s := <-sig:
			_ = cmd.Process.Signal(s)
		case werr = <-waited:
			done = true
		}
	}
	cancel()
	if err := <-served; err != nil {
		log.Error("bridge failed", "err", err)
	}
	if werr != nil {
		var xe *exec.ExitError
		if errors.As(werr, &xe) {
			if code := xe.ExitCode(); code >= 0 {
				return code
			}
			return 128 + int(xe.Sys().(syscall.WaitStatus).Signal())
		}
		return finish(env, werr)
	}
	return 0
}

// childEnv is the environment with SSH_AUTH_SOCK pointing at the bridge and
// the token removed: the command needs the socket, not the token.
func childEnv(env Env, sock string) []string {
	var base []string
	if env.Environ != nil {
		base = env.Environ()
	}
	out := make([]string, 0, len(base)+1)
	for _, kv := range base {
		if strings.HasPrefix(kv, "SSH_AUTH_SOCK=") || strings.HasPrefix(kv, EnvToken+"=") {
			continue
		}
		out = append(out, kv)
	}
	return append(out, "SSH_AUTH_SOCK="+sock)
}
