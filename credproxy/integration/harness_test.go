// Package integration starts the real terok-credential-proxy binary against
// real clients (Go's net/http and curl) and local upstreams. The database
// and routes file are made here from the spec with raw SQL and JSON, never
// with the project's own writers.
package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
	"terok.dev/sandbox/common/testkit"
)

// schema is the DDL of docs/formats.md, Credentials database, verbatim.
const schema = `CREATE TABLE IF NOT EXISTS credentials (
    credential_set TEXT NOT NULL,
    provider       TEXT NOT NULL,
    data           TEXT NOT NULL,
    PRIMARY KEY (credential_set, provider)
);
CREATE TABLE IF NOT EXISTS proxy_tokens (
    token          TEXT PRIMARY KEY,
    project        TEXT NOT NULL,
    task           TEXT NOT NULL,
    credential_set TEXT NOT NULL,
    provider       TEXT NOT NULL
);`

var (
	binPath       string
	agentPath     string // real terok-ssh-agent next to the proxy, "" if it could not be built
	agentBuildErr string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "credproxy-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "terok-credential-proxy")
	if bd := os.Getenv("TEROK_BIN_DIR"); bd != "" {
		if _, err := os.Stat(filepath.Join(bd, "terok-credential-proxy")); err == nil {
			binPath = filepath.Join(bd, "terok-credential-proxy")
		}
	}
	if strings.HasPrefix(binPath, dir) {
		args := []string{"build", "-o", binPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "terok.dev/sandbox/credproxy/cmd/terok-credential-proxy")...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build terok-credential-proxy:", err)
			os.Exit(1)
		}
	}
	agentPath = filepath.Join(filepath.Dir(binPath), "terok-ssh-agent")
	if _, err := os.Stat(agentPath); err != nil {
		cmd := exec.Command("go", "build", "-o", agentPath, "terok.dev/sandbox/sshagent/cmd/terok-ssh-agent")
		if out, err := cmd.CombinedOutput(); err != nil {
			agentPath = ""
			agentBuildErr = fmt.Sprintf("%v: %s", err, out)
		}
	}
	// No proxy started here may use the default state paths (the default
	// --audit-file is under the state dir): testkit.Run gives every child
	// fresh roots (newEnv points them into its own directory) and fails the
	// run if one wrote under a default root anyway.
	code := testkit.Run(m)
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// env is one proxy under test with its database, routes and output.
type env struct {
	t       *testing.T
	dir     string
	dbPath  string
	routes  string
	sock    string
	logFile string
	pidFile string
	// auditFile is the default --audit-file under the env's state dir.
	auditFile string
	port      int
	db        *sql.DB
	cmd       *exec.Cmd
	stderr    *testkit.Buffer
	exited    chan struct{}
	exitErr   error
	// secrets must never appear in anything the proxy emits.
	secrets []string
	mu      sync.Mutex
	seen    bytes.Buffer // every response header and body the clients got
	client  *http.Client
	envVars []string
}

