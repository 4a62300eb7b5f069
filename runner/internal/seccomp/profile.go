// Package seccomp builds, installs and checks the sandbox's seccomp profile
// (docs/seccomp.md): podman's installed default with its socket rules
// replaced by an allowlist of address families, socketcall(2) and io_uring
// refused. The profile is generated from the host's own podman default at
// `shield setup` time, never shipped as a copy, so podman's own fixes reach
// it with the next setup.
package seccomp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Linux errno values the profile returns.
const (
	errnoEINVAL          = 22
	errnoENOSYS          = 38
	errnoEPROTONOSUPPORT = 93
	errnoESOCKTNOSUPPORT = 94
	errnoEAFNOSUPPORT    = 97
)

// Address families (include/linux/socket.h).
const (
	afUnix    = 1
	afInet    = 2
	afInet6   = 10
	afNetlink = 16
	afVsock   = 40
	// afLimit is AF_MAX of Linux 6.x: families at or above it do not exist
	// yet; one range rule refuses them so a future family starts refused.
	afLimit = 46
)

// Netlink protocols (include/uapi/linux/netlink.h).
const (
	netlinkRoute    = 0
	netlinkSockDiag = 4
	netlinkAudit    = 9
	// netlinkLimit is MAX_LINKS: no protocol number reaches it.
	netlinkLimit = 32
)

// CommentPrefix starts the comment of every rule this package adds; doctor
// and Verify use it to tell our profile from podman's own.
const CommentPrefix = "terok-sandbox: "

// replaced are the syscalls whose rules in podman's profile are dropped:
// their handling is entirely ours.
var replaced = map[string]bool{
	"socket":            true,
	"socketpair":        true,
	"socketcall":        true,
	"io_uring_setup":    true,
	"io_uring_enter":    true,
	"io_uring_register": true,
	// The kernel keyrings: podman's default allows keyctl, and a rootful
	// container's root shares the user keyring of the host's root, where
	// the credential store caches its key-encryption key
	// (docs/secrets-at-rest.md, Key sources; runner/e2e escape test
	// "kernel keyring").
	"keyctl":      true,
	"add_key":     true,
	"request_key": true,
}

// Arg is one argument comparison of a rule (the OCI runtime-spec shape).
// For SCMP_CMP_MASKED_EQ, Value is the mask and ValueTwo the datum.
type Arg struct {
	Index    uint   `json:"index"`
	Value    uint64 `json:"value"`
	ValueTwo uint64 `json:"valueTwo"`
	Op       string `json:"op"`
}

// Filter is a rule's includes/excludes condition, evaluated by podman when
// it turns the profile into the container's spec.
type Filter struct {
	Caps      []string        `json:"caps,omitempty"`
	Arches    []string        `json:"arches,omitempty"`
	MinKernel json.RawMessage `json:"minKernel,omitempty"`
}

func (f *Filter) empty() bool {
	return f == nil || (len(f.Caps) == 0 && len(f.Arches) == 0 && len(f.MinKernel) == 0)
}

// Rule is one entry of the profile's syscalls list.
type Rule struct {
	Name     string   `json:"name,omitempty"`
	Names    []string `json:"names,omitempty"`
	Action   string   `json:"action"`
	ErrnoRet *uint    `json:"errnoRet,omitempty"`
	Args     []Arg    `json:"args,omitempty"`
	Comment  string   `json:"comment,omitempty"`
	Includes *Filter  `json:"includes,omitempty"`
	Excludes *Filter  `json:"excludes,omitempty"`
}

// allNames is Name and Names together.
func (r Rule) allNames() []string {
	if r.Name == "" {
		return r.Names
	}
	return append([]string{r.Name}, r.Names...)
}

// Profile is the parsed part of a profile this package reasons about.
type Profile struct {
	DefaultAction   string `json:"defaultAction"`
	DefaultErrnoRet *uint  `json:"defaultErrnoRet"`
	Syscalls        []Rule `json:"syscalls"`
	// byName lists, per syscall, the indexes of the rules naming it;
	// exp holds each rule as runc hands it to libseccomp (expand).
	byName map[string][]int
	exp    [][]expanded
}

