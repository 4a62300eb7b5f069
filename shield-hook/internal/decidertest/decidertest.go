// Package decidertest is a decider for tests: a client on a resolver's
// decider socket that reads the questions and writes the answers of the
// protocol (docs/shield.md, Interactive decider protocol). The decider
// package's own tests and the resolver's use it, so the protocol's test
// side is written once.
package decidertest

import (
	"bufio"
	"net"
	"testing"
	"time"

	"terok.dev/sandbox/common/shieldbundle"
)

// Wait bounds Question: long enough for a connection made through a
// loaded machine's kernel to be held and asked about.
const Wait = 10 * time.Second

// Client is one decider connection. Conn is there for what a test does to
// the connection itself (close it, write garbage).
type Client struct {
	Conn net.Conn
	r    *bufio.Reader
}

// Dial connects to the decider socket at path and closes the connection
// when the test ends. The server takes a decider on asynchronously: the
// caller waits for that in its own way (the server's state or log).
func Dial(t testing.TB, path string) *Client {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &Client{Conn: c, r: bufio.NewReader(c)}
}

// Line reads the next line the server sends within wait; the error is the
// read's (a timeout when none came).
func (c *Client) Line(wait time.Duration) ([]byte, error) {
	_ = c.Conn.SetReadDeadline(time.Now().Add(wait))
	return c.r.ReadBytes('\n')
}

// Question is the next question, within Wait.
func (c *Client) Question(t testing.TB) shieldbundle.Held {
	t.Helper()
	line, err := c.Line(Wait)
	if err != nil {
		t.Fatal(err)
	}
	h, err := shieldbundle.ParseHeld(line)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// NoQuestion fails the test if a line comes within wait.
func (c *Client) NoQuestion(t testing.TB, wait time.Duration, why string) {
	t.Helper()
	if line, err := c.Line(wait); err == nil {
		t.Fatalf("%s: %s", why, line)
	}
}

// Answer sends the decision verdict for question id.
func (c *Client) Answer(t testing.TB, id uint64, verdict string) {
	t.Helper()
	line, err := shieldbundle.MarshalLine(shieldbundle.Decision{ID: id, Verdict: verdict})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Conn.Write(line); err != nil {
		t.Fatal(err)
	}
}
