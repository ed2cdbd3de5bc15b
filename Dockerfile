# Build: a static binary, no cgo.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/mhero-mediator ./cmd/mhero-mediator \
 && mkdir -p /out/data

# Run: no shell, no package manager, a non-root user; CA certificates come
# with the distroless base for HTTPS to RapidPro and OpenHIM.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/mhero-mediator /usr/local/bin/mhero-mediator
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
ENV MHERO_STATE_FILE=/data/mhero-state.db
VOLUME /data
EXPOSE 8544
ENTRYPOINT ["/usr/local/bin/mhero-mediator"]
CMD ["serve"]
