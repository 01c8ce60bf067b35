package onchain

import (
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/gagliardetto/solana-go/rpc"
	"github.com/gagliardetto/solana-go/rpc/jsonrpc"
)

// maxReply bounds an RPC reply: castd's calls (a memo transaction with its
// metadata, a status, a blockhash) answer in a few KiB, and solana-go
// reads whatever arrives.
const maxReply = 1 << 20

var errReplyTooLarge = errors.New("RPC reply larger than 1 MiB")

// NewRPC returns solana-go's client for url with a bounded reply size and
// a timeout (solana-go's own allows five minutes and any size).
func NewRPC(url string) *rpc.Client {
	hc := &http.Client{Timeout: 30 * time.Second, Transport: limitTransport{http.DefaultTransport}}
	return rpc.NewWithCustomRPCClient(jsonrpc.NewClientWithOpts(url, &jsonrpc.RPCClientOpts{HTTPClient: hc}))
}

type limitTransport struct{ next http.RoundTripper }

func (t limitTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = &limitBody{rc: resp.Body, left: maxReply}
	return resp, nil
}

// limitBody fails the read past its limit (and closes the connection),
// rather than truncating into something that might still parse.
type limitBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *limitBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errReplyTooLarge
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitBody) Close() error { return b.rc.Close() }
