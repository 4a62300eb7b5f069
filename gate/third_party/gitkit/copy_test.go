package gitkit

// terok patch: tests of copyCoalesced.

import (
	"bytes"
	"os"
	"syscall"
	"testing"
)

// recorder keeps every write it receives.
type recorder struct{ writes [][]byte }

func (r *recorder) Write(p []byte) (int, error) {
	r.writes = append(r.writes, append([]byte(nil), p...))
	return len(p), nil
}

func TestCopyCoalesced(t *testing.T) {
	cases := []struct {
		name   string
		chunks int
		size   int
		// maxWrites bounds the writes the client sees for output that is
		// entirely in the pipe before the copy starts.
		maxWrites int
	}{
		{"empty", 0, 0, 0},
		{"one packet", 1, 100, 1},
		{"side-band packets gathered", 40, 8 << 10, 2},
		{"more than one buffer", 80, 8 << 10, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			// Room for the whole output, as copyCoalesced gives git.
			if _, _, e := syscall.Syscall(syscall.SYS_FCNTL, w.Fd(), 1031 /* F_SETPIPE_SZ */, 1<<20); e != 0 {
				t.Skipf("F_SETPIPE_SZ: %v", e)
			}
			var want bytes.Buffer
			done := make(chan error, 1)
			go func() {
				for i := 0; i < tc.chunks; i++ {
					chunk := bytes.Repeat([]byte{byte('a' + i%26)}, tc.size)
					want.Write(chunk)
					if _, err := w.Write(chunk); err != nil {
						done <- err
						return
					}
				}
				done <- w.Close()
			}()
			// The copy starts once the writer is done, so the whole output
			// waits in the pipe: it must leave in few large writes, not a
			// write per packet.
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			var rec recorder
			if err := copyCoalesced(&rec, r); err != nil {
				t.Fatal(err)
			}
			got := bytes.Join(rec.writes, nil)
			if !bytes.Equal(got, want.Bytes()) {
				t.Fatalf("copied %d bytes, want %d (content differs)", len(got), want.Len())
			}
			if len(rec.writes) > tc.maxWrites {
				t.Fatalf("%d writes for %d packets, want <= %d", len(rec.writes), tc.chunks, tc.maxWrites)
			}
		})
	}
}
