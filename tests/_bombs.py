"""Hand-made hostile MAT and .npz files for the hardening tests (built in linear time).

* :func:`nested_mat`: a variable ``cnn`` that is a 1x1 cell (or struct) nested
  ``depth`` levels deep around a 1x1 double, compressed (20,000 cells: ~1 MB);
* :func:`mat_with_zero_member`: a valid network struct with an extra field
  holding a zero-filled ``rows x cols`` double array (2 GiB by default),
  compressed to a few MB without ever holding the zeros in memory;
* :func:`npy_header_only`: an ``.npy`` member whose header declares any shape
  while it holds only a few bytes.
"""

import io
import struct
import zlib

import numpy as np
import scipy.io

miINT8, miINT32, miUINT32, miDOUBLE, miMATRIX, miCOMPRESSED = 1, 5, 6, 9, 14, 15
mxCELL, mxSTRUCT, mxDOUBLE = 1, 2, 6


def _el(mdtype, data):
    return struct.pack("<II", mdtype, len(data)) + data + b"\0" * (-len(data) % 8)


def _head(cls, dims, name, content_after):
    """The tag, flags, dims and name of a matrix whose remaining content is ``content_after``
    bytes long."""
    body = (
        _el(miUINT32, struct.pack("<II", cls, 0))
        + _el(miINT32, struct.pack(f"<{len(dims)}i", *dims))
        + _el(miINT8, name)
    )
    return struct.pack("<II", miMATRIX, len(body) + content_after) + body


def _file(var_element, compress=True):
    header = b"MATLAB 5.0 MAT-file, hostile test data".ljust(116, b" ")
    header += b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"
    if compress:
        z = zlib.compress(var_element, 6)
        return header + struct.pack("<II", miCOMPRESSED, len(z)) + z
    return header + var_element


def nested_mat(depth, kind="cell"):
    """MAT-file bytes: variable ``cnn`` = {{{...{1.0}...}}} (``kind="cell"``) or
    s.a.a.a...a = 1.0 (``kind="struct"``), ``depth`` levels."""
    leaf = _head(mxDOUBLE, (1, 1), b"", 16) + _el(miDOUBLE, struct.pack("<d", 1.0))
    size = len(leaf)
    parts = [leaf]
    for level in range(depth):
        name = b"cnn" if level == depth - 1 else b""
        if kind == "cell":
            h = _head(mxCELL, (1, 1), name, size)
        else:
            fields = struct.pack("<I", (4 << 16) | miINT32) + struct.pack("<i", 8)
            fields += _el(miINT8, b"a".ljust(8, b"\0"))
            h = _head(mxSTRUCT, (1, 1), name, len(fields) + size)[:]
            h += fields
        parts.append(h)
        size += len(h)
    return _file(b"".join(reversed(parts)))


MARKER = np.full((3, 7, 5), 0.5)
"""Put this array where the huge member should go (see :func:`mat_with_zero_member`)."""


def mat_with_zero_member(struct_dict, rows=65536, cols=4096):
    """A MAT-file with variable ``cnn`` = ``struct_dict``, in which the one :data:`MARKER`
    array is replaced by zeros(rows, cols), compressed (the zeros are never held in memory;
    2 GiB by default)."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"cnn": struct_dict}, do_compression=False, oned_as="row")
    raw = buf.getvalue()[128:]
    # the marker's matrix element: find its dims, back up to its tag
    dims = _el(miINT32, struct.pack("<3i", 3, 7, 5))
    at = raw.index(dims) - 16 - 8
    assert struct.unpack("<I", raw[at : at + 4])[0] == miMATRIX
    old_len = 8 + struct.unpack("<I", raw[at + 4 : at + 8])[0]
    nbytes = rows * cols * 8
    head = _head(mxDOUBLE, (rows, cols), b"", 8 + nbytes) + struct.pack("<II", miDOUBLE, nbytes)
    new_len = len(head) + nbytes
    # every matrix element enclosing the marker grows by new_len - old_len
    raw = bytearray(raw)
    for o in range(0, at, 8):
        tag, size = struct.unpack("<II", raw[o : o + 8])
        if tag == miMATRIX and size % 8 == 0 and o + 8 + size >= at + old_len:
            raw[o + 4 : o + 8] = struct.pack("<I", size + new_len - old_len)
    raw = bytes(raw)
    prefix = raw[:at] + head
    suffix = raw[at + old_len :]
    chunk = bytes(1 << 22)
    n_chunks, rest = divmod(nbytes, len(chunk))
    assert rest == 0
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = [b"\x78\xda", c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)]
    c2 = zlib.compressobj(9, zlib.DEFLATED, -15)
    seg = c2.compress(chunk) + c2.flush(zlib.Z_FULL_FLUSH)
    out.append(seg * n_chunks)
    out.append(c.compress(suffix) + c.flush())
    adler = zlib.adler32(prefix)  # nbytes zeros leave a = adler & 0xFFFF, add nbytes * a to b
    a, b = adler & 0xFFFF, adler >> 16
    adler = zlib.adler32(suffix, ((b + nbytes * a) % 65521) << 16 | a)
    out.append(struct.pack(">I", adler))
    z = b"".join(out)
    header = b"MATLAB 5.0 MAT-file, hostile test data".ljust(116, b" ")
    header += b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"
    return header + struct.pack("<II", miCOMPRESSED, len(z)) + z


def npy_header_only(shape, dtype="<f8", data=b"\0" * 16):
    """``.npy`` bytes whose header declares ``shape`` but which hold only ``data``."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)}
    )
    return buf.getvalue() + data
