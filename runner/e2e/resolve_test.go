//go:build e2e

package e2e

// `shield profiles` and `shield resolve` end to end (docs/shield.md,
// Profiles; docs/shield-resolver.md, Resolve now): real podman, root and
// rootless, the container's resolver forwarding to the escape tests'
// outside DNS server (escNewOutside), whose query log shows what reached
// it.

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"terok.dev/sandbox/runner/internal/testharness"
)

func TestShieldProfilesAndResolve(t *testing.T) {
	env := H(t)
	out := escNewOutside(t)
	env.Each(t, func(t *testing.T, r *testharness.Runner) {
		ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
		defer cancel()
		e := escSetup(t, ctx, r, out)

		t.Run("profiles", func(t *testing.T) {
			res := r.Sandbox(ctx, "shield", "profiles")
			if res.Code != 0 || !strings.Contains(res.Stdout, "esc *") || !strings.Contains(res.Stdout, "dev-standard") {
				t.Fatalf("profiles: %s", res)
			}
			var list []map[string]any
			if err := json.Unmarshal([]byte(shxSandboxOK(t, ctx, r, "shield", "profiles", "--json")), &list); err != nil {
				t.Fatal(err)
			}
			found := false
			for _, p := range list {
				if p["name"] == "esc" {
					found = p["source"] == "user" && p["domains"] == float64(1) && p["configured"] == true
				}
			}
			if !found {
				t.Fatalf("esc profile missing or wrong: %v", list)
			}
			if res := r.Sandbox(ctx, "shield", "profiles", "extra"); res.Code != 2 {
				t.Fatalf("profiles with an argument: %s", res)
			}
		})

		name := r.Name("resolve")
		e.start(t, ctx, name, "sleep", "600")
		resolve := func(force bool) map[string]any {
			t.Helper()
			args := []string{"shield", "resolve", "--json", name}
			if force {
				args = []string{"shield", "resolve", "--json", "--force", name}
			}
			res := e.sandbox(ctx, args...)
			if res.Code != 0 {
				t.Fatalf("resolve: %s", res)
			}
			var v struct {
				Names []map[string]any `json:"names"`
			}
			if err := json.Unmarshal([]byte(res.Stdout), &v); err != nil {
				t.Fatalf("resolve output %q: %v", res.Stdout, err)
			}
			for _, n := range v.Names {
				if n["name"] == escListed {
					return n
				}
			}
			t.Fatalf("%s not resolved: %s", escListed, res.Stdout)
			return nil
		}
		if set := e.nft(t, ctx, name, "list", "set", "inet", "terok_shield", "dns_v4"); strings.Contains(set, out.listedIP) {
			t.Fatalf("learned before resolve:\n%s", set)
		}
		before := out.queries(t)["A "+escListed]
		n := resolve(false)
		if n["rcode"] != "NOERROR" || !strings.Contains(strings.Join(strs(n["addresses"]), " "), out.listedIP) {
			t.Fatalf("resolve: %v", n)
		}
		if set := e.nft(t, ctx, name, "list", "set", "inet", "terok_shield", "dns_v4"); !strings.Contains(set, out.listedIP) {
			t.Fatalf("resolved address not learned:\n%s", set)
		}
		after := out.queries(t)["A "+escListed]
		if after != before+1 {
			t.Fatalf("the upstream saw %d A queries for %s, want 1", after-before, escListed)
		}
		if ok, msg := shxReach(ctx, r, name, out.listedIP, shxOutsidePort, shxOutsideReply); !ok {
			t.Fatalf("resolved address not reachable: %s", msg)
		}
		// The A answer is cached (this server refuses AAAA, which is not
		// cached, so the name as a whole is not "cached").
		if n := resolve(false); n["rcode"] != "NOERROR" || out.queries(t)["A "+escListed] != after {
			t.Fatalf("second resolve did not use the cache: %v, %d A queries", n, out.queries(t)["A "+escListed]-after)
		}
		if n := resolve(true); n["cached"] == true || out.queries(t)["A "+escListed] != after+1 {
			t.Fatalf("forced resolve did not ask the upstream: %v", n)
		}
		// Human output and exit codes.
		if res := e.sandbox(ctx, "shield", "resolve", name); res.Code != 0 || !strings.Contains(res.Stdout, escListed) || !strings.Contains(res.Stdout, out.listedIP) {
			t.Fatalf("resolve (text): %s", res)
		}
		if res := r.Sandbox(ctx, "shield", "resolve"); res.Code != 2 {
			t.Errorf("resolve without a container: %s", res)
		}
		if res := r.Sandbox(ctx, "shield", "resolve", r.Name("missing")); res.Code != 1 {
			t.Errorf("resolve of a missing container: %s", res)
		}
	})
}

func strs(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, x := range l {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}
