package launch

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Extra arguments go into the podman command after the runner's own
// hardening, and podman lets a later flag widen what an earlier one
// narrowed (it takes the last --security-opt seccomp=, adds every
// --cap-add, the last --network). So the extra arguments are checked for
// every flag that would undo part of the hardening (docs/runner.md,
// "Extra arguments"), and such a launch is refused instead of started
// weaker than it says.

// valueFlags are the flags checked here that take a value, either as
// --flag=value or as the next argument.
var valueFlags = map[string]bool{
	"--cap-add": true, "--network": true, "--net": true, "--userns": true,
	"--pid": true, "--ipc": true, "--uts": true, "--security-opt": true,
	"--device": true, "--annotation": true, "--volume": true, "--mount": true,
}

// shortValueFlags are podman run's one-letter flags that take a value;
// in a group (-itv SPEC) the first of them takes the rest of the group or
// the next argument, as the flag parser does. Only -v is judged.
var shortValueFlags = map[byte]bool{'a': true, 'e': true, 'h': true, 'l': true, 'm': true, 'p': true, 'u': true, 'v': true, 'w': true}

// forbiddenCaps would let a container process rewrite its firewall or
// set the resolver's packet mark (NET_ADMIN), forge packets past it
// (NET_RAW), leave its namespaces (SYS_ADMIN, ALL) or reach into the
// kernel (SYS_MODULE, SYS_RAWIO, BPF).
var forbiddenCaps = map[string]bool{"NET_ADMIN": true, "NET_RAW": true, "SYS_ADMIN": true, "ALL": true,
	"SYS_MODULE": true, "SYS_RAWIO": true, "BPF": true}

// forbiddenDevices are the host paths of the vsock devices: a socket
// family the seccomp profile refuses, reached through a device instead.
var forbiddenDevices = map[string]bool{"/dev/vsock": true, "/dev/vhost-vsock": true}

// checkExtraArgs refuses extra arguments that undo the hardening, with
// the argument and the reason in the error. stateDir is the task's shield
// state dir, which no volume may reach (volumes.go).
func checkExtraArgs(extra []string, stateDir string) error {
	for i := 0; i < len(extra); i++ {
		shown := extra[i]
		name, value, hasValue := strings.Cut(shown, "=")
		if !strings.HasPrefix(name, "--") {
			spec, consumed, ok := shortVolume(extra, i)
			if !ok {
				continue
			}
			shown = strings.Join(extra[i:i+consumed+1], " ")
			i += consumed
			if src := volumeSource(spec); src != "" {
				if err := checkVolumeSource(src, stateDir); err != nil {
					return fmt.Errorf("extra argument %q: %w; remove it", shown, err)
				}
			}
			continue
		}
		if valueFlags[name] && !hasValue && i+1 < len(extra) {
			i++
			value, hasValue = extra[i], true
			shown += " " + value
		}
		if err := checkFlag(name, value, hasValue, stateDir); err != nil {
			return fmt.Errorf("extra argument %q: %w; remove it", shown, err)
		}
	}
	return nil
}

// checkFlag judges one flag and its value (hasValue false for a flag at
// the end of the list or a boolean flag without "=").
func checkFlag(name, value string, hasValue bool, stateDir string) error {
	switch name {
	case "--volume":
		if src := volumeSource(value); src != "" {
			return checkVolumeSource(src, stateDir)
		}
	case "--mount":
		if src := mountSource(value); src != "" {
			return checkVolumeSource(src, stateDir)
		}
	case "--privileged":
		if !hasValue || value != "false" {
			return fmt.Errorf("--privileged switches off the seccomp profile, the capability limits and the device rules (docs/seccomp.md)")
		}
	case "--cap-add":
		for _, c := range strings.Split(value, ",") {
			c = strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(c)), "CAP_")
			if forbiddenCaps[c] {
				return fmt.Errorf("capability %s would let the container change or bypass its firewall (docs/shield-hook.md)", c)
			}
		}
	case "--network", "--net":
		return fmt.Errorf("the runner chooses the network itself (the shield's network mode or the bypass)")
	case "--userns":
		return fmt.Errorf("the runner chooses the user namespace itself")
	case "--pid", "--ipc", "--uts":
		v := strings.ToLower(value)
		if v == "host" || strings.HasPrefix(v, "ns:") {
			return fmt.Errorf("joining a host namespace undoes the container's isolation")
		}
	case "--security-opt":
		return checkSecurityOpt(value)
	case "--device":
		host, _, _ := strings.Cut(value, ":")
		if forbiddenDevices[filepath.Clean(host)] {
			return fmt.Errorf("the vsock device is a channel no firewall sees (docs/seccomp.md)")
		}
	case "--annotation":
		key, _, _ := strings.Cut(value, "=")
		if strings.HasPrefix(strings.ToLower(strings.TrimSpace(key)), "terok.shield.") {
			return fmt.Errorf("terok.shield.* annotations are the shield's own; the hook would read them (docs/shield-hook.md)")
		}
	}
	return nil
}

// checkSecurityOpt refuses the security options that turn a protection
// off. podman accepts both "key=value" and the older "key:value".
func checkSecurityOpt(opt string) error {
	key, val := opt, ""
	if i := strings.IndexAny(opt, "=:"); i >= 0 {
		key, val = opt[:i], opt[i+1:]
	}
	key, val = strings.ToLower(strings.TrimSpace(key)), strings.ToLower(strings.TrimSpace(val))
	switch {
	case key == "seccomp":
		return fmt.Errorf("it would replace the sandbox's seccomp profile (docs/seccomp.md)")
	case key == "apparmor" && val == "unconfined":
		return fmt.Errorf("it switches AppArmor off")
	case key == "label" && val == "disable":
		return fmt.Errorf("it switches SELinux labelling off")
	case key == "no-new-privileges" && val == "false":
		return fmt.Errorf("it lets setuid programs gain privileges (use the run specification's unrestricted instead)")
	case key == "unmask":
		return fmt.Errorf("it exposes the kernel files podman masks")
	case key == "systempaths" && val == "unconfined":
		return fmt.Errorf("it exposes the kernel files podman masks")
	}
	return nil
}

// shortVolume finds the -v value of a group of one-letter flags at
// extra[i] (-v SPEC, -vSPEC, -v=SPEC, -itv SPEC); consumed is 1 when the
// value is the next argument.
func shortVolume(extra []string, i int) (spec string, consumed int, ok bool) {
	a := extra[i]
	if len(a) < 2 || a[0] != '-' || a[1] == '-' {
		return "", 0, false
	}
	for j := 1; j < len(a); j++ {
		if !shortValueFlags[a[j]] {
			continue
		}
		if a[j] != 'v' {
			return "", 0, false
		}
		if rest := strings.TrimPrefix(a[j+1:], "="); rest != "" {
			return rest, 0, true
		}
		if i+1 < len(extra) {
			return extra[i+1], 1, true
		}
		return "", 0, false
	}
	return "", 0, false
}
