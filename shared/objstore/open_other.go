//go:build !unix

package objstore

import "os"

func openBody(path string) (*os.File, error) { return os.Open(path) }
