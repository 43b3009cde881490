"""Facts about the machine for reports and cached measurements."""
import platform


def cpu_name():
    """The processor's model name ("model name" of /proc/cpuinfo, else what the platform
    module knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
