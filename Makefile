# tokenbroker. `make demo` walks through the main job on the embedded store
# with the vendor simulator; `make test` runs the whole test suite.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# The same flags the Dockerfile uses: a static, reproducible binary.
LDFLAGS   := -s -w -X main.version=$(VERSION)
GOBUILD   := CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)"
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@2025.1.1

.PHONY: all build demo test test-short lint fmt bench clean

all: lint test

build:
	@mkdir -p bin
	$(GOBUILD) -o bin/broker ./cmd/broker
	$(GOBUILD) -o bin/vendorsim ./cmd/vendorsim
	$(GOBUILD) -o bin/demo ./cmd/demo

demo: build
	./bin/demo -broker ./bin/broker -vendorsim ./bin/vendorsim

test:
	$(GO) test -race -count=1 -timeout 20m ./...

test-short:
	$(GO) test -count=1 -short ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin data artifacts
