// Package chaos is issue 9's chaos run: three broker replicas under
// load while replicas are SIGKILLed, Redis is killed and restarted empty,
// Vault is paused, the simulated vendors fail token and API calls on
// purpose, and connections are swapped (reconnect, changeUser), all on
// 6-second access tokens with Atlassian rotation on. It stops by itself
// after -chaos.duration, sends traffic only to 127.0.0.1, prints a summary
// table and fails on any false flag, refresh-token reuse beyond the leeway,
// failed call on a live replica other than a vendor failure passed through,
// or ServiceNow call failed by a store outage. `make chaos` runs it for 5
// minutes; docs/chaos.md has the figures.
package chaos
