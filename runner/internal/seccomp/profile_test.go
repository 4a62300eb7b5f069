package seccomp

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

const podmanDefault = "/usr/share/containers/seccomp.json"

// readPodmanDefault is the host's real podman profile, or a skip.
func readPodmanDefault(t testing.TB) []byte {
	t.Helper()
	data, err := os.ReadFile(podmanDefault)
	if err != nil {
		t.Skipf("podman's default seccomp profile is not installed here (%v); install golang-github-containers-common to run this test", err)
	}
	return data
}

func mustParse(t *testing.T, data []byte) Profile {
	t.Helper()
	p, err := Parse(data)
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, data)
	}
	return p
}

func eval(t *testing.T, p Profile, sys string, caps bool, args ...uint64) Outcome {
	t.Helper()
	var a [6]uint64
	copy(a[:], args)
	out, err := p.Evaluate(sys, a, caps)
	if err != nil {
		t.Fatalf("%s%v: %v", sys, args, err)
	}
	return out
}

func TestTransformPodmanDefault(t *testing.T) {
	in := readPodmanDefault(t)
	// The untouched default is what the issue reports: AF_VSOCK open.
	if err := Verify(in); err == nil || !strings.Contains(err.Error(), "socket(AF_VSOCK) is allowed") {
		t.Fatalf("podman's default passed Verify or for the wrong reason: %v", err)
	}
	out, err := Transform(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(out); err != nil {
		t.Fatalf("generated profile fails Verify: %v", err)
	}
	orig, got := mustParse(t, in), mustParse(t, out)
	if !got.Ours() || orig.Ours() {
		t.Fatal("Ours() does not tell the profiles apart")
	}
	allowed := func(p Profile) map[string]bool {
		m := map[string]bool{}
		for _, r := range p.Syscalls {
			if r.Action == "SCMP_ACT_ALLOW" && len(r.Args) == 0 && r.Includes.empty() && r.Excludes.empty() {
				for _, n := range r.allNames() {
					m[n] = true
				}
			}
		}
		return m
	}
	was, now := allowed(orig), allowed(got)
	for n := range was {
		if !replaced[n] && !now[n] {
			t.Errorf("%s was allowed by podman and is not any more", n)
		}
	}
	for n := range now {
		if !was[n] {
			t.Errorf("%s is newly allowed", n)
		}
	}
	cases := []struct {
		name string
		sys  string
		caps bool
		args []uint64
		want Outcome
	}{
		{"vsock", "socket", false, []uint64{afVsock, 1, 0}, Outcome{"SCMP_ACT_ERRNO", errnoEAFNOSUPPORT}},
		{"vsock with caps", "socket", true, []uint64{afVsock, 1, 0}, Outcome{"SCMP_ACT_ERRNO", errnoEAFNOSUPPORT}},
		{"vsock high bits", "socket", false, []uint64{1<<32 | afVsock, 1, 0}, Outcome{"SCMP_ACT_ERRNO", errnoEAFNOSUPPORT}},
		{"packet", "socket", true, []uint64{17, 3, 0}, Outcome{"SCMP_ACT_ERRNO", errnoEAFNOSUPPORT}},
		{"alg", "socket", false, []uint64{38, 5, 0}, Outcome{"SCMP_ACT_ERRNO", errnoEAFNOSUPPORT}},
		{"key", "socket", false, []uint64{15, 3, 2}, Outcome{"SCMP_ACT_ERRNO", errnoEAFNOSUPPORT}},
		{"future family", "socket", false, []uint64{200, 1, 0}, Outcome{"SCMP_ACT_ERRNO", errnoEAFNOSUPPORT}},
		{"unspec", "socket", false, []uint64{0, 1, 0}, Outcome{"SCMP_ACT_ERRNO", errnoEAFNOSUPPORT}},
		{"unix", "socket", false, []uint64{afUnix, 1, 0}, Outcome{Action: "SCMP_ACT_ALLOW"}},
		{"inet", "socket", false, []uint64{afInet, 2, 17}, Outcome{Action: "SCMP_ACT_ALLOW"}},
		{"inet6", "socket", false, []uint64{afInet6, 1, 6}, Outcome{Action: "SCMP_ACT_ALLOW"}},
		{"netlink route", "socket", false, []uint64{afNetlink, 3, netlinkRoute}, Outcome{Action: "SCMP_ACT_ALLOW"}},
		{"netlink sock diag", "socket", false, []uint64{afNetlink, 3, netlinkSockDiag}, Outcome{Action: "SCMP_ACT_ALLOW"}},
		{"netlink audit without cap", "socket", false, []uint64{afNetlink, 3, netlinkAudit}, Outcome{"SCMP_ACT_ERRNO", errnoEINVAL}},
		{"netlink audit with cap", "socket", true, []uint64{afNetlink, 3, netlinkAudit}, Outcome{Action: "SCMP_ACT_ALLOW"}},
		{"netlink netfilter", "socket", true, []uint64{afNetlink, 3, 12}, Outcome{"SCMP_ACT_ERRNO", errnoEPROTONOSUPPORT}},
		{"netlink generic", "socket", false, []uint64{afNetlink, 3, 16}, Outcome{"SCMP_ACT_ERRNO", errnoEPROTONOSUPPORT}},
		{"netlink beyond max", "socket", false, []uint64{afNetlink, 3, 1 << 40}, Outcome{"SCMP_ACT_ERRNO", errnoEPROTONOSUPPORT}},
		{"socketpair unix", "socketpair", false, []uint64{afUnix, 1, 0}, Outcome{Action: "SCMP_ACT_ALLOW"}},
		{"socketpair inet", "socketpair", false, []uint64{afInet, 1, 0}, Outcome{"SCMP_ACT_ERRNO", errnoEAFNOSUPPORT}},
		{"socketpair vsock", "socketpair", true, []uint64{afVsock, 1, 0}, Outcome{"SCMP_ACT_ERRNO", errnoEAFNOSUPPORT}},
		{"socketcall", "socketcall", true, []uint64{1, 0}, Outcome{"SCMP_ACT_ERRNO", errnoENOSYS}},
		{"io_uring_setup", "io_uring_setup", true, []uint64{1, 0}, Outcome{"SCMP_ACT_ERRNO", errnoENOSYS}},
		{"io_uring_enter", "io_uring_enter", false, nil, Outcome{"SCMP_ACT_ERRNO", errnoENOSYS}},
		{"read untouched", "read", false, nil, Outcome{Action: "SCMP_ACT_ALLOW"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if o := eval(t, got, c.sys, c.caps, c.args...); o != c.want {
				t.Fatalf("%s%v caps=%v: %s, want %s", c.sys, c.args, c.caps, o, c.want)
			}
		})
	}
	var top struct {
		ArchMap []struct {
			Architecture     string
			SubArchitectures []string
		} `json:"archMap"`
	}
	if err := json.Unmarshal(out, &top); err != nil || len(top.ArchMap) == 0 {
		t.Fatalf("archMap: %v %+v", err, top)
	}
	for _, e := range top.ArchMap {
		if len(e.SubArchitectures) != 0 {
			t.Errorf("%s keeps sub-architectures %v", e.Architecture, e.SubArchitectures)
		}
	}
	// A second pass changes nothing that matters: still valid, same rules.
	again, err := Transform(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(again); err != nil {
		t.Fatal(err)
	}
	if n1, n2 := len(got.Syscalls), len(mustParse(t, again).Syscalls); n1 != n2 {
		t.Fatalf("second transform: %d rules, first %d", n2, n1)
	}
}

func TestTransformSynthetic(t *testing.T) {
	in := `{
	"defaultAction": "SCMP_ACT_ERRNO",
	"defaultErrnoRet": 1,
	"futureField": {"x": 1},
	"architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
	"archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"], "extra": true}],
	"syscalls": [
		{"names": ["read", "socket", "socketcall", "write"], "action": "SCMP_ACT_ALLOW", "ruleField": "kept"},
		{"name": "socketpair", "action": "SCMP_ACT_ALLOW"},
		{"name": "close", "action": "SCMP_ACT_ALLOW"},
		{"names": ["io_uring_setup", "io_uring_enter"], "action": "SCMP_ACT_ALLOW"},
		{"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
		 "args": [{"index": 0, "value": 16, "op": "SCMP_CMP_EQ"}, {"index": 2, "value": 9, "op": "SCMP_CMP_EQ"}],
		 "excludes": {"caps": ["CAP_AUDIT_WRITE"]}},
		{"names": ["socket"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_AUDIT_WRITE"]}}
	]
}`
	out, err := Transform([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(out); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	if doc["futureField"] == nil {
		t.Error("unknown top-level field lost")
	}
	if a := doc["architectures"].([]any); len(a) != 1 || a[0] != "SCMP_ARCH_X86_64" {
		t.Errorf("architectures %v", a)
	}
	am := doc["archMap"].([]any)[0].(map[string]any)
	if am["extra"] != true || len(am["subArchitectures"].([]any)) != 0 {
		t.Errorf("archMap %v", am)
	}
	rules := doc["syscalls"].([]any)
	first := rules[0].(map[string]any)
	if first["ruleField"] != "kept" || strings.Join(toStrings(first["names"]), ",") != "read,write" {
		t.Errorf("first rule %v", first)
	}
	second := rules[1].(map[string]any)
	if second["name"] != "close" {
		t.Errorf("a rule left empty was not dropped, or close was lost: %v", second)
	}
	p := mustParse(t, out)
	for _, r := range p.Syscalls {
		if !strings.HasPrefix(r.Comment, CommentPrefix) && namesAny(r, replaced) {
			t.Errorf("podman rule for a replaced syscall survived: %+v", r)
		}
	}
	// podman's audit refusal is carried with its errno (1 here).
	if o := eval(t, p, "socket", false, afNetlink, 3, netlinkAudit); o != (Outcome{"SCMP_ACT_ERRNO", 1}) {
		t.Errorf("audit without cap: %s", o)
	}
	if o := eval(t, p, "socket", true, afNetlink, 3, netlinkAudit); !o.Allowed() {
		t.Errorf("audit with cap: %s", o)
	}
	// The unconditional CAP_AUDIT_WRITE allow-all of podman is gone.
	if o := eval(t, p, "socket", true, afVsock, 1, 0); o.Allowed() {
		t.Errorf("vsock with CAP_AUDIT_WRITE: %s", o)
	}
	// Without an audit rule in the input, EINVAL is the refusal.
	out2, err := Transform([]byte(`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":null}`))
	if err != nil {
		t.Fatal(err)
	}
	p2 := mustParse(t, out2)
	if o := eval(t, p2, "socket", false, afNetlink, 3, netlinkAudit); o != (Outcome{"SCMP_ACT_ERRNO", errnoEINVAL}) {
		t.Errorf("default audit refusal: %s", o)
	}
	if err := Verify(out2); err != nil {
		t.Errorf("allow-by-default input: %v", err)
	}
}

func toStrings(v any) []string {
	var s []string
	for _, x := range v.([]any) {
		s = append(s, x.(string))
	}
	return s
}

func TestTransformMalformed(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"empty", ``, "not a seccomp profile"},
		{"truncated", `{"defaultAction":`, "not a seccomp profile"},
		{"array", `[]`, "not a seccomp profile"},
		{"no default action", `{"syscalls":[]}`, "no defaultAction"},
		{"bad default action", `{"defaultAction":"SCMP_ACT_MAYBE"}`, "unknown action"},
		{"trailing data", `{"defaultAction":"SCMP_ACT_ERRNO"} {}`, "data after"},
		{"rule without name", `{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"action":"SCMP_ACT_ALLOW"}]}`, "names no syscall"},
		{"rule without action", `{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"]}]}`, "no action"},
		{"arg index", `{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":6,"op":"SCMP_CMP_EQ"}]}]}`, "index 6"},
		{"arg op", `{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"op":"SCMP_CMP_ABOUT"}]}]}`, "unknown comparison"},
		{"negative errno", `{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","errnoRet":-1}]}`, "not a seccomp profile"},
		{"archMap not a list", `{"defaultAction":"SCMP_ACT_ERRNO","archMap":{}}`, "archMap"},
		{"architectures not a list", `{"defaultAction":"SCMP_ACT_ERRNO","architectures":"x"}`, "architectures"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := Transform([]byte(c.in))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Transform(%q) = %q, %v; want an error containing %q", c.in, out, err, c.want)
			}
		})
	}
}

