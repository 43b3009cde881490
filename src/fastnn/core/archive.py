"""fastnn's .npz files, read within limits and written atomically.

Reading (`NpzArchive`) never unpickles and never expands what it was not asked for:
the zip directory is checked first (one member per name, `.npy` members only, stored or
deflated, total declared size at most `MAX_EXPANSION` times the file's size plus
`SLACK`), then each member's `.npy` header is read (a few hundred bytes) so that callers
check dtype and shape against what they expect before any data is decompressed; a
member's data is read only up to its declared size.

Writing (`atomic_savez`) goes to a temporary file beside the target, which is then
renamed over it: a failure leaves an existing file untouched. New files get the usual
permissions (0666 less the umask); an overwritten file keeps its mode. A path that is a
symbolic link is written through: the link's target is replaced, the link stays.
Temporary files are named ``.<name>.<host>-<pid>-<token>.fastnn-tmp``; a save removes
the ones of its own target left by a killed process of this host (a process id that no
longer runs), never another live save's.
"""
import hashlib
import os
import re
import secrets
import socket
import stat
import zipfile

import numpy as np

__all__ = ["ArchiveError", "NpzArchive", "atomic_savez", "MAX_EXPANSION", "SLACK"]

#: declared (uncompressed) bytes a file may hold per byte of its size ...
MAX_EXPANSION = 32
#: ... plus this many
SLACK = 1 << 20
#: bytes of a .npy header read to find its dtype and shape
_HEADER_BYTES = 1 << 16
#: bytes decompressed at a time when reading an array
_CHUNK = 1 << 20
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"


class ArchiveError(ValueError):
    """The file is not a well-formed, bounded .npz archive; the message says why."""


def _describe_start(head):
    """How a non-zip file begins, for a message: its first printable characters."""
    if head.startswith(_NPY_MAGIC):
        return "a bare .npy array"
    if not head:
        return "an empty file"
    text = head[:24].decode("latin-1")
    if all(c.isprintable() or c in "\r\n\t" for c in text):
        return "a text file starting %r" % text
    return "a binary file"


