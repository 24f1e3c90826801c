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

MIN_LIBUV = "1.40"

NO_LIBUV = """
flaskasync needs libuv (>= {min}) and its headers to build its C core, and
pkg-config to find them: {problem}

  Debian/Ubuntu:  apt-get install libuv1-dev pkg-config
  Fedora/RHEL:    dnf install libuv-devel pkgconf-pkg-config

Then run the install again. (A manylinux wheel of flaskasync carries its
own libuv and needs neither.)
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
    if shutil.which("pkg-config") is None:
        problem = "pkg-config is not on PATH."
    elif (version := pkg_config("--modversion")) is None:
        problem = "pkg-config finds no libuv (no libuv.pc on its search path)."
    elif pkg_config(f"--atleast-version={MIN_LIBUV}") is None:
        problem = f"pkg-config finds libuv {' '.join(version)}, older than {MIN_LIBUV}."
    else:
        cflags = pkg_config("--cflags") or []
        # Link the shared library: Debian's static libuv_a.a is not built with
        # -fPIC and cannot go into an extension module.  A wheel gets its own
        # copy of libuv.so.1 from auditwheel (scripts/wheel.sh).
        libs = pkg_config("--libs") or ["-luv"]
        return cflags, libs
    sys.exit(NO_LIBUV.format(min=MIN_LIBUV, problem=problem))


def flag(name):
    return os.environ.get(name, "") not in ("", "0")


# Checked when setup.py is read, so that pip stops at its first step
# ("Getting requirements to build wheel") with this message alone.
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
            depends=sorted(os.path.join("csrc", f) for f in os.listdir("csrc") if f.endswith(".h")),
            define_macros=macros,
            extra_compile_args=extra_compile,
            extra_link_args=extra_link,
        )
    ],
)
