# Parley — see README.md.
GO ?= go
DATA ?= ./data

.PHONY: run test vet fuzz build clean

build:
	$(GO) build ./...

# One node on its embedded defaults, data in ./data.
run:
	$(GO) run ./cmd/parley --data $(DATA)

vet:
	$(GO) vet ./...

# The whole suite with the race detector, plus a short run of every fuzz target.
test: vet
	$(GO) test -race -count=1 -timeout 15m ./...
	$(MAKE) fuzz FUZZTIME=10s

FUZZTIME ?= 30s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg >/dev/null; \
	  done; \
	done

clean:
	rm -rf $(DATA)
