# otpq image: a static binary on an empty base, running as a non-root user.
#   docker build -t otpq .
#   docker run otpq worker …   (see docker-compose.yml)
# The Go toolchain of go.mod, exactly (internal/ops/compose_test.go checks it).
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/otpq ./cmd/otpq \
 && mkdir -p /out/etc/ssl/certs \
 && cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ \
 && echo 'otpq:x:65532:65532:otpq:/:/sbin/nologin' > /out/etc/passwd

FROM scratch
COPY --from=build /out/etc /etc
COPY --from=build /out/otpq /usr/local/bin/otpq
USER 65532:65532
EXPOSE 8080
# The image has no shell and no curl: otpq checks its own readiness.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/otpq", "healthcheck", "--url", "http://127.0.0.1:8080/readyz"]
ENTRYPOINT ["/usr/local/bin/otpq"]
CMD ["worker", "--http-addr", "0.0.0.0:8080"]
