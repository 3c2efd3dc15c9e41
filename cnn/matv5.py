"""A bounded walk over a MAT-file's (v5/v7) element tree, before SciPy reads it.

SciPy's MAT reader recurses once per nesting level (a file of about 1 MB
holding 20,000 nested 1x1 cells overflows the C stack and kills the
interpreter) and allocates every array its header declares (a 2 MB file can
declare a zero-filled 2 GiB member). :func:`scan` reads only the element
*headers*, iteratively (an explicit stack, no recursion), decompressing a
compressed variable as a stream in bounded chunks, and refuses a file before
SciPy touches it when

* a variable is nested deeper than :data:`MAX_DEPTH` levels,
* it has more than :data:`MAX_NODES` elements (cells, struct fields, arrays),
* the arrays it declares add up to more than the caller's byte limit
  (:func:`cnn.safeio.size_limit`), counted from the declared dimensions
  before any data is decompressed,
* or its structure is not that of a MAT v5 file (truncated, inconsistent
  sizes, MATLAB objects, function handles).

Format (MATLAB "MAT-File Format", level 5): a 128-byte header, then elements
``[type uint32, nbytes uint32, data, padding to 8]`` (or the "small data
element" form ``[nbytes << 16 | type, 4 bytes of data]``). A variable is one
``miMATRIX`` element, possibly inside an ``miCOMPRESSED`` (zlib) element; a
matrix holds array flags, dimensions, a name, then its data, or its cells,
or (structs) a field-name length, the field names and one matrix per field and
element.
"""

from __future__ import annotations

import math
import struct
import zlib

MAX_DEPTH = 32
"""Deepest nesting of cells/structs accepted (a network struct needs 4)."""

MAX_NODES = 100_000
"""Most elements (arrays, cells, struct fields) one file may hold."""

_MAX_DIMS = 32
_MAX_NAME = 1024
_MAX_FIELD_NAMES = 1 << 20
_CHUNK = 1 << 20

miINT8, miINT32, miUINT32, miMATRIX, miCOMPRESSED = 1, 5, 6, 14, 15
mxCELL, mxSTRUCT, mxOBJECT, mxCHAR, mxSPARSE = 1, 2, 3, 4, 5
# bytes per element that SciPy allocates for each numeric class (6..15) and char (4: UCS4)
_ITEMSIZE = {mxCHAR: 4, 6: 8, 7: 4, 8: 1, 9: 1, 10: 2, 11: 2, 12: 4, 13: 4, 14: 8, 15: 8}
_CLASS_NAMES = {mxOBJECT: "a MATLAB object", 16: "a function handle", 17: "an opaque object"}


class MatScanError(ValueError):
    """The file is a MAT-file whose structure is refused (too deep, too large, corrupt)."""


class NotMatV5Error(ValueError):
    """The file does not start with a MAT v5/v7 header."""


class _Budget:
    def __init__(self, limit):
        self.limit, self.bytes, self.nodes = limit, 0, 0

    def spend(self, n, what):
        self.bytes += n
        if self.bytes > self.limit:
            raise MatScanError(
                f"{what} declares {_size(self.bytes)} of arrays in all, more than "
                f"the {_size(self.limit)} a file of this size may hold"
            )

    def count(self, n=1):
        self.nodes += n
        if self.nodes > MAX_NODES:
            raise MatScanError(f"more than {MAX_NODES} elements (cells, fields, arrays)")


def _size(n):
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"  # pragma: no cover


class _FileStream:
    """Bytes ``[start, end)`` of an open file."""

    def __init__(self, fh, start, end):
        self.fh, self.pos, self.end = fh, start, end
        fh.seek(start)

    def read(self, n):
        if self.pos + n > self.end:
            raise MatScanError("truncated element")
        data = self.fh.read(n)
        if len(data) != n:
            raise MatScanError("truncated file")
        self.pos += n
        return data

    def skip(self, n):
        if self.pos + n > self.end:
            raise MatScanError("truncated element")
        self.fh.seek(n, 1)
        self.pos += n


