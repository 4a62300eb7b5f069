package shield

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"terok.dev/sandbox/common/atomicfile"
	"terok.dev/sandbox/runner/internal/podmaninfo"
)

// `podman info` costs about 0.3 s here, more than a whole container start,
// and even `podman version` 35 ms, a quarter of one. The launch path needs
// only two facts: the version and, for rootless podman only, the network
// mode (root always uses slirp4netns, so root asks `podman version` only).
// Both are cached in the runtime directory, keyed by everything that can
// change them: the podman binary (path, size, mtime), the effective UID and
// the containers.conf files podman reads.

const infoCacheFile = "shield-podman-info.json"

type infoCache struct {
	Key string `json:"key"`
	// Tier caches the DNS tier detection (a `dnsmasq --version` run),
	// keyed by the dnsmasq and dig executables.
	TierKey string `json:"tier_key,omitempty"`
	Tier    string `json:"tier,omitempty"`
	Info    struct {
		RawVersion         string `json:"version"`
		RootlessNetworkCmd string `json:"rootless_network_cmd"`
		SlirpExecutable    string `json:"slirp4netns_executable"`
		PastaExecutable    string `json:"pasta_executable"`
	} `json:"info"`
}

// podmanVersion runs `podman version` (much cheaper than `podman info`).
func (s *Shield) podmanVersion(ctx context.Context) (string, bool) {
	res, err := s.opts.Tools.Run(ctx, 30*time.Second, "", s.podmanPath(), "version", "--format", "{{.Client.Version}}")
	if err != nil || res.Code != 0 {
		return "", false
	}
	v := strings.TrimSpace(res.Stdout)
	return v, v != ""
}

// fileStamp identifies a file's content version cheaply.
func fileStamp(p string) string {
	st, err := os.Stat(p)
	if err != nil {
		return p + ":-"
	}
	return fmt.Sprintf("%s:%d:%d", p, st.Size(), st.ModTime().UnixNano())
}

func (s *Shield) infoCacheKey() string {
	h := sha256.New()
	parts := []string{fmt.Sprint(s.opts.EUID), s.opts.Paths.ContainersConfEnv,
		fileStamp(s.podmanPath()), fileStamp(s.opts.Paths.ContainersConfEnv), fileStamp(s.opts.Paths.UserContainersConf)}
	for _, c := range s.opts.Paths.SystemContainersConfs {
		parts = append(parts, fileStamp(c))
	}
	for _, p := range parts {
		h.Write([]byte(p + "\n"))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// queryPodman returns the facts pre-start needs (shield.md §5).
func (s *Shield) queryPodman(ctx context.Context) podmaninfo.Info {
	key := s.infoCacheKey()
	path := ""
	if s.opts.CacheDir != "" {
		path = filepath.Join(s.opts.CacheDir, infoCacheFile)
		if data, err := os.ReadFile(path); err == nil {
			var c infoCache
			if json.Unmarshal(data, &c) == nil && c.Key == key && c.Info.RawVersion != "" {
				return podmaninfo.Info{Version: podmaninfo.ParseVersion(c.Info.RawVersion), RawVersion: c.Info.RawVersion,
					RootlessNetworkCmd: c.Info.RootlessNetworkCmd, SlirpExecutable: c.Info.SlirpExecutable,
					PastaExecutable: c.Info.PastaExecutable, OK: true}
			}
		}
	}
	var info podmaninfo.Info
	if s.opts.EUID == 0 {
		if version, ok := s.podmanVersion(ctx); ok {
			info = podmaninfo.Info{Version: podmaninfo.ParseVersion(version), RawVersion: version, OK: true}
		}
	}
	if !info.OK {
		info = podmaninfo.Query(ctx, s.podmanPath())
	}
	if info.OK && info.RawVersion != "" && path != "" {
		var c infoCache
		if data, err := os.ReadFile(path); err == nil {
			_ = json.Unmarshal(data, &c)
		}
		c.Key = key
		c.Info.RawVersion, c.Info.RootlessNetworkCmd = info.RawVersion, info.RootlessNetworkCmd
		c.Info.SlirpExecutable, c.Info.PastaExecutable = info.SlirpExecutable, info.PastaExecutable
		if data, err := json.Marshal(c); err == nil {
			if err := os.MkdirAll(s.opts.CacheDir, 0o700); err == nil {
				_ = atomicfile.WriteFile(path, data, 0o600)
			}
		}
	}
	return info
}

func (s *Shield) tierKey() string {
	return fileStamp(s.opts.Tools.LookPath("dnsmasq")) + "|" + fileStamp(s.opts.Tools.LookPath("dig")) + "|" + s.opts.Tools.Path
}

// detectTier is Tools.DetectTier with the result cached beside the podman
// facts.
func (s *Shield) detectTier(ctx context.Context) string {
	if s.opts.CacheDir == "" {
		return s.opts.Tools.DetectTier(ctx)
	}
	path := filepath.Join(s.opts.CacheDir, infoCacheFile)
	key := s.tierKey()
	var c infoCache
	if data, err := os.ReadFile(path); err == nil && json.Unmarshal(data, &c) == nil && c.TierKey == key {
		switch c.Tier {
		case TierDnsmasq, TierDig, TierGetent:
			return c.Tier
		}
	}
	tier := s.opts.Tools.DetectTier(ctx)
	c.TierKey, c.Tier = key, tier
	if data, err := json.Marshal(c); err == nil {
		if err := os.MkdirAll(s.opts.CacheDir, 0o700); err == nil {
			_ = atomicfile.WriteFile(path, data, 0o600)
		}
	}
	return tier
}
