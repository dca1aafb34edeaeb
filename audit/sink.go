package audit

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// OpenSink opens the sink BROKER_AUDIT_SINK names: "stdout" (the process's
// standard output, which carries nothing else: logs go to standard error),
// "file:<path>" (appended to, created 0600), or "off" (nil, no sink). close
// releases what was opened; it is safe to call with the nil sink.
func OpenSink(spec string, stdout io.Writer) (sink io.Writer, close func() error, err error) {
	nothing := func() error { return nil }
	switch {
	case spec == "off":
		return nil, nothing, nil
	case spec == "stdout":
		return stdout, nothing, nil
	case strings.HasPrefix(spec, "file:") && len(spec) > len("file:"):
		path := strings.TrimPrefix(spec, "file:")
		// O_APPEND: every record is one write at the end, also when a
		// log shipper truncates the file (copytruncate rotation).
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return nil, nil, fmt.Errorf("open audit sink: %w", err)
		}
		return f, f.Close, nil
	}
	return nil, nil, fmt.Errorf("audit sink %q: want stdout, file:<path> or off", spec)
}