// Parse reads a profile and checks the fields podman needs.
func Parse(data []byte) (Profile, error) {
	var p Profile
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&p); err != nil {
		return Profile{}, fmt.Errorf("not a seccomp profile (JSON): %w", err)
	}
	if dec.More() {
		return Profile{}, errors.New("not a seccomp profile: data after the JSON object")
	}
	if p.DefaultAction == "" {
		return Profile{}, errors.New("not a seccomp profile: no defaultAction")
	}
	if err := validAction(p.DefaultAction); err != nil {
		return Profile{}, fmt.Errorf("defaultAction: %w", err)
	}
	p.byName = map[string][]int{}
	for i, r := range p.Syscalls {
		for _, n := range r.allNames() {
			p.byName[n] = append(p.byName[n], i)
		}
		if len(r.allNames()) == 0 {
			return Profile{}, fmt.Errorf("syscalls[%d] names no syscall", i)
		}
		if err := validAction(r.Action); err != nil {
			return Profile{}, fmt.Errorf("syscalls[%d] (%s): %w", i, r.allNames()[0], err)
		}
		for _, a := range r.Args {
			if a.Index > 5 {
				return Profile{}, fmt.Errorf("syscalls[%d] (%s): argument index %d out of range 0-5", i, r.allNames()[0], a.Index)
			}
			if _, ok := compare[a.Op]; !ok {
				return Profile{}, fmt.Errorf("syscalls[%d] (%s): unknown comparison %q", i, r.allNames()[0], a.Op)
			}
		}
	}
	p.exp = make([][]expanded, len(p.Syscalls))
	for i, r := range p.Syscalls {
		p.exp[i] = expand(i, r)
	}
	return p, nil
}

func validAction(a string) error {
	switch a {
	case "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP",
		"SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY":
		return nil
	case "":
		return errors.New("no action")
	}
	return fmt.Errorf("unknown action %q", a)
}

// Transform turns podman's default profile into the sandbox's: every rule
// naming one of the replaced syscalls loses those names (a rule left with
// no name is dropped), then the sandbox's own socket, socketpair,
// socketcall and io_uring rules are appended, and the 32-bit compatibility
// ABIs leave the architecture map (see nativeOnly). Every other field of the
// input is kept as it is. podman's refusal of NETLINK_AUDIT is carried
// over (same errno, same capability condition); without one, NETLINK_AUDIT
// is refused with EINVAL unless the container holds CAP_AUDIT_WRITE.
func Transform(in []byte) ([]byte, error) {
	p, err := Parse(in)
	if err != nil {
		return nil, err
	}
	// The raw form keeps every field we do not model, at both levels.
	var top map[string]json.RawMessage
	if err := json.Unmarshal(in, &top); err != nil {
		return nil, fmt.Errorf("not a seccomp profile (JSON): %w", err)
	}
	var raw []map[string]json.RawMessage
	if s, ok := top["syscalls"]; ok && !bytes.Equal(bytes.TrimSpace(s), []byte("null")) {
		if err := json.Unmarshal(s, &raw); err != nil {
			return nil, fmt.Errorf("syscalls: %w", err)
		}
	}
	if len(raw) != len(p.Syscalls) {
		return nil, errors.New("syscalls: inconsistent list")
	}
	if err := nativeOnly(top); err != nil {
		return nil, err
	}
	audit := auditRefusal(p.Syscalls)
	out := make([]any, 0, len(raw)+64)
	for i, r := range p.Syscalls {
		if !namesAny(r, replaced) {
			out = append(out, raw[i])
			continue
		}
		keep := keepNames(r.Names)
		keepName := r.Name != "" && !replaced[r.Name]
		if len(keep) == 0 && !keepName {
			continue
		}
		m := make(map[string]json.RawMessage, len(raw[i]))
		for k, v := range raw[i] {
			m[k] = v
		}
		delete(m, "name")
		if keepName {
			keep = append([]string{r.Name}, keep...)
		}
		names, err := json.Marshal(keep)
		if err != nil {
			return nil, err
		}
		m["names"] = names
		out = append(out, m)
	}
	for _, r := range ownRules(audit) {
		out = append(out, r)
	}
	syscalls, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encode syscalls: %w", err)
	}
	top["syscalls"] = syscalls
	doc, err := json.MarshalIndent(top, "", "\t")
	if err != nil {
		return nil, fmt.Errorf("encode profile: %w", err)
	}
	return append(doc, '\n'), nil
}

func namesAny(r Rule, set map[string]bool) bool {
	for _, n := range r.allNames() {
		if set[n] {
			return true
		}
	}
	return false
}

