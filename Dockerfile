# syntax=docker/dockerfile:1
#
# sluice's container image: a static Go binary on distroless "static" (CA
# certificates and time zones; no shell, no package manager), running as an
# unprivileged user.
#
#   docker build --build-arg VERSION="$(git describe --tags --always --dirty)" -t sluice .
#   docker run --rm sluice version
#
# TestDockerfileBuild (deploytest/dockerfile_test.go) runs the builder's
# build command, the RUN instruction after "# sluice:build", exactly as
# written, and checks that the binary is static and reports the stamped
# version.

ARG GO_VERSION=1.26.11

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
ARG TARGETOS=linux
ARG TARGETARCH=amd64
# sluice:build
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags "-s -w -X github.com/sluice-dev/sluice/sidecar.Version=${VERSION}" -o /sluice .

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="sluice" \
      org.opencontainers.image.description="Adaptive rate limiter and backpressure sidecar for bulk writers" \
      org.opencontainers.image.source="https://github.com/sluice-dev/sluice" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /sluice /sluice
# nonroot:nonroot of the distroless image.
USER 65532:65532
# 8080: the proxy the loader writes to. It listens on 127.0.0.1 (same pod
#       only) unless SLUICE_LISTEN_ADDR says otherwise.
# 9090: the admin API: /metrics, /healthz, /readyz, /v1/status, /v1/jobs.
EXPOSE 8080 9090
ENTRYPOINT ["/sluice"]
CMD ["run"]
