// Command srrprobe is run inside a test container: it sends UDP datagrams
// to -dst with an IPv4 loose source route through -hop (IP_OPTIONS). The
// packet's IP header then names the first hop,
// so a firewall that matches the destination address sees -hop, an
// allowed address, while the datagram's last destination is -dst
// (docs/security-model.md, Second adversarial pass, December 2026). It
// prints one JSON object: the setsockopt and send outcomes.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"syscall"
)

func main() {
	hop := flag.String("hop", "", "first hop (an address the firewall allows)")
	dst := flag.String("dst", "", "last destination")
	port := flag.Int("port", 9999, "UDP port at dst")
	n := flag.Int("n", 5, "datagrams to send")
	payload := flag.String("payload", "srr", "datagram payload")
	plain := flag.Bool("plain", false, "send without the source route (the control)")
	flag.Parse()
	h, err1 := netip.ParseAddr(*hop)
	d, err2 := netip.ParseAddr(*dst)
	if err1 != nil || err2 != nil || !h.Is4() || !d.Is4() {
		fmt.Fprintln(os.Stderr, "usage: srrprobe -hop IPv4 -dst IPv4 [-port N] [-n N] [-payload S] [-plain]")
		os.Exit(2)
	}
	out := map[string]any{}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "srrprobe: socket:", err)
		os.Exit(1)
	}
	defer syscall.Close(fd)
	if !*plain {
		a := h.As4()
		// NOP, then LSRR (type 131), length 7, pointer 4, the hop: the
		// kernel takes the first address as the next hop and puts the
		// destination at the end of the route when it builds the header.
		opt := []byte{1, 131, 7, 4, a[0], a[1], a[2], a[3]}
		if err := syscall.SetsockoptString(fd, syscall.IPPROTO_IP, syscall.IP_OPTIONS, string(opt)); err != nil {
			out["setsockopt"] = err.Error()
		} else {
			out["setsockopt"] = "ok"
		}
	}
	sent := 0
	var last string
	for i := 0; i < *n; i++ {
		if err := syscall.Sendto(fd, []byte(*payload), 0, &syscall.SockaddrInet4{Port: *port, Addr: d.As4()}); err != nil {
			last = err.Error()
			continue
		}
		sent++
	}
	out["sent"], out["error"] = sent, last
	_ = json.NewEncoder(os.Stdout).Encode(out)
}
