module github.com/sosedoff/gitkit

go 1.24
