"""Packaging: supported Pythons, the release build's configuration, the
missing-libuv message, and how PYTHON= picks an interpreter.

The slow checks (a wheel without the system's libuv, building the sdist)
are scripts/check_wheel.sh and scripts/check_sdist.sh, run by CI
(make check-wheel, make check-sdist)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUPPORTED = ["3.11", "3.12", "3.13", "3.14", "3.15"]


@pytest.fixture(scope="module")
def pyproject():
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def test_requires_python_and_classifiers(pyproject):
    project = pyproject["project"]
    assert project["requires-python"] == ">=3.11"
    versions = [c.rsplit(" :: ", 1)[1] for c in project["classifiers"]
                if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)]
    assert versions == SUPPORTED


def test_running_python_is_supported():
    assert sys.version_info >= (3, 11)


def test_cibuildwheel_builds_every_supported_cpython(pyproject):
    cibw = pyproject["tool"]["cibuildwheel"]
    assert cibw["build"] == [f"cp{v.replace('.', '')}-*" for v in SUPPORTED]
    # free-threaded builds are skipped, for every version
    assert "cp3??t-*" in cibw["skip"]
    assert set(pyproject["tool"]["cibuildwheel"]["linux"]["archs"]) == {"x86_64", "aarch64"}
    assert cibw["manylinux-x86_64-image"] == cibw["manylinux-aarch64-image"] == "manylinux_2_28"
    script = cibw["before-all"].split()[-1].replace("{project}/", "")
    assert (ROOT / script).is_file(), script
    for source in cibw["test-sources"]:
        assert (ROOT / source).is_file(), source
        assert source in cibw["test-command"]


def test_pinned_libuv_has_a_checksum():
    text = (ROOT / "scripts" / "cibw_libuv.sh").read_text()
    version = re.search(r"^LIBUV_VERSION=(\d+\.\d+\.\d+)$", text, re.M)
    sha = re.search(r"LIBUV_SHA256:-([0-9a-f]{64})\}", text)
    assert version and sha
    assert "sha256sum -c" in text


def _setup_py_build_ext(tmp_path, env):
    """Run setup.py build_ext into tmp_path; (returncode, output)."""
    out = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--build-lib", str(tmp_path / "lib"),
         "--build-temp", str(tmp_path / "tmp")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    return out.returncode, out.stdout + out.stderr


def _assert_one_clear_message(rc, output, reason):
    assert rc != 0
    assert output.count("flaskasync needs libuv (>= 1.40)") == 1, output
    assert reason in output, output
    assert "apt-get install libuv1-dev pkg-config" in output
    # it stops before compiling anything
    assert "uv.h" not in output and "gcc" not in output, output


def test_missing_libuv_stops_the_build_with_one_message(tmp_path):
    empty = tmp_path / "no-pc"
    empty.mkdir()
    env = dict(os.environ, PKG_CONFIG_LIBDIR=str(empty), PKG_CONFIG_PATH=str(empty))
    rc, output = _setup_py_build_ext(tmp_path, env)
    _assert_one_clear_message(rc, output, "pkg-config finds no libuv")
    assert not (tmp_path / "lib").exists()


def test_missing_pkg_config_stops_the_build_with_one_message(tmp_path):
    # PATH: only this interpreter's directory (which has no pkg-config)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python").symlink_to(sys.executable)
    env = dict(os.environ, PATH=str(bindir))
    assert shutil.which("pkg-config", path=env["PATH"]) is None
    rc, output = _setup_py_build_ext(tmp_path, env)
    _assert_one_clear_message(rc, output, "pkg-config is not on PATH")


def test_too_old_libuv_stops_the_build_with_one_message(tmp_path):
    pcdir = tmp_path / "pc"
    pcdir.mkdir()
    (pcdir / "libuv.pc").write_text(
        "prefix=/nonexistent\nName: libuv\nDescription: old\nVersion: 1.30.2\n"
        "Libs: -L${prefix}/lib -luv\nCflags: -I${prefix}/include\n")
    env = dict(os.environ, PKG_CONFIG_LIBDIR=str(pcdir), PKG_CONFIG_PATH=str(pcdir))
    rc, output = _setup_py_build_ext(tmp_path, env)
    _assert_one_clear_message(rc, output, "pkg-config finds libuv 1.30.2, older than 1.40")


def _resolve(spec):
    return subprocess.run([str(ROOT / "scripts" / "python.sh"), spec],
                          capture_output=True, text=True, timeout=30)


def test_python_setting_default_is_dot_venv():
    out = _resolve("")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[1] == ".venv"


def test_python_setting_a_path_gets_its_own_venv():
    base = getattr(sys, "_base_executable", sys.executable)
    out = _resolve(base)
    assert out.returncode == 0, out.stderr
    interp, venv, ver = out.stdout.split()
    assert interp == base
    assert ver == "%d.%d" % sys.version_info[:2]
    assert venv == f".venv-{ver}"


def test_python_setting_refuses_unsupported_and_unknown(tmp_path):
    fake = tmp_path / "python3.10"
    fake.write_text("#!/bin/sh\n"
                    "case \"$*\" in *version_info\\ \\<*) exit 1;; esac\n"
                    "echo 3.10\n")
    fake.chmod(0o755)
    out = _resolve(str(fake))
    assert out.returncode != 0
    assert "needs Python 3.11 or newer" in out.stderr
    out = _resolve("python3.99")
    assert out.returncode != 0
    assert "no such interpreter" in out.stderr
