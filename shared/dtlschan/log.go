package dtlschan

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// pionLogs hands pion's logging to slog. Everything pion says goes out at
// debug level: the outcomes worth an operator's attention (refusals,
// timeouts) are logged once by this package, and a peer must not be able to
// make pion fill the log at warning level with broken packets.
type pionLogs struct{ log *slog.Logger }

func (f pionLogs) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{f.log.With("pion", scope)}
}

type pionLogger struct{ log *slog.Logger }

func (l pionLogger) out(level slog.Level, msg string) {
	l.log.Log(context.Background(), level, msg)
}

func (l pionLogger) outf(level slog.Level, format string, args ...any) {
	if l.log.Enabled(context.Background(), level) {
		l.log.Log(context.Background(), level, fmt.Sprintf(format, args...))
	}
}

const traceLevel = slog.LevelDebug - 4

func (l pionLogger) Trace(msg string)                  { l.out(traceLevel, msg) }
func (l pionLogger) Tracef(format string, args ...any) { l.outf(traceLevel, format, args...) }
func (l pionLogger) Debug(msg string)                  { l.out(slog.LevelDebug, msg) }
func (l pionLogger) Debugf(format string, args ...any) { l.outf(slog.LevelDebug, format, args...) }
func (l pionLogger) Info(msg string)                   { l.out(slog.LevelDebug, msg) }
func (l pionLogger) Infof(format string, args ...any)  { l.outf(slog.LevelDebug, format, args...) }
func (l pionLogger) Warn(msg string)                   { l.out(slog.LevelDebug, msg) }
func (l pionLogger) Warnf(format string, args ...any)  { l.outf(slog.LevelDebug, format, args...) }
func (l pionLogger) Error(msg string)                  { l.out(slog.LevelDebug, msg) }
func (l pionLogger) Errorf(format string, args ...any) { l.outf(slog.LevelDebug, format, args...) }
