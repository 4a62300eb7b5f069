// Command sockprobe is run inside a test container to show what the
// sandbox's seccomp profile lets a task create (docs/seccomp.md): it calls
// socket() for every address family, socketpair(), socket(AF_NETLINK) for
// every netlink protocol and io_uring_setup(), and prints the outcome of
// each as one JSON object on stdout: "ok" when the kernel handed out a
// descriptor (closed again at once), else the errno's name and number.
//
// It only ever creates: it never connects, binds or sends on anything (an
// AF_VSOCK socket that connected would talk to the hypervisor, not to a host
// of the test's own).
//
// Built static (CGO_ENABLED=0) for amd64 and for 386: the 386 build takes
// the i386 system-call entry, where Go's syscall package multiplexes socket
// calls through socketcall(2), so one probe covers both the direct and the
// multiplexed way in.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"unsafe"
)

// families names every address family of Linux 6.x (include/linux/socket.h)
// with a socket type the family supports, so that without a filter the
// kernel's own answer is as close to "created" as the family allows.
var families = []struct {
	name string
	num  int
	typ  int
}{
	{"AF_UNSPEC", 0, syscall.SOCK_STREAM},
	{"AF_UNIX", 1, syscall.SOCK_STREAM},
	{"AF_INET", 2, syscall.SOCK_STREAM},
	{"AF_AX25", 3, syscall.SOCK_SEQPACKET},
	{"AF_IPX", 4, syscall.SOCK_DGRAM},
	{"AF_APPLETALK", 5, syscall.SOCK_DGRAM},
	{"AF_NETROM", 6, syscall.SOCK_SEQPACKET},
	{"AF_BRIDGE", 7, syscall.SOCK_DGRAM},
	{"AF_ATMPVC", 8, syscall.SOCK_DGRAM},
	{"AF_X25", 9, syscall.SOCK_SEQPACKET},
	{"AF_INET6", 10, syscall.SOCK_STREAM},
	{"AF_ROSE", 11, syscall.SOCK_SEQPACKET},
	{"AF_DECnet", 12, syscall.SOCK_SEQPACKET},
	{"AF_NETBEUI", 13, syscall.SOCK_DGRAM},
	{"AF_SECURITY", 14, syscall.SOCK_DGRAM},
	{"AF_KEY", 15, syscall.SOCK_RAW},
	{"AF_NETLINK", 16, syscall.SOCK_RAW},
	{"AF_PACKET", 17, syscall.SOCK_DGRAM},
	{"AF_ASH", 18, syscall.SOCK_DGRAM},
	{"AF_ECONET", 19, syscall.SOCK_DGRAM},
	{"AF_ATMSVC", 20, syscall.SOCK_DGRAM},
	{"AF_RDS", 21, syscall.SOCK_SEQPACKET},
	{"AF_SNA", 22, syscall.SOCK_DGRAM},
	{"AF_IRDA", 23, syscall.SOCK_DGRAM},
	{"AF_PPPOX", 24, syscall.SOCK_STREAM},
	{"AF_WANPIPE", 25, syscall.SOCK_RAW},
	{"AF_LLC", 26, syscall.SOCK_DGRAM},
	{"AF_IB", 27, syscall.SOCK_DGRAM},
	{"AF_MPLS", 28, syscall.SOCK_DGRAM},
	{"AF_CAN", 29, syscall.SOCK_RAW},
	{"AF_TIPC", 30, syscall.SOCK_RDM},
	{"AF_BLUETOOTH", 31, syscall.SOCK_SEQPACKET},
	{"AF_IUCV", 32, syscall.SOCK_STREAM},
	{"AF_RXRPC", 33, syscall.SOCK_DGRAM},
	{"AF_ISDN", 34, syscall.SOCK_RAW},
	{"AF_PHONET", 35, syscall.SOCK_DGRAM},
	{"AF_IEEE802154", 36, syscall.SOCK_DGRAM},
	{"AF_CAIF", 37, syscall.SOCK_SEQPACKET},
	{"AF_ALG", 38, syscall.SOCK_SEQPACKET},
	{"AF_NFC", 39, syscall.SOCK_SEQPACKET},
	{"AF_VSOCK", 40, syscall.SOCK_STREAM},
	{"AF_KCM", 41, syscall.SOCK_DGRAM},
	{"AF_QIPCRTR", 42, syscall.SOCK_DGRAM},
	{"AF_SMC", 43, syscall.SOCK_STREAM},
	{"AF_XDP", 44, syscall.SOCK_RAW},
	{"AF_MCTP", 45, syscall.SOCK_DGRAM},
	{"AF_46", 46, syscall.SOCK_STREAM},
	{"AF_255", 255, syscall.SOCK_STREAM},
}

