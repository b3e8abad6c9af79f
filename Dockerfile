# Builds the tokenledger binary into a small image.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /tokenledger ./cmd/tokenledger

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /tokenledger /tokenledger
ENTRYPOINT ["/tokenledger"]
CMD ["serve"]
