module terok.dev/sandbox/shield-hook

go 1.24

require (
	github.com/opencontainers/runtime-spec v1.3.0
	github.com/vishvananda/netlink v1.3.1
	github.com/vishvananda/netns v0.0.5
	terok.dev/sandbox/common v0.0.0
)

require golang.org/x/sys v0.10.0 // indirect

replace terok.dev/sandbox/common => ../common
