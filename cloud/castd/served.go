package castd

import (
	"time"

	"github.com/blockcast/beacon/cloud/contracts"
	"github.com/blockcast/beacon/cloud/history"
	"github.com/blockcast/beacon/cloud/receipts"
)

// servedFigures is the contracts.Served castd measures contracts and the
// report with: the node's cross-checked delivery receipts once it has
// sent any (cloud/receipts ServedBytes), else the health-report history,
// so that beacons too old to sign receipts still get a verdict.
type servedFigures struct {
	book    *receipts.Book
	history *history.History
}

func (s *Server) served() servedFigures {
	return servedFigures{book: s.receipts, history: s.owners.history}
}

// ServedBytes implements contracts.Served.
func (sf servedFigures) ServedBytes(node string, from, to time.Time) (contracts.ServedFigures, error) {
	if sf.book != nil {
		f, err := sf.book.ServedBytes(node, from, to)
		if err != nil || f.Received {
			return f, err
		}
	}
	return sf.history.ServedBytes(node, from, to)
}
