package main

import "syscall"

// extra adds socket() through the direct i386 entry (number 359, Linux
// 4.3+), next to the socketcall(2) path syscall.Socket takes on 386.
func extra(r *Report) {
	const sysSocket386 = 359
	r.Direct386 = map[string]string{}
	for _, f := range families {
		fd, _, errno := syscall.RawSyscall(sysSocket386, uintptr(f.num), uintptr(f.typ|syscall.SOCK_CLOEXEC), 0)
		r.Direct386[f.name] = outcome(fd, errno)
	}
}
