# kubelvs — run `make help` for the targets.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

# Test binaries (etcd, kube-apiserver, kubectl, helm, controller-gen) are built
# from the Go module proxy into a cache outside the repo by hack/install-test-bins.sh.
TEST_BINS ?= $(or $(K8S_TEST_BINS_DIR),$(HOME)/.cache/k8s-test-bins)
export K8S_TEST_BINS_DIR := $(TEST_BINS)
CONTROLLER_GEN := $(TEST_BINS)/controller-gen
GOLANGCI_LINT := $(TEST_BINS)/golangci-lint
LINT_FLAGS ?=
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/kubelvs/kubelvs/pkg/version.Version=$(VERSION)
GO_TEST_FLAGS ?=
IMG ?= ghcr.io/kubelvs/kubelvs:$(VERSION)
ECHO_IMG ?= kubelvs/e2e-echo:dev
PAUSE_IMG ?= localhost/kubelvs/pause:3.10

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: demo
demo: ## Run it: a guest kernel with the API server, controller and agent; examples/ applied; real traffic.
	hack/demo.sh

.PHONY: test-bins
test-bins: ## Build etcd, kube-apiserver, kubectl, helm and controller-gen into $(TEST_BINS) (cold 7-10 min, warm <1 s).
	@hack/install-test-bins.sh "$(TEST_BINS)" >/dev/null

# The oldest Kubernetes the chart supports (kubeVersion in charts/kubelvs/Chart.yaml,
# whose minor test/floor checks against this one): test-unit installs the shipped CRD
# on its kube-apiserver, with the etcd of $(TEST_BINS).
K8S_FLOOR_VERSION ?= v1.31.14
FLOOR_BINS := $(TEST_BINS)/floor-$(K8S_FLOOR_VERSION)

.PHONY: test-bins-floor
test-bins-floor: test-bins ## Build the kube-apiserver of K8S_FLOOR_VERSION, the oldest supported, into $(TEST_BINS)/floor-* (cold ~10 CPU-min: 5-11 min on 2 cores; warm <1 s).
	@K8S_VERSION=$(K8S_FLOOR_VERSION) TOOLS=kube-apiserver hack/install-test-bins.sh "$(FLOOR_BINS)" >/dev/null
	@ln -sfn ../etcd "$(FLOOR_BINS)/etcd"

.PHONY: generate
generate: test-bins ## Generate deepcopy code for the API types.
	$(CONTROLLER_GEN) object paths=./api/...

.PHONY: manifests
manifests: test-bins ## Generate the CRD and RBAC manifests into config/.
	$(CONTROLLER_GEN) crd paths=./api/... output:crd:dir=config/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=kubelvs-controller paths=./controllers/... output:rbac:dir=config/rbac/controller
	$(CONTROLLER_GEN) rbac:roleName=kubelvs-agent paths=./pkg/roles/... output:rbac:dir=config/rbac/agent
	hack/gen-install.sh

.PHONY: verify
verify: test-bins lint ## Fail when generated files are stale, an import rule of ARCHITECTURE.md is broken, code is not gofmt'ed, go vet or golangci-lint complains.
	hack/verify-generated.sh
	hack/gen-install.sh --check
	hack/verify-imports.sh
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...

.PHONY: lint
lint: ## golangci-lint (pinned in hack/install-test-bins.sh, config .golangci.yml) over the default, e2e and demo builds (cold: ~4 min build + ~2 min first run; warm ~2 s).
	@TOOLS=golangci-lint hack/install-test-bins.sh "$(TEST_BINS)" >/dev/null
	$(GOLANGCI_LINT) run $(LINT_FLAGS) ./...

.PHONY: fmt
fmt: ## gofmt every Go file.
	gofmt -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## go vet ./...
	go vet ./...

.PHONY: test
test: verify test-unit fuzz test-kernel e2e e2e-cluster ## Everything CI runs: verify, unit + envtest, fuzzing, kernel tests, the e2e suite in a guest kernel, and on a real kubelet there.

