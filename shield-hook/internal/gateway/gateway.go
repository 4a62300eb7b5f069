// Package gateway finds the default gateways of a network namespace through
// netlink (docs/shield-hook.md, What createRuntime does).
package gateway

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/vishvananda/netlink"
)

// Result holds the discovered gateways ("" when none).
type Result struct{ V4, V6 string }

// Discover reads the default routes of the namespace. User-mode networking
// (slirp4netns) may install the IPv4 default route slightly after the
// namespace exists, so without one it polls every interval until wait has
// passed; IPv6 is read once after that (for slirp4netns pre-start also
// writes the fixed fd00::2 into the ruleset).
//
// h must be a netlink handle whose socket lives in the container netns.
func Discover(ctx context.Context, h *netlink.Handle, wait, interval time.Duration) (Result, error) {
	var res Result
	var err error
	deadline := time.Now().Add(wait)
	for {
		res.V4, err = defaultGateway(h, netlink.FAMILY_V4)
		if err != nil {
			return Result{}, err
		}
		if res.V4 != "" || !time.Now().Before(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return Result{}, ctx.Err()
		case <-time.After(interval):
		}
	}
	res.V6, err = defaultGateway(h, netlink.FAMILY_V6)
	return res, err
}

func defaultGateway(h *netlink.Handle, family int) (string, error) {
	routes, err := h.RouteList(nil, family)
	if err != nil {
		return "", fmt.Errorf("list routes in container netns: %w", err)
	}
	for _, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 || !r.Dst.IP.IsUnspecified() {
				continue
			}
		}
		if gw := usable(r.Gw, family); gw != "" {
			return gw, nil
		}
		for _, nh := range r.MultiPath {
			if gw := usable(nh.Gw, family); gw != "" {
				return gw, nil
			}
		}
	}
	return "", nil
}

func usable(ip net.IP, family int) string {
	if ip == nil || ip.IsUnspecified() {
		return ""
	}
	if (family == netlink.FAMILY_V4) != (ip.To4() != nil) {
		return ""
	}
	return ip.String()
}
