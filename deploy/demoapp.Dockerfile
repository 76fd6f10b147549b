# sluice-demoapp: the small HTTP service the local stack rolls out; every
# response names the revision that served it (--revision name@sha256:...).
#
# Build context: the repository root, e.g.
#   docker build -f deploy/demoapp.Dockerfile -t sluice-demoapp .
# e2e/compose checks this file without Docker (see deploy/README.md).

FROM golang:1.26.8-bookworm AS build
WORKDIR /src
# The workspace: go.work and every member module's go.mod and go.sum (go.*
# also matches a go.sum that does not exist yet).
COPY go.work ./
COPY agent/go.* agent/
COPY analysis-worker/go.* analysis-worker/
COPY bench/go.* bench/
COPY core/go.* core/
COPY devstack/go.* devstack/
COPY e2e/go.* e2e/
COPY flags/go.* flags/
COPY proto/go.* proto/
COPY services/go.* services/
COPY workflows/go.* workflows/
# The demo app uses the standard library only.
COPY services/cmd/sluice-demoapp/ services/cmd/sluice-demoapp/
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/sluice-demoapp ./services/cmd/sluice-demoapp

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sluice-demoapp /usr/local/bin/sluice-demoapp
EXPOSE 9001
ENTRYPOINT ["/usr/local/bin/sluice-demoapp"]
