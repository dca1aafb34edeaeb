// Package vendorsim simulates the authorization servers and APIs tokenbroker
// talks to, quirks included: any number of ServiceNow instances (each its own
// authorization server on its own listener) and Atlassian (auth.atlassian.com
// and api.atlassian.com with Confluence sites). It is a shipped part of the
// product, not test-only infrastructure: cmd/vendorsim serves it for the demo
// and for anyone's own tests, and Go tests import it directly:
//
//	sim, err := vendorsim.Start(vendorsim.DefaultOptions())
//	...
//	defer sim.Close()
//	sim.Script(vendorsim.Fault{Vendor: vendorsim.VendorServiceNow, Kind: vendorsim.KindDead})
//
// Besides the vendor listeners a control listener (URLs.Control) scripts
// faults, moves the clock and token lifetimes, revokes tokens and reads
// counters and the last API requests over HTTP with JSON bodies; every
// control route has a method on Sim. README.md in this folder lists the
// routes.
package vendorsim
