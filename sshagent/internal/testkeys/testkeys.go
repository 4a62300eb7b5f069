// Package testkeys writes key pairs in the formats the agent must read, for
// tests of this module only.
package testkeys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// Format selects the private key encoding.
type Format int

// Private key encodings.
const (
	OpenSSH Format = iota
	PKCS1          // RSA only
	PKCS8
	SEC1 // ECDSA only
)

// Pair is a written key pair.
type Pair struct {
	Private, Public string // paths
	Signer          ssh.Signer
	Comment         string
}

// New generates a key of kind ("ed25519", "rsa", "rsa2048", "rsa1024",
// "ecdsa") in dir/name and dir/name.pub.
func New(t testing.TB, dir, name, kind, comment string, f Format) Pair {
	t.Helper()
	var key crypto.Signer
	var err error
	switch kind {
	case "ed25519":
		_, key, err = ed25519.GenerateKey(rand.Reader)
	case "rsa":
		key, err = rsa.GenerateKey(rand.Reader, 3072)
	case "rsa2048":
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	case "rsa1024":
		key, err = rsa.GenerateKey(rand.Reader, 1024)
	case "ecdsa":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		t.Fatalf("unknown key kind %q", kind)
	}
	if err != nil {
		t.Fatal(err)
	}
	return Write(t, dir, name, key, comment, f)
}

// Write stores key in dir/name (+.pub) in format f.
func Write(t testing.TB, dir, name string, key crypto.Signer, comment string, f Format) Pair {
	t.Helper()
	var block *pem.Block
	var err error
	switch f {
	case OpenSSH:
		block, err = ssh.MarshalPrivateKey(key, comment)
	case PKCS1:
		block = &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key.(*rsa.PrivateKey))}
	case PKCS8:
		var der []byte
		der, err = x509.MarshalPKCS8PrivateKey(key)
		block = &pem.Block{Type: "PRIVATE KEY", Bytes: der}
	case SEC1:
		var der []byte
		der, err = x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
		block = &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}
	}
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	p := Pair{Private: filepath.Join(dir, name), Public: filepath.Join(dir, name+".pub"), Signer: signer, Comment: comment}
	if err := os.WriteFile(p.Private, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.Public, []byte(AuthorizedLine(signer.PublicKey(), comment)), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// AuthorizedLine is "<type> <base64> <comment>\n".
func AuthorizedLine(pk ssh.PublicKey, comment string) string {
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk)))
	if comment != "" {
		line += " " + comment
	}
	return line + "\n"
}
