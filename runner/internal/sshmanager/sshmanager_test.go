package sshmanager

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"

	"terok.dev/sandbox/common/sshkeys"
)

func newManager(t *testing.T) Manager {
	t.Helper()
	d := t.TempDir()
	return Manager{KeysDir: filepath.Join(d, "state", "ssh-keys"), KeysJSON: filepath.Join(d, "creds", "ssh-keys.json")}
}

func mode(t *testing.T, p string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// checkPairFiles verifies with OpenSSH itself that the pair is usable.
func checkPairFiles(t *testing.T, priv, pub, comment string) {
	t.Helper()
	data, _ := os.ReadFile(priv)
	if _, err := ssh.ParsePrivateKey(data); err != nil {
		t.Fatalf("%s: %v", priv, err)
	}
	pubText, _ := os.ReadFile(pub)
	if !strings.HasSuffix(strings.TrimSpace(string(pubText)), " "+comment) {
		t.Fatalf("%s comment: %q", pub, pubText)
	}
	if _, err := exec.LookPath("ssh-keygen"); err == nil {
		out, err := exec.Command("ssh-keygen", "-y", "-f", priv).Output()
		if err != nil {
			t.Fatalf("ssh-keygen -y %s: %v", priv, err)
		}
		f, g := strings.Fields(string(pubText)), strings.Fields(string(out))
		if len(g) < 2 || g[0] != f[0] || g[1] != f[1] {
			t.Fatalf("ssh-keygen derives another public key:\n%s\nvs\n%s", out, pubText)
		}
	}
}

func TestInit(t *testing.T) {
	m := newManager(t)
	for _, kt := range []string{"ed25519", "rsa"} {
		p := "proj-" + kt
		res, err := m.Init(InitOptions{Project: p, KeyType: kt})
		if err != nil {
			t.Fatal(err)
		}
		wantName := map[string]string{"ed25519": "id_ed25519_" + p, "rsa": "id_rsa_" + p}[kt]
		if res.KeyName != wantName || !res.Generated || res.Dir != filepath.Join(m.KeysDir, p) {
			t.Fatalf("%+v", res)
		}
		if mode(t, res.Dir) != 0o700 || mode(t, res.PrivateKey) != 0o600 || mode(t, res.PublicKey) != 0o644 || mode(t, res.ConfigPath) != 0o644 {
			t.Fatal("wrong permissions")
		}
		checkPairFiles(t, res.PrivateKey, res.PublicKey, "tk-main:"+p)
		cfg, _ := os.ReadFile(res.ConfigPath)
		for _, want := range []string{"Host *\n", "IdentityFile ~/.ssh/" + wantName, "Host github.com\n    HostName github.com\n    User git"} {
			if !strings.Contains(string(cfg), want) {
				t.Fatalf("config lacks %q:\n%s", want, cfg)
			}
		}
		// Idempotent without force; regenerated with force.
		before, _ := os.ReadFile(res.PrivateKey)
		again, err := m.Init(InitOptions{Project: p, KeyType: kt})
		after, _ := os.ReadFile(res.PrivateKey)
		if err != nil || again.Generated || string(before) != string(after) {
			t.Fatalf("re-init changed the key: %v", err)
		}
		forced, err := m.Init(InitOptions{Project: p, KeyType: kt, Force: true})
		after, _ = os.ReadFile(res.PrivateKey)
		if err != nil || !forced.Generated || string(before) == string(after) {
			t.Fatalf("forced init kept the key: %v", err)
		}
	}
	// init does not register.
	if _, err := os.Stat(m.KeysJSON); !os.IsNotExist(err) {
		t.Fatal("init touched ssh-keys.json")
	}
}

func TestInitErrors(t *testing.T) {
	m := newManager(t)
	tmpl := filepath.Join(t.TempDir(), "tmpl")
	os.WriteFile(tmpl, []byte("IdentityFile {{IDENTITY_FILE}} # {{PROJECT_ID}} {{KEY_NAME}}\n"), 0o644)
	cases := []struct {
		o    InitOptions
		want string
	}{
		{InitOptions{Project: "p", KeyType: "dsa"}, "Unsupported --key-type. Use 'ed25519' or 'rsa'."},
		{InitOptions{Project: "p", KeyName: "../x"}, "Invalid SSH key name '../x': must be a plain filename"},
		{InitOptions{Project: "p", KeyName: "/abs"}, "must be a plain filename"},
		{InitOptions{Project: "p", KeyName: `a\b`}, "must be a plain filename"},
		{InitOptions{Project: "p", KeyName: "Known_Hosts"}, "collides with reserved filename (reserved: authorized_keys, config, known_hosts)"},
		{InitOptions{Project: "p", ConfigTemplate: "/nonexistent/t"}, "SSH config template not found: /nonexistent/t"},
		{InitOptions{Project: "-bad"}, "Invalid project ID '-bad'"},
	}
	for _, c := range cases {
		if _, err := m.Init(c.o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%+v: err = %v, want %q", c.o, err, c.want)
		}
	}
	// A symlink where a key file should be is refused.
	dir := filepath.Join(m.KeysDir, "p")
	os.MkdirAll(dir, 0o700)
	os.Symlink("/etc/passwd", filepath.Join(dir, "id_ed25519_p"))
	if _, err := m.Init(InitOptions{Project: "p"}); err == nil || !strings.Contains(err.Error(), "found a symlink. Remove it manually and retry.") {
		t.Fatalf("symlink: %v", err)
	}
	// Custom template with literal placeholders.
	res, err := m.Init(InitOptions{Project: "q", ConfigTemplate: tmpl, KeyName: "mykey"})
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := os.ReadFile(res.ConfigPath)
	if string(cfg) != "IdentityFile "+res.PrivateKey+" # q mykey\n" {
		t.Fatalf("rendered %q", cfg)
	}
}

func TestAddKeyNumberingNeverReuses(t *testing.T) {
	m := newManager(t)
	var last AddKeyResult
	for i := 1; i <= 3; i++ {
		r, err := m.AddKey("p", "", "ed25519")
		if err != nil {
			t.Fatal(err)
		}
		if r.Name != "key-"+string(rune('0'+i)) || r.Comment != "tk-side:p:"+r.Name {
			t.Fatalf("key %d: %+v", i, r)
		}
		if mode(t, r.PrivateKey) != 0o600 || mode(t, filepath.Dir(r.PrivateKey)) != 0o700 {
			t.Fatal("permissions")
		}
		checkPairFiles(t, r.PrivateKey, r.PublicKey, r.Comment)
		last = r
	}
	// Delete the newest key: its number must not come back.
	os.Remove(last.PrivateKey)
	os.Remove(last.PublicKey)
	r, err := m.AddKey("p", "", "rsa")
	if err != nil || r.Name != "key-4" || filepath.Base(r.PrivateKey) != "id_rsa_key-4" {
		t.Fatalf("after deletion: %+v %v", r, err)
	}
	// Named keys; duplicates and bad names refused.
	if _, err := m.AddKey("p", "deploy_bot", "ed25519"); err != nil {
		t.Fatal(err)
	}
	_, err = m.AddKey("p", "deploy_bot", "ed25519")
	if err == nil || !strings.Contains(err.Error(), "Key file already exists: ") || !strings.Contains(err.Error(), "\nUse a different --name or remove the existing key first.") {
		t.Fatalf("duplicate: %v", err)
	}
	for _, bad := range []string{"key1", "a b", "../x", "ключ"} {
		if _, err := m.AddKey("p", bad, "ed25519"); err == nil || !strings.Contains(err.Error(), "Invalid key name '"+bad+"'") {
			t.Fatalf("name %q: %v", bad, err)
		}
	}
	if _, err := m.AddKey("p", "", "dsa"); !errors.Is(err, ErrKeyType) {
		t.Fatalf("dsa: %v", err)
	}
	km, err := sshkeys.Read(m.KeysJSON)
	if err != nil || len(km["p"]) != 5 {
		t.Fatalf("registered %d entries: %v", len(km["p"]), err)
	}
}

func TestAddKeyConcurrentLosesNothing(t *testing.T) {
	m := newManager(t)
	const n = 12
	var wg sync.WaitGroup
	names := make(chan string, n)
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := m.AddKey("p", "", "ed25519")
			if err != nil {
				errs <- err
				return
			}
			names <- r.Name
		}()
	}
	wg.Wait()
	close(errs)
	close(names)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for nm := range names {
		if seen[nm] {
			t.Fatalf("number issued twice: %s", nm)
		}
		seen[nm] = true
	}
	km, err := sshkeys.Read(m.KeysJSON)
	if err != nil || len(km["p"]) != n || len(seen) != n {
		t.Fatalf("registered %d of %d: %v", len(km["p"]), n, err)
	}
}

