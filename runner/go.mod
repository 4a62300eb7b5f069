module terok.dev/sandbox/runner

go 1.24.0

require (
	github.com/cpuguy83/go-md2man/v2 v2.0.7 // indirect
	github.com/russross/blackfriday/v2 v2.1.0 // indirect
	github.com/xrash/smetrics v0.0.0-20240521201337-686a1a2994c1 // indirect
)

require (
	github.com/BurntSushi/toml v1.6.0
	github.com/jmoiron/sqlx v1.4.0
	github.com/mattn/go-sqlite3 v1.14.53
	github.com/urfave/cli/v2 v2.27.7
	golang.org/x/crypto v0.48.0
	golang.org/x/sys v0.41.0
	terok.dev/sandbox/common v0.0.0
	terok.dev/sandbox/systemd v0.0.0
)

replace terok.dev/sandbox/common => ../common

replace terok.dev/sandbox/systemd => ../systemd