class _ZStream:
    """The zlib-decompressed bytes of ``nbytes`` file bytes from ``start``, in bounded chunks."""

    def __init__(self, fh, start, nbytes):
        self.fh, self.left, self.pos = fh, nbytes, 0
        self.z, self.buf = zlib.decompressobj(), bytearray()
        fh.seek(start)
        self.end = math.inf

    def _fill(self, want):
        while len(self.buf) < want:
            if self.z.eof:
                raise MatScanError("truncated compressed variable")
            data = self.z.unconsumed_tail
            if not data:
                if self.left <= 0:
                    raise MatScanError("truncated compressed variable")
                data = self.fh.read(min(_CHUNK, self.left))
                if not data:
                    raise MatScanError("truncated file")
                self.left -= len(data)
            try:
                self.buf += self.z.decompress(data, _CHUNK)
            except zlib.error as exc:
                raise MatScanError(f"corrupt compressed data ({exc})") from None

    def read(self, n):
        self._fill(n)
        data = bytes(self.buf[:n])
        del self.buf[:n]
        self.pos += n
        return data

    def skip(self, n):
        while n > 0:
            if not self.buf:
                self._fill(1)
            k = min(n, len(self.buf))
            del self.buf[:k]
            n -= k
            self.pos += k


def _tag(s, e):
    """``(type, nbytes, small data or None)`` of the next element."""
    raw = s.read(8)
    mdtype, nbytes = struct.unpack(e + "II", raw)
    if mdtype >> 16:
        n = mdtype >> 16
        if n > 4:
            raise MatScanError("corrupt small data element")
        return mdtype & 0xFFFF, n, raw[4 : 4 + n]
    return mdtype, nbytes, None


def _element(s, e, max_bytes, what):
    """The data of the next (small) element, at most ``max_bytes``."""
    mdtype, nbytes, small = _tag(s, e)
    if small is not None:
        return mdtype, small
    if nbytes > max_bytes:
        raise MatScanError(f"{what} declares {nbytes} bytes")
    data = s.read(nbytes)
    s.skip(-nbytes % 8)
    return mdtype, data


def _skip_data(s, e, budget, what):
    """Skip the next data element, counting its bytes."""
    mdtype, nbytes, small = _tag(s, e)
    if small is None:
        budget.spend(nbytes, what)
        s.skip(nbytes + (-nbytes % 8))


def _walk(s, e, budget, deep, label):
    """Walk one ``miMATRIX`` element (tag not read yet); return its name.

    With ``deep=False`` only the header is read (flags, dimensions, name).
    Iterative: ``stack`` holds ``[matrices left to read, end of their container]``.
    """
    root_name = None
    stack = [[1, math.inf]]
    while stack:
        frame = stack[-1]
        if frame[0] == 0:
            stack.pop()
            if frame[1] != math.inf:
                if s.pos > frame[1]:
                    raise MatScanError("an element overruns its container")
                s.skip(frame[1] - s.pos)
            continue
        frame[0] -= 1
        if len(stack) > MAX_DEPTH:
            raise MatScanError(f"{label} is nested more than {MAX_DEPTH} levels deep")
        budget.count()
        mdtype, nbytes, small = _tag(s, e)
        if small is not None or mdtype != miMATRIX:
            raise MatScanError(f"{label}: expected a matrix element, found type {mdtype}")
        end = s.pos + nbytes
        if end > frame[1]:
            raise MatScanError(f"{label}: an element is larger than its container")
        if nbytes == 0:
            continue  # an empty array
        _, flags = _element(s, e, 64, "array flags")
        if len(flags) < 4:
            raise MatScanError(f"{label}: corrupt array flags")
        f0 = struct.unpack(e + "I", flags[:4])[0]
        cls, complex_ = f0 & 0xFF, bool(f0 & 0x800)
        _, raw = _element(s, e, 4 * _MAX_DIMS, "dimensions")
        if len(raw) < 8 or len(raw) % 4:
            raise MatScanError(f"{label}: corrupt dimensions")
        dims = struct.unpack(e + f"{len(raw) // 4}i", raw)
        if min(dims) < 0:
            raise MatScanError(f"{label}: negative dimension")
        count = math.prod(dims)
        _, name = _element(s, e, _MAX_NAME, "name")
        if root_name is None:
            root_name = name.rstrip(b"\0").decode("latin-1")
            label = f"variable {root_name!r}"
            if not deep:
                return root_name
        children = 0
        if cls == mxCELL:
            children = count
        elif cls == mxSTRUCT:
            _, raw = _element(s, e, 8, "field name length")
            if len(raw) != 4:
                raise MatScanError(f"{label}: corrupt field name length")
            name_len = struct.unpack(e + "i", raw)[0]
            _, names = _element(s, e, _MAX_FIELD_NAMES, "field names")
            if name_len <= 0 and names:
                raise MatScanError(f"{label}: corrupt field names")
            n_fields = len(names) // name_len if name_len > 0 else 0
            budget.count(n_fields)
            children = count * n_fields
        elif cls in _ITEMSIZE:
            budget.spend(count * _ITEMSIZE[cls] * (2 if complex_ else 1), label)
            for _ in range(2 if complex_ else 1):
                _skip_data(s, e, budget, label)
        elif cls == mxSPARSE:
            for _ in range(4 if complex_ else 3):
                _skip_data(s, e, budget, label)
        else:
            what = _CLASS_NAMES.get(cls, f"an array of unknown class {cls}")
            raise MatScanError(f"{label} holds {what}, which is not supported")
        if children:
            if children > MAX_NODES or 8 * children > end - s.pos:
                raise MatScanError(
                    f"{label}: a cell or struct declares {children} elements but holds fewer"
                )
            budget.spend(8 * children, label)  # SciPy's object array of them
            stack.append([children, end])
        else:
            if s.pos > end:
                raise MatScanError(f"{label}: an element overruns its container")
            s.skip(end - s.pos)
    return root_name


