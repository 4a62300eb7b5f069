package gitkit

const Version = "0.4.0"