// netlinkProtocols are the netlink protocol numbers worth a line each; the
// others (up to MAX_LINKS 32) are reported under their number.
var netlinkNames = map[int]string{
	0: "NETLINK_ROUTE", 2: "NETLINK_USERSOCK", 4: "NETLINK_SOCK_DIAG", 6: "NETLINK_XFRM",
	7: "NETLINK_SELINUX", 9: "NETLINK_AUDIT", 10: "NETLINK_FIB_LOOKUP", 11: "NETLINK_CONNECTOR",
	12: "NETLINK_NETFILTER", 15: "NETLINK_KOBJECT_UEVENT", 16: "NETLINK_GENERIC",
}

// Report is the probe's output.
type Report struct {
	Arch string `json:"arch"`
	// Socket is socket(family, type, 0) through the Go runtime's own entry
	// (the direct syscall on amd64, socketcall(2) on 386).
	Socket map[string]string `json:"socket"`
	// Direct386 is socket() through the direct i386 syscall number 359
	// (386 build only).
	Direct386 map[string]string `json:"socket_direct_386,omitempty"`
	// HighBits is socket() with bits above the 32-bit int set in the family
	// register: the kernel reads only the low 32 bits (amd64 build only).
	HighBits map[string]string `json:"socket_high_bits,omitempty"`
	// Socketpair is socketpair(family, SOCK_STREAM, 0).
	Socketpair map[string]string `json:"socketpair"`
	// Netlink is socket(AF_NETLINK, SOCK_RAW, protocol).
	Netlink map[string]string `json:"netlink"`
	// IOURing is io_uring_setup(1, &params).
	IOURing string `json:"io_uring_setup"`
	// Inet is socket(AF_INET or AF_INET6, type, protocol) for the
	// transports of inetProbes.
	Inet map[string]string `json:"inet"`
}

// inetProbes are IP transports by family, type and protocol: the ones a
// task uses, and the ones whose kernel modules socket() loads on demand
// on a distribution kernel (docs/seccomp.md, Decisions and reasons).
// UDP-Lite is built into most kernels (this one too), so it shows the
// filter even where the modules are missing.
var inetProbes = []struct {
	name            string
	fam, typ, proto int
}{
	{"AF_INET/STREAM/TCP", syscall.AF_INET, syscall.SOCK_STREAM, syscall.IPPROTO_TCP},
	{"AF_INET/STREAM/MPTCP", syscall.AF_INET, syscall.SOCK_STREAM, 262},
	{"AF_INET/DGRAM/UDP", syscall.AF_INET, syscall.SOCK_DGRAM, syscall.IPPROTO_UDP},
	{"AF_INET6/STREAM/0", syscall.AF_INET6, syscall.SOCK_STREAM, 0},
	{"AF_INET6/DGRAM/UDP", syscall.AF_INET6, syscall.SOCK_DGRAM, syscall.IPPROTO_UDP},
	{"AF_INET/DGRAM/UDPLITE", syscall.AF_INET, syscall.SOCK_DGRAM, 136},
	{"AF_INET6/DGRAM/UDPLITE", syscall.AF_INET6, syscall.SOCK_DGRAM, 136},
	{"AF_INET/STREAM/SCTP", syscall.AF_INET, syscall.SOCK_STREAM, 132},
	{"AF_INET/SEQPACKET/SCTP", syscall.AF_INET, syscall.SOCK_SEQPACKET, 132},
	{"AF_INET6/STREAM/SCTP", syscall.AF_INET6, syscall.SOCK_STREAM, 132},
	{"AF_INET/DCCP/DCCP", syscall.AF_INET, 6, 33},
	{"AF_INET/DGRAM/L2TP", syscall.AF_INET, syscall.SOCK_DGRAM, 115},
	{"AF_INET/STREAM/SMC", syscall.AF_INET, syscall.SOCK_STREAM, 256},
}

