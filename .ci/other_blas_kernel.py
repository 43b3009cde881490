"""Print an OpenBLAS core type this CPU can run other than the one OpenBLAS picked for
the BLAS fastnn's kernels call (SciPy's), or nothing when there is none (not Linux, not
OpenBLAS, an older CPU). Used by .ci/run for a second run of the tests."""
import scipy.linalg  # noqa: F401  (loads SciPy's OpenBLAS so threadpoolctl sees it)
from threadpoolctl import threadpool_info

#: core types in order of preference, with the CPU flags each needs
KERNELS = [("SkylakeX", {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"}),
           ("Haswell", {"avx2", "fma"}),
           ("Sandybridge", {"avx"})]


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            return {word for line in f if line.startswith("flags") for word in line.split()}
    except OSError:
        return set()


def other_kernel():
    picked = {info.get("architecture") for info in threadpool_info()
              if info.get("internal_api") == "openblas" and "scipy" in info.get("filepath", "")}
    if not picked:
        return ""
    flags = cpu_flags()
    for name, needs in KERNELS:
        if needs <= flags and name not in picked:
            return name
    return ""


if __name__ == "__main__":
    print(other_kernel())
