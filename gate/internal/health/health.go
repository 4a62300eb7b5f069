// Package health is the gate's unauthenticated health answer, GET or HEAD
// /-/health (docs/gate.md, Health): no repository can have that path, since
// a project id never starts with '-'.
package health

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
)

// Path is the health answer's URL path.
const Path = "/-/health"

// Checker says whether the gate can serve: the base path is a directory it
// can list and the tokens file is readable (or does not exist yet: no task
// has a token).
type Checker struct {
	BasePath, TokenFile, Version string
}

// Answer is the JSON body of the health answer.
type Answer struct {
	Status  string `json:"status"` // "ok" or "error"
	Version string `json:"version"`
	// Error names what is wrong ("base-path", "tokens-file"), never a path
	// or a token: containers can ask too. The gate's log has the cause.
	Error string `json:"error,omitempty"`
}

// Check returns the answer and, when unhealthy, the cause for the log.
func (c Checker) Check() (Answer, error) {
	a := Answer{Status: "ok", Version: c.Version}
	d, err := os.Open(c.BasePath)
	if err == nil {
		_, err = d.Readdirnames(1)
		_ = d.Close()
		if errors.Is(err, io.EOF) {
			err = nil
		}
	}
	if err != nil {
		a.Status, a.Error = "error", "base-path"
		return a, err
	}
	f, err := os.Open(c.TokenFile)
	if err == nil {
		_ = f.Close()
	} else if !errors.Is(err, os.ErrNotExist) {
		a.Status, a.Error = "error", "tokens-file"
		return a, err
	}
	return a, nil
}

// Wrap answers Path itself, before authentication and the git process
// queue, and passes every other request to next. An unhealthy gate answers
// 503 and reports the cause to onError (may be nil).
func Wrap(next http.Handler, c Checker, onError func(error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The raw target, as the router matches it: no decoded variant
		// of the path is the health answer.
		if target, _, _ := strings.Cut(r.RequestURI, "?"); target != Path {
			next.ServeHTTP(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		a, err := c.Check()
		code := http.StatusOK
		if err != nil {
			code = http.StatusServiceUnavailable
			if onError != nil {
				onError(err)
			}
		}
		b, _ := json.Marshal(a)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(code)
		if r.Method == http.MethodGet {
			_, _ = w.Write(append(b, '\n'))
		}
	})
}
