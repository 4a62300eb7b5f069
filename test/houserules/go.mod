module terok.dev/sandbox/test/houserules

go 1.24.0
