module github.com/sluicehq/sluice/flags

go 1.26.0

require (
	connectrpc.com/connect v1.21.1
	github.com/cucumber/godog v0.16.0
	github.com/diegoholiveira/jsonlogic/v3 v3.9.1
	github.com/nats-io/nats.go v1.55.0
	github.com/open-feature/go-sdk v1.20.0
	github.com/sluicehq/sluice/agent v0.0.0
	github.com/sluicehq/sluice/core v0.0.0
	github.com/sluicehq/sluice/devstack v0.0.0
	github.com/sluicehq/sluice/proto v0.0.0
	github.com/twmb/murmur3 v1.1.8
	golang.org/x/mod v0.35.0
	google.golang.org/protobuf v1.36.12
)

require (
	github.com/antithesishq/antithesis-sdk-go v0.8.0-default-no-op // indirect
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/cucumber/gherkin/go/v42 v42.0.1 // indirect
	github.com/cucumber/messages/go/v34 v34.2.1 // indirect
	github.com/google/go-tpm v0.9.8 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/hashicorp/go-immutable-radix v1.3.1 // indirect
	github.com/hashicorp/go-memdb v1.3.5 // indirect
	github.com/hashicorp/golang-lru v1.0.2 // indirect
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/minio/highwayhash v1.0.4 // indirect
	github.com/munnerz/goautoneg v0.0.0-20191010083416-a7dc8b61c822 // indirect
	github.com/nats-io/jwt/v2 v2.8.2 // indirect
	github.com/nats-io/nats-server/v2 v2.15.2 // indirect
	github.com/nats-io/nkeys v0.4.16 // indirect
	github.com/nats-io/nuid v1.0.1 // indirect
	github.com/prometheus/client_golang v1.25.0 // indirect
	github.com/prometheus/client_model v0.6.3 // indirect
	github.com/prometheus/common v0.72.0 // indirect
	github.com/prometheus/procfs v0.22.0 // indirect
	github.com/spf13/pflag v1.0.10 // indirect
	go.uber.org/mock v0.6.0 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/time v0.16.0 // indirect
)

replace (
	github.com/sluicehq/sluice/agent => ../agent
	github.com/sluicehq/sluice/core => ../core
	github.com/sluicehq/sluice/devstack => ../devstack
	github.com/sluicehq/sluice/proto => ../proto
)