// newEnv makes the database (raw SQL) and writes routesJSON.
func newEnv(t *testing.T, routesJSON string) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, dir: dir,
		dbPath:  filepath.Join(dir, "cred", "credentials.db"),
		routes:  filepath.Join(dir, "cred", "routes.json"),
		sock:    filepath.Join(dir, "run", "credential-proxy.sock"),
		logFile: filepath.Join(dir, "state", "proxy", "credential-proxy.log"),
		pidFile: filepath.Join(dir, "run", "credential-proxy.pid"),
		stderr:  &testkit.Buffer{},
	}
	e.auditFile = filepath.Join(dir, "state", "audit", "proxy.jsonl") // config.AuditFile("proxy")
	e.envVars = []string{"TEROK_SANDBOX_STATE_DIR=" + filepath.Join(dir, "state"),
		"TEROK_SANDBOX_RUNTIME_DIR=" + filepath.Join(dir, "run"), "TEROK_SANDBOX_CONFIG_DIR=" + filepath.Join(dir, "config"),
		"TEROK_CREDENTIALS_DIR=" + filepath.Join(dir, "cred"), "TEROK_CONFIG_DIR=" + filepath.Join(dir, "config")}
	if err := os.MkdirAll(filepath.Dir(e.dbPath), 0o700); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite3", "file:"+e.dbPath+"?_busy_timeout=5000&_journal_mode=WAL")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Exec(schema); err != nil {
		t.Fatal(err)
	}
	e.db = db
	if err := os.WriteFile(e.routes, []byte(routesJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) exec(q string, args ...any) {
	e.t.Helper()
	if _, err := e.db.Exec(q, args...); err != nil {
		e.t.Fatalf("%s: %v", q, err)
	}
}

// token inserts a phantom token row.
func (e *env) token(tok, set, provider string) string {
	e.exec(`INSERT INTO proxy_tokens (token, project, task, credential_set, provider) VALUES (?, 'proj', 'task1', ?, ?)`, tok, set, provider)
	return tok
}

// cred stores a credential row with raw JSON data.
func (e *env) cred(set, provider, data string) {
	e.exec(`INSERT OR REPLACE INTO credentials (credential_set, provider, data) VALUES (?, ?, ?)`, set, provider, data)
}

func (e *env) secret(s string) string {
	e.secrets = append(e.secrets, s)
	return s
}

// start runs the proxy and waits until its health endpoint answers.
// launch starts cmd as the env's proxy process, directly or through
// systemd-socket-activate: its stderr goes to the env's, e.exited closes
// when it exits, and it is stopped when the test ends.
func (e *env) launch(cmd *exec.Cmd) {
	e.t.Helper()
	cmd.Stderr = e.stderr
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.cmd = cmd
	e.exited = make(chan struct{})
	go func() { e.exitErr = cmd.Wait(); close(e.exited) }()
	e.t.Cleanup(e.stop)
}

func (e *env) start(args ...string) {
	e.t.Helper()
	if e.port == 0 {
		e.port = testkit.FreePort(e.t)
	}
	all := append([]string{
		"--socket-path=" + e.sock, "--db-path=" + e.dbPath, "--routes-file=" + e.routes,
		"--port=" + strconv.Itoa(e.port), "--pid-file=" + e.pidFile,
		"--log-level=DEBUG", "--log-file=" + e.logFile,
	}, args...)
	cmd := exec.Command(binPath, all...)
	cmd.Stdout = e.stderr
	cmd.Env = append(os.Environ(), e.envVars...)
	e.launch(cmd)
	e.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}, Timeout: 60 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-e.exited:
			e.t.Fatalf("proxy exited at startup: %v\n%s\n%s", e.exitErr, e.stderr.String(), e.log())
		default:
		}
		resp, err := http.Get(e.url("/-/health"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("proxy not healthy: %v\n%s", err, e.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM, expects exit 0, and checks that nothing the proxy
// wrote contains a real secret.
func (e *env) stop() {
	if e.cmd == nil || e.cmd.Process == nil {
		return
	}
	select {
	case <-e.exited:
	default:
		_ = e.cmd.Process.Signal(os.Interrupt)
		select {
		case <-e.exited:
		case <-time.After(20 * time.Second):
			_ = e.cmd.Process.Kill()
			<-e.exited
			e.t.Errorf("proxy did not stop on SIGINT")
		}
	}
	e.cmd = nil
	e.checkNoSecrets()
}

func (e *env) log() string {
	b, _ := os.ReadFile(e.logFile)
	return string(b)
}

func (e *env) checkNoSecrets() {
	e.mu.Lock()
	seen := e.seen.String()
	e.mu.Unlock()
	all := map[string]string{"stderr": e.stderr.String(), "responses": seen}
	// Every file the proxy wrote (log, audit, PID...), everything but the
	// credentials directory, which holds the secrets.
	_ = filepath.WalkDir(e.dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && path == filepath.Dir(e.dbPath) {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() {
			b, _ := os.ReadFile(path)
			all[path] = string(b)
		}
		return nil
	})
	for _, s := range e.secrets {
		for where, text := range all {
			if strings.Contains(text, s) {
				e.t.Errorf("real secret %q found in proxy %s", s[:6]+"…", where)
			}
		}
	}
}

func (e *env) url(path string) string { return fmt.Sprintf("http://127.0.0.1:%d%s", e.port, path) }

// record keeps a response's headers and body for the secret check.
func (e *env) record(resp *http.Response, body []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	_ = resp.Header.Write(&e.seen)
	e.seen.Write(body)
}

// do sends req through the proxy's TCP port and returns status, headers, body.
func (e *env) do(req *http.Request) (int, http.Header, string) {
	e.t.Helper()
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("read body: %v", err)
	}
	e.record(resp, b)
	return resp.StatusCode, resp.Header, string(b)
}

func (e *env) get(path string, hdr ...string) (int, http.Header, string) {
	e.t.Helper()
	req, err := http.NewRequest("GET", e.url(path), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	return e.do(req)
}

// upstream is a local test server that records what it received and never
// echoes credentials back.
type upstream struct {
	mu   sync.Mutex
	reqs []seenReq
	srv  *http.Server
	l    net.Listener
	tls  bool
	// handler, when set, answers instead of the default.
	handler http.HandlerFunc
}

type seenReq struct {
	Method, RawPath, RawQuery, Host string
	Header                          http.Header
	BodyLen                         int64
	BodySum                         string
	Proto                           int
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n, _ := io.Copy(io.Discard, r.Body)
	raw := r.RequestURI
	q := ""
	if i := strings.IndexByte(raw, '?'); i >= 0 {
		raw, q = raw[:i], raw[i+1:]
	}
	u.mu.Lock()
	u.reqs = append(u.reqs, seenReq{Method: r.Method, RawPath: raw, RawQuery: q, Host: r.Host,
		Header: r.Header.Clone(), BodyLen: n, Proto: r.ProtoMajor})
	u.mu.Unlock()
	if u.handler != nil {
		u.handler(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Add("X-Multi", "one")
	w.Header().Add("X-Multi", "two")
	w.Header().Set("Retry-After", "7")
	w.Header().Set("X-Ratelimit-Remaining", "41")
	w.Header().Set("Cache-Control", "no-store")
	fmt.Fprintf(w, `{"ok":true,"n":%d}`, n)
}

func (u *upstream) last(t *testing.T) seenReq {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.reqs) == 0 {
		t.Fatal("upstream received nothing")
	}
	return u.reqs[len(u.reqs)-1]
}

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reqs)
}

func (u *upstream) origin() string {
	s := "http"
	if u.tls {
		s = "https"
	}
	return s + "://" + u.l.Addr().String()
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.l = l
	u.srv = &http.Server{Handler: u}
	go func() { _ = u.srv.Serve(l) }()
	t.Cleanup(func() { _ = u.srv.Close() })
	return u
}

// testCA is a CA and a leaf for 127.0.0.1 made for one test.
type testCA struct {
	caFile string
	leaf   tls.Certificate
}

func newTestCA(t *testing.T) testCA {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "terok test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	return testCA{caFile: caFile, leaf: tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}}
}

// newTLSUpstream serves HTTP/2 and HTTP/1.1 over TLS with the CA's leaf.
func newTLSUpstream(t *testing.T, ca testCA) *upstream {
	t.Helper()
	u := &upstream{tls: true}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.l = l
	u.srv = &http.Server{Handler: u, TLSConfig: &tls.Config{Certificates: []tls.Certificate{ca.leaf}, NextProtos: []string{"h2", "http/1.1"}}}
	go func() { _ = u.srv.ServeTLS(l, "", "") }()
	t.Cleanup(func() { _ = u.srv.Close() })
	return u
}

// rawExchange writes raw bytes to the proxy's TCP port and returns what it
// answers until it closes the connection or 10 s pass.
func (e *env) rawExchange(payload string) string {
	e.t.Helper()
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", e.port))
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, payload); err != nil {
		e.t.Fatal(err)
	}
	b, _ := io.ReadAll(bufio.NewReader(c))
	e.mu.Lock()
	e.seen.Write(b)
	e.mu.Unlock()
	return string(b)
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func routesJSON(kv ...string) string {
	var b strings.Builder
	b.WriteString("{")
	for i := 0; i+1 < len(kv); i += 2 {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "%q: %s", kv[i], kv[i+1])
	}
	b.WriteString("}")
	return b.String()
}