func keepNames(names []string) []string {
	var keep []string
	for _, n := range names {
		if !replaced[n] {
			keep = append(keep, n)
		}
	}
	return keep
}

// audit is how NETLINK_AUDIT sockets are refused.
type audit struct {
	errno    uint
	excludes *Filter
}

// auditRefusal finds podman's socket(AF_NETLINK, *, NETLINK_AUDIT) refusal.
func auditRefusal(rules []Rule) audit {
	a := audit{errno: errnoEINVAL, excludes: &Filter{Caps: []string{"CAP_AUDIT_WRITE"}}}
	for _, r := range rules {
		if r.Action != "SCMP_ACT_ERRNO" || !namesAny(r, map[string]bool{"socket": true}) {
			continue
		}
		var fam, proto bool
		for _, arg := range r.Args {
			fam = fam || (arg.Index == 0 && arg.Op == "SCMP_CMP_EQ" && arg.Value == afNetlink)
			proto = proto || (arg.Index == 2 && arg.Op == "SCMP_CMP_EQ" && arg.Value == netlinkAudit)
		}
		if fam && proto {
			if r.ErrnoRet != nil {
				a.errno = *r.ErrnoRet
			}
			if !r.Excludes.empty() {
				a.excludes = r.Excludes
			}
			return a
		}
	}
	return a
}

func errno(n uint) *uint { return &n }

func eq(index uint, v uint64) Arg  { return Arg{Index: index, Value: v, Op: "SCMP_CMP_EQ"} }
func geq(index uint, v uint64) Arg { return Arg{Index: index, Value: v, Op: "SCMP_CMP_GE"} }

// ownRules are the sandbox's rules. Two facts of runc and libseccomp shape
// them (docs/seccomp.md, "How the rules are evaluated"): runc turns a rule
// with two comparisons of the same argument into one rule per comparison
// (an OR), so every rule here compares each argument at most once; and
// libseccomp refuses two rules with the same comparisons but different
// actions, and lets a rule without comparisons override every conditional
// rule of that syscall — so the allowed and the refused values never
// overlap, and only socketcall and io_uring get unconditional rules.
func ownRules(a audit) []Rule {
	var rules []Rule
	add := func(names []string, action string, e *uint, comment string, args ...Arg) {
		rules = append(rules, Rule{Names: names, Action: action, ErrnoRet: e, Args: args, Comment: CommentPrefix + comment})
	}
	both := []string{"socket", "socketpair"}
	// The multiplexer's arguments sit behind a pointer a filter cannot
	// read, so it cannot be filtered by family: refused whole. It also
	// absorbs libseccomp's socketcall translations of the socket rules
	// below on the 32-bit x86 ABI, leaving those ABIs the direct,
	// filtered socket syscall.
	add([]string{"socketcall"}, "SCMP_ACT_ERRNO", errno(errnoENOSYS),
		"socketcall(2) hides its arguments from the filter; 32-bit programs must use the direct socket calls")
	add([]string{"io_uring_setup", "io_uring_enter", "io_uring_register"}, "SCMP_ACT_ERRNO", errno(errnoENOSYS),
		"io_uring can create sockets (IORING_OP_SOCKET) past the family filter; ENOSYS makes programs fall back to plain system calls")
	add([]string{"keyctl", "add_key", "request_key"}, "SCMP_ACT_ERRNO", errno(errnoENOSYS),
		"the kernel keyrings: a rootful container's root would share the host root's user keyring and the keys cached there")
	add([]string{"socket"}, "SCMP_ACT_ALLOW", nil, fmt.Sprintf("address family %d is allowed", afUnix), eq(0, afUnix))
	rules = append(rules, inetRules()...)
	add([]string{"socketpair"}, "SCMP_ACT_ALLOW", nil, "socketpair(AF_UNIX) is allowed", eq(0, afUnix))
	add([]string{"socket"}, "SCMP_ACT_ALLOW", nil, "NETLINK_ROUTE (addresses, routes, interfaces; getaddrinfo needs it)",
		eq(0, afNetlink), eq(2, netlinkRoute))
	add([]string{"socket"}, "SCMP_ACT_ALLOW", nil, "NETLINK_SOCK_DIAG (socket listings such as ss)",
		eq(0, afNetlink), eq(2, netlinkSockDiag))
	rules = append(rules,
		Rule{Names: []string{"socket"}, Action: "SCMP_ACT_ERRNO", ErrnoRet: errno(a.errno), Args: []Arg{eq(0, afNetlink), eq(2, netlinkAudit)},
			Excludes: a.excludes, Comment: CommentPrefix + "NETLINK_AUDIT is refused without CAP_AUDIT_WRITE (as podman's default)"},
		Rule{Names: []string{"socket"}, Action: "SCMP_ACT_ALLOW", Args: []Arg{eq(0, afNetlink), eq(2, netlinkAudit)},
			Includes: &Filter{Caps: append([]string(nil), a.excludes.Caps...)}, Comment: CommentPrefix + "NETLINK_AUDIT with CAP_AUDIT_WRITE (as podman's default)"})
	if len(a.excludes.Caps) == 0 {
		// podman's refusal named no capability: keep it unconditional.
		rules = rules[:len(rules)-1]
	}
	for p := uint64(0); p < netlinkLimit; p++ {
		if p == netlinkRoute || p == netlinkSockDiag || p == netlinkAudit {
			continue
		}
		add([]string{"socket"}, "SCMP_ACT_ERRNO", errno(errnoEPROTONOSUPPORT),
			fmt.Sprintf("netlink protocol %d is refused", p), eq(0, afNetlink), eq(2, p))
	}
	add([]string{"socket"}, "SCMP_ACT_ERRNO", errno(errnoEPROTONOSUPPORT), "netlink protocols beyond MAX_LINKS are refused",
		eq(0, afNetlink), geq(2, netlinkLimit))
	for f := uint64(0); f < afLimit; f++ {
		switch f {
		case afUnix:
			continue
		case afInet, afInet6, afNetlink:
			add([]string{"socketpair"}, "SCMP_ACT_ERRNO", errno(errnoEAFNOSUPPORT),
				fmt.Sprintf("socketpair of address family %d is refused", f), eq(0, f))
			continue
		}
		add(both, "SCMP_ACT_ERRNO", errno(errnoEAFNOSUPPORT), fmt.Sprintf("address family %d is refused", f), eq(0, f))
	}
	// Also catches a family register with bits above the 32-bit int set
	// (the kernel reads only the low half; the filter compares all 64 bits).
	add(both, "SCMP_ACT_ERRNO", errno(errnoEAFNOSUPPORT), "unknown address families are refused", geq(0, afLimit))
	return rules
}

