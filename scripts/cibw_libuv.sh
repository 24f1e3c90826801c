#!/bin/sh
# cibuildwheel's before-all (pyproject.toml, [tool.cibuildwheel]): build
# libuv from a pinned, checksummed source release and install it into
# /usr/local of the manylinux container, for setup.py (pkg-config) to build
# against and for auditwheel to copy into every wheel.
#
# Why a source release and not the image's package manager: the
# manylinux_2_28 image is AlmaLinux 8, whose libuv-devel is not in the
# default repositories (it is in "powertools"; "crb" on the AlmaLinux 9 of
# manylinux_2_34): a repository name that changes with the image, and an
# old libuv (1.41).  A pinned release gives every wheel, x86_64 and
# aarch64, every image, the same known libuv, checked by its SHA-256.
#
# Environment (for a local try of this script; a release leaves them unset):
#   LIBUV_URL, LIBUV_SHA256   another release tarball (a file path works too)
#   LIBUV_PREFIX              install prefix (default /usr/local)
set -eu

LIBUV_VERSION=1.52.1
LIBUV_URL=${LIBUV_URL:-https://github.com/libuv/libuv/archive/refs/tags/v$LIBUV_VERSION.tar.gz}
LIBUV_SHA256=${LIBUV_SHA256:-478baf2599bfbc882c355288c9cb6f92e0e7dda435fa04031fa5b607cf3f414c}
PREFIX=${LIBUV_PREFIX:-/usr/local}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
case "$LIBUV_URL" in
    /*) cp "$LIBUV_URL" libuv.tar.gz ;;
    *) curl -fsSL --retry 3 -o libuv.tar.gz "$LIBUV_URL" ;;
esac
echo "$LIBUV_SHA256  libuv.tar.gz" | sha256sum -c -
mkdir src && tar xzf libuv.tar.gz -C src --strip-components=1

# cmake: the manylinux images have it; if one does not, take it from PyPI.
if ! command -v cmake >/dev/null 2>&1; then
    for py in /opt/python/cp3*/bin/python python3; do
        if command -v "$py" >/dev/null 2>&1 && "$py" -m pip install -q cmake; then
            PATH=$(dirname "$(command -v "$py")"):$PATH
            break
        fi
    done
fi

cmake -S src -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$PREFIX" \
    -DCMAKE_INSTALL_LIBDIR=lib -DLIBUV_BUILD_TESTS=OFF -DLIBUV_BUILD_BENCH=OFF
cmake --build build -j "$(nproc)"
cmake --install build

# The dynamic loader and auditwheel look in ld.so.conf's directories:
# make sure the prefix's lib/ is one (RHEL does not list /usr/local/lib).
# Not for a local try into another prefix.
if [ -z "${LIBUV_PREFIX:-}" ] && [ "$(id -u)" -eq 0 ] && [ -d /etc/ld.so.conf.d ]; then
    echo "$PREFIX/lib" >/etc/ld.so.conf.d/flaskasync-libuv.conf
    ldconfig
fi
PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}" \
    pkg-config --modversion libuv