func TestImport(t *testing.T) {
	m := newManager(t)
	src := t.TempDir()
	a := writeKey(t, src, "id_a", "ed25519", "a")
	b := writeKey(t, src, "id_b", "ed25519", "b")

	_, err := m.Import("p", a, b+".pub")
	if err == nil || !strings.Contains(err.Error(), "does not belong") {
		t.Fatalf("mismatched public key: %v", err)
	}
	if _, err := os.Stat(filepath.Join(m.KeysDir, "p", "id_a")); !os.IsNotExist(err) {
		t.Fatal("a refused import copied files")
	}
	if _, err := m.Import("p", filepath.Join(src, "nope"), ""); err == nil || !strings.Contains(err.Error(), "Private key not found: ") {
		t.Fatalf("missing private: %v", err)
	}
	os.Rename(b+".pub", b+".moved")
	if _, err := m.Import("p", b, ""); err == nil || !strings.Contains(err.Error(), "(use --public-key to specify explicitly)") {
		t.Fatalf("missing public: %v", err)
	}

	r1, err := m.Import("p", a, "")
	if err != nil {
		t.Fatal(err)
	}
	if r1.PrivateKey != filepath.Join(m.KeysDir, "p", "id_a") || mode(t, r1.PrivateKey) != 0o600 {
		t.Fatalf("%+v", r1)
	}
	before, _ := os.ReadFile(m.KeysJSON)
	r2, err := m.Import("p", a, "")
	after, _ := os.ReadFile(m.KeysJSON)
	if err != nil || r2.PrivateKey != r1.PrivateKey || string(before) != string(after) {
		t.Fatalf("re-import not idempotent: %v", err)
	}
	// A different key with the same file name gets a numbered name.
	other := t.TempDir()
	c := writeKey(t, other, "id_a", "ed25519", "c")
	r3, err := m.Import("p", c, "")
	if err != nil || filepath.Base(r3.PrivateKey) != "id_a_1" || filepath.Base(r3.PublicKey) != "id_a_1.pub" {
		t.Fatalf("collision: %+v %v", r3, err)
	}
}

