module github.com/prezero/prezero

go 1.26.8