// Socket types (include/linux/net.h); the type argument's low four bits
// (SOCK_TYPE_MASK), the rest are SOCK_CLOEXEC and SOCK_NONBLOCK.
const (
	sockStream    = 1
	sockDgram     = 2
	sockRaw       = 3
	sockSeqpacket = 5
	sockDCCP      = 6
	sockTypeMask  = 0xf
	sockCloexec   = 0o2000000
)

// inetProtocols are the IP protocols a task may open a socket of, per
// family and type (docs/seccomp.md, Decisions and reasons): 0 (the type's
// default), TCP and MPTCP for streams, UDP and the ping sockets' ICMP or
// ICMPv6 for datagrams.
var inetProtocols = map[uint64]map[uint64][]uint64{
	afInet:  {sockStream: {0, 6, 262}, sockDgram: {0, 17, 1}},
	afInet6: {sockStream: {0, 6, 262}, sockDgram: {0, 17, 58}},
}

// refusedInetProtocols are refused with EPROTONOSUPPORT, as by a kernel
// without them: the transports a distribution kernel has as modules that
// socket() loads on demand (DCCP, L2TP, SCTP, UDP-Lite, SMC over AF_INET).
// Any other protocol number gets the profile's default action.
var refusedInetProtocols = []uint64{33, 115, 132, 136, 256}

