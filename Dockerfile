# authpipe container image: a static binary on distroless, running as non-root.
#
#   docker build -t authpipe \
#     --build-arg VERSION=1.2.3 --build-arg REVISION="$(git rev-parse HEAD)" .
#
# The shipped rules are in /app/alerts and the working directory is /app, so
# the default AUTHPIPE_RULES (alerts/thresholds.yml) works; mount your own
# rules elsewhere and set AUTHPIPE_RULES. The embedded buffer (no REDIS_URL)
# writes to /app/data, owned by the runtime user.
# docker-compose.yml runs it next to Redis, Prometheus, Alertmanager and
# Grafana; `authpipe sim` (same image) serves the simulators for the demo.

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY cmd/ cmd/
COPY internal/ internal/
COPY alerts/ alerts/
ARG VERSION=dev
ARG REVISION=unknown
# CGO off: a static binary that needs no libc in the runtime image.
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -buildvcs=false \
        -ldflags "-s -w -X main.version=${VERSION} -X main.revision=${REVISION}" \
        -o /out/authpipe ./cmd/authpipe \
    && /out/authpipe version \
    && /out/authpipe rules check alerts/thresholds.yml \
    && mkdir -p /out/data

# distroless static: CA certificates, tzdata and /etc/passwd with the
# nonroot user (65532); no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="authpipe" \
      org.opencontainers.image.description="Auth0 logs -> Redis Streams -> Segment, with threshold alerts and Prometheus metrics" \
      org.opencontainers.image.source="https://github.com/authpipe/authpipe" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
WORKDIR /app
COPY --from=build /out/authpipe /usr/local/bin/authpipe
COPY alerts/ /app/alerts/
COPY --from=build --chown=65532:65532 /out/data /app/data
USER 65532:65532
EXPOSE 9464
# No curl in the image: the binary probes its own /-/healthy (port from
# AUTHPIPE_LISTEN, default :9464).
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/usr/local/bin/authpipe", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/authpipe"]
CMD ["run"]
