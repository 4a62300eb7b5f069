module terok.dev/sandbox/sshagent

go 1.24
