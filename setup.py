"""Build fastnn's Cython kernels, with OpenMP when the compiler supports it.

Environment switches:
  FASTNN_REQUIRE_OPENMP=1  fail the build instead of falling back (no OpenMP -> serial
                           build; no working compiler -> NumPy-only install). CI sets it.
  FASTNN_NATIVE=1          add -march=native (not portable; off by default).
  FASTNN_DEBUG=1           -O0 -g, bounds checks back on (for sanitizer runs).
  FASTNN_SANITIZE=address  build with -fsanitize=address (see tools/asan-tests.sh).
  FASTNN_ONLY=_dense,...   development: build only these kernel modules (in place).

The modules are compiled in parallel, one per core (`build_ext --parallel N` or
FASTNN_BUILD_JOBS=N to choose), each reporting one line when it is done.
"""
import glob
import os
import sys
import tempfile
import textwrap
import threading
import time

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:  # setuptools >= 59 vendors distutils
    from setuptools.errors import CCompilerError, CompileError, ExecError, LinkError, PlatformError
    BUILD_ERRORS = (CCompilerError, CompileError, ExecError, LinkError, PlatformError, OSError)
except ImportError:  # pragma: no cover
    from distutils.errors import (CCompilerError, CompileError, DistutilsExecError,
                                  DistutilsPlatformError, LinkError)
    BUILD_ERRORS = (CCompilerError, CompileError, DistutilsExecError, DistutilsPlatformError,
                    LinkError, OSError)

STRICT = os.environ.get("FASTNN_REQUIRE_OPENMP", "0") not in ("", "0")
NATIVE = os.environ.get("FASTNN_NATIVE", "0") not in ("", "0")
DEBUG = os.environ.get("FASTNN_DEBUG", "0") not in ("", "0")
SANITIZE = os.environ.get("FASTNN_SANITIZE", "")
JOBS = int(os.environ.get("FASTNN_BUILD_JOBS", "0")) or os.cpu_count() or 1

OPENMP_PROBE = textwrap.dedent("""
    #include <omp.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        return n > 0 ? 0 : 1;
    }
""")


def openmp_flags(compiler_type):
    """(compile, link) flags to try for OpenMP with this compiler family."""
    if compiler_type == "msvc":
        return ["/openmp"], []
    if sys.platform == "darwin":  # Apple clang needs libomp (brew install libomp)
        return ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
    return ["-fopenmp"], ["-fopenmp"]


class BuildExt(build_ext):
    """build_ext that probes OpenMP, falls back cleanly, records what it did, compiles
    the modules in parallel and reports each one."""

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:
            self.parallel = JOBS
        self._done = 0
        self._done_lock = threading.Lock()

    def build_extension(self, ext):
        start = time.perf_counter()
        target = self.get_ext_fullpath(ext.name)
        before = os.path.getmtime(target) if os.path.exists(target) else None
        super().build_extension(ext)
        built = os.path.exists(target) and os.path.getmtime(target) != before
        with self._done_lock:
            self._done += 1
            print("fastnn: %s %s (%d/%d%s)" % ("compiled" if built else "up to date:",
                                               ext.name, self._done, len(self.extensions),
                                               ", %.0f s" % (time.perf_counter() - start)
                                               if built else ""),
                  file=sys.stderr, flush=True)

    def _probe_openmp(self, cflags, lflags):
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "probe_openmp.c")
            with open(src, "w") as f:
                f.write(OPENMP_PROBE)
            try:
                objs = self.compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
                self.compiler.link_executable(objs, "probe_openmp", output_dir=tmp,
                                              extra_postargs=lflags)
            except BUILD_ERRORS:
                return False
        return True

    def build_extensions(self):
        ctype = self.compiler.compiler_type
        cflags, lflags = openmp_flags(ctype)
        has_openmp = self._probe_openmp(cflags, lflags)
        if not has_openmp:
            msg = ("fastnn: the C compiler does not support OpenMP (%s). Install an OpenMP "
                   "runtime (gcc: libgomp; macOS: brew install libomp) for parallel kernels"
                   % " ".join(cflags))
            if STRICT:
                raise SystemExit("error: %s; FASTNN_REQUIRE_OPENMP is set, so this is an "
                                 "error instead of a serial build." % msg)
            self.warn(msg + "; building the kernels serially.")
            cflags, lflags = [], []
        if ctype == "msvc":
            base = ["/O2"]
        elif SANITIZE:
            base = ["-O1", "-g", "-fsanitize=" + SANITIZE, "-fno-omit-frame-pointer"]
            lflags = lflags + ["-fsanitize=" + SANITIZE]
        elif DEBUG:
            base = ["-O0", "-g"]
        else:
            base = ["-O3"]
        if ctype != "msvc":
            # the kernels never read errno (without this GCC will not vectorise sqrt); no
            # fused multiply-adds, so every SIMD clone and -march gives the same bits
            base += ["-fno-math-errno", "-ffp-contract=off"]
        if NATIVE and ctype != "msvc":
            base.append("-march=native")
        for ext in self.extensions:
            ext.extra_compile_args = base + cflags
            ext.extra_link_args = lflags
            # show_config() reads the flags back from the compiled _runtime module
            ext.define_macros.append(("FASTNN_COMPILE_ARGS",
                                      '"%s"' % " ".join(base + cflags)))
        try:
            super().build_extensions()
        except BUILD_ERRORS as exc:
            if STRICT:
                raise
            self.warn("fastnn: compiling the Cython kernels failed (%s); installing the "
                      "NumPy backend only. fastnn.show_config() reports cython=False." % exc)


def extensions():
    import numpy
    from Cython.Build import cythonize

    directives = dict(language_level=3, boundscheck=DEBUG, wraparound=False,
                      cdivision=True, initializedcheck=DEBUG, nonecheck=False)
    only = [n for n in os.environ.get("FASTNN_ONLY", "").split(",") if n]  # dev: a subset
    exts = []
    headers = sorted(glob.glob("src/fastnn/kernels/*.h"))    # recompile when they change
    for pyx in sorted(glob.glob("src/fastnn/kernels/_*.pyx")):
        stem = os.path.splitext(os.path.basename(pyx))[0]
        if only and stem not in only:
            continue
        name = "fastnn.kernels." + stem
        exts.append(Extension(name, [pyx], include_dirs=[numpy.get_include()],
                              depends=headers,
                              define_macros=[("NPY_NO_DEPRECATED_API",
                                              "NPY_1_7_API_VERSION")]))
    return cythonize(exts, compiler_directives=directives, include_path=["src"], quiet=True,
                     nthreads=JOBS if len(exts) > 1 else 0)


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
