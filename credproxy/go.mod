module terok.dev/sandbox/credproxy

go 1.24.0

require terok.dev/sandbox/common v0.0.0

require (
	github.com/BurntSushi/toml v1.6.0 // indirect
	golang.org/x/crypto v0.48.0 // indirect
	golang.org/x/sys v0.41.0 // indirect
)

require (
	github.com/coreos/go-systemd/v22 v22.7.0 // indirect
	github.com/jmoiron/sqlx v1.4.0 // indirect
	github.com/mattn/go-sqlite3 v1.14.53
)

replace terok.dev/sandbox/common => ../common
