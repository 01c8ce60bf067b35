//go:build testhooks

package lossconn

import (
	"log/slog"
	"os"
	"sync"
)

var (
	envOnce sync.Once
	envCfg  Config
)

// env parses EnvVar once per process.
func env() Config {
	envOnce.Do(func() {
		s, ok := os.LookupEnv(EnvVar)
		if !ok {
			return
		}
		c, err := Parse(s)
		if err != nil {
			slog.Error("test loss hook ignored", "env", EnvVar, "err", err)
			return
		}
		slog.Warn("TEST HOOK: dropping multicast datagrams", "env", EnvVar, "loss", c.String())
		envCfg = c
	})
	return envCfg
}
