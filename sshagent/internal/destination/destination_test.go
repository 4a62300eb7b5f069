package destination

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		p, n string
		want bool
	}{
		{"github.com", "github.com", true},
		{"github.com", "gitlab.com", false},
		{"*.example.org", "a.example.org", true},
		{"*.example.org", "a.b.example.org", true},
		{"*.example.org", "example.org", false},
		{"host-?", "host-1", true},
		{"host-?", "host-12", false},
		{"*", "", true},
		{"", "", true},
		{"", "a", false},
		{"a*b*c", "aXXbYYc", true},
		{"a*b*c", "aXXbYY", false},
		{"**", "x", true},
		{"*", "*0", true}, // found by FuzzMatch: a literal * in the name
	} {
		if got := Match(c.p, c.n); got != c.want {
			t.Errorf("Match(%q, %q) = %v", c.p, c.n, got)
		}
	}
}

// reference is the documented rule as a regexp: '*' any run, '?' one
// character, everything else literal.
func reference(p, n string) bool {
	var b strings.Builder
	b.WriteString("^")
	for _, r := range p {
		switch r {
		case '*':
			b.WriteString("(?s:.*)")
		case '?':
			b.WriteString("(?s:.)")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String()).MatchString(n)
}

func FuzzMatch(f *testing.F) {
	f.Add("*.example.org", "a.example.org")
	f.Add("a*b?c", "aXbYc")
	f.Fuzz(func(t *testing.T, p, n string) {
		if len(p) > 64 || len(n) > 64 {
			return
		}
		// The reference works on characters; Match on bytes: compare on ASCII.
		for _, s := range []string{p, n} {
			for i := 0; i < len(s); i++ {
				if s[i] >= 0x80 {
					return
				}
			}
		}
		if got, want := Match(p, n), reference(p, n); got != want {
			t.Fatalf("Match(%q, %q) = %v, reference %v", p, n, got, want)
		}
	})
}

func hostKey(t testing.TB) ssh.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func line(hosts string, k ssh.PublicKey) string {
	return hosts + " " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

func hashed(name string) string {
	salt := []byte("0123456789abcdefghij")
	m := hmac.New(sha1.New, salt)
	m.Write([]byte(name))
	return "|1|" + base64.StdEncoding.EncodeToString(salt) + "|" + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

func TestResolve(t *testing.T) {
	gh, a, b, port, hash, neg, rev, ca, fp := hostKey(t), hostKey(t), hostKey(t), hostKey(t), hostKey(t), hostKey(t), hostKey(t), hostKey(t), hostKey(t)
	kh := strings.Join([]string{
		"# a comment",
		line("github.com,140.82.121.4", gh),
		line("a.example.org", a),
		line("B.Example.Org", b),
		line("[git.example.net]:2222", port),
		line(hashed("secret.example.com"), hash),
		line("!neg.example.org", neg),
		line("rev.example.org", rev),
		"@revoked " + line("*", rev),
		"@cert-authority " + line("*.example.org", ca),
		"this line does not parse",
		"",
	}, "\n")
	known, errs := ParseKnownHosts([]byte(kh))
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "line 11") {
		t.Fatalf("errors %v", errs)
	}
	for _, c := range []struct {
		dests []string
		want  []ssh.PublicKey
	}{
		{[]string{"github.com"}, []ssh.PublicKey{gh}},
		{[]string{"*.example.org"}, []ssh.PublicKey{a, b}},
		{[]string{"git.example.net"}, []ssh.PublicKey{port}},
		{[]string{"secret.example.com"}, []ssh.PublicKey{hash}},
		{[]string{"*.example.com"}, nil}, // a hashed name matches no wildcard
		{[]string{"neg.example.org"}, nil},
		{[]string{"rev.example.org", ssh.FingerprintSHA256(rev)}, nil},
		{[]string{ssh.FingerprintSHA256(fp)}, []ssh.PublicKey{fp}},
		{[]string{"nowhere.test"}, nil},
	} {
		p := Resolve(c.dests, known)
		if p.Allowed() != len(c.want) {
			t.Errorf("%v: %d host keys allowed, want %d", c.dests, p.Allowed(), len(c.want))
		}
		for _, k := range c.want {
			if !p.Allows(ssh.FingerprintSHA256(k)) {
				t.Errorf("%v: %s not allowed", c.dests, ssh.FingerprintSHA256(k))
			}
		}
	}
	var nilPolicy *Policy
	if nilPolicy.Allows("x") {
		t.Fatal("nil policy allows")
	}
}

func FuzzParseUserAuth(f *testing.F) {
	f.Add([]byte("\x00\x00\x00\x01s\x32\x00\x00\x00\x01u\x00\x00\x00\x0essh-connection\x00\x00\x00\x09publickey\x01\x00\x00\x00\x01a\x00\x00\x00\x01k"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		u, err := ParseUserAuth(data)
		if err != nil {
			return
		}
		m := string(u.Method)
		if len(u.SessionID) == 0 || (m != MethodPublicKey && m != MethodHostbound) || (m == MethodHostbound) != (u.HostKey != nil) {
			t.Fatalf("accepted %+v", u)
		}
	})
}

func FuzzParseKnownHosts(f *testing.F) {
	f.Add([]byte("github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n@revoked * x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		known, _ := ParseKnownHosts(data)
		p := Resolve([]string{"*", "a.example.org"}, known)
		for _, k := range known {
			if !strings.HasPrefix(k.Fingerprint, "SHA256:") {
				t.Fatalf("fingerprint %q", k.Fingerprint)
			}
		}
		_ = p.Allowed()
	})
}
