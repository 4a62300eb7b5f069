module terok.dev/sandbox/credproxy

go 1.24
