package keys

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"terok.dev/sandbox/common/sshkeys"
	"terok.dev/sandbox/sshagent/internal/testkeys"
)

func TestLoadPairFormats(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		kind string
		f    testkeys.Format
	}{
		{"ed25519", testkeys.OpenSSH},
		{"ed25519", testkeys.PKCS8},
		{"rsa2048", testkeys.OpenSSH},
		{"rsa2048", testkeys.PKCS1},
		{"rsa2048", testkeys.PKCS8},
		{"ecdsa", testkeys.OpenSSH},
		{"ecdsa", testkeys.SEC1},
		{"ecdsa", testkeys.PKCS8},
	}
	for i, c := range cases {
		p := testkeys.New(t, dir, "k"+string(rune('a'+i)), c.kind, "a comment with  spaces", c.f)
		k, err := LoadPair(p.Private, p.Public)
		if err != nil {
			t.Fatalf("%s/%d: %v", c.kind, c.f, err)
		}
		if !bytes.Equal(k.Blob, p.Signer.PublicKey().Marshal()) || k.Comment != "a comment with  spaces" {
			t.Fatalf("%s/%d: blob or comment wrong: %q", c.kind, c.f, k.Comment)
		}
		sig, err := k.Signer.Sign(rand.Reader, []byte("data"))
		if err != nil || p.Signer.PublicKey().Verify([]byte("data"), sig) != nil {
			t.Fatalf("%s/%d: signature does not verify: %v", c.kind, c.f, err)
		}
	}
}

func TestLoadPairErrors(t *testing.T) {
	dir := t.TempDir()
	a := testkeys.New(t, dir, "a", "ed25519", "a", testkeys.OpenSSH)
	b := testkeys.New(t, dir, "b", "ed25519", "b", testkeys.OpenSSH)
	small := testkeys.New(t, dir, "small", "rsa1024", "small", testkeys.PKCS1)
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pubA, _ := os.ReadFile(a.Public)
	fields := strings.Fields(string(pubA))
	cases := []struct {
		name, priv, pub, want string
	}{
		{"mismatched public key", a.Private, b.Public, "does not belong"},
		{"missing private", filepath.Join(dir, "nope"), a.Public, "no such file"},
		{"missing public", a.Private, filepath.Join(dir, "nope.pub"), "no such file"},
		{"garbage private", write("garbage", "hello"), a.Public, "no key found"},
		{"one field", a.Private, write("one.pub", fields[0]), "expected"},
		{"bad base64", a.Private, write("b64.pub", "ssh-ed25519 !!!!"), "base64"},
		{"type mismatch", a.Private, write("type.pub", "ssh-rsa "+fields[1]), "does not match"},
		{"small rsa", small.Private, small.Public, "at least 2048"},
		{"empty public", a.Private, write("empty.pub", ""), "expected"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := LoadPair(c.priv, c.pub)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
		})
	}
}

