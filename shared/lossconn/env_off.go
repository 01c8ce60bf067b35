//go:build !testhooks

package lossconn

// env is the hook's configuration: without the testhooks build tag, none,
// whatever the environment says.
func env() Config { return Config{} }