class NpzArchive:
    """An open .npz file whose directory passed the checks of the module docstring.

    `names`: the array names (member names less ".npy"), in file order.
    `header(name)` -> (dtype, shape) from the member's .npy header; `read(name)` -> the
    array (after checking its header again). Use as a context manager."""

    def __init__(self, path):
        if os.path.isdir(path):
            raise ArchiveError("it is a directory")
        self._file = open(path, "rb")       # FileNotFoundError passes through
        try:
            self._open_zip()
        except BaseException:
            self._file.close()
            raise

    def _open_zip(self):
        f = self._file
        head = f.read(64)
        if not head.startswith(_ZIP_MAGIC):
            raise ArchiveError("not an .npz archive (%s)" % _describe_start(head))
        size = os.fstat(f.fileno()).st_size
        f.seek(0)
        try:
            self._zip = zipfile.ZipFile(f)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            raise ArchiveError("a damaged zip archive (%s)" % exc) from None
        infos = self._zip.infolist()
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})[:3]
            raise ArchiveError("the archive repeats member names %s" % dup)
        for info in infos:
            if not info.filename.endswith(".npy"):
                raise ArchiveError("member %r is not an .npy array" % info.filename)
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) \
                    or info.flag_bits & 0x1:
                raise ArchiveError("member %r is encrypted or compressed in an unsupported "
                                   "way" % info.filename)
        declared = sum(i.file_size for i in infos)
        if declared > MAX_EXPANSION * size + SLACK:
            raise ArchiveError("its members declare %d bytes, more than %d times the file's "
                               "%d bytes" % (declared, MAX_EXPANSION, size))
        self._infos = {i.filename[:-4]: i for i in infos}
        self.names = list(self._infos)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        zf = getattr(self, "_zip", None)
        if zf is not None:
            zf.close()
        self._file.close()

    def declared_size(self, name):
        """The member's uncompressed size as the zip directory declares it."""
        return self._infos[name].file_size

    def header(self, name):
        """(dtype, shape) of array `name` from its .npy header, checked against the
        member's declared size; object and non-native-layout arrays are refused."""
        with self._member(name) as fp:
            return self._read_header(name, fp)[:2]

    def _read_header(self, name, fp):
        try:
            version = np.lib.format.read_magic(fp)
            read = {(1, 0): np.lib.format.read_array_header_1_0,
                    (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read is None:
                raise ValueError("unsupported .npy version %d.%d" % version)
            shape, fortran, dtype = read(fp, max_header_size=_HEADER_BYTES)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, SyntaxError) as exc:
            raise ArchiveError("array %r has a bad .npy header (%s)" % (name, exc)) from None
        if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
            raise ArchiveError("array %r holds %s data" % (name, dtype))
        if fortran and len(shape) > 1:
            raise ArchiveError("array %r is stored in Fortran order" % name)
        count = 1
        for dim in shape:
            count *= dim
        if fp.tell() + count * dtype.itemsize != self.declared_size(name):
            raise ArchiveError("array %r declares %s %s but its member holds %d bytes"
                               % (name, dtype, shape, self.declared_size(name)))
        return dtype, shape, count

    def read(self, name):
        """Array `name` (C order, native byte order), read in chunks up to its declared
        size straight into the array."""
        with self._member(name) as fp:
            dtype, shape, count = self._read_header(name, fp)
            arr = np.empty(shape, dtype)
            view = memoryview(arr.reshape(-1).view(np.uint8))
            done = 0
            try:
                while done < len(view):
                    chunk = fp.read(min(_CHUNK, len(view) - done))
                    if not chunk:
                        raise ArchiveError("array %r is truncated" % name)
                    view[done:done + len(chunk)] = chunk
                    done += len(chunk)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise ArchiveError("array %r is damaged (%s)" % (name, exc)) from None
        if not dtype.isnative:
            arr = arr.byteswap().view(dtype.newbyteorder("="))
        return arr

    def _member(self, name):
        try:
            return self._zip.open(self._infos[name])
        except (zipfile.BadZipFile, OSError, EOFError, ValueError,
                NotImplementedError) as exc:
            raise ArchiveError("member %r is damaged (%s)" % (name, exc)) from None


# ------------------------------------------------------------------------ writing
_HOST = hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _temp_pattern(base):
    return re.compile(r"\.%s\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]{16}\.fastnn-tmp\Z"
                      % re.escape(base))


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True         # exists (another user's) or unknowable: leave its files alone
    return True


def remove_stale_temps(target):
    """Delete this host's temporary files of `target` whose process is gone (regular
    files owned by this user only); returns how many were removed."""
    directory, base = os.path.split(target)
    pattern = _temp_pattern(base)
    removed = 0
    try:
        entries = os.listdir(directory or ".")
    except OSError:
        return 0
    for entry in entries:
        m = pattern.match(entry)
        if m is None or m.group("host") != _HOST or _pid_alive(int(m.group("pid"))):
            continue
        full = os.path.join(directory, entry)
        try:
            st = os.lstat(full)
            if stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid():
                os.unlink(full)
                removed += 1
        except OSError:
            pass
    return removed


def atomic_savez(path, arrays, write, fn):
    """Write `arrays` as an .npz over `path` (see the module docstring); `write(f,
    arrays)` writes the archive to the open file f. `fn` names the caller in errors."""
    target = os.path.realpath(path)          # through a symbolic link to its target
    if os.path.isdir(target):
        raise ValueError("%s: %s is a directory; give a file path (e.g. %s)"
                         % (fn, path, os.path.join(path, "model.npz")))
    directory, base = os.path.split(target)
    if not os.path.isdir(directory):
        raise FileNotFoundError("%s: the directory %s does not exist" % (fn, directory))
    remove_stale_temps(target)
    tmp = os.path.join(directory, ".%s.%s-%d-%s.fastnn-tmp"
                       % (base, _HOST, os.getpid(), secrets.token_hex(8)))
    # created like any new file (0666 less the umask), then given the mode of the file
    # it replaces
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f, arrays)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        except FileNotFoundError:
            pass
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
