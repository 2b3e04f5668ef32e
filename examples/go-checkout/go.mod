module checkout

go 1.19