.PHONY: test-unit
test-unit: test-bins test-bins-floor ## Unit tests and envtest suites (a real kube-apiserver and etcd; the CRD also on the oldest supported one).
	KUBELVS_REQUIRE_ENVTEST=1 KUBEBUILDER_ASSETS=$(TEST_BINS) KUBELVS_FLOOR_ASSETS=$(FLOOR_BINS) go test $(GO_TEST_FLAGS) ./...

# Each fuzz target runs a fixed number of executions (about 10 s each on 2
# cores; FUZZSCALE multiplies them). A count, not a duration: with a duration,
# Go 1.26's fuzzing coordinator can fail a clean run with "context deadline
# exceeded" when the deadline races a worker (golang/go#75804, fixed in 1.27).
# New failing inputs land in the package's testdata/fuzz/ (commit them: they
# become regression cases of `go test`).
FUZZSCALE ?= 1
FUZZ_TARGETS := ./pkg/desired:FuzzBuild:60000 ./pkg/conntrack/conntracknl:FuzzParseFlow:250000 \
	./pkg/ipset/ipsetnl:FuzzEntryRoundTrip:250000 ./pkg/ipset/ipsetnl:FuzzParseList:250000 ./pkg/pools:FuzzNew:70000 ./pkg/pools:FuzzAllocate:40000 \
	./pkg/lbservice:FuzzSpec:20000 ./pkg/ipvs/ipvsnl:FuzzParseDump:250000

.PHONY: fuzz
fuzz: ## Run every fuzz target for a fixed number of executions (~10 s each): desired-state building, the conntrack parser, ipset entries and listings, the IPVS dumps, address pools and their allocator, the Service translation.
	@set -e; for t in $(FUZZ_TARGETS); do IFS=: read -r pkg fn n <<<"$$t"; n=$$((n * $(FUZZSCALE))); \
		echo "fuzz $$pkg $$fn ($${n} executions)"; go test $$pkg -run '^$$' -fuzz "^$$fn$$" -fuzztime $${n}x; done

.PHONY: test-race
test-race: test-bins test-bins-floor ## Everything under the race detector: unit tests and envtest suites on the host, then the kernel tier and the e2e suite in a QEMU guest (the race runtime does not run in User-Mode Linux; software emulation: slow).
	KUBELVS_REQUIRE_ENVTEST=1 KUBEBUILDER_ASSETS=$(TEST_BINS) KUBELVS_FLOOR_ASSETS=$(FLOOR_BINS) go test -race $(GO_TEST_FLAGS) ./...
	RACE=1 VM_BACKEND=qemu VM_MEM=4096 KERNEL_TEST_OUT=$(HOME)/.cache/kubelvs/race-kernel hack/test-kernel.sh -test.timeout 120m
	RACE=1 VM_BACKEND=qemu VM_MEM=4096 E2E_OUT=$(HOME)/.cache/kubelvs/race-e2e hack/e2e.sh -test.timeout 150m

.PHONY: soak
soak: test-bins ## Long reliability runs: 5 min of backend churn and ten 60 s API server outages under TCP and UDP traffic in the guest kernel, and ten outages against envtest.
	KUBELVS_CHURN_SECONDS=300 KUBELVS_OUTAGE_RUNS=10 hack/e2e.sh -test.run 'TestReliability/(churn|api-server)' -test.timeout 40m
	KUBELVS_OUTAGE_SECONDS=60 KUBELVS_OUTAGE_RUNS=10 KUBELVS_REQUIRE_ENVTEST=1 KUBEBUILDER_ASSETS=$(TEST_BINS) \
		go test ./test/envtest -run '^TestAgentThroughAnAPIServerOutage$$' -v -timeout 30m

.PHONY: test-kernel
test-kernel: ## Kernel tests: compiled here, run against real IPVS in a throw-away guest kernel.
	hack/test-kernel.sh

.PHONY: e2e
e2e: test-bins ## End-to-end suite in a guest kernel: API server, controller, agent, real traffic (chart RBAC).
	hack/e2e.sh

