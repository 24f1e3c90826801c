"""Build flaskasync._core against the system libuv.

Environment switches:
  FLASKASYNC_DEBUG=1     -O0 -g, asserts on (FA_DEBUG)
  FLASKASYNC_SANITIZE=1  ASan + UBSan (run Python with LD_PRELOAD=libasan.so)
  FLASKASYNC_WERROR=1    -Werror (CI sets it)
"""
import os
import shutil
import subprocess
import sys

from setuptools import Extension, setup

NO_LIBUV = """
flaskasync needs libuv (>= 1.40) and its headers to build its C core, and
pkg-config to find them. None were found.

  Debian/Ubuntu:  apt-get install libuv1-dev pkg-config
  Fedora/RHEL:    dnf install libuv-devel pkgconf-pkg-config
  macOS:          brew install libuv pkg-config

Then run the install again.
"""


def pkg_config(*args):
    exe = shutil.which("pkg-config")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, *args, "libuv"], check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError:
        return None
    return out.stdout.split()


def libuv_flags():
    if pkg_config("--atleast-version=1.40") is None:
        sys.exit(NO_LIBUV)
    cflags = pkg_config("--cflags") or []
    # Link the shared library: Debian's static libuv_a.a is not built with
    # -fPIC and cannot go into an extension module.
    libs = pkg_config("--libs") or ["-luv"]
    return cflags, libs


def flag(name):
    return os.environ.get(name, "") not in ("", "0")


cflags, libs = libuv_flags()
extra_compile = ["-std=c11", "-Wall", "-Wextra", "-Wno-missing-field-initializers",
                 "-Wno-unused-parameter", "-fno-strict-aliasing", *cflags]
extra_link = [*libs]
macros = []
if flag("FLASKASYNC_WERROR"):
    extra_compile.append("-Werror")
if flag("FLASKASYNC_DEBUG"):
    extra_compile += ["-O0", "-g3", "-UNDEBUG"]
    macros.append(("FA_DEBUG", "1"))
else:
    extra_compile += ["-O2"]
if flag("FLASKASYNC_SANITIZE"):
    san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
    extra_compile += san + ["-g"]
    extra_link += san

sources = sorted(os.path.join("csrc", f) for f in os.listdir("csrc") if f.endswith(".c"))

setup(
    ext_modules=[
        Extension(
            "flaskasync._core",
            sources=sources,
            depends=[os.path.join("csrc", "fa.h")],
            define_macros=macros,
            extra_compile_args=extra_compile,
            extra_link_args=extra_link,
        )
    ],
)
