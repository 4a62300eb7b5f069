module terok.dev/sandbox/credproxy

go 1.24

require terok.dev/sandbox/common v0.0.0

replace terok.dev/sandbox/common => ../common
