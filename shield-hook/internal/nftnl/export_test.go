package nftnl

import "github.com/google/nftables"

// SetKernelConfig makes p read the kernel configuration at path instead of
// /proc/config.gz (a missing file: no hint, the native form first).
func SetKernelConfig(p *Plan, path string) { p.kernelConfig = path }

// KernelQueueForm is kernelQueueForm, for its benchmark.
func KernelQueueForm(path string) QueueForm { return kernelQueueForm(path) }

// SendBuilt sends, with sendBatch on c, the batch build queues on a
// recorder.
func SendBuilt(c *Conn, build func(rec *nftables.Conn)) error {
	rec, batch := recorder()
	build(rec)
	msgs, err := batch()
	if err != nil {
		return err
	}
	return c.sendBatch(msgs)
}
