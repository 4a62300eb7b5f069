package seccomp

import (
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
)

// compare holds the OCI comparison operators on 64-bit argument values.
var compare = map[string]bool{
	"SCMP_CMP_NE": true, "SCMP_CMP_LT": true, "SCMP_CMP_LE": true, "SCMP_CMP_EQ": true,
	"SCMP_CMP_GE": true, "SCMP_CMP_GT": true, "SCMP_CMP_MASKED_EQ": true,
}

// matches applies the comparison to an argument value (all 64 bits, as
// libseccomp does on a 64-bit architecture).
func (a Arg) matches(x uint64) bool {
	switch a.Op {
	case "SCMP_CMP_NE":
		return x != a.Value
	case "SCMP_CMP_LT":
		return x < a.Value
	case "SCMP_CMP_LE":
		return x <= a.Value
	case "SCMP_CMP_EQ":
		return x == a.Value
	case "SCMP_CMP_GE":
		return x >= a.Value
	case "SCMP_CMP_GT":
		return x > a.Value
	case "SCMP_CMP_MASKED_EQ":
		return x&a.Value == a.ValueTwo
	}
	return false
}

// Outcome is what the filter does with one call.
type Outcome struct {
	Action string
	// Errno is the errno of an SCMP_ACT_ERRNO outcome (0 when the profile
	// leaves it to the runtime's default).
	Errno uint
}

// Allowed reports whether the call reaches the kernel.
func (o Outcome) Allowed() bool { return o.Action == "SCMP_ACT_ALLOW" || o.Action == "SCMP_ACT_LOG" }

func (o Outcome) String() string {
	if o.Action == "SCMP_ACT_ERRNO" {
		return fmt.Sprintf("%s(%d)", o.Action, o.Errno)
	}
	return o.Action
}

