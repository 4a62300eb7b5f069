// Command nfprobe is run inside a test container in interactive mode
// (runner/e2e/attack_test.go): it tries, through netfilter's own netlink
// protocol, what would undo the shield from inside — bind the NFQUEUE
// queue that holds connections for the decider (and so accept its own),
// bind the NFLOG group the refused-traffic records are read from, delete
// the shield's nftables table — and opens a raw IPv4 socket. It prints
// the outcome of each as one JSON object: "ok", or the errno's name. It
// also sets a packet mark on a socket (SO_MARK), which would let a task
// forge the resolver's mark (DNS to the forwarder) or interactive mode's
// refused mark.
//
// Every request goes to the kernel of the container's own network
// namespace; nothing is sent on a network.
package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"syscall"
)

const (
	subsysQueue    = 3  // NFNL_SUBSYS_QUEUE
	subsysULog     = 4  // NFNL_SUBSYS_ULOG (NFLOG)
	subsysNFTables = 10 // NFNL_SUBSYS_NFTABLES

	queueNum = 100 // ruleset.NFQueueNum
	logGroup = 100 // the ruleset's NFLOG group
)

func main() {
	out := map[string]string{
		"nfqueue_bind":     request(nfMsg(subsysQueue<<8|2, 0, queueNum, attr(1, []byte{1, 0, 0, 0}))),
		"nflog_bind":       request(nfMsg(subsysULog<<8|1, 0, logGroup, attr(1, []byte{1}))),
		"nft_delete_table": request(batch(nfMsg(subsysNFTables<<8|2, 1, 0, attr(1, append([]byte("terok_shield"), 0))))),
		"raw_socket":       rawSocket(),
		"so_mark":          soMark(0x7e5d0052), // ruleset.RefusedMark
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		os.Exit(1)
	}
}

func attr(typ uint16, data []byte) []byte {
	b := make([]byte, 4, 4+len(data)+3)
	binary.LittleEndian.PutUint16(b, uint16(4+len(data)))
	binary.LittleEndian.PutUint16(b[2:], typ)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

var seq uint32

// nfMsg is one nfnetlink request (NLM_F_REQUEST|NLM_F_ACK) with its
// nfgenmsg (family, version 0, res_id big-endian).
func nfMsg(typ uint16, family uint8, resID uint16, attrs []byte) []byte {
	seq++
	b := make([]byte, 20, 20+len(attrs))
	binary.LittleEndian.PutUint16(b[4:], typ)
	binary.LittleEndian.PutUint16(b[6:], 1|4)
	binary.LittleEndian.PutUint32(b[8:], seq)
	b[16] = family
	binary.BigEndian.PutUint16(b[18:], resID)
	b = append(b, attrs...)
	binary.LittleEndian.PutUint32(b, uint32(len(b)))
	return b
}

// batch wraps an nf_tables message in NFNL_MSG_BATCH_BEGIN/END.
func batch(msg []byte) []byte {
	begin := nfMsg(0x10, 0, subsysNFTables, nil)
	end := nfMsg(0x11, 0, subsysNFTables, nil)
	return append(append(begin, msg...), end...)
}

// request sends msgs on a NETLINK_NETFILTER socket and returns the first
// error the kernel acknowledges, "ok" when every ack is a success.
func request(msgs []byte) string {
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, 12)
	if err != nil {
		return "socket: " + errName(err)
	}
	defer syscall.Close(fd)
	tv := syscall.Timeval{Sec: 2}
	_ = syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)
	if err := syscall.Sendto(fd, msgs, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return "send: " + errName(err)
	}
	buf := make([]byte, 8192)
	acks := 0
	for acks < 4 {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil {
			if acks > 0 {
				return "ok"
			}
			return "recv: " + errName(err)
		}
		for b := buf[:n]; len(b) >= 16; {
			l := int(binary.LittleEndian.Uint32(b))
			if l < 16 || l > len(b) {
				break
			}
			if binary.LittleEndian.Uint16(b[4:]) == syscall.NLMSG_ERROR && l >= 20 {
				acks++
				if e := int32(binary.LittleEndian.Uint32(b[16:])); e != 0 {
					return errName(syscall.Errno(-e))
				}
			}
			b = b[(l+3)&^3:]
		}
	}
	return "ok"
}

func rawSocket() string {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
	if err != nil {
		return errName(err)
	}
	syscall.Close(fd)
	return "ok"
}

// soMark sets mark on a new UDP socket: the kernel allows it only with
// CAP_NET_ADMIN or CAP_NET_RAW over the netns.
func soMark(mark int) string {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM, 0)
	if err != nil {
		return "socket: " + errName(err)
	}
	defer syscall.Close(fd)
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_MARK, mark); err != nil {
		return errName(err)
	}
	return "ok"
}

func errName(err error) string {
	if e, ok := err.(syscall.Errno); ok {
		switch e {
		case syscall.EPERM:
			return "EPERM"
		case syscall.EACCES:
			return "EACCES"
		case syscall.EBUSY:
			return "EBUSY"
		case syscall.ENOENT:
			return "ENOENT"
		case syscall.EAFNOSUPPORT:
			return "EAFNOSUPPORT"
		case syscall.EPROTONOSUPPORT:
			return "EPROTONOSUPPORT"
		}
		return fmt.Sprintf("errno %d", int(e))
	}
	return err.Error()
}
