package gitkit

// terok patch: this file differs from gitkit v0.4.0. The changes are listed in
// ../PATCHES.md; every changed spot carries a "terok patch" comment.

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path"
	"strings"
	"syscall"
	"time"
)

type service struct {
	method  string
	suffix  string
	handler func(string, http.ResponseWriter, *Request)
	rpc     string
}

type Server struct {
	config   Config
	services []service
	AuthFunc func(Credential, *Request) (bool, error)

	// terok patch: PrepareCommand, when set, is called for every git process
	// right before it starts. It may replace cmd.Env and cmd.Stderr and add
	// arguments; the default environment is os.Environ() as before.
	PrepareCommand func(cmd *exec.Cmd, r *Request)
	// terok patch: ErrorLog, when set, receives the errors gitkit used to
	// print with the standard logger.
	ErrorLog func(context string, err error)
	// terok patch: ExitGrace bounds the wait for a git process after its
	// output ended; it is then killed. Zero means 30 seconds.
	ExitGrace time.Duration
	// terok patch: RPCDone, when set, is called once a POST RPC is over,
	// with nil only when the whole body reached git, all of git's output
	// reached the client and git exited 0: the embedding server keeps such
	// a response (see the gate's fetch cache).
	RPCDone func(r *Request, err error)
}

type Request struct {
	*http.Request
	RepoName string
	RepoPath string
}

func New(cfg Config) *Server {
	s := Server{config: cfg}
	s.services = []service{
		service{"GET", "/info/refs", s.getInfoRefs, ""},
		service{"POST", "/git-upload-pack", s.postRPC, "git-upload-pack"},
		service{"POST", "/git-receive-pack", s.postRPC, "git-receive-pack"},
	}

	// Use PATH if full path is not specified
	if s.config.GitPath == "" {
		s.config.GitPath = "git"
	}

	return &s
}

// findService returns a matching git subservice and parsed repository name
func (s *Server) findService(req *http.Request) (*service, string) {
	for _, svc := range s.services {
		if svc.method == req.Method && strings.HasSuffix(req.URL.Path, svc.suffix) {
			path := strings.Replace(req.URL.Path, svc.suffix, "", 1)
			return &svc, path
		}
	}
	return nil, ""
}

func (s *Server) logError(context string, err error) {
	if s.ErrorLog != nil {
		s.ErrorLog(context, err)
		return
	}
	logError(context, err)
}

