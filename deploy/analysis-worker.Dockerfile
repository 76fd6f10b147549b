# sluice-analysis-worker: ingests the agents' per-second metrics from NATS
# JetStream into ClickHouse (native protocol, --clickhouse host:port) and
# judges analysis runs, sending verdicts to the rollouts' Temporal workflows.
#
# Build context: the repository root, e.g.
#   docker build -f deploy/analysis-worker.Dockerfile -t sluice-analysis-worker .
# e2e/compose checks this file without Docker (see deploy/README.md).

FROM golang:1.26.8-bookworm AS build
WORKDIR /src
# The workspace: go.work and every member module's go.mod and go.sum (go.*
# also matches a go.sum that does not exist yet).
COPY go.work ./
COPY agent/go.* agent/
COPY bench/go.* bench/
COPY devstack/go.* devstack/
COPY e2e/go.* e2e/
COPY flags/go.* flags/
COPY services/go.* services/
# The modules sluice-analysis-worker imports (proto: the agents' metrics
# batches; workflows: rollout records in NATS, the workflows its verdicts
# go to, and the /metrics, /healthz, /readyz endpoints).
COPY analysis-worker/ analysis-worker/
COPY core/ core/
COPY flags/ flags/
COPY proto/ proto/
COPY workflows/ workflows/
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/sluice-analysis-worker ./analysis-worker/cmd/sluice-analysis-worker

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sluice-analysis-worker /usr/local/bin/sluice-analysis-worker
EXPOSE 9103
ENTRYPOINT ["/usr/local/bin/sluice-analysis-worker"]
CMD ["--http", "0.0.0.0:9103"]
