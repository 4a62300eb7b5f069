package nflog

import (
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"terok.dev/sandbox/shield-hook/internal/nstest"
)

// TestKernelSequence: the real kernel numbers each logged packet of the
// group (NFULNL_CFG_F_SEQ), one after the other, which is what the
// resolver counts lost messages by (docs/shield-resolver.md, Refused
// traffic).
func TestKernelSequence(t *testing.T) {
	scratch := nstest.New(t, fmt.Sprintf("nflogseq-%d", os.Getpid()))
	const group, port = 100, 47391
	scratch.Exec(t, "nft", fmt.Sprintf(
		"add table inet t; add chain inet t o { type filter hook output priority 0; }; add rule inet t o udp dport %d log prefix \"TEST: \" group %d", port, group))
	var c *Conn
	const n = 5
	if err := scratch.Do(func() error {
		var err error
		if c, err = Listen(group); err != nil {
			return err
		}
		// A listener, so no port-unreachable fails the next write.
		l, err := net.ListenPacket("udp4", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return err
		}
		defer l.Close()
		u, err := net.Dial("udp4", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return err
		}
		defer u.Close()
		for i := 0; i < n; i++ {
			if _, err := u.Write([]byte("x")); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var seqs []uint32
	timer := time.AfterFunc(10*time.Second, func() { _ = c.Close() })
	defer timer.Stop()
	for len(seqs) < n {
		err := c.Receive(func(e Entry) {
			if !e.HasSeq {
				t.Errorf("entry without a sequence number: %+v", e)
			}
			seqs = append(seqs, e.Seq)
		})
		if err != nil {
			t.Fatalf("after %v: %v", seqs, err)
		}
	}
	_ = c.Close()
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			t.Fatalf("sequence %v is not consecutive", seqs)
		}
	}
}
