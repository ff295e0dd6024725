#!/usr/bin/env bash
# Set up socklab on a Debian 12 machine (as root) and run it:
#   ./bootstrap.sh run    the experiments: HTML report and results under reports/
#   ./bootstrap.sh test   the test suite (harness tests and every case), in parallel
#   ./bootstrap.sh matrix debian:6.1 debian:6.12 ...   the catalogue on other kernels (QEMU, virtme-ng)
# Set-up is idempotent: system tools from Debian's packages when missing, a virtualenv in .venv.
set -euo pipefail
cd "$(dirname "$0")"

need_pkgs=()
command -v ss >/dev/null 2>&1 || need_pkgs+=(iproute2)
command -v nft >/dev/null 2>&1 || need_pkgs+=(nftables)
# the nftables project's Python binding: fault rules through libnftables in process, no nft per command
[ -f /usr/lib/python3/dist-packages/nftables/nftables.py ] || need_pkgs+=(python3-nftables)
# The virtualenv is made from Debian's own python3, built with profile-guided and link-time optimisation:
# a python3 compiled without them (pyenv's default build, first on PATH on some machines) ran pytest's
# start-up 30% slower here (0.38 against 0.29 s on an empty test file). SOCKLAB_PYTHON chooses another.
python=${SOCKLAB_PYTHON:-/usr/bin/python3}
if [ -n "${SOCKLAB_PYTHON:-}" ] && ! command -v "$SOCKLAB_PYTHON" >/dev/null 2>&1; then
    echo "bootstrap: SOCKLAB_PYTHON=$SOCKLAB_PYTHON is not an interpreter here (no such executable)" >&2
    exit 2
elif [ -z "${SOCKLAB_PYTHON:-}" ] && [ ! -x "$python" ]; then
    python=python3
fi
"$python" -c 'import venv, ensurepip' >/dev/null 2>&1 || need_pkgs+=(python3-venv)
# the test suite renders the HTML report in a real browser
[ "${1:-}" = test ] && ! command -v chromium >/dev/null 2>&1 && need_pkgs+=(chromium)
# the kernel matrix boots other kernels in QEMU with virtme-ng (depmod from kmod, busybox for its init);
# the test suite includes its one-kernel smoke run (tests/integration/test_matrix.py)
if [ "${1:-}" = matrix ] || [ "${1:-}" = test ]; then
    command -v qemu-system-x86_64 >/dev/null 2>&1 || need_pkgs+=(qemu-system-x86)
    command -v depmod >/dev/null 2>&1 || [ -x /sbin/depmod ] || need_pkgs+=(kmod)
    command -v busybox >/dev/null 2>&1 || need_pkgs+=(busybox-static)
fi
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "bootstrap: missing ${need_pkgs[*]}; as root run: apt-get install -y ${need_pkgs[*]}" >&2
        exit 4
    fi
    echo "bootstrap: installing ${need_pkgs[*]} from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# A .venv made from another interpreter (an earlier set-up, or SOCKLAB_PYTHON changed) is made again.
base_of() { "$1" -c 'import os, sys; print(os.path.realpath(sys._base_executable))' 2>/dev/null || true; }
base=$(base_of "$python")
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
elif made_from=$(base_of .venv/bin/python); [ "$made_from" != "$base" ]; then
    echo "bootstrap: .venv was made from ${made_from:-an interpreter that no longer runs}; making it again from $base"
    "$python" -m venv --clear .venv
fi
extras=test
{ [ "${1:-}" = matrix ] || [ "${1:-}" = test ]; } && extras=test,matrix
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]"

case "${1:-}" in
    run)  shift; exec .venv/bin/socklab run "$@" ;;
    # --timeout: a test that hangs fails after 300 s with where it hung (pytest-timeout), not the whole job
    test) shift; exec .venv/bin/python -m pytest -n "$(.venv/bin/python -c 'from harness.cli import default_workers; print(default_workers())')" --timeout 300 "$@" ;;
    matrix) shift; exec .venv/bin/socklab matrix "$@" ;;
    *)    echo "usage: $0 run|test|matrix [extra arguments]" >&2; exit 2 ;;
esac