.PHONY: e2e-cluster
e2e-cluster: ## The suite against a real single-node cluster in a guest kernel: kubelet, containerd, the image and chart as pods; upgrade, rollout, uninstall.
	hack/e2e-cluster.sh

.PHONY: e2e-kind
e2e-kind: ## The same suite against a kind cluster (needs docker, kind, helm, kubectl).
	hack/e2e-kind.sh

.PHONY: build
build: ## Build bin/manager.
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o bin/manager ./cmd/manager

.PHONY: helm-lint
helm-lint: test-bins ## Lint and render the chart, check dist/install.yaml and the chart's CRD are current, run test/chart.
	hack/helm-test.sh

.PHONY: install-yaml
install-yaml: test-bins ## Regenerate dist/install.yaml and charts/kubelvs/crds from config/.
	hack/gen-install.sh

.PHONY: docker-build
docker-build: ## Build the image $(IMG) (needs a Docker engine).
	docker build --build-arg VERSION=$(VERSION) -t $(IMG) .

.PHONY: image
image: ## Build image archives of $(IMG), $(ECHO_IMG) and $(PAUSE_IMG) for `ctr images import`, without Docker (buildah; cold 7-15 min, after a change ~15 s, unchanged <1 s).
	IMG='$(IMG)' ECHO_IMG='$(ECHO_IMG)' PAUSE_IMG='$(PAUSE_IMG)' VERSION='$(VERSION)' hack/build-images.sh

.PHONY: bench
bench: test-bins ## Scale benchmarks in a guest kernel -> bench/results.json, bench/results.svg (see BENCHMARKS.md).
	hack/bench.sh

# The cluster-scale simulation of the agents' status reports (issue 15): one
# kube-apiserver + etcd on the host, the controller and NODES agents (fake
# kernels) in one process, once per design of DESIGNS: status-nodes (an
# entry per node in every VirtualService's status) and node-reports (one
# NodeReport per node, agent --node-reports), each run with its own
# kube-apiserver. Runs are merged into bench/cluster-results.json.
# The old design bounds the defaults: with per-node entries in every
# VirtualService's status, kube-apiserver's CPU, not the agents, bounds what
# one host can simulate (BENCHMARKS.md), so status-nodes alone took about
# 25 minutes on 2 cores. Every run now also measures a minute of
# kube-apiserver's background first (-baseline), and node-reports waits up to
# 30 s after each spec change for the reports the agents write at their idle
# tick: about 7 more minutes per number of nodes, both designs together (an
# estimate from small runs). The new design alone, which leaves
# kube-apiserver far less to do, can be run at larger N, e.g.
# make bench-cluster DESIGNS=node-reports NODES=100,200 (not measured here
# yet: the agents in the one process then cost CPU and memory of their own).
# The issue's 50,100,200 nodes and 1,000 VirtualServices in both designs take
# a bigger host.
NODES ?= 10,25,50
CLUSTER_VS ?= 50
CLUSTER_CHANGES ?= 6
CLUSTER_CHANGE_TIMEOUT ?= 5m
DESIGNS ?= status-nodes,node-reports
.PHONY: bench-cluster
bench-cluster: test-bins ## Status reports at cluster scale, DESIGNS (status-nodes, node-reports) side by side: NODES agents (default 10,25,50) with CLUSTER_VS VirtualServices in one process against one kube-apiserver -> bench/cluster-results.json, .svg.
	KUBEBUILDER_ASSETS=$(TEST_BINS) go run ./bench/cluster -nodes $(NODES) -virtualservices $(CLUSTER_VS) \
		-changes $(CLUSTER_CHANGES) -change-timeout $(CLUSTER_CHANGE_TIMEOUT) -designs $(DESIGNS) -commit $$(git rev-parse --short HEAD)

.PHONY: bench-agent
bench-agent: test-bins ## EndpointSlice-to-kernel latency of the agent binary with 1,000 VirtualServices, in the guest.
	hack/bench-agent.sh
