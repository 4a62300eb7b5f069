package shieldbundle

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestReadFiles(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, FileProfileAllowed, "  198.51.100.7/24 \n\n2001:DB8::1\nbogus; flush ruleset\n198.51.100.0/24\n::ffff:203.0.113.1\n")
	var warns []string
	got, err := ReadIPFileWarn(filepath.Join(dir, FileProfileAllowed), func(s string) { warns = append(warns, s) })
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"198.51.100.0/24", "2001:db8::1", "203.0.113.1"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v want %v", got, want)
	}
	if len(warns) != 1 || !strings.Contains(warns[0], "Invalid IP/CIDR: 'bogus; flush ruleset'") {
		t.Fatalf("warnings %v", warns)
	}
	write(t, dir, FileProfileDomains, "GitHub.com\n*.Example.org\nnot a domain\ngithub.com\ncom\n")
	warns = nil
	d, err := ReadDomainFile(filepath.Join(dir, FileProfileDomains), func(s string) { warns = append(warns, s) })
	if err != nil || !reflect.DeepEqual(d, []string{"github.com", "*.example.org"}) || len(warns) != 2 {
		t.Fatalf("domains %v %v %v", d, err, warns)
	}
	if l, err := ReadIPFile(filepath.Join(dir, "missing")); l != nil || err != nil {
		t.Fatal("missing file must be empty")
	}
}

func TestEffectiveLists(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, FileProfileAllowed, "198.51.100.1\n198.51.100.2\n2001:db8::1\n")
	write(t, dir, FileLiveAllowed, "198.51.100.3\n198.51.100.1\n")
	write(t, dir, FileDenyList, "198.51.100.2\n2001:DB8:0::1\n")
	got, err := EffectiveAllowlist(dir)
	if err != nil || !reflect.DeepEqual(got, []string{"198.51.100.1", "198.51.100.3"}) {
		t.Fatalf("allowlist %v %v", got, err)
	}
	write(t, dir, FileProfileDomains, "a.example.com\nb.example.com\n")
	write(t, dir, FileLiveDomains, "c.example.com\nA.example.com\n")
	write(t, dir, FileDeniedDomains, "b.example.com\n")
	d, err := EffectiveDomains(dir, nil)
	if err != nil || !reflect.DeepEqual(d, []string{"a.example.com", "c.example.com"}) {
		t.Fatalf("domains %v %v", d, err)
	}
}

