package syslog

import (
	"net"
	"path/filepath"
	"testing"
	"time"
)

func TestWriter(t *testing.T) {
	addr := filepath.Join(t.TempDir(), "log")
	pc, err := net.ListenPacket("unixgram", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	w, err := Dial(addr, "terok-gate")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for _, tc := range []struct{ in, want string }{
		{"time=x level=WARN msg=hi\n", "<28>terok-gate: time=x level=WARN msg=hi"},
		{"level=INFO msg=a", "<30>terok-gate: level=INFO msg=a"},
		{"level=ERROR msg=a", "<27>terok-gate: level=ERROR msg=a"},
		{`{"level":"WARN","msg":"x"}`, `<28>terok-gate: {"level":"WARN","msg":"x"}`},
		{`{"level":"DEBUG","msg":"level=ERROR"}`, `<31>terok-gate: {"level":"DEBUG","msg":"level=ERROR"}`},
		{`level=INFO msg="saw level=ERROR"`, `<30>terok-gate: level=INFO msg="saw level=ERROR"`},
	} {
		if _, err := w.Write([]byte(tc.in)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 512)
		pc.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(buf[:n]); got != tc.want {
			t.Errorf("got %q want %q", got, tc.want)
		}
	}
}
