package integration

// The real agent binary with sealed private key files
// (docs/secrets-at-rest.md): keys open in memory with the KEK cached in the
// kernel keyring, the agent refuses to start while the store is locked, and
// signatures per second match a plaintext store.

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"terok.dev/sandbox/common/secretstore"
	"terok.dev/sandbox/common/sshkeys"
)

var testKDF = secretstore.KDFParams{Time: 1, MemoryKiB: 8 * 1024, Threads: 1}

// sealKeys creates a keystore beside dbPath, caches its KEK in the kernel
// keyring (dropped when the test ends) and seals every private key file of
// keysFile in place, as `credentials migrate` does. It returns the store id.
func sealKeys(t testing.TB, dbPath, keysFile string) string {
	t.Helper()
	dir := filepath.Dir(dbPath)
	id, kek, err := secretstore.Create(dir, []byte("agent test passphrase"), testKDF)
	if err != nil {
		t.Fatal(err)
	}
	if err := secretstore.CacheKEK(id, kek, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = secretstore.ForgetKEK(id) })
	b, err := secretstore.OpenVault(dir).Exclusive()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	m, err := sshkeys.Read(keysFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range m.PrivateKeyPaths() {
		changed, err := sshkeys.RewriteKeyFile(p, func(v []byte) ([]byte, bool, error) {
			return b.Reseal(v, secretstore.KeyFileAD(p))
		})
		if err != nil || !changed {
			t.Fatalf("seal %s: %v %v", p, changed, err)
		}
	}
	return id
}

func TestAgentWithSealedKeys(t *testing.T) {
	f := newFixture(t)
	id := sealKeys(t, f.dbPath, f.keysFile)
	for _, p := range []string{f.mainA.Private, f.rsaR.Private} {
		data, _ := os.ReadFile(p)
		if !bytes.HasPrefix(data, []byte(secretstore.Prefix)) || bytes.Contains(data, []byte("PRIVATE KEY")) {
			t.Fatalf("%s is not sealed", p)
		}
	}
	ag, port := f.startAgent(t)
	_, sockA := f.startBridge(t, f.tokA, port)
	out, err := run(t, []string{"SSH_AUTH_SOCK=" + sockA}, "ssh-add", "-L")
	want := authorizedLine(f.mainA) + " tk-main:a\n" + authorizedLine(f.sideA) + " tk-side:a:key-1\n"
	if err != nil || out != want {
		t.Fatalf("ssh-add -L with sealed keys: %v\n%s\nagent log:\n%s", err, out, ag.log)
	}
	// A real signature with the sealed RSA key verifies.
	_, sockR := f.startBridge(t, f.tokR, port)
	c, err := net.Dial("unix", sockR)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := []byte("payload to sign")
	sig, err := agent.NewClient(c).SignWithFlags(f.rsaR.Signer.PublicKey(), data, agent.SignatureFlagRsaSha256)
	if err != nil {
		t.Fatalf("sign with a sealed key: %v\n%s", err, ag.log)
	}
	if err := f.rsaR.Signer.PublicKey().Verify(data, sig); err != nil {
		t.Fatalf("signature does not verify: %v", err)
	}
	if strings.Contains(ag.log.String(), "PRIVATE KEY") {
		t.Fatal("agent log contains key material")
	}

	// Locked: a new agent refuses to start and says what to run; the
	// running one keeps its keys in memory.
	if _, err := secretstore.ForgetKEK(id); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, nil, agentBin, "--db-path", f.dbPath, "--ssh-keys-file", f.keysFile,
		"--port", "1", "--log-level", "DEBUG")
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("agent started with a locked store")
	}
	if p.err == nil || !strings.Contains(p.log.String(), "credentials unlock") {
		t.Fatalf("locked start: %v\n%s", p.err, p.log)
	}
	if out, err := run(t, []string{"SSH_AUTH_SOCK=" + sockA}, "ssh-add", "-L"); err != nil || out != want {
		t.Fatalf("running agent after lock: %v %q", err, out)
	}
}

// TestAgentSkipsMovedSealedKey: a sealed key file copied over another
// registered path does not open (it is bound to its own path); the agent
// logs why and serves the project's other keys.
func TestAgentSkipsMovedSealedKey(t *testing.T) {
	f := newFixture(t)
	sealKeys(t, f.dbPath, f.keysFile)
	moved, _ := os.ReadFile(f.mainB.Private)
	if err := os.WriteFile(f.sideA.Private, moved, 0o600); err != nil {
		t.Fatal(err)
	}
	ag, port := f.startAgent(t)
	_, sockA := f.startBridge(t, f.tokA, port)
	out, err := run(t, []string{"SSH_AUTH_SOCK=" + sockA}, "ssh-add", "-L")
	if err != nil || out != authorizedLine(f.mainA)+" tk-main:a\n" {
		t.Fatalf("ssh-add -L: %v %q\n%s", err, out, ag.log)
	}
	line := ag.log.wait(t, "skipping SSH key")
	if !strings.Contains(line, "moved here from another row or file") || !strings.Contains(line, f.sideA.Private) {
		t.Fatalf("log line: %s", line)
	}
}

// BenchmarkSignSealedVsPlain measures signatures per second through the
// agent with plaintext and with sealed key files, in one run with
// interleaved rounds (best round of each kept): the key is opened once per
// change of the key file, so the two should match. Metrics: plain-sig/s,
// sealed-sig/s and ratio = sealed/plain.
func BenchmarkSignSealedVsPlain(b *testing.B) {
	for _, c := range []struct {
		name, kind string
		count      int
		flags      agent.SignatureFlags
	}{
		{"ed25519", "ed25519", 3000, 0},
		{"rsa3072", "rsa", 300, agent.SignatureFlagRsaSha512},
	} {
		b.Run(c.name, func(b *testing.B) {
			plain := newFixtureKeys(b, c.kind)
			sealedF := newFixtureKeys(b, c.kind)
			sealKeys(b, sealedF.dbPath, sealedF.keysFile)
			_, pPort := plain.startAgentB(b)
			_, sPort := sealedF.startAgentB(b)
			pc, sc := dialTerok(b, pPort, plain.tok), dialTerok(b, sPort, sealedF.tok)
			data := make([]byte, 64)
			round := func(cl agent.ExtendedAgent, pub ssh.PublicKey) float64 {
				start := time.Now()
				for i := 0; i < c.count; i++ {
					data[0] = byte(i)
					if _, err := cl.SignWithFlags(pub, data, c.flags); err != nil {
						b.Fatal(err)
					}
				}
				return float64(c.count) / time.Since(start).Seconds()
			}
			pPub, sPub := plain.pair.Signer.PublicKey(), sealedF.pair.Signer.PublicKey()
			round(pc, pPub)
			round(sc, sPub)
			b.ResetTimer()
			var bestP, bestS float64
			for i := 0; i < b.N; i++ {
				for r := 0; r < 4; r++ { // alternate who goes first
					if r%2 == 0 {
						bestP = max(bestP, round(pc, pPub))
						bestS = max(bestS, round(sc, sPub))
					} else {
						bestS = max(bestS, round(sc, sPub))
						bestP = max(bestP, round(pc, pPub))
					}
				}
			}
			b.ReportMetric(bestP, "plain-sig/s")
			b.ReportMetric(bestS, "sealed-sig/s")
			b.ReportMetric(bestS/bestP, "ratio")
		})
	}
}
