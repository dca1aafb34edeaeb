// Package browsertest drives the admin console (/admin/) in a real headless
// Chromium (Debian's /usr/bin/chromium or $TOKENBROKER_CHROMIUM, through chromedp) against an
// in-process broker and the vendor simulator, as a person would: paste a
// token, connect, approve on the simulator's consent page, see the
// Reconnect warning, reconnect, change user, disconnect. Screenshots of each
// step go to artifacts/screenshots/ under the module root.
//
// Without Chromium the test fails (internal/testenv.Missing), except in the
// quick subset (make test-short); make test installs it.
package browsertest
