// Command sysprobe is copied into a test container by the e2e escape tests
// (runner/e2e/escape_test.go, "adversarial"): it makes system calls a task
// has no use for and that widen its reach beyond the container (the kernel
// keyrings the host keeps keys in, BPF, perf, userfaultfd, mount, module
// loading, open_by_handle_at) and prints, as one JSON object, "ok" or the
// errno per call. `sysprobe -read DESC` instead prints the payload of the
// "user" key DESC of the user keyring, if it can. Every call is harmless when it succeeds: it reads an id,
// adds a key to the probe's own process keyring, mounts on a directory
// of its own and unmounts, or fails on a deliberately
// invalid argument after the kernel's permission check.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"syscall"
	"unsafe"
)

func outcome(r uintptr, errno syscall.Errno) string {
	if errno != 0 {
		return fmt.Sprintf("%s(%d)", errno.Error(), int(errno))
	}
	return "ok"
}

func cstr(s string) uintptr {
	b := append([]byte(s), 0)
	return uintptr(unsafe.Pointer(&b[0]))
}

func main() {
	if len(os.Args) == 3 && os.Args[1] == "-read" {
		os.Exit(readKey(os.Args[2]))
	}
	const (
		keySpecUserKeyring    = ^uintptr(3) // -4
		keySpecProcessKeyring = ^uintptr(1) // -2
		keyctlGetKeyringID    = 0
	)
	out := map[string]string{}
	// keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_USER_KEYRING, 0): the user
	// keyring is shared by every process of the uid in the user namespace.
	r, _, e := syscall.Syscall(syscall.SYS_KEYCTL, keyctlGetKeyringID, keySpecUserKeyring, 0)
	out["keyctl"] = outcome(r, e)
	payload := []byte("x")
	r, _, e = syscall.Syscall6(syscall.SYS_ADD_KEY, cstr("user"), cstr("terok-sysprobe"), uintptr(unsafe.Pointer(&payload[0])), 1, keySpecProcessKeyring, 0)
	out["add_key"] = outcome(r, e)
	r, _, e = syscall.Syscall6(syscall.SYS_REQUEST_KEY, cstr("user"), cstr("terok-sysprobe-none"), 0, 0, 0, 0)
	out["request_key"] = outcome(r, e)
	// bpf(BPF_MAP_CREATE, zeroed attr): EINVAL past the permission check.
	var attr [128]byte
	r, _, e = syscall.Syscall(321, 0, uintptr(unsafe.Pointer(&attr[0])), uintptr(len(attr)))
	out["bpf"] = outcome(r, e)
	// perf_event_open with a zeroed attr.
	r, _, e = syscall.Syscall6(syscall.SYS_PERF_EVENT_OPEN, uintptr(unsafe.Pointer(&attr[0])), 0, ^uintptr(0), ^uintptr(0), 0, 0)
	out["perf_event_open"] = outcome(r, e)
	r, _, e = syscall.Syscall(323, 0, 0, 0) // userfaultfd
	if e == 0 {
		_ = syscall.Close(int(r))
	}
	out["userfaultfd"] = outcome(r, e)
	// mount a tmpfs on a directory of the probe's own (nobody else looks
	// there), unmounted again at once.
	if dir, err := os.MkdirTemp("", "sysprobe-"); err != nil {
		out["mount"] = "error: " + err.Error()
	} else {
		r, _, e = syscall.Syscall6(syscall.SYS_MOUNT, cstr("none"), cstr(dir), cstr("tmpfs"), 0, 0, 0)
		if e == 0 {
			_ = syscall.Unmount(dir, 0)
		}
		_ = os.Remove(dir)
		out["mount"] = outcome(r, e)
	}
	// init_module with an empty image: EPERM without CAP_SYS_MODULE.
	r, _, e = syscall.Syscall(syscall.SYS_INIT_MODULE, 0, 0, cstr(""))
	out["init_module"] = outcome(r, e)
	// open_by_handle_at(AT_FDCWD, zeroed handle, O_RDONLY).
	var handle [16]byte
	r, _, e = syscall.Syscall(304, ^uintptr(99), uintptr(unsafe.Pointer(&handle[0])), 0)
	out["open_by_handle_at"] = outcome(r, e)
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "sysprobe:", err)
		os.Exit(1)
	}
}

// readKey searches the user keyring for a "user" key named desc and prints
// its payload: what a task could take of a key its host user cached there.
func readKey(desc string) int {
	const keySpecUserKeyring = ^uintptr(3) // -4
	const keyctlSearch, keyctlRead = 10, 11
	id, _, e := syscall.Syscall6(syscall.SYS_KEYCTL, keyctlSearch, keySpecUserKeyring, cstr("user"), cstr(desc), 0, 0)
	if e != 0 {
		fmt.Println("search:", e.Error())
		return 1
	}
	buf := make([]byte, 4096)
	n, _, e := syscall.Syscall6(syscall.SYS_KEYCTL, keyctlRead, id, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0)
	if e != 0 {
		fmt.Println("read:", e.Error())
		return 1
	}
	if int(n) < len(buf) {
		buf = buf[:n]
	}
	fmt.Printf("payload:%s\n", buf)
	return 0
}
