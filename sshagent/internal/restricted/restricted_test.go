package restricted

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/sshagent/internal/keys"
	"terok.dev/sandbox/sshagent/internal/testkeys"
)

func TestAlgorithm(t *testing.T) {
	cases := []struct {
		typ   string
		flags agent.SignatureFlags
		want  string
	}{
		{ssh.KeyAlgoED25519, agent.SignatureFlagRsaSha512, ""},
		{ssh.KeyAlgoECDSA256, 0, ""},
		{ssh.KeyAlgoRSA, 0, ssh.KeyAlgoRSA},
		{ssh.KeyAlgoRSA, agent.SignatureFlagRsaSha256, ssh.KeyAlgoRSASHA256},
		{ssh.KeyAlgoRSA, agent.SignatureFlagRsaSha512, ssh.KeyAlgoRSASHA512},
		{ssh.KeyAlgoRSA, agent.SignatureFlagRsaSha256 | agent.SignatureFlagRsaSha512, ssh.KeyAlgoRSASHA512},
		{ssh.KeyAlgoRSA, agent.SignatureFlagReserved, ssh.KeyAlgoRSA},
	}
	for _, c := range cases {
		if got := Algorithm(c.typ, c.flags); got != c.want {
			t.Errorf("Algorithm(%s, %d) = %q, want %q", c.typ, c.flags, got, c.want)
		}
	}
}

func TestOnlyListAndSign(t *testing.T) {
	dir := t.TempDir()
	p := testkeys.New(t, dir, "k", "ecdsa", "tk-main:p", testkeys.SEC1)
	k, err := keys.LoadPair(p.Private, p.Public)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	a := New([]keys.Key{k}, slog.New(slog.NewTextHandler(&logs, nil)).With("project", "p"))
	ids, _ := a.List()
	if len(ids) != 1 || ids[0].Comment != "tk-main:p" || ids[0].Format != ssh.KeyAlgoECDSA256 {
		t.Fatalf("List = %v", ids)
	}
	sig, err := a.Sign(p.Signer.PublicKey(), []byte("d"))
	if err != nil || p.Signer.PublicKey().Verify([]byte("d"), sig) != nil {
		t.Fatalf("ecdsa sign: %v", err)
	}
	if !strings.Contains(logs.String(), "msg=signed project=p key=tk-main:p algorithm=ecdsa-sha2-nistp256") {
		t.Fatalf("log: %s", logs.String())
	}
	if _, err := a.Signers(); !errors.Is(err, ErrRefused) {
		t.Fatal("Signers handed out")
	}
	for name, err := range map[string]error{
		"add": a.Add(agent.AddedKey{}), "remove": a.Remove(p.Signer.PublicKey()),
		"removeall": a.RemoveAll(), "lock": a.Lock(nil), "unlock": a.Unlock(nil),
	} {
		if !errors.Is(err, ErrRefused) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := a.Extension("x", nil); !errors.Is(err, agent.ErrExtensionUnsupported) {
		t.Fatal("extension")
	}
}

// A signature whose audit record cannot be written is withheld; the
// records name the key by fingerprint and the data only by its hash.
func TestAuditRecordOrWithhold(t *testing.T) {
	dir := t.TempDir()
	p := testkeys.New(t, dir, "k", "ed25519", "tk-main:p", testkeys.OpenSSH)
	k, err := keys.LoadPair(p.Private, p.Public)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "audit", "ssh.jsonl")
	w, err := audit.Open(path, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := New([]keys.Key{k}, nil)
	a.SetAudit(w, audit.Record{Project: "p", Task: "t", Fields: map[string]any{"remote": "r"}})
	data := []byte("data that is never recorded")
	if _, err := a.SignKey(k, data, 0, Dest{Fingerprint: "SHA256:x", Forwarded: true}); err != nil {
		t.Fatal(err)
	}
	rs, err := audit.ReadFile(path, func(m string) { t.Error(m) })
	if err != nil || len(rs) != 1 {
		t.Fatalf("records %v %v", rs, err)
	}
	sum := sha256.Sum256(data)
	r := rs[0]
	if r.Event != "sign" || r.Outcome != "ok" || r.Project != "p" || r.Fields["remote"] != "r" ||
		r.Fields["key_fingerprint"] != ssh.FingerprintSHA256(p.Signer.PublicKey()) ||
		r.Fields["key_fingerprint"] != Fingerprint(k.Blob) || r.Fields["data_sha256"] != hex.EncodeToString(sum[:]) ||
		r.Fields["dest_fingerprint"] != "SHA256:x" || r.Fields["forwarded"] != true {
		t.Fatalf("record %+v", r)
	}
	// The audit directory turns into a file: no record, no signature.
	if err := os.RemoveAll(filepath.Dir(path)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Dir(path), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if sig, err := a.SignKey(k, data, 0, Dest{}); !errors.Is(err, ErrAudit) || sig != nil {
		t.Fatalf("signature without its record: %v %v", sig, err)
	}
}
