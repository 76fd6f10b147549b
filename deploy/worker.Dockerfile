# sluice-worker: runs rollout workflows and their activities (Temporal + NATS).
#
# Build context: the repository root, e.g.
#   docker build -f deploy/worker.Dockerfile -t sluice-worker .
# e2e/compose checks this file without Docker (see deploy/README.md).

FROM golang:1.26.8-bookworm AS build
WORKDIR /src
# The workspace: go.work and every member module's go.mod and go.sum (go.*
# also matches a go.sum that does not exist yet).
COPY go.work ./
COPY agent/go.* agent/
COPY analysis-worker/go.* analysis-worker/
COPY bench/go.* bench/
COPY devstack/go.* devstack/
COPY e2e/go.* e2e/
COPY flags/go.* flags/
COPY proto/go.* proto/
COPY services/go.* services/
# The modules sluice-worker imports.
COPY core/ core/
COPY flags/ flags/
COPY workflows/ workflows/
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/sluice-worker ./workflows/cmd/sluice-worker

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sluice-worker /usr/local/bin/sluice-worker
EXPOSE 9102
ENTRYPOINT ["/usr/local/bin/sluice-worker"]
CMD ["--http", "0.0.0.0:9102"]
