package resolver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// hostAddrsMaxAge is how long a listing of the host's addresses is used
// before the next learned answer asks the kernel again.
const hostAddrsMaxAge = 5 * time.Second

// hostAddrs knows the addresses of the host's network namespace, read
// through a NETLINK_ROUTE socket the hook created there (fd FdHostRoute)
// before it forked the resolver into the container's namespace. A learned
// address that is one of them would open the host's own services to the
// container: traffic from the container leaves through the host's stack
// (slirp4netns, pasta) or is routed by it (a bridge), and a connection to
// an address of the host ends at the host, on every port its services
// bind there or on 0.0.0.0 (docs/shield-resolver.md, Learned addresses).
// These addresses are often not in any special range (a public uplink
// address, the host end of a veth), so ruleset.IsSpecial alone misses
// them.
type hostAddrs struct {
	mu      sync.Mutex
	fd      int
	seq     uint32
	addrs   map[netip.Addr]struct{}
	fetched time.Time
	now     func() time.Time
}

func newHostAddrs(fd int) (*hostAddrs, error) {
	// A bound on every receive: a dump never blocks the learner for long.
	tv := unix.Timeval{Sec: 1}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return nil, fmt.Errorf("host route socket: %w", err)
	}
	h := &hostAddrs{fd: fd, now: time.Now}
	if err := h.refresh(); err != nil {
		return nil, err
	}
	return h, nil
}

// contains reports whether a is an address of the host (IPv4-mapped
// addresses judged as the IPv4 address). A listing that cannot be renewed
// counts every address as the host's: refusing to learn fails closed.
func (h *hostAddrs) contains(a netip.Addr) bool {
	a = a.Unmap()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.now().Sub(h.fetched) > hostAddrsMaxAge {
		if err := h.refreshLocked(); err != nil {
			return true
		}
	}
	_, ok := h.addrs[a]
	return ok
}

func (h *hostAddrs) refresh() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.refreshLocked()
}

// refreshLocked dumps the host namespace's addresses (RTM_GETADDR).
func (h *hostAddrs) refreshLocked() error {
	h.seq++
	// nlmsghdr (host byte order) and an ifaddrmsg asking for every family.
	req := make([]byte, unix.NLMSG_HDRLEN+unix.SizeofIfAddrmsg)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], unix.RTM_GETADDR)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(req[8:], h.seq)
	req[unix.NLMSG_HDRLEN] = unix.AF_UNSPEC
	if err := unix.Sendto(h.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("list host addresses: %w", err)
	}
	addrs := map[netip.Addr]struct{}{}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(h.fd, buf, 0)
		if err != nil {
			return fmt.Errorf("list host addresses: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("list host addresses: %w", err)
		}
		for i := range msgs {
			m := &msgs[i]
			if m.Header.Seq != h.seq {
				continue // the rest of an earlier, abandoned dump
			}
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				h.addrs, h.fetched = addrs, h.now()
				return nil
			case unix.NLMSG_ERROR:
				return errors.New("list host addresses: netlink error")
			case unix.RTM_NEWADDR:
				attrs, err := syscall.ParseNetlinkRouteAttr(m)
				if err != nil {
					continue
				}
				for _, at := range attrs {
					if at.Attr.Type != unix.IFA_ADDRESS && at.Attr.Type != unix.IFA_LOCAL {
						continue
					}
					if a, ok := netip.AddrFromSlice(at.Value); ok {
						addrs[a.Unmap()] = struct{}{}
					}
				}
			}
		}
	}
}

func (h *hostAddrs) close() { _ = unix.Close(h.fd) }