func writeKey(t *testing.T, dir, name, kt, comment string) string {
	t.Helper()
	priv, pub, err := GenerateKey(kt, comment)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	os.WriteFile(p, priv, 0o600)
	os.WriteFile(p+".pub", pub, 0o644)
	return p
}

func TestList(t *testing.T) {
	m := newManager(t)
	if rows, err := m.List(""); err != nil || len(rows) != 0 {
		t.Fatalf("missing file: %v %v", rows, err)
	}
	dir := t.TempDir()
	a := writeKey(t, dir, "id_ed25519_a", "ed25519", "tk-main:a two words")
	b := writeKey(t, dir, "id_b", "ed25519", "")
	os.MkdirAll(filepath.Dir(m.KeysJSON), 0o700)
	os.WriteFile(m.KeysJSON, []byte(`{"zeta": {"private_key": "`+a+`", "public_key": "`+a+`.pub"},
		"alpha": [{"private_key": "`+b+`", "public_key": "`+b+`.pub"},
		          {"private_key": "/gone/id_x", "public_key": "/gone/id_x.pub"}]}`), 0o600)
	rows, err := m.List("")
	if err != nil || len(rows) != 3 {
		t.Fatalf("%v %v", rows, err)
	}
	if rows[0].Project != "alpha" || rows[0].Key != "id_b" || rows[0].Type != "ed25519" || !strings.HasPrefix(rows[0].Fingerprint, "SHA256:") {
		t.Fatalf("row 0 %+v", rows[0])
	}
	out, _ := exec.Command("ssh-keygen", "-l", "-f", b+".pub").Output()
	if len(out) > 0 && !strings.Contains(string(out), rows[0].Fingerprint+" ") {
		t.Fatalf("fingerprint %s differs from ssh-keygen: %s", rows[0].Fingerprint, out)
	}
	if rows[1].Key != "id_x" || rows[1].Fingerprint != "(pub missing)" || rows[1].Type != "?" {
		t.Fatalf("row 1 %+v", rows[1])
	}
	if rows[2].Project != "zeta" || rows[2].Key != "tk-main:a two words" {
		t.Fatalf("row 2 %+v", rows[2])
	}
	table := FormatTable(rows)
	lines := strings.Split(strings.TrimRight(table, "\n"), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "PROJECT  KEY") || strings.Index(lines[0], "TYPE") != strings.Index(lines[3], "ed25519") {
		t.Fatalf("table:\n%s", table)
	}
	if _, err := m.List("nope"); !errors.Is(err, ErrNoProject) || !strings.Contains(err.Error(), "No keys registered for project 'nope'") {
		t.Fatalf("unknown project: %v", err)
	}
	os.WriteFile(m.KeysJSON, []byte(`{bad`), 0o600)
	if _, err := m.List(""); err == nil || !strings.Contains(err.Error(), "Cannot read ") {
		t.Fatalf("invalid json: %v", err)
	}
}
