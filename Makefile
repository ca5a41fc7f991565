# prezero: make build | make test | make demo | make bench | make fuzz | make lint
GO ?= go

.PHONY: build test demo bench fuzz vet deps lint lint-tools

build:
	$(GO) build -o prezero ./cmd/prezero

# The whole test suite: unit tests, fuzz seed corpora, and the integration
# tests that run the real mkfs.ext4, mkntfs, sfdisk, zerofree, ntfsclone,
# FUSE and borg. Needs root for loop devices and ntfs-3g mounts.
# Checks the Debian packages of .ci/run's list: installs the missing ones as
# root, otherwise prints the apt-get line.
deps:
	./scripts/deps.sh

test: deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 30m ./...

demo: build
	./scripts/demo.sh

bench: build
	./bench/core.sh
	./bench/backup.sh
	./bench/restore.sh
	./bench/nbd.sh
	./bench/vmdisk.sh
	./bench/memory.sh
	./bench/crosscheck.sh
	./bench/journal.sh

# Short fuzzing runs of every on-disk parser (FUZZTIME each). Large seed
# images make Go's input minimisation slow, hence -fuzzminimizetime.
FUZZTIME ?= 30s
FUZZ = $(GO) test -run='^$$' -fuzzminimizetime=10x -fuzztime=$(FUZZTIME)
fuzz:
	$(FUZZ) -fuzz='^FuzzRead$$' ./internal/layout    # MBR, EBR, GPT, backup GPT writer
	$(FUZZ) -fuzz='^FuzzRead$$' ./extfsmap
	$(FUZZ) -fuzz='^FuzzPatch$$' ./extfsmap
	$(FUZZ) -fuzz='^FuzzRecover$$' ./extfsmap/internal/jbd2
	for f in FuzzRead FuzzBootSector FuzzFixup FuzzRunlist FuzzRecord FuzzScanner; do \
		$(FUZZ) -fuzz="^$$f\$$" ./ntfsmap || exit 1; done
	$(FUZZ) -fuzz='^FuzzReplies$$' ./internal/nbd
	$(FUZZ) -fuzz='^FuzzHostMap$$' ./internal/source
	$(FUZZ) -fuzz='^FuzzRead$$' ./fatmap
	$(FUZZ) -fuzz='^FuzzRead$$' ./exfatmap
	for f in FuzzRead FuzzMetadata; do $(FUZZ) -fuzz="^$$f\$$" ./lvm || exit 1; done
	$(FUZZ) -fuzz='^FuzzRead$$' ./swapmap
	$(FUZZ) -fuzz='^FuzzRead$$' ./xfsmap

# Static analysis: gofmt, go vet and staticcheck's default checks.
# staticcheck is pinned; `make lint-tools` installs it (.ci/run does).
STATICCHECK_VERSION = v0.8.2
STATICCHECK ?= $(shell $(GO) env GOPATH)/bin/staticcheck
lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

lint-tools:
	$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
