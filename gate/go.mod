module terok.dev/sandbox/gate

go 1.24.0

require (
	github.com/sosedoff/gitkit v0.4.0
	terok.dev/sandbox/common v0.0.0
)

require (
	github.com/BurntSushi/toml v1.6.0 // indirect
	github.com/coreos/go-systemd/v22 v22.7.0 // indirect
	github.com/kr/text v0.2.0 // indirect
	github.com/munnerz/goautoneg v0.0.0-20191010083416-a7dc8b61c822 // indirect
	github.com/prometheus/client_model v0.6.2 // indirect
	github.com/prometheus/common v0.66.1 // indirect
	go.yaml.in/yaml/v2 v2.4.2 // indirect
	golang.org/x/sys v0.41.0 // indirect
	google.golang.org/protobuf v1.36.8 // indirect
)

replace terok.dev/sandbox/common => ../common

// gitkit with the terok patch (third_party/PATCHES.md): clean per-request
// environment, stderr kept out of the protocol stream, protocol v2,
// streaming bodies, bounded waits; the SSH server part is left out.
replace github.com/sosedoff/gitkit => ./third_party/gitkit
