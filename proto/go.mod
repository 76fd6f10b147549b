module github.com/sluicehq/sluice/proto

go 1.26
