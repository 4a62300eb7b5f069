package nftnl_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"terok.dev/sandbox/shield-hook/internal/nftnl"
)

// TestSendBatchOutcome: the batch sender, which asks for one
// acknowledgement only, reports a batch the kernel refuses (a message
// that is not the acknowledged one, and the acknowledged one itself) with
// the kernel's error, and nothing of such a batch is committed; a good
// batch is committed and reported as such.
func TestSendBatchOutcome(t *testing.T) {
	s := newScratch(t, "sb")
	tbl := &nftables.Table{Family: nftables.TableFamilyINet, Name: "terok_sb"}
	ch := &nftables.Chain{Name: "c", Table: tbl}
	missing := &nftables.Chain{Name: "missing", Table: tbl}
	s.conn(t, func(c *nftnl.Conn) {
		for _, tc := range []struct {
			name  string
			build func(rec *nftables.Conn)
		}{
			{"refused after the acknowledged message", func(rec *nftables.Conn) {
				rec.AddTable(tbl)
				rec.AddChain(ch)
				rec.AddRule(&nftables.Rule{Table: tbl, Chain: missing, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}})
			}},
			{"refused acknowledged message", func(rec *nftables.Conn) {
				rec.AddChain(&nftables.Chain{Name: "c", Table: &nftables.Table{Family: nftables.TableFamilyINet, Name: "terok_sb_missing"}})
				rec.AddTable(tbl)
			}},
		} {
			err := nftnl.SendBuilt(c, tc.build)
			if !errors.Is(err, unix.ENOENT) {
				t.Fatalf("%s: %v, want ENOENT", tc.name, err)
			}
			if _, err := c.ListTableOfFamily(tbl.Name, tbl.Family); !errors.Is(err, unix.ENOENT) {
				t.Fatalf("%s: the refused batch left table %s (%v)", tc.name, tbl.Name, err)
			}
		}
		if err := nftnl.SendBuilt(c, func(rec *nftables.Conn) {
			rec.AddTable(tbl)
			rec.AddChain(ch)
			rec.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}})
		}); err != nil {
			t.Fatal(err)
		}
	})
	if l := s.nft(t, "", "list", "table", "inet", "terok_sb"); !strings.Contains(l, "accept") {
		t.Fatalf("good batch not committed:\n%s", l)
	}
}