func TestLineWriters(t *testing.T) {
	dir := t.TempDir()
	live := filepath.Join(dir, FileLiveAllowed)
	for _, ip := range []string{"198.51.100.9", "2001:db8::1", "198.51.100.9/32", "198.51.100.1"} {
		if _, err := AppendUniqueLine(live, ip); err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := os.ReadFile(live); string(b) != "198.51.100.9\n2001:db8::1\n198.51.100.1\n" {
		t.Fatalf("live.allowed = %q", b)
	}
	if _, err := AppendUniqueLine(live, "1.2.3.4\nflush"); err == nil {
		t.Fatal("invalid IP appended")
	}
	deny := filepath.Join(dir, FileDenyList)
	if err := WriteIPFile(deny, []string{"203.0.113.9", "198.51.100.5", "203.0.113.1"}); err != nil {
		t.Fatal(err)
	}
	if found, err := RemoveLine(deny, "198.51.100.5", true); !found || err != nil {
		t.Fatal(found, err)
	}
	if b, _ := os.ReadFile(deny); string(b) != "203.0.113.1\n203.0.113.9\n" {
		t.Fatalf("deny.list = %q", b)
	}
	if found, _ := RemoveLine(deny, "198.51.100.77", true); found {
		t.Fatal("absent value reported found")
	}
	if err := WriteIPFile(deny, []string{"ok", "1.2.3.4"}); err == nil {
		t.Fatal("invalid list written")
	}
	if b, _ := os.ReadFile(deny); string(b) != "203.0.113.1\n203.0.113.9\n" {
		t.Fatal("failed write changed the file")
	}
	if err := WriteIPFile(deny, nil); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(deny); err != nil || len(b) != 0 {
		t.Fatal("empty list must be an empty file")
	}
	dom := filepath.Join(dir, FileLiveDomains)
	if _, err := AppendUniqueLine(dom, "Example.COM"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := ContainsLine(dom, "example.com"); !ok {
		t.Fatal("domain not found")
	}
	if _, err := AppendUniqueLine(dom, "$(reboot).com"); err == nil {
		t.Fatal("bad domain appended")
	}
	if _, err := AppendUniqueLine(filepath.Join(dir, "other"), "x"); err == nil {
		t.Fatal("unknown file accepted")
	}
	if err := WriteValue(filepath.Join(dir, FileUpstreamDNS), "10.0.2.3"); err != nil {
		t.Fatal(err)
	}
	if v, err := ReadUpstreamDNS(dir); v != "10.0.2.3" || err != nil {
		t.Fatal(v, err)
	}
	write(t, dir, FileUpstreamDNS, "10.0.2.3; flush\n")
	if _, err := ReadUpstreamDNS(dir); err == nil {
		t.Fatal("bad upstream accepted")
	}
	write(t, dir, FileDNSTier, "dnsmasq\n")
	if v, _ := ReadTier(dir); v != TierDnsmasq {
		t.Fatal(v)
	}
	write(t, dir, FileDNSTier, "bind\n")
	if _, err := ReadTier(dir); err == nil {
		t.Fatal("bad tier accepted")
	}
}

func TestDescriptor(t *testing.T) {
	b, err := Descriptor(StageCreateRuntime, "/opt/hooks/terok-shield-hook")
	if err != nil {
		t.Fatal(err)
	}
	want := `{
  "version": "1.0.0",
  "hook": {
    "path": "/opt/hooks/terok-shield-hook",
    "args": [
      "terok-shield-hook",
      "createRuntime"
    ],
    "timeout": 30
  },
  "when": {
    "annotations": {
      "terok.shield.profiles": ".*"
    }
  },
  "stages": [
    "createRuntime"
  ]
}
`
	if string(b) != want {
		t.Fatalf("descriptor:\n%s", b)
	}
	b, _ = Descriptor(StagePoststop, "/h")
	var d struct {
		Hook   struct{ Args []string }
		Stages []string
	}
	if err := json.Unmarshal(b, &d); err != nil || d.Hook.Args[1] != "poststop" || d.Stages[0] != "poststop" {
		t.Fatalf("poststop descriptor %s", b)
	}
	if _, err := Descriptor("prestart", "/h"); err == nil {
		t.Fatal("unknown stage accepted")
	}
	if _, err := Descriptor(StagePoststop, "rel/h"); err == nil {
		t.Fatal("relative path accepted")
	}
}

func TestAudit(t *testing.T) {
	dir := t.TempDir()
	if err := AppendAudit(dir, Event{TS: "2026-03-01T12:00:00+00:00", Container: "proj-task-42", Action: ActionSetup, Detail: "profiles=dev-standard"}); err != nil {
		t.Fatal(err)
	}
	if err := AppendAudit(dir, Event{Container: "proj-task-42", Action: ActionAllowed, Dest: "192.0.2.10", Detail: "target=<example>.com"}); err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(filepath.Join(dir, FileAudit), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("not json\n[1]\n")
	f.Close()
	if err := AppendAudit(dir, Event{Container: "c", Action: ActionShieldDown, Detail: "allow_all=True"}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, FileAudit))
	lines := strings.Split(string(b), "\n")
	if lines[0] != `{"ts":"2026-03-01T12:00:00+00:00","container":"proj-task-42","action":"setup","detail":"profiles=dev-standard"}` {
		t.Fatalf("line 0: %s", lines[0])
	}
	if !strings.HasSuffix(lines[1], `"container":"proj-task-42","action":"allowed","dest":"192.0.2.10","detail":"target=<example>.com"}`) || !strings.Contains(lines[1], "+00:00\"") {
		t.Fatalf("line 1: %s", lines[1])
	}
	evs, err := TailAudit(dir, 2)
	if err != nil || len(evs) != 2 || evs[0].Action != ActionAllowed || evs[1].Action != ActionShieldDown {
		t.Fatalf("tail %v %v", evs, err)
	}
	if evs, _ := TailAudit(dir, 0); evs != nil {
		t.Fatal("n=0 must be none")
	}
	if err := AppendAudit(dir, Event{Action: "x"}); err == nil {
		t.Fatal("event without container accepted")
	}
}

func TestDnsmasqConf(t *testing.T) {
	var warns []string
	b, err := DnsmasqConf("10.0.2.3", "/state/c1", []string{"GitHub.com", "*.example.org", "bad domain", "example.org", "1.2.3.4"}, 77, func(s string) { warns = append(warns, s) })
	if err != nil {
		t.Fatal(err)
	}
	want := `# Generated by terok-shield (pid 77)
listen-address=127.0.0.1
port=53
bind-interfaces
no-resolv
no-hosts
server=10.0.2.3
pid-file=/state/c1/dnsmasq.pid
log-queries
log-facility=/state/c1/dnsmasq.log
nftset=/github.com/4#inet#terok_shield#allow_v4,6#inet#terok_shield#allow_v6
nftset=/example.org/4#inet#terok_shield#allow_v4,6#inet#terok_shield#allow_v6
`
	if string(b) != want {
		t.Fatalf("conf:\n%s", b)
	}
	if len(warns) != 2 {
		t.Fatalf("warnings %v", warns)
	}
	for _, bad := range []struct{ up, dir string }{{"10.0.2.3\nserver=1.1.1.1", "/s"}, {"", "/s"}, {"10.0.0.0/8", "/s"}, {"10.0.2.3", "rel"}, {"10.0.2.3", "/s\nconf-file=/etc/x"}} {
		if _, err := DnsmasqConf(bad.up, bad.dir, nil, 1, nil); err == nil {
			t.Errorf("accepted %q %q", bad.up, bad.dir)
		}
	}
}

func TestIsOurDnsmasq(t *testing.T) {
	dir := t.TempDir()
	start := func(argv0 string, args ...string) int {
		t.Helper()
		// A shell renamed through exec -a keeps the argv we choose; the
		// trailing "; true" stops it from exec-ing sleep in its place.
		script := `exec -a "$0" sh -c 'sleep 30; true' "$@"`
		c := exec.Command("bash", append([]string{"-c", script, argv0}, args...)...)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Process.Kill(); _ = c.Wait() })
		for i := 0; i < 200; i++ { // wait until exec -a took effect
			b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(c.Process.Pid), "cmdline"))
			if strings.HasPrefix(string(b), argv0+"\x00") {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		return c.Process.Pid
	}
	tests := []struct {
		name  string
		argv0 string
		args  []string
		want  bool
	}{
		{"ours", "/usr/sbin/dnsmasq", []string{"x", DnsmasqConfArg(dir)}, true},
		{"bare name", "dnsmasq", []string{"x", DnsmasqConfArg(dir)}, true},
		{"other state dir", "dnsmasq", []string{"x", DnsmasqConfArg(dir + "x")}, false},
		{"substring only", "dnsmasq", []string{"x", DnsmasqConfArg(dir) + ".bak"}, false},
		{"not dnsmasq", "/usr/bin/notdnsmasq", []string{"x", DnsmasqConfArg(dir)}, false},
	}
	for _, tc := range tests {
		pid := start(tc.argv0, tc.args...)
		if got := IsOurDnsmasq(pid, dir); got != tc.want {
			b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
			t.Errorf("%s: IsOurDnsmasq = %v, want %v (cmdline %q)", tc.name, got, tc.want, b)
		}
	}
	if IsOurDnsmasq(os.Getpid(), dir) || IsOurDnsmasq(0, dir) || IsOurDnsmasq(-1, dir) {
		t.Fatal("wrong process accepted")
	}
}

func TestRulesetDigest(t *testing.T) {
	d := RulesetDigest([]byte("table inet terok_shield {}\n"))
	if !strings.HasPrefix(d, "sha256:") || len(d) != len("sha256:")+64 {
		t.Fatalf("RulesetDigest = %q", d)
	}
	if d == RulesetDigest([]byte("table inet terok_shield {}")) {
		t.Fatal("a truncated ruleset has the same digest")
	}
	if got, err := ParseRulesetDigest(d); err != nil || got != d {
		t.Fatalf("ParseRulesetDigest(%q) = %q, %v", d, got, err)
	}
	for _, bad := range []string{"", "sha256:", d[:len(d)-1], d + "0", strings.ToUpper(d), "md5:" + d[7:], strings.Replace(d, d[7:8], "g", 1), d[:7] + strings.Repeat("x", 200)} {
		if _, err := ParseRulesetDigest(bad); err == nil || !strings.Contains(err.Error(), "64 lower-case hex digits") {
			t.Errorf("ParseRulesetDigest(%q) = %v, want an error", bad, err)
		}
	}
}