func TestEvaluateFollowsRuncAndLibseccomp(t *testing.T) {
	p := mustParse(t, []byte(`{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,"syscalls":[
		{"names":["a"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"},{"index":0,"value":2,"op":"SCMP_CMP_EQ"}]},
		{"names":["b"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"},{"index":1,"value":2,"op":"SCMP_CMP_EQ"}]},
		{"names":["c"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"}]},
		{"names":["c"],"action":"SCMP_ACT_ERRNO","errnoRet":1},
		{"names":["d"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_GE"}]},
		{"names":["d"],"action":"SCMP_ACT_ERRNO","errnoRet":1,"args":[{"index":0,"value":5,"op":"SCMP_CMP_EQ"}]},
		{"names":["e"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":240,"valueTwo":16,"op":"SCMP_CMP_MASKED_EQ"}]},
		{"names":["f"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_X"]}}
	]}`))
	cases := []struct {
		sys     string
		caps    bool
		args    []uint64
		allowed bool
		errText string
	}{
		// Two comparisons of one argument are an OR (runc splits them).
		{"a", false, []uint64{1}, true, ""},
		{"a", false, []uint64{2}, true, ""},
		{"a", false, []uint64{3}, false, ""},
		// Comparisons of different arguments are an AND.
		{"b", false, []uint64{1, 2}, true, ""},
		{"b", false, []uint64{1, 3}, false, ""},
		// An unconditional rule overrides the conditional ones.
		{"c", false, []uint64{1}, false, ""},
		// Overlapping rules with different outcomes are ambiguous.
		{"d", false, []uint64{5}, false, "both match"},
		{"d", false, []uint64{4}, true, ""},
		{"e", false, []uint64{0x1f}, true, ""},
		{"e", false, []uint64{0x2f}, false, ""},
		{"f", false, nil, false, ""},
		{"f", true, nil, true, ""},
	}
	for _, c := range cases {
		var a [6]uint64
		copy(a[:], c.args)
		out, err := p.Evaluate(c.sys, a, c.caps)
		if c.errText != "" {
			if err == nil || !strings.Contains(err.Error(), c.errText) {
				t.Errorf("%s%v: %v, %v; want error %q", c.sys, c.args, out, err, c.errText)
			}
			continue
		}
		if err != nil || out.Allowed() != c.allowed {
			t.Errorf("%s%v caps=%v: %v, %v; want allowed=%v", c.sys, c.args, c.caps, out, err, c.allowed)
		}
	}
	if o := eval(t, p, "zzz", false); o != (Outcome{"SCMP_ACT_ERRNO", 38}) {
		t.Errorf("default: %s", o)
	}
}