// inetRules narrow AF_INET and AF_INET6 to the socket types and protocols
// of inetProtocols, SOCK_RAW left to the kernel's CAP_NET_RAW check (the
// raw type loads no module). The type is compared under SOCK_TYPE_MASK,
// so the flags pass; the protocol is compared whole, so bits above the
// int the kernel reads match no allowed value. No two rules overlap.
func inetRules() []Rule {
	var rules []Rule
	add := func(action string, e *uint, comment string, args ...Arg) {
		rules = append(rules, Rule{Names: []string{"socket"}, Action: action, ErrnoRet: e, Args: args, Comment: CommentPrefix + comment})
	}
	typ := func(t uint64) Arg { return Arg{Index: 1, Value: sockTypeMask, ValueTwo: t, Op: "SCMP_CMP_MASKED_EQ"} }
	for _, f := range []uint64{afInet, afInet6} {
		for _, t := range []uint64{sockStream, sockDgram} {
			for _, p := range inetProtocols[f][t] {
				add("SCMP_ACT_ALLOW", nil, fmt.Sprintf("address family %d, socket type %d, protocol %d is allowed", f, t, p),
					eq(0, f), typ(t), eq(2, p))
			}
			for _, p := range refusedInetProtocols {
				add("SCMP_ACT_ERRNO", errno(errnoEPROTONOSUPPORT),
					fmt.Sprintf("address family %d, socket type %d: protocol %d is refused (its module would load on demand)", f, t, p),
					eq(0, f), typ(t), eq(2, p))
			}
		}
		for _, t := range []uint64{sockStream, sockDgram} {
			add("SCMP_ACT_ERRNO", errno(errnoEPROTONOSUPPORT),
				fmt.Sprintf("address family %d, socket type %d: a protocol with bits above the int is refused (the kernel would read only the low half)", f, t),
				eq(0, f), typ(t), geq(2, 1<<32))
		}
		add("SCMP_ACT_ALLOW", nil, fmt.Sprintf("address family %d, SOCK_RAW: the kernel's CAP_NET_RAW check decides", f),
			eq(0, f), typ(sockRaw))
		for t := uint64(0); t <= sockTypeMask; t++ {
			if t == sockStream || t == sockDgram || t == sockRaw {
				continue
			}
			add("SCMP_ACT_ERRNO", errno(errnoESOCKTNOSUPPORT),
				fmt.Sprintf("address family %d: socket type %d is refused (SCTP's and DCCP's modules would load on demand)", f, t),
				eq(0, f), typ(t))
		}
	}
	return rules
}

// nativeOnly empties every subArchitectures list of the architecture map
// and drops those architectures from a top-level architectures list. On
// the 32-bit x86 ABI libseccomp turns each socket rule into a rule on the
// socketcall(2) multiplexer that keeps only the call number, so the
// allowed and the refused families collapse into one comparison: runc then
// fails with "file exists", or — with allow rules alone — socketcall
// creates any family (both shown by the probe, docs/seccomp.md). Without
// the compatibility ABIs a 32-bit system call (a 32-bit program, or int
// 0x80 from a 64-bit one) gets the bad-architecture action: the process is
// killed.
func nativeOnly(top map[string]json.RawMessage) error {
	compat := map[string]bool{}
	if am, ok := top["archMap"]; ok && !bytes.Equal(bytes.TrimSpace(am), []byte("null")) {
		var entries []map[string]json.RawMessage
		if err := json.Unmarshal(am, &entries); err != nil {
			return fmt.Errorf("archMap: %w", err)
		}
		for i, e := range entries {
			var subs []string
			if s, ok := e["subArchitectures"]; ok {
				if err := json.Unmarshal(s, &subs); err != nil {
					return fmt.Errorf("archMap[%d].subArchitectures: %w", i, err)
				}
			}
			for _, s := range subs {
				compat[s] = true
			}
			e["subArchitectures"] = json.RawMessage("[]")
		}
		data, err := json.Marshal(entries)
		if err != nil {
			return err
		}
		top["archMap"] = data
	}
	if a, ok := top["architectures"]; ok && !bytes.Equal(bytes.TrimSpace(a), []byte("null")) {
		var arches []string
		if err := json.Unmarshal(a, &arches); err != nil {
			return fmt.Errorf("architectures: %w", err)
		}
		var keep []string
		for _, x := range arches {
			if !compat[x] && !compatABIs[x] {
				keep = append(keep, x)
			}
		}
		data, err := json.Marshal(keep)
		if err != nil {
			return err
		}
		top["architectures"] = data
	}
	return nil
}

// compatABIs are the 32-bit ABIs a 64-bit kernel runs beside its native
// one, where socket calls may be multiplexed.
var compatABIs = map[string]bool{
	"SCMP_ARCH_X86": true, "SCMP_ARCH_X32": true, "SCMP_ARCH_ARM": true, "SCMP_ARCH_S390": true,
	"SCMP_ARCH_PPC": true, "SCMP_ARCH_MIPS": true, "SCMP_ARCH_MIPSEL": true,
}
