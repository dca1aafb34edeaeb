package brokertest

import (
	"net"
	"strings"
	"sync"
)

func netListen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

// LogBuffer collects the broker's log lines, written concurrently.
type LogBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything logged so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
