package app

import (
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/tokenbroker/tokenbroker/audit"
	"github.com/tokenbroker/tokenbroker/broker"
)

// newAudit opens BROKER_AUDIT_SINK and builds the audit trail on the
// store's per-account records.
func (a *App) newAudit(raw broker.Store, stdout io.Writer, log *slog.Logger, now func() time.Time) (*audit.Trail, error) {
	if stdout == nil {
		stdout = os.Stdout
	}
	sink, closeSink, err := audit.OpenSink(a.cfg.AuditSink, stdout)
	if err != nil {
		return nil, err
	}
	a.closeSink = closeSink
	var st audit.Store
	if as, ok := raw.(interface{ Audit() audit.Store }); ok {
		st = as.Audit()
	}
	return audit.New(audit.Options{
		Sink: sink, Store: st, Retention: a.cfg.AuditRetention, StoreTimeout: a.cfg.StoreTimeout,
		Logger: log, Registerer: a.reg, Now: now,
	})
}
