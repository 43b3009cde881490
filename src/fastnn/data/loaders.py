"""File loaders: MNIST-style IDX, CSV tables and ``.npz`` archives."""

from __future__ import annotations

import csv
import gzip
import math
import numbers
import os
import zipfile
import zlib

import numpy as np

__all__ = ["load_idx", "load_csv", "load_npz"]

_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CHUNK = 1 << 20


def _fspath(path, func):
    try:
        return os.fspath(path)
    except TypeError:
        raise TypeError(
            f"{func}: expected path to be a str or os.PathLike, got {type(path).__name__}"
        ) from None


# --------------------------------------------------------------------- IDX

def _read_exact(fh, n):
    """Read up to n bytes (fewer only at end of file), in bounded chunks."""
    buf = bytearray()
    while len(buf) < n:
        chunk = fh.read(min(_CHUNK, n - len(buf)))
        if not chunk:
            break
        buf += chunk
    return buf


def load_idx(path):
    """Load an IDX file (the MNIST format), optionally gzip-compressed.

    Layout: two zero bytes, a dtype code (0x08 uint8, 0x09 int8, 0x0B int16,
    0x0C int32, 0x0D float32, 0x0E float64), ndim, then ndim big-endian
    uint32 dims and the big-endian data in C order. Gzip is detected by the
    magic bytes 1f 8b. Returns a native-endian ndarray of shape dims
    (e.g. (60000, 28, 28) uint8 for MNIST images, (60000,) for labels; convolutional
    layers take (N, C, H, W): ``X[:, None].astype(np.float32)`` gives (60000, 1, 28, 28),
    which ``fastnn train`` does itself).
    Raises ValueError for a bad magic, a short header, or a data size that
    does not match the dims exactly (checked before allocating the array).
    """
    func = "load_idx"
    p = _fspath(path, func)
    with open(p, "rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        fh = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        try:
            return _parse_idx(fh, raw, compressed, p)
        except (OSError, EOFError, zlib.error) as exc:
            if not compressed:
                raise
            raise ValueError(f"{func}: {p!r}: corrupt gzip stream ({exc})") from None
        finally:
            if compressed:
                fh.close()


def _parse_idx(fh, raw, compressed, p):
    func = "load_idx"
    magic = fh.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
        raise ValueError(
            f"{func}: {p!r} is not an IDX file: expected magic 00 00 <dtype> <ndim>, "
            f"found {magic.hex(' ') or 'empty file'}"
        )
    code, ndim = magic[2], magic[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise ValueError(
            f"{func}: {p!r}: expected a dtype code in ({known}), found 0x{code:02X}"
        )
    if ndim == 0:
        raise ValueError(f"{func}: {p!r}: expected ndim >= 1 in the magic, found 0")
    head = fh.read(4 * ndim)
    if len(head) < 4 * ndim:
        raise ValueError(
            f"{func}: {p!r}: truncated header: expected {4 * ndim} bytes of dims "
            f"for ndim={ndim}, found {len(head)}"
        )
    dims = tuple(int.from_bytes(head[4 * i:4 * i + 4], "big") for i in range(ndim))
    dt = _IDX_DTYPES[code]
    expected = math.prod(dims) * dt.itemsize  # exact Python int, cannot overflow
    header_len = 4 + 4 * ndim

    if not compressed:
        found = os.fstat(raw.fileno()).st_size - header_len
        if found != expected:
            _size_error(p, dims, dt, expected, found, exact=True)
        data = _read_exact(fh, expected)
        if len(data) != expected:  # file changed under us
            _size_error(p, dims, dt, expected, len(data), exact=True)
    else:
        # size unknown until decompressed: read at most expected + 1 bytes
        data = _read_exact(fh, expected + 1)
        if len(data) != expected:
            _size_error(p, dims, dt, expected, len(data), exact=len(data) < expected)
    arr = np.frombuffer(data, dtype=dt).reshape(dims)
    return arr.astype(dt.newbyteorder("="))


def _size_error(p, dims, dt, expected, found, exact):
    kind = "truncated" if found < expected else "too large (or dims too small)"
    shown = f"{found}" if exact else f"more than {expected}"
    raise ValueError(
        f"load_idx: {p!r}: data {kind}: dims {dims} of {dt.name} need exactly "
        f"{expected} data bytes, found {shown}"
    )


# --------------------------------------------------------------------- CSV

def _is_number(s):
    try:
        float(s)
    except ValueError:
        return False
    return True


def _read_rows(p, delimiter, func):
    """Non-blank rows as lists of stripped fields, with their line numbers."""
    rows, lines = [], []
    with open(p, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        start = 1
        try:
            for row in reader:
                if any(field.strip() for field in row):
                    rows.append([field.strip() for field in row])
                    lines.append(start)
                start = reader.line_num + 1
        except csv.Error as exc:
            raise ValueError(f"{func}: {p!r}, line {reader.line_num}: {exc}") from None
    return rows, lines


def _detect_header(rows):
    first = rows[0]
    if len(rows) == 1:
        return not any(_is_number(s) for s in first)
    second = rows[1]
    return any(
        not _is_number(a) and _is_number(b) for a, b in zip(first, second)
    )


def _resolve_target(target, names, ncols, p, func):
    if isinstance(target, str):
        if names is None:
            raise ValueError(
                f"{func}: {p!r}: target={target!r} is a column name but the file has no "
                f"header; pass header=True or a column index"
            )
        if target not in names:
            raise ValueError(
                f"{func}: {p!r}: unknown target column {target!r}; columns are {names}"
            )
        if names.count(target) > 1:
            raise ValueError(f"{func}: {p!r}: target column name {target!r} is not unique")
        return names.index(target)
    if isinstance(target, numbers.Integral) and not isinstance(target, (bool, np.bool_)):
        if not -ncols <= target < ncols:
            raise ValueError(
                f"{func}: {p!r}: target column index {target} out of range for "
                f"{ncols} columns"
            )
        return int(target) % ncols
    raise TypeError(
        f"{func}: expected target to be a column index (int) or name (str), "
        f"got {type(target).__name__}"
    )


def _parse_labels(labels, lines, dt, p, func):
    """Labels -> (y, classes): int64 ints, float targets, or indices of sorted strings."""
    for s, line in zip(labels, lines):
        if s == "":
            raise ValueError(f"{func}: {p!r}, line {line}: empty target value")
    try:
        return np.array([int(s) for s in labels], dtype=np.int64), None
    except (ValueError, OverflowError):
        pass
    if all(_is_number(s) for s in labels):
        vals = np.array([float(s) for s in labels])
        if np.all(np.isfinite(vals)) and np.all(vals == np.round(vals)) and np.all(
                np.abs(vals) < 2.0 ** 53):
            return vals.astype(np.int64), None
        return vals.astype(dt), None
    classes = sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[s] for s in labels], dtype=np.int64), classes


def _table(p, delimiter, header, func):
    """(data rows, their line numbers, the header's names or None) of the CSV file p:
    rectangular, with data rows and at least 2 columns (ValueError naming the line)."""
    rows, lines = _read_rows(p, delimiter, func)
    if not rows:
        raise ValueError(f"{func}: {p!r} is empty: expected a header and/or data rows")
    has_header = _detect_header(rows) if header == "auto" else header
    ncols = len(rows[0])
    for row, line in zip(rows, lines):
        if len(row) != ncols:
            raise ValueError(
                f"{func}: {p!r}, line {line}: expected {ncols} fields "
                f"(as on line {lines[0]}), found {len(row)}"
            )
    names = rows[0] if has_header else None
    if has_header:
        rows, lines = rows[1:], lines[1:]
    if not rows:
        raise ValueError(f"{func}: {p!r} has a header but no data rows")
    if ncols < 2:
        raise ValueError(
            f"{func}: {p!r}: expected at least 2 columns (features and target), found {ncols}"
        )
    return rows, lines, names


def load_csv(path, target=-1, header="auto", delimiter=",", dtype=np.float32,
             return_classes=False):
    """Load a numeric CSV table with one target column.

    ``target`` is a column index (negative counts from the end) or a column
    name (requires a header). ``header`` is True, False or "auto" (the first
    row is a header when one of its fields is non-numeric while the field
    below it is numeric). Blank lines are skipped.

    Returns ``(X, y)``: X of shape (N, D) in ``dtype`` (the other columns) and
    y of shape (N,): int64 when all labels are integers, ``dtype`` for other
    numeric labels, and for string labels the int64 index into the sorted
    class names. With ``return_classes=True`` returns ``(X, y, classes)``
    where ``classes`` is that sorted list of str (None for numeric labels).
    Raises ValueError naming the file and line for ragged rows, non-numeric
    features, an empty file or an unknown target column.
    """
    func = "load_csv"
    p = _fspath(path, func)
    dt = np.dtype(dtype)
    if not np.issubdtype(dt, np.floating):
        raise TypeError(f"{func}: expected a floating dtype, got {dt}")
    if not (header == "auto" if isinstance(header, str) else isinstance(header, bool)):
        raise ValueError(f"{func}: expected header to be True, False or 'auto', got {header!r}")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ValueError(f"{func}: expected a one-character delimiter, got {delimiter!r}")

    rows, lines, names = _table(p, delimiter, header, func)
    ncols = len(rows[0])
    t = _resolve_target(target, names, ncols, p, func)

    feature_cols = [j for j in range(ncols) if j != t]
    cells = [[row[j] for j in feature_cols] for row in rows]
    try:
        X = np.array(cells, dtype=np.str_).astype(np.float64)
    except ValueError:
        for row_cells, line in zip(cells, lines):
            for j, s in zip(feature_cols, row_cells):
                if not _is_number(s):
                    col = f"{j} ({names[j]!r})" if names else f"{j}"
                    raise ValueError(
                        f"{func}: {p!r}, line {line}, column {col}: expected a numeric "
                        f"feature value, found {s!r}"
                    ) from None
        raise
    X = X.astype(dt)
    y, classes = _parse_labels([row[t] for row in rows], lines, dt, p, func)
    return (X, y, classes) if return_classes else (X, y)


# --------------------------------------------------------------------- NPZ

def load_npz(path):
    """Load ``(X, y)`` from an ``.npz`` archive holding arrays "X" (N, ...) and "y" (N, ...).

    Loaded with ``allow_pickle=False``; raises ValueError naming the file if it
    is not an npz archive, a key is missing, or len(X) != len(y).
    """
    func = "load_npz"
    p = _fspath(path, func)
    try:
        data = np.load(p, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{func}: {p!r} could not be read as an .npz archive ({exc})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{func}: {p!r}: expected an .npz archive, found a single .npy array")
    with data:
        missing = [k for k in ("X", "y") if k not in data.files]
        if missing:
            raise ValueError(
                f"{func}: {p!r}: expected arrays 'X' and 'y', missing {missing}; "
                f"found {sorted(data.files)}"
            )
        try:
            X, y = data["X"], data["y"]
        except ValueError as exc:
            raise ValueError(f"{func}: {p!r}: {exc}") from None
    if X.ndim == 0 or y.ndim == 0 or len(X) != len(y):
        raise ValueError(
            f"{func}: {p!r}: expected X and y with the same number of samples, "
            f"got shapes {X.shape} and {y.shape}"
        )
    return X, y
