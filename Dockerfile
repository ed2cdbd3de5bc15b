# Build: docker build -t mhero-mediator .
# Release: docker build --build-arg VERSION=1.2.0 --build-arg REVISION=$(git rev-parse HEAD) -t mhero-mediator:1.2.0 .
#
# VERSION is stamped into the binary (-ldflags -X main.version) and is the
# version the service registers with OpenHIM, so it must be SemVer (x.y.z):
# core refuses any other, and keeps the first registration of a version, so
# raise it whenever the registration changes. Its default is the version in
# cmd/mhero-mediator/config.go (a test keeps the two equal).
ARG VERSION=1.1.0
ARG REVISION=""
ARG SOURCE=https://github.com/openhie/mhero-mediator
# SPDX expression of the licence; the repository has no LICENSE file yet.
ARG LICENSES=NOASSERTION

# Build: a static binary, no cgo.
FROM golang:1.26 AS build
ARG VERSION
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN echo "$VERSION" | grep -Eq '^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$' \
 || { echo "VERSION \"$VERSION\" is not SemVer x.y.z: OpenHIM would refuse the registration" >&2; exit 1; }
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/mhero-mediator ./cmd/mhero-mediator \
 && mkdir -p /out/data

# Run: no shell, no package manager, a non-root user; CA certificates come
# with the distroless base for HTTPS to RapidPro and OpenHIM.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION
ARG REVISION
ARG SOURCE
ARG LICENSES
LABEL org.opencontainers.image.title="mhero-mediator" \
      org.opencontainers.image.description="OpenHIM mediator that keeps RapidPro contacts in step with an OpenInfoMan (CSD) health worker registry, for mHero" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="${LICENSES}"
COPY --from=build /out/mhero-mediator /usr/local/bin/mhero-mediator
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
ENV MHERO_STATE_FILE=/data/mhero-state.db
VOLUME /data
EXPOSE 8544
# No curl in the image: the binary asks its own /healthz (liveness, not
# readiness: a service waiting for OpenHIM is alive). It reads MHERO_PORT and
# MHERO_BIND as serve does. A container running another command (fakes)
# overrides this check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/mhero-mediator", "healthcheck", "--timeout", "3s"]
ENTRYPOINT ["/usr/local/bin/mhero-mediator"]
CMD ["serve"]
