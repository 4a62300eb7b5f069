// Command dnsflood is copied into a test container by the e2e escape tests
// (runner/e2e/escape_test.go, "dns log bound"): it sends -n UDP queries for
// distinct names below -zone to -server with -workers in flight and prints
// how many got any answer, as one JSON line. It builds its queries by hand
// (RFC 1035 §4.1) so the probe needs nothing outside the standard library.
package main

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	server := flag.String("server", "127.0.0.1:53", "resolver address")
	zone := flag.String("zone", "flood.invalid", "names are q<N>.<zone>")
	n := flag.Int("n", 20000, "queries to send")
	workers := flag.Int("workers", 32, "queries in flight")
	timeout := flag.Duration("timeout", 500*time.Millisecond, "wait for each answer")
	flag.Parse()
	if *n < 0 || *workers < 1 {
		fmt.Fprintln(os.Stderr, "dnsflood: -n must be >= 0 and -workers >= 1")
		os.Exit(2)
	}
	var next, answered, unanswered atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("udp", *server)
			if err != nil {
				fmt.Fprintln(os.Stderr, "dnsflood:", err)
				os.Exit(1)
			}
			defer c.Close()
			buf := make([]byte, 1500)
			for {
				i := next.Add(1) - 1
				if i >= int64(*n) {
					return
				}
				q := query(uint16(i), "q"+strconv.FormatInt(i, 10)+"."+*zone)
				if _, err := c.Write(q); err != nil {
					unanswered.Add(1)
					continue
				}
				_ = c.SetReadDeadline(time.Now().Add(*timeout))
				if m, err := c.Read(buf); err == nil && m >= 12 {
					answered.Add(1)
				} else {
					unanswered.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	_ = json.NewEncoder(os.Stdout).Encode(map[string]any{
		"sent": *n, "answered": answered.Load(), "unanswered": unanswered.Load(),
		"seconds": time.Since(start).Seconds(),
	})
}

// query is a standard recursive query for the A record of name.
func query(id uint16, name string) []byte {
	b := make([]byte, 12, 64)
	binary.BigEndian.PutUint16(b[0:], id)
	binary.BigEndian.PutUint16(b[2:], 0x0100) // RD
	binary.BigEndian.PutUint16(b[4:], 1)      // QDCOUNT
	for _, label := range strings.Split(name, ".") {
		b = append(b, byte(len(label)))
		b = append(b, label...)
	}
	b = append(b, 0, 0, 1, 0, 1) // root, QTYPE A, QCLASS IN
	return b
}
