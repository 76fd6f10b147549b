# sluice-agent: the edge agent, a weighted reverse proxy per configured
# service driven by desired routing from NATS. Run it with
# `--config <file>`; the state directory named in the file must be writable
# by uid 65532 (the image's user): /home/nonroot/... is.
#
# Build context: the repository root, e.g.
#   docker build -f deploy/agent.Dockerfile --build-arg VERSION=$(git describe --always) -t sluice-agent .
# e2e/compose checks this file without Docker (see deploy/README.md).

FROM golang:1.26.8-bookworm AS build
ARG VERSION=dev
WORKDIR /src
# The workspace: go.work and every member module's go.mod and go.sum (go.*
# also matches a go.sum that does not exist yet).
COPY go.work ./
COPY analysis-worker/go.* analysis-worker/
COPY bench/go.* bench/
COPY devstack/go.* devstack/
COPY e2e/go.* e2e/
COPY services/go.* services/
COPY workflows/go.* workflows/
# The modules sluice-agent imports (proto: the metrics it publishes;
# flags: the flag store and evaluator of per-request flag variants).
COPY core/ core/
COPY proto/ proto/
COPY flags/ flags/
COPY agent/ agent/
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/sluice-agent ./agent/cmd/sluice-agent

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sluice-agent /usr/local/bin/sluice-agent
ENTRYPOINT ["/usr/local/bin/sluice-agent"]
CMD ["--config", "/etc/sluice/agent.yaml"]