func TestVerifyRefuses(t *testing.T) {
	good, err := Transform([]byte(`{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(doc map[string]any)) []byte {
		var doc map[string]any
		if err := json.Unmarshal(good, &doc); err != nil {
			t.Fatal(err)
		}
		f(doc)
		out, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	appendRule := func(r map[string]any) func(map[string]any) {
		return func(doc map[string]any) { doc["syscalls"] = append(doc["syscalls"].([]any), r) }
	}
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"allow-all socket", edit(appendRule(map[string]any{"names": []string{"socket"}, "action": "SCMP_ACT_ALLOW"})), "socket(AF_VSOCK) is allowed"},
		{"vsock allowed", edit(appendRule(map[string]any{"names": []string{"socket"}, "action": "SCMP_ACT_ALLOW",
			"args": []map[string]any{{"index": 0, "value": 40, "op": "SCMP_CMP_EQ"}}})), "ambiguous"},
		{"io_uring allowed", edit(func(doc map[string]any) {
			var keep []any
			for _, r := range doc["syscalls"].([]any) {
				if !strings.Contains(r.(map[string]any)["comment"].(string), "io_uring") {
					keep = append(keep, r)
				}
			}
			doc["syscalls"] = keep
		}), "io_uring_setup is not refused"},
		{"x86 ABI", edit(func(doc map[string]any) {
			doc["archMap"] = []map[string]any{{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": []string{"SCMP_ARCH_X86"}}}
		}), "SCMP_ARCH_X86 ABI is allowed"},
		{"inet refused", edit(func(doc map[string]any) {
			var keep []any
			for _, r := range doc["syscalls"].([]any) {
				if r.(map[string]any)["comment"] != CommentPrefix+"address family 2, socket type 1, protocol 0 is allowed" {
					keep = append(keep, r)
				}
			}
			doc["syscalls"] = keep
		}), "socket(AF_INET) is refused"},
		{"profile from before the protocol rules", edit(func(doc map[string]any) {
			// AF_INET and AF_INET6 allowed whole, as Transform wrote them.
			var keep []any
			for _, r := range doc["syscalls"].([]any) {
				if c := r.(map[string]any)["comment"].(string); !strings.Contains(c, "address family 2,") && !strings.Contains(c, "address family 10,") {
					keep = append(keep, r)
				}
			}
			for _, f := range []int{2, 10} {
				keep = append(keep, map[string]any{"names": []string{"socket"}, "action": "SCMP_ACT_ALLOW",
					"args": []map[string]any{{"index": 0, "value": f, "op": "SCMP_CMP_EQ"}}})
			}
			doc["syscalls"] = keep
		}), "socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP) is allowed"},
		{"profile from before the keyring refusal", beforeKeyrings(t, good), "keyctl is not refused without conditions"},
		{"keyring rule dropped", edit(func(doc map[string]any) {
			var keep []any
			for _, r := range doc["syscalls"].([]any) {
				if !strings.Contains(r.(map[string]any)["comment"].(string), "keyrings") {
					keep = append(keep, r)
				}
			}
			doc["syscalls"] = keep
		}), "request_key is not refused without conditions"},
		{"not json", []byte("nope"), "not a seccomp profile"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := Verify(c.data); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Verify: %v; want %q", err, c.want)
			}
		})
	}
}

// beforeKeyrings turns a generated profile into what Transform wrote
// before it refused the kernel keyrings: podman's allow rule for them kept,
// no rule of ours.
func beforeKeyrings(t *testing.T, profile []byte) []byte {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(profile, &doc); err != nil {
		t.Fatal(err)
	}
	keep := []any{map[string]any{"names": []string{"keyctl", "add_key", "request_key"}, "action": "SCMP_ACT_ALLOW"}}
	for _, r := range doc["syscalls"].([]any) {
		if !strings.Contains(r.(map[string]any)["comment"].(string), "keyrings") {
			keep = append(keep, r)
		}
	}
	if len(keep) != len(doc["syscalls"].([]any)) {
		t.Fatal("the generated profile has no keyring rule to remove")
	}
	doc["syscalls"] = keep
	out, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func FuzzTransform(f *testing.F) {
	if data, err := os.ReadFile(podmanDefault); err == nil {
		f.Add(data)
	}
	f.Add([]byte(`{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["socket","read"],"action":"SCMP_ACT_ALLOW"}]}`))
	f.Add([]byte(`{"defaultAction":"SCMP_ACT_ALLOW","archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_X86"]}],"architectures":["SCMP_ARCH_X86"]}`))
	f.Add([]byte(`{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"name":"socketpair","names":["io_uring_enter"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":40,"op":"SCMP_CMP_EQ"}]}]}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := Transform(in)
		if err != nil {
			return
		}
		// Whatever podman's file said, the result holds.
		if err := Verify(out); err != nil {
			t.Fatalf("Transform accepted %q but its output fails Verify: %v", in, err)
		}
		p, err := Parse(in)
		if err != nil {
			t.Fatalf("Transform accepted input Parse refuses: %v", err)
		}
		// Every rule that named no replaced syscall is still there.
		q := mustParse(t, out)
		kept := 0
		for _, r := range q.Syscalls {
			if !strings.HasPrefix(r.Comment, CommentPrefix) {
				kept++
			}
		}
		want := 0
		for _, r := range p.Syscalls {
			if !namesAny(r, replaced) || len(keepNames(r.Names)) > 0 || (r.Name != "" && !replaced[r.Name]) {
				want++
			}
		}
		if kept != want {
			t.Fatalf("kept %d of podman's rules, want %d", kept, want)
		}
	})
}

