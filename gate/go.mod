module terok.dev/sandbox/gate

go 1.24
