// Command udpflood is copied into a test container by the e2e shield tests
// (runner/e2e/refused_test.go): it sends -n UDP datagrams to -host, each
// to another port from -port on (a new destination for the shield's
// refused-traffic limiter every time), and prints how many it sent as one
// JSON line. A refused datagram fails its write (EPERM): counted, not fatal.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

func main() {
	host := flag.String("host", "", "destination address")
	port := flag.Int("port", 20000, "first destination port")
	n := flag.Int("n", 10000, "datagrams to send")
	flag.Parse()
	if *host == "" || *n < 0 || *port < 1 || *port > 65535 {
		fmt.Fprintln(os.Stderr, "udpflood: -host is required, -n >= 0, 1 <= -port <= 65535 (example: udpflood -host 198.51.100.2 -n 10000)")
		os.Exit(2)
	}
	start := time.Now()
	sent, refused := 0, 0
	for i := 0; i < *n; i++ {
		p := 1 + (*port-1+i)%65535
		c, err := net.Dial("udp", net.JoinHostPort(*host, strconv.Itoa(p)))
		if err != nil {
			fmt.Fprintln(os.Stderr, "udpflood:", err)
			os.Exit(1)
		}
		if _, err := c.Write([]byte("x")); err != nil {
			refused++
		}
		_ = c.Close()
		sent++
	}
	_ = json.NewEncoder(os.Stdout).Encode(map[string]any{"sent": sent, "refused": refused, "seconds": time.Since(start).Seconds()})
}
