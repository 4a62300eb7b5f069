package proxy

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"terok.dev/sandbox/common/audit"
)

// FuzzEncodeEntry: the hand-written encoder writes byte for byte what
// encoding/json writes for Entry, whatever the strings hold (a request
// path and method come from the client), and audit.ParseLine reads it.
func FuzzEncodeEntry(f *testing.F) {
	f.Add("GET", "/v1/messages", "proj", "t1", "10.0.0.1:1", int64(5), 1.5, true)
	f.Add("x", "/", "", "", "", int64(7), 1e-9, true)
	f.Add("x", "/", "", "", "", int64(7), 3e22, true)
	f.Add("P\"O\\ST", "/a/<b>&\u2028\x00\x7f\xff", "", "\t\n", "", int64(-1), 0.0, false)
	f.Fuzz(func(t *testing.T, method, path, project, task, remote string, n int64, ms float64, refresh bool) {
		status := int(n % 1000)
		e := Entry{Time: time.Unix(1700000000, n%1e9), Event: "request", Outcome: "ok", Reason: task, Project: project, Task: task,
			TokenPrefix: project, Provider: method, CredentialSet: remote, Method: method, Host: remote, Path: &path,
			Status: &status, ReqBytes: &n, RespBytes: &n, DurationMS: &ms, OAuthRefresh: &refresh, Remote: remote}
		got, err := EncodeEntry(nil, &e)
		want, jerr := json.Marshal(&e)
		if (err != nil) != (jerr != nil) {
			t.Fatalf("errors differ: %v / %v", err, jerr)
		}
		if err != nil {
			return
		}
		if !bytes.Equal(got, append(want, '\n')) {
			t.Fatalf("encoders differ:\n got %s\nwant %s", got, want)
		}
		if _, err := audit.ParseLine(bytes.TrimSuffix(got, []byte("\n"))); err != nil {
			t.Fatalf("ParseLine: %v", err)
		}
	})
}

// TestEncodeEntryOmits: empty optional members are left out, as documented
// (docs/audit.md, Channel proxy).
func TestEncodeEntryOmits(t *testing.T) {
	b, err := EncodeEntry(nil, &Entry{Time: time.Date(2026, 12, 2, 11, 30, 0, 0, time.UTC), Event: "oauth-refresh", Outcome: "ok", Provider: "claude", CredentialSet: "default"})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"v":1,"time":"2026-12-02T11:30:00Z","channel":"proxy","event":"oauth-refresh","outcome":"ok","provider":"claude","credential_set":"default"}` + "\n"
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
}
