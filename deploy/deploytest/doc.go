// Package deploytest checks what operators deploy: the Grafana dashboard, the
// Prometheus alert rules, the Helm chart and the Dockerfile. It has no code of
// its own; its tests are the checks, in two sets.
//
// Plain `go test` (so `make test` and CI's test step) runs the checks that
// need nothing but Go (monitoring_test.go, alerts_test.go, manifests_test.go):
// every PromQL expression of the dashboard and the rules parses, every metric
// and label they use is one a running broker exposes, each alert fires on
// synthetic series that should fire it and stays quiet on series that should
// not, and the strict manifest decoder refuses unknown fields.
//
// The build tag chartcheck adds the checks that need `helm template` output
// or a build of the broker (chart_test.go, image_test.go). `make chart-check`
// renders the chart into a folder, names it in CHART_RENDER_DIR and runs
// `go test -tags chartcheck ./deploy/deploytest`; behind the tag they are
// never compiled by `go test ./...`, so `make test` does not depend on Helm.
package deploytest
