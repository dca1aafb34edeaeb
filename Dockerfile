# syntax=docker/dockerfile:1
#
# tokenbroker image: the static broker binary on distroless, as a non-root user.
#
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) -t tokenbroker .
#   docker run --read-only -v tokenbroker-data:/data -e BROKER_AUTH_JWKS_URL=… tokenbroker
#
# The `go build` line uses exactly the Makefile's GOBUILD flags (static, -trimpath,
# the version in main.version). `make chart-check` (deploy/deploytest/image_test.go)
# fails when the two differ, builds the binary with these flags and runs it as
# 65532:65532 from a read-only folder.

FROM --platform=$BUILDPLATFORM golang:1.27 AS build
# The project's Go, whatever patch release the image carries (see the Makefile).
ENV GOTOOLCHAIN=go1.27.3
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
# Set by BuildKit for multi-platform builds; cross-compiling needs no cgo.
ARG TARGETOS TARGETARCH
ENV GOOS=$TARGETOS GOARCH=$TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/broker ./cmd/broker
# The embedded store's folder, owned by the runtime user, for when no volume is mounted at /data.
RUN mkdir -p /out/data

# distroless/static: CA certificates, tzdata, /etc/passwd with nonroot (65532); no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/broker /broker
COPY --from=build --chown=65532:65532 /out/data /data
# Listen on every address inside the container (the binary's defaults are loopback only). The broker writes
# nothing but the embedded store, in /data: the root filesystem can be read-only.
ENV BROKER_LISTEN_ADDR=0.0.0.0:8080 \
    BROKER_METRICS_ADDR=0.0.0.0:9090 \
    BROKER_DATA_DIR=/data
VOLUME ["/data"]
USER 65532:65532
# 8080: API, OAuth callback, proxy, /admin/. 9090: /metrics, /healthz, /readyz.
EXPOSE 8080 9090
ENTRYPOINT ["/broker"]
