package resolver

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// tableWatch follows nftables change notifications in the resolver's
// network namespace. The learner and the answer cache assume that what
// they added is still in the kernel; a table or set that someone else
// replaced or deleted (the runner's `shield up`/`down` swap the whole
// table, a restart of the hook rebuilds it) breaks that assumption, so
// after every committed transaction that touched a table or set
// definition the resolver forgets its assumptions and puts the learned
// addresses it still vouches for back (onChange(true)); after one that
// deleted elements it only forgets (onChange(false)).
type tableWatch struct {
	conn *netlink.Conn
	done chan struct{}
	once sync.Once
}

func watchTables(onChange func(replaced bool)) (*tableWatch, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{Groups: 1 << (unix.NFNLGRP_NFTABLES - 1)})
	if err != nil {
		return nil, fmt.Errorf("subscribe to nftables notifications: %w", err)
	}
	w := &tableWatch{conn: c, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		var replaced, deleted bool
		for {
			msgs, err := c.Receive()
			if err != nil {
				if errors.Is(err, unix.ENOBUFS) {
					// Notifications were lost: assume the worst.
					onChange(true)
					continue
				}
				if errors.Is(err, net.ErrClosed) || errors.Is(err, unix.EBADF) {
					return
				}
				var op *netlink.OpError
				if errors.As(err, &op) && errors.Is(op.Err, unix.ENOBUFS) {
					onChange(true)
					continue
				}
				return
			}
			for _, m := range msgs {
				if uint16(m.Header.Type)>>8 != unix.NFNL_SUBSYS_NFTABLES {
					continue
				}
				switch uint16(m.Header.Type) & 0xff {
				case unix.NFT_MSG_NEWTABLE, unix.NFT_MSG_DELTABLE, unix.NFT_MSG_NEWSET, unix.NFT_MSG_DELSET:
					replaced = true
				case unix.NFT_MSG_DELSETELEM:
					deleted = true
				case unix.NFT_MSG_NEWGEN: // end of a committed transaction
					if replaced || deleted {
						onChange(replaced)
					}
					replaced, deleted = false, false
				}
			}
		}
	}()
	return w, nil
}

func (w *tableWatch) stop() {
	w.once.Do(func() { _ = w.conn.Close() })
	<-w.done
}