def scan(fh, file_size, limit, var=None):
    """Check a MAT-file's structure and sizes without reading its data.

    Parameters
    ----------
    fh : binary file object
        Open for reading, seekable; left at an undefined position.
    file_size : int
    limit : int
        Most bytes of arrays the scanned variable(s) may declare in all.
    var : str or collection of str, optional
        Walk only this variable (these variables) in depth, the others for
        their names only, as ``scipy.io.loadmat(..., variable_names=[...])``
        reads only those. ``None``: every variable.

    Returns
    -------
    list of str
        The names of the file's variables, in order.

    Raises
    ------
    NotMatV5Error
        No MAT v5/v7 header (the message says what the header looks like).
    MatScanError
        A structure refused by the limits above, or a corrupt one.
    """
    header = fh.read(128)
    if len(header) < 128:
        raise NotMatV5Error("too short for a MAT-file")
    e = {b"IM": "<", b"MI": ">"}.get(header[126:128])
    if e is None:
        raise NotMatV5Error("no MAT v5 header")
    version = struct.unpack(e + "H", header[124:126])[0]
    if version == 0x0200:
        raise MatScanError("a MAT v7.3 (HDF5) file, which is not supported: save it with -v7")
    if version != 0x0100:
        raise MatScanError(f"unknown MAT-file version {version:#06x}")
    wanted = {var} if isinstance(var, str) else None if var is None else set(var)
    names = []
    pos = 128
    budget = _Budget(limit)
    while file_size - pos >= 8:
        fh.seek(pos)
        mdtype, nbytes = struct.unpack(e + "II", fh.read(8))
        if nbytes == 0 or nbytes > file_size - pos - 8:
            raise MatScanError(f"variable {len(names) + 1} is truncated or corrupt")
        budget.count()
        for deep in (False, True):
            if mdtype == miCOMPRESSED:
                s = _ZStream(fh, pos + 8, nbytes)
            elif mdtype == miMATRIX:
                s = _FileStream(fh, pos, pos + 8 + nbytes)
            else:
                raise MatScanError(f"variable {len(names) + 1}: unexpected element type {mdtype}")
            name = _walk(s, e, budget, deep, f"variable {len(names) + 1}")
            if not deep:
                names.append(name)
                if wanted is not None and name not in wanted:
                    break
        pos += 8 + nbytes
    return names