func outcome(fd uintptr, errno syscall.Errno) string {
	if errno != 0 {
		return fmt.Sprintf("%s(%d)", errnoName(errno), int(errno))
	}
	_ = syscall.Close(int(fd))
	return "ok"
}

func errnoName(e syscall.Errno) string {
	switch e {
	case syscall.EAFNOSUPPORT:
		return "EAFNOSUPPORT"
	case syscall.ENOSYS:
		return "ENOSYS"
	case syscall.EPERM:
		return "EPERM"
	case syscall.EACCES:
		return "EACCES"
	case syscall.EINVAL:
		return "EINVAL"
	case syscall.EPROTONOSUPPORT:
		return "EPROTONOSUPPORT"
	case syscall.ESOCKTNOSUPPORT:
		return "ESOCKTNOSUPPORT"
	case syscall.EOPNOTSUPP:
		return "EOPNOTSUPP"
	case syscall.EPROTOTYPE:
		return "EPROTOTYPE"
	case syscall.ENOENT:
		return "ENOENT"
	case syscall.ENODEV:
		return "ENODEV"
	}
	return "errno"
}

// goSocket is socket() the way the Go runtime makes it on this GOARCH.
func goSocket(family, typ, proto int) string {
	fd, err := syscall.Socket(family, typ|syscall.SOCK_CLOEXEC, proto)
	if err != nil {
		errno, ok := err.(syscall.Errno)
		if !ok {
			return "error: " + err.Error()
		}
		return outcome(0, errno)
	}
	return outcome(uintptr(fd), 0)
}

func goSocketpair(family int) string {
	fds, err := syscall.Socketpair(family, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		errno, ok := err.(syscall.Errno)
		if !ok {
			return "error: " + err.Error()
		}
		return outcome(0, errno)
	}
	_ = syscall.Close(fds[1])
	return outcome(uintptr(fds[0]), 0)
}

// ioURingParams is struct io_uring_params (120 bytes); the kernel fills it.
type ioURingParams [120]byte

func ioURingSetup() string {
	const sysIOURingSetup = 425 // the same number on amd64 and i386
	var p ioURingParams
	fd, _, errno := syscall.RawSyscall(sysIOURingSetup, 1, uintptr(unsafe.Pointer(&p)), 0)
	return outcome(fd, errno)
}

func main() {
	r := Report{
		Arch:       runtime.GOARCH,
		Socket:     map[string]string{},
		Socketpair: map[string]string{},
		Netlink:    map[string]string{},
	}
	for _, f := range families {
		r.Socket[f.name] = goSocket(f.num, f.typ, 0)
		r.Socketpair[f.name] = goSocketpair(f.num)
	}
	for p := 0; p < 32; p++ {
		name, ok := netlinkNames[p]
		if !ok {
			name = fmt.Sprintf("NETLINK_%d", p)
		}
		r.Netlink[name] = goSocket(syscall.AF_NETLINK, syscall.SOCK_RAW, p)
	}
	r.Inet = map[string]string{}
	for _, p := range inetProbes {
		r.Inet[p.name] = goSocket(p.fam, p.typ, p.proto)
	}
	r.IOURing = ioURingSetup()
	extra(&r)
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	if err := enc.Encode(r); err != nil {
		fmt.Fprintln(os.Stderr, "sockprobe:", err)
		os.Exit(1)
	}
}