func (s *Server) fail500(w http.ResponseWriter, context string, err error) {
	http.Error(w, "Internal server error", 500)
	s.logError(context, err)
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// terok patch: no per-request info log through the standard logger; the
	// embedding server keeps its own access log.

	// Find the git subservice to handle the request
	svc, repoUrlPath := s.findService(r)
	if svc == nil {
		http.Error(w, "Forbidden", http.StatusForbidden)
		return
	}

	// Determine namespace and repo name from request path
	repoNamespace, repoName := getNamespaceAndRepo(repoUrlPath)
	if repoName == "" {
		s.logError("auth", fmt.Errorf("no repo name provided"))
		w.WriteHeader(http.StatusBadRequest)
		return
	}

	req := &Request{
		Request:  r,
		RepoName: path.Join(repoNamespace, repoName),
		RepoPath: path.Join(s.config.Dir, repoNamespace, repoName),
	}

	if s.config.Auth {
		if s.AuthFunc == nil {
			s.logError("auth", fmt.Errorf("no auth backend provided"))
			w.WriteHeader(http.StatusUnauthorized)
			return
		}

		authHeader := r.Header.Get("Authorization")
		if authHeader == "" {
			w.Header()["WWW-Authenticate"] = []string{`Basic realm=""`}
			w.WriteHeader(http.StatusUnauthorized)
			return
		}

		cred, err := getCredential(r)
		if err != nil {
			s.logError("auth", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}

		allow, err := s.AuthFunc(cred, req)
		if !allow || err != nil {
			if err != nil {
				s.logError("auth", err)
			}

			s.logError("auth", fmt.Errorf("rejected user %s", cred.Username))
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
	}

	if !repoExists(req.RepoPath) && s.config.AutoCreate == true {
		err := initRepo(req.RepoName, &s.config)
		if err != nil {
			s.logError("repo-init", err)
		}
	}

	if !repoExists(req.RepoPath) {
		s.logError("repo-init", fmt.Errorf("%s does not exist", req.RepoPath))
		http.NotFound(w, r)
		return
	}

	svc.handler(svc.rpc, w, req)
}

// terok patch: gitProtocol returns the client's Git-Protocol header when it
// is safe to hand to git as GIT_PROTOCOL (printable ASCII, bounded).
func gitProtocol(r *http.Request) string {
	v := r.Header.Get("Git-Protocol")
	if v == "" || len(v) > 256 {
		return ""
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x21 || v[i] > 0x7e {
			return ""
		}
	}
	return v
}

// terok patch: protocolV2 reports whether the client asked for protocol v2;
// the v2 capability advertisement has no "# service=" preamble.
func protocolV2(proto string) bool {
	for _, f := range strings.Split(proto, ":") {
		if f == "version=2" {
			return true
		}
	}
	return false
}

func (s *Server) getInfoRefs(_ string, w http.ResponseWriter, r *Request) {
	context := "get-info-refs"
	rpc := r.URL.Query().Get("service")

	if !(rpc == "git-upload-pack" || rpc == "git-receive-pack") {
		http.Error(w, "Not Found", 404)
		return
	}

	cmd, pipe := s.gitCommand(r, subCommand(rpc), "--stateless-rpc", "--advertise-refs", r.RepoPath)
	if err := cmd.Start(); err != nil {
		s.fail500(w, context, err)
		return
	}
	defer cleanUpProcessGroup(cmd)

	w.Header().Add("Content-Type", fmt.Sprintf("application/x-%s-advertisement", rpc))
	w.Header().Add("Cache-Control", "no-cache")
	w.WriteHeader(200)

	if !protocolV2(gitProtocol(r.Request)) {
		if err := packLine(w, fmt.Sprintf("# service=%s\n", rpc)); err != nil {
			s.logError(context, err)
			return
		}

		if err := packFlush(w); err != nil {
			s.logError(context, err)
			return
		}
	}

	if _, err := io.Copy(w, pipe); err != nil {
		s.logError(context, err)
		return
	}

	if err := s.wait(cmd); err != nil {
		s.logError(context, err)
		return
	}
}

// terok patch: lazyHeader writes the response header on the first body
// byte, so a git process that fails before producing output still gets a
// 500 instead of an empty 200.
type lazyHeader struct {
	w       http.ResponseWriter
	rpc     string
	started bool
}

func (l *lazyHeader) Write(p []byte) (int, error) {
	if !l.started {
		l.started = true
		l.w.Header().Add("Content-Type", fmt.Sprintf("application/x-%s-result", l.rpc))
		l.w.Header().Add("Cache-Control", "no-cache")
		l.w.WriteHeader(200)
	}
	n, err := l.w.Write(p)
	if f, ok := l.w.(http.Flusher); ok {
		f.Flush()
	}
	return n, err
}

// BodyError is returned by a request body reader that wants its own status
// (for example 413 for a body over the limit). terok patch.
type BodyError interface {
	error
	HTTPStatus() int
}

func (s *Server) postRPC(rpc string, w http.ResponseWriter, r *Request) {
	// terok patch: report the outcome (see RPCDone).
	err := s.runRPC(rpc, w, r)
	if s.RPCDone != nil {
		s.RPCDone(r, err)
	}
}

// terok patch: runRPC is the former postRPC; it returns why the response is
// incomplete or failed, nil when it is whole.
func (s *Server) runRPC(rpc string, w http.ResponseWriter, r *Request) error {
	context := "post-rpc"
	body := r.Body

	if r.Header.Get("Content-Encoding") == "gzip" {
		var err error
		body, err = gzip.NewReader(r.Body)
		if err != nil {
			// terok patch: a broken gzip stream is the client's fault.
			http.Error(w, "Bad Request: invalid gzip body", http.StatusBadRequest)
			s.logError(context, err)
			return err
		}
	}

	cmd, pipe := s.gitCommand(r, subCommand(rpc), "--stateless-rpc", r.RepoPath)
	defer pipe.Close()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		s.fail500(w, context, err)
		return err
	}
	defer stdin.Close()

	if err := cmd.Start(); err != nil {
		s.fail500(w, context, err)
		return err
	}
	defer cleanUpProcessGroup(cmd)

	// terok patch: the body is streamed into git while its output is
	// streamed out (the original copied the whole body first, which
	// deadlocks once git writes more than a pipe buffer before it has read
	// everything). git closing its stdin early is not an error.
	copyErr := make(chan error, 1)
	go func() {
		_, err := io.Copy(stdin, body)
		stdin.Close()
		if errors.Is(err, syscall.EPIPE) || errors.Is(err, os.ErrClosed) {
			err = nil
		}
		if err != nil {
			// The request body failed: stop git so the output side ends.
			killProcessGroup(cmd)
		}
		copyErr <- err
	}()

	lw := &lazyHeader{w: w, rpc: rpc}
	outErr := copyCoalesced(lw, pipe)
	inErr := <-copyErr
	if inErr != nil {
		s.logError(context, inErr)
		if !lw.started {
			status := http.StatusBadRequest
			var be BodyError
			if errors.As(inErr, &be) {
				status = be.HTTPStatus()
			}
			http.Error(w, http.StatusText(status), status)
		}
		return inErr
	}
	if outErr != nil {
		s.logError(context, outErr)
		return outErr
	}
	if err := s.wait(cmd); err != nil {
		s.logError(context, err)
		if !lw.started {
			s.fail500(w, context, err)
		}
		return err
	}
	if !lw.started {
		// git produced no output at all (possible for a push that only
		// deletes nothing); still answer with the result type.
		lw.Write(nil)
	}
	return nil
}

// terok patch: copyCoalesced copies git's output to the client in reads of
// up to 256 KiB from a pipe enlarged to 1 MiB. upload-pack relays the pack
// in 8 KiB side-band packets; while one write to the client is in flight,
// the packets git produces meanwhile pile up in the pipe and the next read
// takes them all, so they leave in one write and flush instead of a system
// call and a chunk per packet (which made large clones measurably slower
// than git daemon). Progress messages still go out at once: a read returns
// whatever the pipe holds without waiting for more.
func copyCoalesced(dst io.Writer, src io.Reader) error {
	buf := make([]byte, 256<<10)
	if f, ok := src.(*os.File); ok {
		// A larger pipe lets git run ahead while the client is being served.
		syscall.Syscall(syscall.SYS_FCNTL, f.Fd(), 1031 /* F_SETPIPE_SZ */, 1<<20)
	}
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// terok patch: wait bounds the wait for git after its output ended.
func (s *Server) wait(cmd *exec.Cmd) error {
	grace := s.ExitGrace
	if grace == 0 {
		grace = 30 * time.Second
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(grace):
		killProcessGroup(cmd)
		<-done
		return fmt.Errorf("git did not exit within %s after its output ended; killed", grace)
	}
}

func (s *Server) Setup() error {
	return s.config.Setup()
}

func initRepo(name string, config *Config) error {
	fullPath := path.Join(config.Dir, name)

	if err := exec.Command(config.GitPath, "init", "--bare", fullPath).Run(); err != nil {
		return err
	}

	if config.AutoHooks && config.Hooks != nil {
		return config.Hooks.setupInDir(fullPath)
	}

	return nil
}

func repoExists(p string) bool {
	_, err := os.Stat(path.Join(p, "objects"))
	return err == nil
}

// terok patch: the command is bound to the request context (a client that
// goes away takes its git process with it), git's stderr is kept apart from
// the protocol stream (the original merged it into stdout, so any warning
// corrupted the response), GIT_PROTOCOL comes from the Git-Protocol header,
// and PrepareCommand may adjust everything before the start.
func (s *Server) gitCommand(r *Request, args ...string) (*exec.Cmd, io.ReadCloser) {
	ctx := r.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	cmd := exec.CommandContext(ctx, s.config.GitPath, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { killProcessGroup(cmd); return nil }
	cmd.Env = os.Environ()
	cmd.Stderr = os.Stderr
	if s.PrepareCommand != nil {
		s.PrepareCommand(cmd, r)
	}
	if proto := gitProtocol(r.Request); proto != "" {
		cmd.Env = append(cmd.Env, "GIT_PROTOCOL="+proto)
	}

	rd, _ := cmd.StdoutPipe()

	return cmd, rd
}
