package shieldbundle

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"time"

	"terok.dev/sandbox/common/names"
)

// `shield resolve` (docs/shield-resolver.md, Resolve now): the runner
// writes resolve.request and sends the resolver ResolveSignal; the
// resolver looks every allowlisted name up through its own forwarding path
// (so the answers are learned exactly like a container's lookups, TTLs
// clamped) and writes resolve.result with the request's id.
const (
	FileResolveRequest = "resolve.request"
	FileResolveResult  = "resolve.result"
	// MaxResolveResult bounds what a reader of resolve.result reads.
	MaxResolveResult = 4 << 20
	// ResolveSignal asks the resolver to handle resolve.request.
	ResolveSignal = syscall.SIGUSR1
	// FileResolverFeatures is written by a resolver that handles
	// ResolveSignal: "<its pid> resolve\n". A resolver of an older hook
	// writes none, and ResolveSignal's default action would kill it, so
	// the runner signals only a resolver whose PID this file names.
	FileResolverFeatures = "resolver.features"
	FeatureResolve       = "resolve"
)

// FormatFeatures renders resolver.features for pid.
func FormatFeatures(pid int, features ...string) string {
	return strconv.Itoa(pid) + " " + strings.Join(features, " ") + "\n"
}

// HasFeature reports whether resolver.features (data) is written by pid
// and lists feature.
func HasFeature(data []byte, pid int, feature string) bool {
	f := strings.Fields(string(data))
	if len(f) < 2 || f[0] != strconv.Itoa(pid) {
		return false
	}
	for _, v := range f[1:] {
		if v == feature {
			return true
		}
	}
	return false
}

// ResolveRequest is one `shield resolve` request.
type ResolveRequest struct {
	// ID is 8 to 64 lowercase hex digits, echoed in the result.
	ID string
	// Force drops the resolver's answer cache first, so every name is
	// asked upstream again.
	Force bool
}

// validResolveID: 8 to 64 lowercase hex digits.
func validResolveID(id string) bool { return names.LowerHex(id, 8, 64) }

// Format renders the request file: "<id>\n" or "<id> force\n".
func (r ResolveRequest) Format() (string, error) {
	if !validResolveID(r.ID) {
		return "", fmt.Errorf("resolve request id %q: want 8-64 lowercase hex digits", r.ID)
	}
	if r.Force {
		return r.ID + " force\n", nil
	}
	return r.ID + "\n", nil
}

// ParseResolveRequest parses a request file; anything but the exact
// format Format writes is an error.
func ParseResolveRequest(data []byte) (ResolveRequest, error) {
	s, ok := strings.CutSuffix(string(data), "\n")
	if !ok || strings.Contains(s, "\n") {
		return ResolveRequest{}, errors.New("resolve request: not one line")
	}
	id, flag, hasFlag := strings.Cut(s, " ")
	if !validResolveID(id) {
		return ResolveRequest{}, errors.New("resolve request: bad id")
	}
	if hasFlag && flag != "force" {
		return ResolveRequest{}, fmt.Errorf("resolve request: unknown flag %q", truncateForMsg(flag))
	}
	return ResolveRequest{ID: id, Force: hasFlag}, nil
}

func truncateForMsg(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// ResolveResult is resolve.result.
type ResolveResult struct {
	ID    string         `json:"id"`
	Time  time.Time      `json:"time"`
	Force bool           `json:"force"`
	Names []ResolvedName `json:"names"`
}

// ResolvedName is the outcome of one allowlisted name (A and AAAA).
type ResolvedName struct {
	Name string `json:"name"`
	// Addresses are the A/AAAA answers the container now reaches (the
	// learned ones), in answer order without duplicates.
	Addresses []string `json:"addresses"`
	// Rcode and RcodeAAAA are the DNS response codes (NOERROR, NXDOMAIN,
	// SERVFAIL, REFUSED, ...) of the A and the AAAA answer.
	Rcode     string `json:"rcode"`
	RcodeAAAA string `json:"rcode_aaaa"`
	// Cached is true when both answers came from the resolver's cache.
	Cached bool `json:"cached,omitempty"`
}

// Marshal encodes resolve.result (one JSON object and a newline).
func (r ResolveResult) Marshal() ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// ParseResolveResult decodes resolve.result.
func ParseResolveResult(data []byte) (ResolveResult, error) {
	var r ResolveResult
	if err := json.Unmarshal(data, &r); err != nil {
		return ResolveResult{}, fmt.Errorf("resolve result: %w", err)
	}
	if !validResolveID(r.ID) {
		return ResolveResult{}, errors.New("resolve result: bad id")
	}
	return r, nil
}
