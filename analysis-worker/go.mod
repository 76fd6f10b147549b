module github.com/sluicehq/sluice/analysis-worker

go 1.26
