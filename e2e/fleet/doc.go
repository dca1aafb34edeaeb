// Package fleet holds the tests only a fleet can show, several broker
// processes on one Redis and one Vault with the vendor simulator
// (internal/testenv.StartFleet): one refresh per connection across
// replicas, changes reaching every replica, a lease holder killed
// mid-refresh, and store outages.
package fleet
