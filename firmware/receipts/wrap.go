package receipts

import (
	"io"
	"net/http"

	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/receipt"
)

// Wrap records every response h gives from the cache: those with an
// X-Cache header (HIT: the cache; MISS: a fill, by multicast when the
// response says so in protocol.HeaderDelivery, else by unicast). Other
// answers (the status page, refusals before the cache) are not deliveries.
func (b *Book) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cw := &countingWriter{ResponseWriter: w}
		h.ServeHTTP(cw, r)
		var path receipt.Path
		switch v := w.Header().Get(protocol.HeaderCache); v {
		case "HIT":
			path = receipt.PathHit
		case "MISS":
			path = receipt.PathFill
			if w.Header().Get(protocol.HeaderDelivery) == protocol.DeliveryMulticast {
				path = receipt.PathMulticast
			}
		default:
			return
		}
		key, err := protocol.CleanContentPath(r.URL.RequestURI())
		if err != nil {
			return
		}
		status := cw.status
		if status == 0 {
			status = http.StatusOK
		}
		b.Record(receipt.Record{TS: b.opts.Now().UnixMilli(), Key: receipt.HexHash(receipt.KeyHash(key)),
			Bytes: uint64(cw.n), Status: uint16(status), Path: path})
	})
}

// countingWriter counts body bytes. It keeps the writer's ReadFrom (the
// cache sends files with sendfile through it) and Flush.
type countingWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (c *countingWriter) WriteHeader(code int) {
	if c.status == 0 && code >= 200 {
		c.status = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := c.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(writerOnly{c.ResponseWriter}, r)
	}
	c.n += n
	return n, err
}

func (c *countingWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

type writerOnly struct{ io.Writer }
