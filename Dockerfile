# --- build ---
FROM golang:1.26-bookworm AS build
WORKDIR /src

# Dependencies first, so this layer is reused until go.mod/go.sum change.
COPY go.mod go.sum ./
RUN go mod download

COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/opgate ./cmd/opgate \
 && mkdir -p /out/data

# --- runtime ---
FROM gcr.io/distroless/static-debian12:nonroot

COPY --from=build /out/opgate /opgate
# /data holds the SQLite store when no PostgreSQL is configured; it must be
# writable by the nonroot user (65532). Mount a volume here to keep it.
COPY --from=build --chown=65532:65532 /out/data /data
WORKDIR /data
USER 65532:65532

ENV OPGATE_ADDR=0.0.0.0:8080 \
    OPGATE_DATABASE_URL=sqlite:/data/opgate.db

EXPOSE 8080
ENTRYPOINT ["/opgate"]
CMD ["serve"]
