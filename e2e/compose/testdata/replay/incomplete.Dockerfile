# helper.go is not copied, so the build fails.
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod main.go ./
RUN CGO_ENABLED=0 go build -trimpath -o /out/tool .

FROM scratch
COPY --from=build /out/tool /tool
ENTRYPOINT ["/tool"]