// socket(AF_INET/AF_INET6) with a transport the firewall's network path
// does not carry loads that protocol's kernel module on demand on a
// distribution kernel (SCTP, DCCP, L2TP, ...), from any container
// (docs/seccomp.md, Decisions and reasons): only the socket types and
// protocols a task uses reach the kernel.
func TestInetProtocols(t *testing.T) {
	out, err := Transform(readPodmanDefault(t))
	if err != nil {
		t.Fatal(err)
	}
	p := mustParse(t, out)
	def := Outcome{Action: p.DefaultAction}
	if p.DefaultErrnoRet != nil {
		def.Errno = *p.DefaultErrnoRet
	}
	if def.Allowed() {
		t.Fatalf("podman's default action allows: %s", def)
	}
	const (
		stream, dgram, raw, seqpacket, dccp, packet = 1, 2, 3, 5, 6, 10
		flags                                       = 0o2000000 | 0o4000 // SOCK_CLOEXEC | SOCK_NONBLOCK
	)
	for _, caps := range []bool{false, true} {
		for _, c := range []struct {
			fam, typ, proto uint64
			want            Outcome // zero: allowed
		}{
			{afInet, stream, 0, Outcome{}},
			{afInet, stream | flags, 0, Outcome{}},
			{afInet, stream, 6, Outcome{}},   // TCP
			{afInet, stream, 262, Outcome{}}, // MPTCP
			{afInet, dgram, 0, Outcome{}},    // UDP
			{afInet, dgram | flags, 17, Outcome{}},
			{afInet, dgram, 1, Outcome{}}, // ICMP: ping sockets
			{afInet6, stream, 0, Outcome{}},
			{afInet6, stream, 6, Outcome{}},
			{afInet6, dgram, 17, Outcome{}},
			{afInet6, dgram, 58, Outcome{}}, // ICMPv6: ping sockets
			{afInet, raw, 1, Outcome{}},     // the kernel's capability check decides
			{afInet6, raw, 58, Outcome{}},
			{afInet, stream, 132, Outcome{"SCMP_ACT_ERRNO", errnoEPROTONOSUPPORT}}, // SCTP
			{afInet6, stream, 132, Outcome{"SCMP_ACT_ERRNO", errnoEPROTONOSUPPORT}},
			{afInet, seqpacket, 132, Outcome{"SCMP_ACT_ERRNO", errnoESOCKTNOSUPPORT}}, // SCTP
			{afInet, dccp, 0, Outcome{"SCMP_ACT_ERRNO", errnoESOCKTNOSUPPORT}},        // DCCP
			{afInet6, dccp | flags, 33, Outcome{"SCMP_ACT_ERRNO", errnoESOCKTNOSUPPORT}},
			{afInet, packet, 0, Outcome{"SCMP_ACT_ERRNO", errnoESOCKTNOSUPPORT}},
			{afInet, dgram, 115, Outcome{"SCMP_ACT_ERRNO", errnoEPROTONOSUPPORT}}, // L2TP
			{afInet, dgram, 136, Outcome{"SCMP_ACT_ERRNO", errnoEPROTONOSUPPORT}}, // UDP-Lite
			{afInet6, dgram, 136, Outcome{"SCMP_ACT_ERRNO", errnoEPROTONOSUPPORT}},
			{afInet, stream, 256, Outcome{"SCMP_ACT_ERRNO", errnoEPROTONOSUPPORT}}, // SMC over AF_INET
			// Bits above the int the kernel reads (132 to it) match no
			// allowed value; any other protocol gets the profile's
			// default (podman: ENOSYS).
			{afInet, stream, 1<<32 | 132, Outcome{"SCMP_ACT_ERRNO", errnoEPROTONOSUPPORT}},
			{afInet6, dgram, 1<<32 | 17, Outcome{"SCMP_ACT_ERRNO", errnoEPROTONOSUPPORT}},
			{afInet, dgram, 255, def},
			{afInet6, stream, 99, def},
		} {
			got := eval(t, p, "socket", caps, c.fam, c.typ, c.proto)
			if c.want == (Outcome{}) {
				if !got.Allowed() {
					t.Errorf("caps=%v socket(%d, %#x, %d): %s, want allowed", caps, c.fam, c.typ, c.proto, got)
				}
				continue
			}
			if got != c.want {
				t.Errorf("caps=%v socket(%d, %#x, %d): %s, want %s", caps, c.fam, c.typ, c.proto, got, c.want)
			}
		}
	}
}
