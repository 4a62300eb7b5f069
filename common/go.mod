module terok.dev/sandbox/common

go 1.24.0

require (
	github.com/BurntSushi/toml v1.6.0
	github.com/jmoiron/sqlx v1.4.0
	github.com/mattn/go-sqlite3 v1.14.53
	golang.org/x/crypto v0.48.0
	golang.org/x/sys v0.41.0
)

require github.com/coreos/go-systemd/v22 v22.7.0
