#!/usr/bin/env bash
# Memory-safety run: build the Cython kernels with AddressSanitizer in a scratch copy of
# the tree and run the kernel, ops and layer tests against that build.
#   tools/asan-tests.sh                 # the default test set
#   tools/asan-tests.sh tests/test_ops.py -k dense    # any pytest arguments
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$root/src" "$root/setup.py" "$root/pyproject.toml" "$root/tests" "$work/"
cd "$work"
rm -f src/fastnn/kernels/*.so src/fastnn/kernels/*.c
FASTNN_SANITIZE=address FASTNN_REQUIRE_OPENMP=1 python setup.py -q build_ext --inplace >build.log 2>&1 \
    || { cat build.log; exit 1; }
libasan=$(gcc -print-file-name=libasan.so)
if [ $# -eq 0 ]; then
    set -- tests/test_ops.py $(ls tests/test_kernels_*.py 2>/dev/null) \
           $(ls tests/test_layers.py tests/test_reliability.py 2>/dev/null)
fi
# PYTHONMALLOC=malloc lets ASan see every allocation; leaks are CPython's business here.
LD_PRELOAD="$libasan" PYTHONMALLOC=malloc \
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1 \
PYTHONPATH=src python -m pytest -q -p no:cacheprovider -x "$@"
echo "asan-tests: clean (AddressSanitizer reported nothing)"
