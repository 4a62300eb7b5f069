package hook

// background runs independent steps (small state-file writes) on
// goroutines while the hook does other work, typically while the kernel
// commits the ruleset. wait joins all of them and returns the first error;
// the hook calls it on every path, so no goroutine outlives the run.
type background struct {
	errs chan error
	n    int
}

func newBackground() *background { return &background{errs: make(chan error, 4)} }

func (b *background) goDo(f func() error) {
	b.n++
	go func() { b.errs <- f() }()
}

func (b *background) wait() error {
	var first error
	for ; b.n > 0; b.n-- {
		if err := <-b.errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}
