module terok.dev/sandbox/shield-hook

go 1.24
