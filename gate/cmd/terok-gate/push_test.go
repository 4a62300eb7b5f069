package main

import (
	"strconv"
	"strings"
	"testing"
)

// Hostile receive-pack command lists are answered 400 by the gate before
// git runs, and the mirror keeps its refs (docs/gate.md, Push commands).
func TestPushCommandListRefused(t *testing.T) {
	f := newFixture(t)
	g := f.startGate(nil)
	repo := f.base + "/proj.git"
	head := f.git(repo, "rev-parse", "refs/heads/main")
	zero := strings.Repeat("0", 40)
	for name, body := range map[string]string{
		"bad hex":       pkt("zz"+head[2:]+" "+head+" refs/heads/x\x00report-status\n") + "0000",
		"oversized pkt": "fff5" + strings.Repeat("x", 200),
		"bad length":    "00zz" + strings.Repeat("x", 200),
		"not a ref":     pkt(zero+" "+head+" HEAD\x00report-status\n") + "0000",
		"no flush":      pkt(zero + " " + head + " refs/heads/x\x00report-status\n"),
		"too many": func() string {
			var b strings.Builder
			for i := 0; i < 5000; i++ {
				b.WriteString(pkt(zero + " " + head + " refs/heads/b" + strconv.Itoa(i) + "\n"))
			}
			return b.String() + "0000"
		}(),
	} {
		t.Run(name, func(t *testing.T) {
			code, resp := raw(t, g.port, "POST /proj.git/git-receive-pack HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"+
				"Content-Type: application/x-git-receive-pack-request\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n"+basic(f.tokProj)+"\r\n"+body)
			if code != 400 || !strings.Contains(resp, "push command list:") {
				t.Fatalf("status %d, want 400 with the reason: %q", code, resp[:min(len(resp), 300)])
			}
		})
	}
	if refs := f.git(repo, "for-each-ref", "--format=%(refname)"); refs != "refs/heads/main" {
		t.Fatalf("mirror refs changed: %q", refs)
	}
}
