# Keyward build, generate and test targets. Tools are pinned and installed into
# .tools/ on first use so a fresh machine needs only Go (and npm for buf).
SHELL := /bin/bash
GO ?= go
TOOLS := $(CURDIR)/.tools
TOOLBIN := $(TOOLS)/bin
export PATH := $(TOOLBIN):$(TOOLS)/node_modules/.bin:$(PATH)

BUF_VERSION := 1.75.0
PROTOC_GEN_GO := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
PROTOC_GEN_GATEWAY := github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@v2.33.0
PROTOC_GEN_OPENAPI := github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@v2.33.0
GRPCURL := github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4
GOOGLEAPIS_MOD := github.com/grpc-ecosystem/grpc-gateway@v1.16.0

.PHONY: grpcurl all build run test test-short reliability bench generate lint check-generated tools ci-deps clean

all: build

build:
	$(GO) build -o bin/keyward ./cmd/keyward

run:
	$(GO) run ./cmd/keyward serve

# Unit, store-conformance (SQLite and Postgres) and end-to-end tests.
# Tests that need Postgres or Redis skip loudly on a laptop without them and fail when CI=true.
test:
	$(GO) test -race -count=1 -timeout 20m ./...

test-short:
	$(GO) test -short -count=1 ./...

# Fuzz targets, as package:Target (go test -fuzz takes one target per run).
# Their seed corpora are in each package's testdata/fuzz/<Target>/, which
# `make test` runs as ordinary tests. `make fuzz` fuzzes every target for
# FUZZTIME, one after another (make fuzz FUZZTIME=10m); CI runs fuzz-ci, a
# few seconds each. A failing input is written to testdata/fuzz/<Target>/:
# keep it, with the fix, as a regression seed. FUZZMINIMIZETIME bounds the
# minimising of each new input: go's default of 60s would spend a short run
# minimising in the large test binaries of keyservice, server and extauthz.
# FUZZFLAGS passes more flags, e.g. FUZZFLAGS='-parallel 1' on a shared machine.
.PHONY: fuzz fuzz-ci
FUZZTIME ?= 30s
FUZZMINIMIZETIME ?= 50x
FUZZFLAGS ?=
FUZZ_TARGETS := \
	./internal/keymat:FuzzParse \
	./internal/keymat:FuzzGenerate \
	./internal/keyservice:FuzzUpdateMask \
	./internal/keyservice:FuzzPageToken \
	./internal/keyservice:FuzzSearchQuery \
	./internal/server:FuzzRESTBody \
	./internal/extauthz:FuzzCheckView \
	./internal/config:FuzzParse
