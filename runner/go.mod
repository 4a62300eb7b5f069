module terok.dev/sandbox/runner

go 1.24
