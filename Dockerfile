# syntax=docker/dockerfile:1
# kubelvs: one image, both roles (`manager controller`, `manager agent`).
# make docker-build  (docker build --build-arg VERSION=$(git describe) -t ghcr.io/kubelvs/kubelvs:<tag> .)

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS=linux
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /src
# Modules first: a builder that caches steps reuses this one until go.mod or
# go.sum change. The module and build caches are cache mounts, which BuildKit
# and buildah keep across builds: a rebuild compiles only what changed.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY api/ api/
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY pkg/ pkg/
COPY internal/ internal/
# Static (no cgo): the runtime image needs no Go or C libraries of ours.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath \
      -ldflags "-s -w -X github.com/kubelvs/kubelvs/pkg/version.Version=${VERSION}" \
      -o /out/manager ./cmd/manager

# Not distroless: the agent execs iptables-{legacy,nft}-{save,restore} and
# ip6tables-* (Debian's iptables package ships both backends), and the
# agent's kernel-setup init container uses sh and modprobe (kmod).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables kmod \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/manager /manager
# Non-root by default, as the controller runs; the agent's DaemonSet sets
# runAsUser: 0 because netlink and iptables need root with NET_ADMIN.
USER 65532:65532
ENTRYPOINT ["/manager"]
