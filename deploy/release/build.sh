#!/bin/sh
# Cross-builds the release binaries of `gateway` into dist/ with the same command as the
# container image (deploy/docker/Dockerfile) and GoReleaser (.goreleaser.yaml): static
# (CGO_ENABLED=0), -trimpath, stripped, the version stamped in as main.version. Go stamps the
# commit and its time itself (vcs.revision, vcs.time) when it builds in a git checkout;
# -buildvcs=auto asks for that even where GOFLAGS turns it off. `gateway version` prints the
# version and the commit; `go version -m` shows the commit and the build settings.
#
#   deploy/release/build.sh                                # every target; version from git describe
#   VERSION=v1.2.3 DIST=/tmp/out deploy/release/build.sh linux/arm64
#
# Writes DIST/gateway_<os>_<arch>/gateway and DIST/SHA256SUMS.
set -eu
cd "$(dirname "$0")/../.."

VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
DIST=${DIST:-dist}
targets=${*:-linux/amd64 linux/arm64 darwin/amd64 darwin/arm64}

mkdir -p "$DIST"
for target in $targets; do
	os=${target%/*}
	arch=${target#*/}
	out="$DIST/gateway_${os}_${arch}/gateway"
	echo "building $out ($VERSION)"
	CGO_ENABLED=0 GOOS=$os GOARCH=$arch \
		go build -trimpath -buildvcs=auto -ldflags="-s -w -X main.version=${VERSION}" -o "$out" ./cmd/gateway
done

cd "$DIST"
if command -v sha256sum >/dev/null; then
	sha256sum gateway_*/gateway >SHA256SUMS
else
	shasum -a 256 gateway_*/gateway >SHA256SUMS
fi
