module github.com/sluicehq/sluice/workflows

go 1.26
