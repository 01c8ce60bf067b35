# Blockcast Beacon. `make demo` runs the whole system on loopback; `make test`
# runs the test suite (installing the Debian tools the tests drive, as root).

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
BEACON_TAGS := nethttpomithttp2# as cross.BeaconTags
# As cross.NoInline: cold packages built without inlining (flash).
BEACON_NOINLINE := crypto/tls crypto/x509/... vendor/golang.org/x/crypto/cryptobyte/... crypto/ecdsa crypto/rsa crypto/ecdh crypto/elliptic crypto/hpke crypto/mlkem crypto/internal/fips140/nistec crypto/internal/fips140/ecdsa crypto/internal/fips140/rsa crypto/internal/fips140/mlkem crypto/internal/fips140/ecdh math/big encoding/json encoding/asn1 encoding/gob encoding/pem reflect fmt internal/fmtsort sort log/... flag net/http/... net/url net/textproto mime/... vendor/golang.org/x/text/... vendor/golang.org/x/net/... golang.org/x/net/proxy golang.org/x/net/internal/socks go.etcd.io/bbolt/... github.com/eclipse/... github.com/gorilla/... github.com/blockcast/beacon/shared/ctrlmsg github.com/blockcast/beacon/shared/offchain github.com/blockcast/beacon/shared/cli github.com/blockcast/beacon/shared/metrics github.com/blockcast/beacon/shared/signedreq github.com/blockcast/beacon/shared/receipt github.com/blockcast/beacon/shared/onchain github.com/blockcast/beacon/shared/solrpc github.com/blockcast/beacon/shared/soltx github.com/blockcast/beacon/firmware/agent github.com/blockcast/beacon/firmware/driad github.com/blockcast/beacon/firmware/castclient github.com/blockcast/beacon/firmware/receipts github.com/blockcast/beacon/firmware/cmd/beacon github.com/blockcast/beacon/shared/protocol github.com/blockcast/beacon/shared/connguard github.com/blockcast/beacon/shared/identity github.com/blockcast/beacon/firmware/beacon github.com/blockcast/beacon/shared/mcproto github.com/blockcast/beacon/shared/httpcache
BEACON_GCFLAGS := $(foreach p,$(BEACON_NOINLINE),-gcflags=$(p)=-l)
BIN     := .build/bin
export GOTOOLCHAIN := local
export CGO_ENABLED := 0

.PHONY: all build demo test test-short deps vet fuzz bench soak clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cloud/cmd/castd
	$(GO) build -trimpath -tags '$(BEACON_TAGS)' $(BEACON_GCFLAGS) -ldflags '$(LDFLAGS)' -o $(BIN)/ ./firmware/cmd/beacon

demo: build
	$(GO) run ./test/demo --bin $(BIN)

deps:
	@./test/install-deps.sh

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...

# The whole suite, end-to-end tests included. CI=true makes tests whose
# tools are missing fail instead of skipping.
# The 2-minute soak (test/soak) runs on its own after the rest: its steady
# load would otherwise stretch the timers of the packages beside it.
test: deps vet
	CGO_ENABLED=1 $(GO) test -count=1 -timeout 14m $$($(GO) list ./... | grep -v '/test/soak$$')
	CGO_ENABLED=1 $(GO) test -count=1 -timeout 6m ./test/soak

test-short: vet
	$(GO) test -short -count=1 ./...

# Every fuzz target for FUZZTIME each (default 10s), carrying on past a
# failing one; ends with a table (target, executions, new coverage, result)
# and fails when any target failed. FUZZ=regexp runs only matching targets;
# FUZZJOBS=2 fuzzes two targets at once (each with half the workers).
FUZZTIME ?= 10s
FUZZ     ?=
FUZZJOBS ?= 1
fuzz:
	$(GO) run ./test/fuzzall --fuzztime $(FUZZTIME) --jobs $(FUZZJOBS) --run '$(FUZZ)'

# Figures against baselines measured in the same run (nginx, raw UDP, ...).
bench: deps build
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./shared/... ./cloud/... ./firmware/...
	$(GO) test -run '^$$' -bench '^BenchmarkFigures$$' -benchtime 1x ./cloud/mcsend -args -mcsend.figures
	$(GO) run ./test/bench --bin $(BIN)
	$(GO) run ./test/anchorbench
	$(GO) run ./test/membench
	$(GO) run ./test/mipscount
	$(GO) run ./test/membench --arch arm64
	$(GO) run ./test/membench --arch armv6
	$(GO) test -run '^$$' -bench BeaconRSS -benchtime 1x ./test/amtnet

# A long run of the whole system under a steady mixed load with faults on a
# schedule (test/soak); SOAK=5m for a quick one. Writes samples.csv,
# chart.svg, errors.csv and report.txt to SOAK_OUT and fails when a wrong
# byte was served, an error fell outside a fault window, or memory, fds or
# goroutines grew. `make test` runs it for 2 minutes (TestSoak).
SOAK       ?= 1h
SOAK_OUT   ?= .build/soak
SOAK_ARGS  ?=
soak:
	$(GO) run ./test/soak --duration $(SOAK) --out $(SOAK_OUT) $(SOAK_ARGS)

clean:
	rm -rf .build

# Cross builds and packages (cross/, openwrt/, rpi/). The target list is
# cross/targets.txt; `make cross` writes it, with the binaries, into
# $(CROSS_OUT)/manifest.json, which the packager reads. CAST_URL, when set,
# becomes the castd URL in the packages' default configuration.
CROSS_OUT ?= .build/cross
PKG_OUT   ?= .build/pkg
CAST_URL  ?=
PKGTOOL    = cd cross/pkgtool && $(GO) run . --root $(CURDIR) --manifest $(CURDIR)/$(CROSS_OUT)/manifest.json \
             --out $(CURDIR)/$(PKG_OUT) --cast-url '$(CAST_URL)'

.PHONY: cross size package package-openwrt package-deb

# Every target: CGO off, -trimpath, stripped (-s -w).
cross:
	$(GO) run ./cross/cmd/cross build --out $(CROSS_OUT) --version $(VERSION)

# .ipk (OpenWrt 24.10) and .apk (OpenWrt 25.12), without an SDK.
package-openwrt: cross
	$(PKGTOOL) --formats ipk,apk

# .deb for Raspberry Pi OS (armhf = ARMv6, every Pi; arm64) and amd64.
package-deb: cross
	$(PKGTOOL) --formats deb

package: cross
	$(PKGTOOL) --formats ipk,apk,deb

# Sizes of every binary and package; fails when the mipsle beacon is over
# the flash budget (10 MB stripped, 4 MB as a package), as built and with the
# multicast receive path linked (cross/sizeprobe.go.txt) until the beacon
# links it.
# `cross shares` lists each package's bytes in that build.
size: package-openwrt
	$(GO) run ./cross/cmd/cross size --out $(CROSS_OUT) --packages $(PKG_OUT) --multicast