func TestEncryptedKeyRefused(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKeyWithPassphrase(priv, "c", []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = ParsePrivate(pem.EncodeToMemory(block))
	if err == nil || !strings.Contains(err.Error(), "encrypted") {
		t.Fatalf("err = %v", err)
	}
}

func TestParsePublicLine(t *testing.T) {
	dir := t.TempDir()
	p := testkeys.New(t, dir, "a", "ed25519", "", testkeys.OpenSSH)
	pub, _ := os.ReadFile(p.Public)
	f := strings.Fields(string(pub))
	cases := []struct{ in, comment string }{
		{f[0] + " " + f[1], ""},
		{f[0] + " " + f[1] + " tk-main:proj", "tk-main:proj"},
		{"  " + f[0] + "\t" + f[1] + "   two  words \n", "two  words"},
	}
	for _, c := range cases {
		typ, blob, comment, err := ParsePublicLine([]byte(c.in))
		if err != nil || typ != "ssh-ed25519" || comment != c.comment || !bytes.Equal(blob, p.Signer.PublicKey().Marshal()) {
			t.Fatalf("%q: %q %q %v", c.in, typ, comment, err)
		}
	}
}

func writeMap(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func comments(ks []Key) []string {
	var out []string
	for _, k := range ks {
		out = append(out, k.Comment)
	}
	return out
}

func TestStoreOrderSingleObjectAndReload(t *testing.T) {
	dir := t.TempDir()
	side := testkeys.New(t, dir, "side", "ed25519", "tk-side:p:x", testkeys.OpenSSH)
	main := testkeys.New(t, dir, "main", "ecdsa", "tk-main:p", testkeys.OpenSSH)
	other := testkeys.New(t, dir, "other", "ed25519", "other", testkeys.OpenSSH)
	broken := filepath.Join(dir, "broken")
	mapPath := filepath.Join(dir, "ssh-keys.json")
	writeMap(t, mapPath, `{"p": [
		{"private_key": "`+side.Private+`", "public_key": "`+side.Public+`"},
		{"private_key": "`+broken+`", "public_key": "`+broken+`.pub"},
		{"private_key": "`+main.Private+`", "public_key": "`+main.Public+`"}],
	 "legacy": {"private_key": "`+other.Private+`", "public_key": "`+other.Public+`"},
	 "weird": 42}`)
	s := NewStore(mapPath, nil)

	if got := comments(s.Project("p")); strings.Join(got, ",") != "tk-main:p,tk-side:p:x" {
		t.Fatalf("order = %v", got)
	}
	if got := comments(s.Project("legacy")); strings.Join(got, ",") != "other" {
		t.Fatalf("single-object entry = %v", got)
	}
	if got := s.Project("weird"); len(got) != 0 {
		t.Fatalf("weird = %v", got)
	}
	if got := s.Project("absent"); len(got) != 0 {
		t.Fatalf("absent = %v", got)
	}

	// Rotating the main key in place is seen on the next call.
	before := s.Project("p")[0].Blob
	rotated := testkeys.New(t, dir, "main", "ed25519", "tk-main:p rotated", testkeys.OpenSSH)
	future := time.Now().Add(2 * time.Second)
	os.Chtimes(rotated.Private, future, future)
	after := s.Project("p")
	if bytes.Equal(after[0].Blob, before) || after[0].Comment != "tk-main:p rotated" {
		t.Fatalf("rotation not picked up: %v", comments(after))
	}

	// Keys registered later through the update rule are seen.
	added := testkeys.New(t, dir, "added", "ed25519", "tk-side:p:added", testkeys.OpenSSH)
	if err := sshkeys.Update(mapPath, sshkeys.Pair{Project: "legacy", PrivateKey: added.Private, PublicKey: added.Public}); err != nil {
		t.Fatal(err)
	}
	if got := comments(s.Project("legacy")); strings.Join(got, ",") != "other,tk-side:p:added" {
		t.Fatalf("after update = %v", got)
	}

	// An invalid file means no keys, and the cache does not hide that.
	writeMap(t, mapPath, `{not json`)
	if got := s.Project("p"); len(got) != 0 {
		t.Fatalf("invalid map served %v", comments(got))
	}
	s.mu.Lock()
	n := len(s.cache)
	s.mu.Unlock()
	if n != 0 {
		t.Fatalf("cache kept %d projects after they disappeared", n)
	}
}

func TestStoreCachesUnchanged(t *testing.T) {
	dir := t.TempDir()
	k := testkeys.New(t, dir, "k", "ed25519", "c", testkeys.OpenSSH)
	mapPath := filepath.Join(dir, "ssh-keys.json")
	if err := sshkeys.Update(mapPath, sshkeys.Pair{Project: "p", PrivateKey: k.Private, PublicKey: k.Public}); err != nil {
		t.Fatal(err)
	}
	s := NewStore(mapPath, nil)
	a := s.Project("p")
	b := s.Project("p")
	if len(a) != 1 || len(b) != 1 || a[0].Signer != b[0].Signer {
		t.Fatal("unchanged files were reloaded")
	}
}

func FuzzParsePublicLine(f *testing.F) {
	f.Add([]byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGl1 comment"))
	f.Add([]byte(""))
	f.Add([]byte("ssh-rsa"))
	f.Fuzz(func(t *testing.T, in []byte) {
		typ, blob, _, err := ParsePublicLine(in)
		if err != nil {
			return
		}
		pk, err := ssh.ParsePublicKey(blob)
		if err != nil || pk.Type() != typ {
			t.Fatalf("accepted a line whose blob does not parse as %q", typ)
		}
	})
}

func FuzzParsePrivate(f *testing.F) {
	f.Add([]byte("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"))
	f.Add([]byte("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		_, _ = ParsePrivate(in)
	})
}

// Destinations: resolved through the known_hosts file (re-read when it
// changes, also for a cached project); a key with an unusable member is not
// served at all.
func TestStoreDestinations(t *testing.T) {
	dir := t.TempDir()
	bound := testkeys.New(t, dir, "bound", "ed25519", "tk-main:p", testkeys.OpenSSH)
	bad := testkeys.New(t, dir, "bad", "ed25519", "tk-side:p:bad", testkeys.OpenSSH)
	free := testkeys.New(t, dir, "free", "ed25519", "tk-side:p:free", testkeys.OpenSSH)
	host := testkeys.New(t, dir, "host", "ed25519", "host", testkeys.OpenSSH).Signer.PublicKey()
	fp := ssh.FingerprintSHA256(host)
	mapPath := filepath.Join(dir, "ssh-keys.json")
	writeMap(t, mapPath, `{"p": [
		{"private_key": "`+bound.Private+`", "public_key": "`+bound.Public+`", "destinations": ["*.example.org"]},
		{"private_key": "`+bad.Private+`", "public_key": "`+bad.Public+`", "destinations": ["not a host"]},
		{"private_key": "`+free.Private+`", "public_key": "`+free.Public+`"}]}`)
	kh := filepath.Join(dir, "ssh_known_hosts")
	s := NewStore(mapPath, nil)
	s.SetKnownHosts(kh)
	ks := s.Project("p")
	if got := comments(ks); strings.Join(got, ",") != "tk-main:p,tk-side:p:free" {
		t.Fatalf("served %v", got)
	}
	if ks[0].Dest == nil || ks[0].Dest.Allows(fp) || ks[1].Dest != nil {
		t.Fatalf("without known_hosts: %+v %+v", ks[0].Dest, ks[1].Dest)
	}
	if err := os.WriteFile(kh, []byte("git.example.org "+string(ssh.MarshalAuthorizedKey(host))), 0o600); err != nil {
		t.Fatal(err)
	}
	if ks := s.Project("p"); !ks[0].Dest.Allows(fp) {
		t.Fatal("known_hosts change not picked up")
	}
}
