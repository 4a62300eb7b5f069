package cli

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"terok.dev/sandbox/common/testkit"
)

// openPTY returns the master and slave of a new pseudo-terminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// awaitQuietPrompt returns once stderr shows prompt and the terminal's echo
// is off: readPassphrase prints each prompt with echo on and turns it off
// only then, so a line typed before both would be echoed (and a fixed sleep
// is no guarantee under load). The deadline is a liveness bound only.
func awaitQuietPrompt(t *testing.T, slave *os.File, stderr *testkit.Buffer, prompt string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if strings.Contains(stderr.String(), prompt) {
			tio, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
			if err != nil {
				t.Fatal(err)
			}
			if tio.Lflag&unix.ECHO == 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no prompt %q with echo off; stderr %q", prompt, stderr.String())
		}
	}
}

func TestPassphraseFromTerminal(t *testing.T) {
	master, slave := openPTY(t)
	if !isTerminal(slave) {
		t.Fatal("the pty is not seen as a terminal")
	}
	var stderr testkit.Buffer
	d := Deps{Stdin: slave, Stderr: &stderr}
	done := make(chan struct{})
	var got []byte
	var err error
	go func() {
		defer close(done)
		got, err = readPassphrase(d, "", true)
	}()
	awaitQuietPrompt(t, slave, &stderr, "New passphrase")
	master.Write([]byte("tty passphrase 1\n"))
	awaitQuietPrompt(t, slave, &stderr, "Repeat it")
	master.Write([]byte("tty passphrase 1\n"))
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("readPassphrase did not return")
	}
	if err != nil || string(got) != "tty passphrase 1" {
		t.Fatalf("got %q, %v", got, err)
	}
	// Nothing was echoed, and the terminal echoes again afterwards.
	master.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	echoed := make([]byte, 256)
	n, _ := master.Read(echoed)
	if bytes.Contains(echoed[:n], []byte("passphrase 1")) {
		t.Fatalf("the passphrase was echoed: %q", echoed[:n])
	}
	tio, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil || tio.Lflag&unix.ECHO == 0 {
		t.Fatalf("echo not restored: %v", err)
	}
	if !strings.Contains(stderr.String(), "New passphrase") || !strings.Contains(stderr.String(), "Repeat it") {
		t.Fatalf("prompts: %q", stderr.String())
	}
}

func TestPassphraseMismatch(t *testing.T) {
	master, slave := openPTY(t)
	var stderr testkit.Buffer
	done := make(chan error, 1)
	go func() {
		_, err := readPassphrase(Deps{Stdin: slave, Stderr: &stderr}, "", true)
		done <- err
	}()
	awaitQuietPrompt(t, slave, &stderr, "New passphrase")
	master.Write([]byte("first passphrase\n"))
	awaitQuietPrompt(t, slave, &stderr, "Repeat it")
	master.Write([]byte("other passphrase\n"))
	select {
	case err := <-done:
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte("differ")) || bytes.Contains([]byte(err.Error()), []byte("passphrase\n")) {
			t.Fatalf("mismatch: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("readPassphrase did not return")
	}
}