// present reports whether podman keeps the rule for a container of this
// architecture that holds (capsHeld true) or lacks (false) every capability
// the rule's conditions name. Kernel-version conditions count as met.
func (r Rule) present(capsHeld bool) bool {
	if r.Includes != nil {
		if len(r.Includes.Caps) > 0 && !capsHeld {
			return false
		}
		if len(r.Includes.Arches) > 0 && !contains(r.Includes.Arches, runtime.GOARCH) {
			return false
		}
	}
	if r.Excludes != nil {
		if len(r.Excludes.Caps) > 0 && capsHeld {
			return false
		}
		if len(r.Excludes.Arches) > 0 && contains(r.Excludes.Arches, runtime.GOARCH) {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// expanded is one rule as runc hands it to libseccomp: comparisons that are
// ANDed, or none.
type expanded struct {
	index int
	args  []Arg
	out   Outcome
}

// expand applies runc's treatment of a rule: when any argument is compared
// more than once, every comparison becomes a rule of its own (an OR).
func expand(i int, r Rule) []expanded {
	out := Outcome{Action: r.Action}
	if r.ErrnoRet != nil {
		out.Errno = *r.ErrnoRet
	}
	seen := map[uint]bool{}
	repeated := false
	for _, a := range r.Args {
		repeated = repeated || seen[a.Index]
		seen[a.Index] = true
	}
	if !repeated {
		return []expanded{{index: i, args: r.Args, out: out}}
	}
	res := make([]expanded, len(r.Args))
	for j, a := range r.Args {
		res[j] = expanded{index: i, args: []Arg{a}, out: out}
	}
	return res
}

// Evaluate is the profile's answer to syscall(args) for a container that
// holds (capsHeld) or lacks every capability the rules name, following
// libseccomp's resolution: an unconditional rule wins over every
// conditional one (the first unconditional one of several); otherwise the
// matching conditional rules decide, and matching rules with different
// outcomes are an error (libseccomp refuses such a filter, or its tree
// order would decide — either way not something to rely on). No matching
// rule means the default action.
func (p Profile) Evaluate(syscall string, args [6]uint64, capsHeld bool) (Outcome, error) {
	var match []expanded
	for _, i := range p.byName[syscall] {
		r := p.Syscalls[i]
		if !r.present(capsHeld) {
			continue
		}
		for _, e := range p.exp[i] {
			if len(e.args) == 0 {
				return e.out, nil
			}
			ok := true
			for _, a := range e.args {
				if !a.matches(args[a.Index]) {
					ok = false
					break
				}
			}
			if ok {
				match = append(match, e)
			}
		}
	}
	if len(match) == 0 {
		out := Outcome{Action: p.DefaultAction}
		if p.DefaultErrnoRet != nil {
			out.Errno = *p.DefaultErrnoRet
		}
		return out, nil
	}
	for _, m := range match[1:] {
		if m.out != match[0].out {
			return Outcome{}, fmt.Errorf("%s%v: syscalls[%d] (%s) and syscalls[%d] (%s) both match", syscall, args[:3],
				match[0].index, match[0].out, m.index, m.out)
		}
	}
	return match[0].out, nil
}

// hasUnconditional reports whether syscall has a rule without comparisons
// in the given capability case (and its outcome).
func (p Profile) hasUnconditional(syscall string, capsHeld bool) (Outcome, bool) {
	for _, i := range p.byName[syscall] {
		r := p.Syscalls[i]
		if !r.present(capsHeld) {
			continue
		}
		for _, e := range p.exp[i] {
			if len(e.args) == 0 {
				return e.out, true
			}
		}
	}
	return Outcome{}, false
}

// allowedFamilies may be created with socket(); AF_NETLINK only with the
// protocols Verify checks separately.
var allowedFamilies = map[uint64]bool{afUnix: true, afInet: true, afInet6: true, afNetlink: true}

// unconditionallyRefused are the syscalls Verify requires a refusing rule
// without comparisons for: socketcall hides its arguments, io_uring
// creates sockets past the family filter, and the keyrings would give a
// rootful container's root the host root's cached keys (the reasons are
// in the rules' comments, ownRules).
var unconditionallyRefused = []string{"socketcall", "io_uring_setup", "io_uring_enter", "io_uring_register", "keyctl", "add_key", "request_key"}

// Verify checks a profile the way the runner relies on it, for containers
// with and without the capabilities its rules name: no address family
// outside AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK can be created with
// socket() or socketpair() (whatever the bits above the 32-bit int),
// AF_VSOCK in particular; socketcall(2), io_uring and the kernel keyrings
// (keyctl, add_key, request_key) are refused without conditions; and the
// families a task needs still work. A profile installed before a refusal
// was added fails here, so a launch with it fails closed and names
// `shield setup` (Load).
func Verify(data []byte) error {
	p, err := Parse(data)
	if err != nil {
		return err
	}
	problems := archProblems(data)
	for _, caps := range []bool{false, true} {
		problems = append(problems, p.verify(caps)...)
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(dedupe(problems), "; "))
	}
	return nil
}

func (p Profile) verify(caps bool) []string {
	var problems []string
	check := func(sys string, args [6]uint64, wantAllowed bool, what string) {
		out, err := p.Evaluate(sys, args, caps)
		switch {
		case err != nil:
			problems = append(problems, "ambiguous rules for "+err.Error())
		case out.Allowed() != wantAllowed && wantAllowed:
			problems = append(problems, what+" is refused ("+out.String()+"): tasks need it")
		case out.Allowed() != wantAllowed:
			problems = append(problems, what+" is allowed")
		}
	}
	for _, name := range unconditionallyRefused {
		out, ok := p.hasUnconditional(name, caps)
		if !ok || out.Allowed() {
			problems = append(problems, name+" is not refused without conditions")
		}
	}
	for _, fam := range probeFamilies() {
		f, hi := fam&0xffffffff, fam&^0xffffffff
		if hi == 0 && allowedFamilies[f] {
			continue
		}
		what := fmt.Sprintf("socket(family %d)", f)
		switch {
		case hi != 0:
			what = fmt.Sprintf("socket(family %d with high bits %#x)", f, hi)
		case f == afVsock:
			what = "socket(AF_VSOCK)"
		}
		check("socket", [6]uint64{fam, 1, 0}, false, what)
		if fam != afUnix {
			check("socketpair", [6]uint64{fam, 1, 0}, false, "socketpair"+strings.TrimPrefix(what, "socket"))
		}
	}
	check("socket", [6]uint64{afUnix, 1, 0}, true, "socket(AF_UNIX)")
	check("socket", [6]uint64{afInet, 1, 0}, true, "socket(AF_INET)")
	check("socket", [6]uint64{afInet6, 2, 0}, true, "socket(AF_INET6)")
	for _, f := range []uint64{afInet, afInet6} {
		fam := map[uint64]string{afInet: "AF_INET", afInet6: "AF_INET6"}[f]
		for t, protos := range inetProtocols[f] {
			for _, p := range protos {
				check("socket", [6]uint64{f, t | sockCloexec, p}, true, fmt.Sprintf("socket(%s, type %d, protocol %d)", fam, t, p))
			}
		}
		// The transports whose modules socket() would load (inetRules).
		check("socket", [6]uint64{f, sockStream, 132}, false, "socket("+fam+", SOCK_STREAM, IPPROTO_SCTP)")
		check("socket", [6]uint64{f, sockDgram, 136}, false, "socket("+fam+", SOCK_DGRAM, IPPROTO_UDPLITE)")
		check("socket", [6]uint64{f, sockSeqpacket, 132}, false, "socket("+fam+", SOCK_SEQPACKET, IPPROTO_SCTP)")
		check("socket", [6]uint64{f, sockDCCP, 0}, false, "socket("+fam+", SOCK_DCCP)")
		check("socket", [6]uint64{f, sockStream, 1<<32 | 132}, false, "socket("+fam+", SOCK_STREAM, IPPROTO_SCTP with high bits)")
	}
	check("socket", [6]uint64{afNetlink, 3, netlinkRoute}, true, "socket(AF_NETLINK, NETLINK_ROUTE)")
	check("socketpair", [6]uint64{afUnix, 1, 0}, true, "socketpair(AF_UNIX)")
	return problems
}

func dedupe(list []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range list {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// Ours reports whether the profile carries this package's rules.
func (p Profile) Ours() bool {
	for _, r := range p.Syscalls {
		if strings.HasPrefix(r.Comment, CommentPrefix) {
			return true
		}
	}
	return false
}

// archProblems refuses a profile that lets the 32-bit x86 ABI in (see
// nativeOnly): its socketcall path cannot be filtered by family.
func archProblems(data []byte) []string {
	var arch struct {
		ArchMap []struct {
			Architecture     string   `json:"architecture"`
			SubArchitectures []string `json:"subArchitectures"`
		} `json:"archMap"`
		Architectures []string `json:"architectures"`
	}
	if err := json.Unmarshal(data, &arch); err != nil {
		return []string{"architectures: " + err.Error()}
	}
	var problems []string
	for _, e := range arch.ArchMap {
		for _, s := range e.SubArchitectures {
			if compatABIs[s] {
				problems = append(problems, fmt.Sprintf("the %s ABI is allowed beside %s (its socketcall path escapes the family filter)", s, e.Architecture))
			}
		}
	}
	for _, a := range arch.Architectures {
		if compatABIs[a] {
			problems = append(problems, fmt.Sprintf("the %s ABI is allowed (its socketcall path escapes the family filter)", a))
		}
	}
	return problems
}

// probeFamilies are the family register values Verify tries: every family
// up to 64 and a few beyond, and the interesting ones with bits above the
// 32-bit int set (the kernel ignores those bits, a filter must not).
func probeFamilies() []uint64 {
	var fams []uint64
	for f := uint64(0); f < 64; f++ {
		fams = append(fams, f)
	}
	fams = append(fams, 255, 1<<16, 1<<31, 0xffffffff)
	for _, f := range []uint64{0, afUnix, afInet, afInet6, afNetlink, 17, afVsock} {
		fams = append(fams, 1<<32|f, 0xffffffff<<32|f)
	}
	return fams
}
