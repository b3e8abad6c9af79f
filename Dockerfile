# Builds tokenledger, the example resource server and a health-check probe
# into one small image (docker-compose.yml runs each from it).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/tokenledger ./cmd/tokenledger && \
    CGO_ENABLED=0 go build -trimpath -o /out/resourceserver ./examples/resourceserver && \
    CGO_ENABLED=0 go build -trimpath -o /out/healthcheck ./scripts/cluster/healthcheck

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tokenledger /out/resourceserver /out/healthcheck /
ENTRYPOINT ["/tokenledger"]
CMD ["serve"]
