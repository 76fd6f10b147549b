# sluice-api: the public API (Connect, gRPC and gRPC-Web on one h2c port).
#
# Build context: the repository root, e.g.
#   docker build -f deploy/api.Dockerfile -t sluice-api .
# e2e/compose checks this file without Docker: every COPY source exists, every
# image is pinned, and the builder stage's `go build` succeeds on exactly the
# files copied here.

FROM golang:1.26.8-bookworm AS build
WORKDIR /src
# The workspace: go.work and every member module's go.mod and go.sum. Go loads
# the whole workspace's build list even to build one binary. go.* also
# matches the go.sum of a module that does not have one yet.
COPY go.work ./
COPY agent/go.* agent/
COPY bench/go.* bench/
COPY devstack/go.* devstack/
COPY e2e/go.* e2e/
# The modules sluice-api imports.
COPY analysis-worker/ analysis-worker/
COPY core/ core/
COPY flags/ flags/
COPY proto/ proto/
COPY workflows/ workflows/
COPY services/ services/
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/sluice-api ./services/cmd/sluice-api

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sluice-api /usr/local/bin/sluice-api
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/sluice-api"]
CMD ["--listen", "0.0.0.0:8080"]
