package nftnl

// SetKernelConfig makes p read the kernel configuration at path instead of
// /proc/config.gz (a missing file: no hint, the native form first).
func SetKernelConfig(p *Plan, path string) { p.kernelConfig = path }

// KernelQueueForm is kernelQueueForm, for its benchmark.
func KernelQueueForm(path string) QueueForm { return kernelQueueForm(path) }
