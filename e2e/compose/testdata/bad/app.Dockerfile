# Planted violations for TestCheckReportsViolations.
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY present.txt ./
# Line 6: a source that does not exist; line 7: a glob that matches nothing.
COPY missing.txt ./
COPY lib/*.go ./lib/
RUN echo build
FROM alpine
COPY --from=build /src/present.txt /present.txt
ENTRYPOINT ["/bin/true"]