fuzz:
	@failed=""; for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; target=$${t#*:}; echo "== $$target ($$pkg), $(FUZZTIME)"; \
	  $(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $(FUZZFLAGS) $$pkg \
	    || failed="$$failed $$target($$pkg)"; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: failed:$$failed"; exit 1; fi

fuzz-ci:
	$(MAKE) fuzz FUZZTIME=5s

# The reliability tests at full size (KEYWARD_FULL=1; see RELIABILITY.md);
# `make test` runs each at a reduced size. Needs Postgres and redis-server.
#  - crash safety (test/e2e/crash_test.go): 10,000 management operations from
#    16 clients while keyward is killed (SIGKILL) 20 times, on SQLite and on
#    Postgres, and while its Postgres connections are cut 20 times;
#  - the revocation checker (test/e2e/revocation_checker_test.go): 10,000
#    revocations through three instances, interleaved with Validate and Check
#    from six clients, judged from the recorded history; 1,000 more on a Redis
#    Cluster;
#  - the fault matrix (test/e2e/faultmatrix_test.go): each fault for 20 s
#    under validation and management load.
# About 20 minutes.
reliability:
	KEYWARD_FULL=1 $(GO) test -count=1 -timeout 60m -run 'TestCrashSafety|TestRevocationAcrossInstances|TestFaultMatrix' -v ./test/e2e

# Soak (test/e2e/soak_test.go): two instances over Postgres and a private
# redis-server, Validate and Check at a steady rate with management churn for
# SOAK (make soak SOAK=2h), sampling each instance's heap, resident memory,
# goroutines, open descriptors, pool connections and the client's latency;
# they must stay flat. KEYWARD_SOAK_RATE (calls/s, default 400),
# KEYWARD_SOAK_WRITES (writes/s, default 5) and KEYWARD_SOAK_INTERVAL tune
# it, e.g. make soak SOAK=30m KEYWARD_SOAK_RATE=1000. CI runs SOAK=1m.
.PHONY: soak
SOAK ?= 10m
SOAK_TIMEOUT ?= 3h
soak:
	KEYWARD_SOAK=$(SOAK) $(GO) test -count=1 -timeout $(SOAK_TIMEOUT) -run 'TestSoak$$' -v ./test/e2e

# Validate's hot path against baselines, DisableKey with three instances and
# allocations per Validate; needs Postgres and Redis on 127.0.0.1 (see
# BENCHMARKS.md). A few minutes. Pass flags with e.g. BENCHFLAGS='-d 2s -keys 20000'.
BENCHFLAGS ?=
bench:
	$(GO) run ./cmd/kwbench $(BENCHFLAGS)

$(TOOLBIN)/protoc-gen-go:
	GOBIN=$(TOOLBIN) $(GO) install $(PROTOC_GEN_GO)
$(TOOLBIN)/protoc-gen-go-grpc:
	GOBIN=$(TOOLBIN) $(GO) install $(PROTOC_GEN_GO_GRPC)
$(TOOLBIN)/protoc-gen-grpc-gateway:
	GOBIN=$(TOOLBIN) $(GO) install $(PROTOC_GEN_GATEWAY)
$(TOOLBIN)/protoc-gen-openapiv2:
	GOBIN=$(TOOLBIN) $(GO) install $(PROTOC_GEN_OPENAPI)
grpcurl: $(TOOLBIN)/grpcurl
$(TOOLBIN)/grpcurl:
	GOBIN=$(TOOLBIN) $(GO) install $(GRPCURL)
$(TOOLS)/node_modules/.bin/buf:
	npm install --silent --no-audit --no-fund --prefix $(TOOLS) @bufbuild/buf@$(BUF_VERSION)

# googleapis' http annotations are not in any Go module we import; copy them from
# the module cache into a git-ignored folder that buf.yaml lists as a second module.
third_party/googleapis/google/api/annotations.proto:
	$(GO) mod download $(GOOGLEAPIS_MOD)
	mkdir -p third_party/googleapis/google/api
	dir=$$($(GO) mod download -json $(GOOGLEAPIS_MOD) | sed -n 's/.*"Dir": "\(.*\)".*/\1/p'); \
	  cp $$dir/third_party/googleapis/google/api/{annotations,http}.proto third_party/googleapis/google/api/
	chmod -R u+w third_party

tools: $(TOOLBIN)/protoc-gen-go $(TOOLBIN)/protoc-gen-go-grpc $(TOOLBIN)/protoc-gen-grpc-gateway \
	$(TOOLBIN)/protoc-gen-openapiv2 $(TOOLS)/node_modules/.bin/buf third_party/googleapis/google/api/annotations.proto

generate: tools
	rm -rf gen
	buf generate
	cp gen/openapiv2/keyward.swagger.json internal/server/openapi.json

lint: tools
	buf lint
	buf format -d --exit-code proto

check-generated: generate
	git diff --exit-code -- gen internal/server/openapi.json
	@test -z "$$(git status --porcelain -- gen)" || { echo "untracked files in gen/"; git status --porcelain -- gen; exit 1; }

# What CI needs beyond Go: the code generators, grpcurl for the README's gRPC
# walk-through, and Debian packages for the end-to-end tests, as command:package
# pairs (a package is installed when its command is missing).
CI_COMMANDS := curl:curl jq:jq redis-server:redis-server redis-cli:redis-tools nginx:nginx-light chromium:chromium
APT_GET := $(shell command -v sudo >/dev/null 2>&1 && [ "$$(id -u)" != 0 ] && echo sudo) apt-get
ci-deps: tools grpcurl k8s-openapi
	@missing=""; for pair in $(CI_COMMANDS); do \
	  command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(APT_GET) update -qq && $(APT_GET) install -y -qq -o DPkg::Lock::Timeout=600 $$missing; \
	fi

# Kubernetes' OpenAPI document, against which test/deploy validates deploy/k8s
# offline: api/openapi-spec/swagger.json of the k8s.io/kubernetes module, from
# the Go module proxy (checked against sum.golang.org). Keep the version equal
# to k8s.io/api's in go.mod (v0.X.Y is Kubernetes v1.X.Y); the test says so.
K8S_OPENAPI_VERSION := v1.37.2
K8S_OPENAPI := $(TOOLS)/k8s-openapi/$(K8S_OPENAPI_VERSION)/swagger.json
.PHONY: k8s-openapi
k8s-openapi: $(K8S_OPENAPI)
$(K8S_OPENAPI):
	mkdir -p $(dir $@)
	dir=$$($(GO) mod download -json k8s.io/kubernetes@$(K8S_OPENAPI_VERSION) | sed -n 's/.*"Dir": "\(.*\)".*/\1/p'); \
	  cp $$dir/api/openapi-spec/swagger.json $@.tmp
	chmod u+w $@.tmp && mv $@.tmp $@

clean:
	rm -rf bin .tools third_party
