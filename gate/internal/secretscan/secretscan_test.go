package secretscan

import (
	"regexp"
	"strings"
	"testing"
)

func TestScan(t *testing.T) {
	gh := "ghp_" + strings.Repeat("A1b2", 9)
	for _, tc := range []struct {
		name, data, kind string
		line             int
	}{
		{"gate token", "a\nb\nTOKEN=terok-g-0123456789abcdef0123456789abcdef\n", "terok-gate-token", 3},
		{"phantom token", "x terok-p-ffffffffffffffffffffffffffffffff", "terok-phantom-token", 1},
		{"openssh key", "#!/bin/sh\n\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n", "private-key", 3},
		{"rsa key", "-----BEGIN RSA PRIVATE KEY-----", "private-key", 1},
		{"pkcs8 key", "k: |\n  -----BEGIN PRIVATE KEY-----", "private-key", 2},
		{"aws", "aws_access_key_id = AKIAIOSFODNN7EXAMPLE\n", "aws-access-key-id", 1},
		{"github", "\n\n\n" + gh, "github-token", 4},
		{"gitlab", "glpat-abcdefghij0123456789", "gitlab-token", 1},
		{"slack", "xoxb-1234567890-abcdef", "slack-token", 1},
		{"anthropic", "ANTHROPIC_API_KEY=sk-ant-api03-" + strings.Repeat("x", 40), "anthropic-key", 1},
		{"google", "AIza" + strings.Repeat("B", 35), "google-api-key", 1},
		{"stripe", "sk_live_" + strings.Repeat("a", 24), "stripe-key", 1},
		{"first of two", "line1\n" + gh + "\nterok-g-0123456789abcdef0123456789abcdef", "github-token", 2},
		{"later marker earlier match", "xxxx\n-----BEGIN EC PRIVATE KEY-----\nterok-g-0123456789abcdef0123456789abcdef", "private-key", 2},
		{"clean", "terok-g-short\nAKIA lower\n-----BEGIN PUBLIC KEY-----\nghp_tooShort\n", "", 0},
		{"gate token prefix only", "see terok-g-<token> in the docs", "", 0},
		{"uppercase hex is no token", "terok-g-0123456789ABCDEF0123456789ABCDEF", "", 0},
		{"binary", "\x00\x01terok-g-0123456789abcdef0123456789abcdef", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, ok := Scan("dir/file.txt", []byte(tc.data))
			if tc.kind == "" {
				if ok {
					t.Fatalf("found %+v in clean content", f)
				}
				return
			}
			if !ok || f.Kind != tc.kind || f.Line != tc.line || f.Path != "dir/file.txt" {
				t.Fatalf("Scan = %+v %v, want %s line %d", f, ok, tc.kind, tc.line)
			}
		})
	}
}

// reference is the documented rule set as plain regular expressions over
// the whole content: the lowest match start wins.
func reference(data []byte) (int, bool) {
	best := -1
	for _, r := range rules {
		re := regexp.MustCompile(strings.TrimPrefix(r.re.String(), "^"))
		for _, m := range re.FindAllIndex(data, -1) {
			if m[0] <= len(data) && (best < 0 || m[0] < best) {
				// The scanner looks at most window bytes past a match start.
				if m[1]-m[0] <= window {
					best = m[0]
				}
				break
			}
		}
	}
	if best < 0 {
		return 0, false
	}
	return strings.Count(string(data[:best]), "\n") + 1, true
}

func FuzzScan(f *testing.F) {
	f.Add([]byte("a\nterok-g-0123456789abcdef0123456789abcdef\n"))
	f.Add([]byte("-----BEGIN OPENSSH PRIVATE KEY-----"))
	f.Add([]byte("AKIAAKIAIOSFODNN7EXAMPLE"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if Binary(data) {
			return
		}
		f, ok := Scan("p", data)
		line, want := reference(data)
		if ok != want || (ok && f.Line != line) {
			t.Fatalf("Scan = %+v %v, reference line %d %v", f, ok, line, want)
		}
	})
}

func BenchmarkScanClean(b *testing.B) {
	data := []byte(strings.Repeat("func main() { fmt.Println(\"hello, world\") } // some code here\n", 1<<14))
	b.SetBytes(int64(len(data)))
	for i := 0; i < b.N; i++ {
		if _, ok := Scan("x.go", data); ok {
			b.Fatal("found")
		}
	}
}
