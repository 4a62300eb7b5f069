package integration

import (
	"strings"
	"testing"
)

const staticMarker = "terok-proxy-phantom-token:credential-proxy-handles-real-auth"

// TestStaticMarkerSwitch: the static phantom marker is an unknown token by
// default; with --allow-static-marker it gets the default claude
// credential, the start logs a warning and every use is logged as project
// __static__ with the token shown only by its prefix
// (docs/credential-proxy.md, "The static marker").
func TestStaticMarkerSwitch(t *testing.T) {
	up := newUpstream(t)
	routes := routesJSON("claude", `{"upstream": "`+up.origin()+`", "auth_header": "dynamic"}`)

	t.Run("refused by default", func(t *testing.T) {
		e := newEnv(t, routes)
		e.cred("default", "claude", `{"type": "api_key", "key": "`+e.secret("REAL-claude-def4ult")+`"}`)
		e.start()
		for i := 0; i < 3; i++ {
			if code, _, body := e.get("/v1/x", "X-Api-Key", staticMarker); code != 401 || body != "Invalid token" {
				t.Fatalf("static marker: %d %q, want 401 Invalid token (like an unknown token)", code, body)
			}
		}
		if code, _, body := e.get("/v1/x", "X-Api-Key", "terok-p-"+strings.Repeat("0", 32)); code != 401 || body != "Invalid token" {
			t.Fatalf("unknown token: %d %q", code, body)
		}
		if n := up.count(); n != 0 {
			t.Fatalf("the upstream saw %d requests", n)
		}
		e.stop()
		log := e.log()
		if n := strings.Count(log, "Refused the static phantom marker"); n != 1 {
			t.Errorf("refusal hint logged %d times, want once:\n%s", n, log)
		}
		if !strings.Contains(log, "proxy_static_marker = true") {
			t.Errorf("refusal names no switch:\n%s", log)
		}
		if strings.Contains(log, "COMPATIBILITY SWITCH") || strings.Contains(log, "__static__") {
			t.Errorf("switch reported on while off:\n%s", log)
		}
	})

	t.Run("accepted with the flag", func(t *testing.T) {
		e := newEnv(t, routes)
		e.cred("default", "claude", `{"type": "api_key", "key": "`+e.secret("REAL-claude-st4tic")+`"}`)
		e.start("--allow-static-marker")
		const uses = 3
		for i := 0; i < uses; i++ {
			if code, _, _ := e.get("/v1/x", "X-Api-Key", staticMarker); code != 200 {
				t.Fatalf("static marker with the switch: %d", code)
			}
			if got := up.last(t).Header.Get("X-Api-Key"); got != "REAL-claude-st4tic" {
				t.Fatalf("injected %q", got)
			}
		}
		e.exec(`DELETE FROM credentials WHERE provider = 'claude'`)
		if code, _, body := e.get("/v1/x", "X-Api-Key", staticMarker); code != 502 || body != "Credential not configured for this provider" {
			t.Fatalf("static marker without credential: %d %q", code, body)
		}
		e.stop()
		log := e.log()
		if n := strings.Count(log, "COMPATIBILITY SWITCH --allow-static-marker is on"); n != 1 {
			t.Errorf("start warning logged %d times:\n%s", n, log)
		}
		if !strings.Contains(log, "proxy_static_marker = false") {
			t.Errorf("start warning names no way to disable it:\n%s", log)
		}
		var used []string
		for _, l := range strings.Split(log, "\n") {
			if strings.Contains(l, "Static phantom marker used") {
				used = append(used, l)
			}
		}
		if len(used) != uses+1 {
			t.Fatalf("%d use lines, want %d:\n%s", len(used), uses+1, log)
		}
		for _, l := range used {
			if !strings.Contains(l, "project=__static__") || !strings.Contains(l, "task=__static__") {
				t.Errorf("use line without project/task __static__: %s", l)
			}
			if strings.Contains(l, staticMarker) {
				t.Errorf("use line shows the whole marker: %s", l)
			}
		}
	})
}
