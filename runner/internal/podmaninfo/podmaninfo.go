// Package podmaninfo reads `podman info -f json` and derives the facts the
// runner and the shield share: podman's version and the rootless network
// mode (docs/shield.md, Rootful and rootless network wiring (and why)). One detection rule serves both shield and bypass
// networking, so they can never disagree (docs/shield.md, Rootful and rootless network wiring (and why)).
package podmaninfo

import (
	"context"
	"encoding/json"
	"os/exec"
	"strconv"
	"strings"
	"unicode"
)

// Network modes.
const (
	Slirp4netns = "slirp4netns"
	Pasta       = "pasta"
)

// Version is a dotted version, missing components zero.
type Version [3]int

// String renders "X.Y.Z".
func (v Version) String() string {
	return strconv.Itoa(v[0]) + "." + strconv.Itoa(v[1]) + "." + strconv.Itoa(v[2])
}

// Less orders versions.
func (v Version) Less(o Version) bool {
	for i := range v {
		if v[i] != o[i] {
			return v[i] < o[i]
		}
	}
	return false
}

// ParseVersion takes the leading digits of each dotted component and stops at
// the first component without any ("5.6.0-rc1" → 5.6.0; "" → 0.0.0).
func ParseVersion(s string) Version {
	var v Version
	for i, part := range strings.SplitN(strings.TrimSpace(s), ".", 4) {
		if i >= len(v) {
			break
		}
		end := strings.IndexFunc(part, func(r rune) bool { return !unicode.IsDigit(r) })
		if end < 0 {
			end = len(part)
		}
		if end == 0 {
			break
		}
		n, err := strconv.Atoi(part[:end])
		if err != nil {
			break
		}
		v[i] = n
	}
	return v
}

// Info is the subset of podman info the project uses.
type Info struct {
	Version            Version
	RawVersion         string
	RootlessNetworkCmd string
	SlirpExecutable    string
	PastaExecutable    string
	// OK is false when podman failed or printed no valid JSON.
	OK bool
}

type rawInfo struct {
	Version struct {
		Version string `json:"Version"`
	} `json:"version"`
	Host struct {
		RootlessNetworkCmd string `json:"rootlessNetworkCmd"`
		Slirp4netns        struct {
			Executable string `json:"executable"`
		} `json:"slirp4netns"`
		Pasta struct {
			Executable string `json:"executable"`
		} `json:"pasta"`
	} `json:"host"`
}

// Parse decodes podman info JSON; invalid input gives an empty Info.
func Parse(data []byte) Info {
	var r rawInfo
	if err := json.Unmarshal(data, &r); err != nil {
		return Info{}
	}
	return Info{
		Version:            ParseVersion(r.Version.Version),
		RawVersion:         r.Version.Version,
		RootlessNetworkCmd: r.Host.RootlessNetworkCmd,
		SlirpExecutable:    r.Host.Slirp4netns.Executable,
		PastaExecutable:    r.Host.Pasta.Executable,
		OK:                 true,
	}
}

// Query runs `podman info -f json`; any failure gives an empty Info.
func Query(ctx context.Context, podman string) Info {
	if podman == "" {
		podman = "podman"
	}
	out, err := exec.CommandContext(ctx, podman, "info", "-f", "json").Output()
	if err != nil {
		return Info{}
	}
	return Parse(out)
}

// NetworkMode is rootlessNetworkCmd when it names pasta or slirp4netns, else
// slirp4netns when its executable is reported, else pasta.
func (i Info) NetworkMode() string {
	switch i.RootlessNetworkCmd {
	case Pasta, Slirp4netns:
		return i.RootlessNetworkCmd
	}
	if i.SlirpExecutable != "" {
		return Slirp4netns
	}
	return Pasta
}

// HostLoopbackArgs are the rootless network arguments that let a container
// reach the host's loopback services as host.containers.internal
// (docs/shield.md, Rootful and rootless network wiring (and why)).
func HostLoopbackArgs(mode string) []string {
	if mode == Slirp4netns {
		return []string{"--network", "slirp4netns:allow_host_loopback=true",
			"--add-host", "host.containers.internal:10.0.2.2"}
	}
	return []string{"--network", "pasta:--map-host-loopback,169.254.1.2",
		"--add-host", "host.containers.internal:169.254.1.2"}
}
