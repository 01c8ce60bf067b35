package beacon

import (
	"path/filepath"

	"github.com/blockcast/beacon/firmware/agent"
	"github.com/blockcast/beacon/firmware/receipts"
	"github.com/blockcast/beacon/shared/ctrlmsg"
)

// openReceipts opens the receipts book beside the cache. Receipts go out
// through whichever agent is current (it changes when castd names another
// broker).
func (b *Beacon) openReceipts() error {
	book, err := receipts.Open(receipts.Options{
		Path:        filepath.Join(b.opts.StateDir, "receipts.db"),
		Key:         b.key,
		Interval:    b.opts.ReceiptInterval,
		ResendEvery: b.opts.ReceiptResend,
		Logger:      b.log,
		Publish: func(kind ctrlmsg.Kind, body any) error {
			b.mu.Lock()
			a := b.agent
			b.mu.Unlock()
			if a == nil {
				return agent.ErrNotConnected
			}
			return a.Publish(kind, body)
		},
	})
	if err != nil {
		return fieldError("StateDir", err)
	}
	b.book = book
	return nil
}
