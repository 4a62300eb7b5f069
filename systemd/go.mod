module terok.dev/sandbox/systemd

go 1.24.0
