module github.com/sluicehq/sluice/bench

go 1.26

require github.com/sluicehq/sluice/core v0.0.0

require github.com/aclements/go-moremath v0.0.0-20210112150236-f10218a38794 // indirect

replace github.com/sluicehq/sluice/core => ../core
