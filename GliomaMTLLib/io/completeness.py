"""Does an image file hold all the voxel data its header promises? Checked before reading.

ITK (SimpleITK 2.x) reads a NIfTI file that is cut short, plain or gzip-compressed, without a
word: the missing voxels become zeros and a prediction is quietly wrong. It does refuse short NRRD
and MetaImage files, but with messages that do not say what is wrong (a MetaImage file gets "No
such file or directory"). This module reads the header of every format the readers accept,
computes the number of bytes of image data it promises, and compares it with what the file holds:

- NIfTI-1 and NIfTI-2 (``.nii``, ``.nii.gz``, either byte order): ``vox_offset`` + voxels x ``bitpix``/8;
- NRRD (``.nrrd`` attached, ``.nhdr`` detached; ``raw`` and ``gzip`` encodings): sizes x type size;
- MetaImage (``.mha``, ``.mhd``; raw or zlib-compressed): ``DimSize`` x element size x channels.

For gzip data the uncompressed length is first read from the stream's trailer (the last four bytes,
the length modulo 2**32): when it matches, the file is complete and nothing more is read. Otherwise
the stream is decompressed to count the bytes it really holds, so that the message gives both
numbers; a stream that cannot be decompressed at all is reported as damaged. A damaged stream of the
right length is not detected here (ITK does not check the gzip checksum either).

:func:`check_complete` raises :class:`TruncatedFileError` ("file X is truncated: expected N bytes of
image data, found M") or :class:`DamagedFileError`; formats or encodings it does not know are left to
ITK.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from GliomaMTLLib.io.validation import UnreadableFileError

_CHUNK = 1 << 20
_NRRD_TYPES = {
    **dict.fromkeys(("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"), 1),
    **dict.fromkeys(("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort",
                     "unsigned short", "unsigned short int", "uint16", "uint16_t"), 2),
    **dict.fromkeys(("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t",
                     "float"), 4),
    **dict.fromkeys(("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64",
                     "int64_t", "ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t",
                     "double"), 8),
}
_META_TYPES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
               "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
               "MET_DOUBLE": 8}


class TruncatedFileError(UnreadableFileError):
    """An image file holds fewer bytes of image data than its header promises."""


class DamagedFileError(UnreadableFileError):
    """An image file's compressed data cannot be decompressed."""


def _truncated(path: Path, expected: int, found: int, what: str = "") -> TruncatedFileError:
    return TruncatedFileError(
        f"file {path} is truncated: expected {expected} bytes of image data{what}, found {found}; the file was cut "
        "short (an interrupted copy or download?): copy or export it again",
        path,
    )


def _truncated_header(path: Path, expected: int | None, found: int) -> TruncatedFileError:
    size = f"{found} of at least {expected} bytes" if expected else f"{found} bytes"
    return TruncatedFileError(
        f"file {path} is truncated: its header is incomplete ({size}) and it holds no image data; copy or "
        "export it again",
        path,
    )


def _damaged(path: Path, detail: str) -> DamagedFileError:
    return DamagedFileError(
        f"file {path} is damaged: its compressed image data cannot be decompressed ({detail}); copy or export it again",
        path,
    )


def gzip_length(path: Path, offset: int = 0, expected: int | None = None) -> int:
    """Uncompressed length of the gzip stream starting at ``offset`` in ``path`` (for the trailer shortcut,
    pass the ``expected`` length).

    Raises:
        DamagedFileError: the stream is not valid gzip data.
    """
    size = path.stat().st_size
    if expected is not None and size - offset >= 18:
        with path.open("rb") as handle:
            handle.seek(size - 4)
            (trailer,) = struct.unpack("<I", handle.read(4))
        if trailer == expected % (1 << 32):
            return expected
    return _zlib_length(path, offset, gzip_stream=True)


def _zlib_length(path: Path, offset: int, gzip_stream: bool = False) -> int:
    """Bytes the zlib (or gzip, several members allowed) stream starting at ``offset`` decompresses to:
    what is there, if it is cut short.

    Raises:
        DamagedFileError: the data is not a valid stream.
    """
    wbits = 16 + zlib.MAX_WBITS if gzip_stream else zlib.MAX_WBITS
    decompressor = zlib.decompressobj(wbits)
    count = 0
    with path.open("rb") as handle:
        handle.seek(offset)
        try:
            block = handle.read(_CHUNK)
            while block:
                count += len(decompressor.decompress(block))
                if decompressor.eof:
                    rest = decompressor.unused_data
                    if not gzip_stream or not rest.strip(b"\0"):
                        break
                    decompressor = zlib.decompressobj(wbits)  # next gzip member
                    block = rest
                    continue
                block = handle.read(_CHUNK)
        except zlib.error as exc:
            raise _damaged(path, str(exc)) from exc
    return count


# ---------------------------------------------------------------------------------------------- NIfTI


def _nifti_header(head: bytes) -> tuple[int, int] | None:
    """(vox_offset, bytes of image data) from the first 540 bytes of a NIfTI file, or None if not NIfTI."""
    if len(head) < 348:
        return None
    for endian in ("<", ">"):
        (sizeof_hdr,) = struct.unpack(endian + "i", head[:4])
        if sizeof_hdr == 348:
            dims = struct.unpack(endian + "8h", head[40:56])
            (bitpix,) = struct.unpack(endian + "h", head[72:74])
            (vox_offset,) = struct.unpack(endian + "f", head[108:112])
            offset = max(int(vox_offset), 352)
            break
        if sizeof_hdr == 540 and len(head) >= 540:
            (bitpix,) = struct.unpack(endian + "h", head[14:16])
            dims = struct.unpack(endian + "8q", head[16:80])
            (vox_offset,) = struct.unpack(endian + "q", head[168:176])
            offset = max(int(vox_offset), 544)
            break
    else:
        return None
    ndim = int(dims[0])
    if not 1 <= ndim <= 7 or bitpix <= 0:
        return None  # ITK will say what is wrong with this header
    voxels = 1
    for n in dims[1 : ndim + 1]:
        voxels *= max(int(n), 1)
    return offset, voxels * int(bitpix) // 8


def _gzip_head(path: Path, n: int) -> bytes:
    """The first ``n`` uncompressed bytes of a gzip file (fewer if it is shorter or cut short)."""
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = b""
    with path.open("rb") as handle:
        try:
            while len(out) < n:
                block = handle.read(1 << 14)
                if not block:
                    break
                out += decompressor.decompress(block, n - len(out))
                if decompressor.eof:
                    break
        except zlib.error as exc:
            raise _damaged(path, str(exc)) from exc
    return out


def _check_nifti(path: Path, compressed: bool) -> None:
    if compressed:
        head = _gzip_head(path, 540)
    else:
        with path.open("rb") as handle:
            head = handle.read(540)
    parsed = _nifti_header(head)
    if parsed is None:
        looks_nifti = len(head) >= 4 and any(
            struct.unpack(e + "i", head[:4])[0] in (348, 540) for e in ("<", ">"))
        if len(head) < 348 and looks_nifti:
            raise _truncated_header(path, 348, len(head))
        return  # not NIfTI: ITK says what it is
    offset, data = parsed
    total = gzip_length(path, 0, offset + data) if compressed else path.stat().st_size
    if total < offset + data:
        raise _truncated(path, data, max(total - offset, 0))


# ----------------------------------------------------------------------------------------------- NRRD


def _read_text_header(path: Path, limit: int = 1 << 16) -> tuple[list[str], int]:
    """Lines of a text header up to the first empty line, and the byte offset just after it."""
    with path.open("rb") as handle:
        head = handle.read(limit)
    lines: list[str] = []
    position = 0
    while position < len(head):
        end = head.find(b"\n", position)
        if end < 0:
            break
        line = head[position:end].decode("latin-1").rstrip("\r")
        position = end + 1
        if not line:
            return lines, position
        lines.append(line)
    return lines, position


def _check_nrrd(path: Path) -> None:
    lines, data_offset = _read_text_header(path)
    if not lines or not lines[0].startswith("NRRD"):
        return
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if line.startswith("#") or ":" not in line or ":=" in line:
            continue
        key, value = line.split(":", 1)
        fields[key.strip().lower()] = value.strip()
    try:
        sizes = [int(v) for v in fields["sizes"].split()]
        type_size = _NRRD_TYPES[fields["type"].lower()]
    except (KeyError, ValueError):
        return
    encoding = fields.get("encoding", "raw").lower()
    expected = type_size
    for n in sizes:
        expected *= n
    data_file = fields.get("data file") or fields.get("datafile")
    if data_file:
        if data_file.split()[0] == "LIST" or "%" in data_file:
            return  # several data files: left to ITK
        target = (path.parent / data_file).resolve()
        if not target.is_file():
            raise UnreadableFileError(f"file {path} names its image data file {target}, which does not exist", path)
        offset = int(fields.get("byte skip", "0") or 0) if encoding == "raw" else 0
        if offset < 0:
            return
    else:
        target, offset = path, data_offset
    if encoding == "raw":
        found = target.stat().st_size - offset
    elif encoding in ("gzip", "gz"):
        found = gzip_length(target, offset, expected)
    else:
        return
    if found < expected:
        where = f" in {target}" if target != path else ""
        raise _truncated(path, expected, max(found, 0), where)


# ------------------------------------------------------------------------------------------ MetaImage


def _check_metaimage(path: Path) -> None:
    with path.open("rb") as handle:
        head = handle.read(1 << 16)
    fields: dict[str, str] = {}
    position = 0
    while position < len(head):
        end = head.find(b"\n", position)
        if end < 0:
            end = len(head)
        line = head[position:end].decode("latin-1").strip()
        position = end + 1
        if "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        fields[key.lower()] = value
        if key.lower() == "elementdatafile":
            break
    else:
        if b"NDims" in head[:200] or b"ObjectType" in head[:200]:  # a MetaImage header cut short
            raise _truncated_header(path, None, len(head))
        return
    try:
        sizes = [int(v) for v in fields["dimsize"].split()]
        element = _META_TYPES[fields["elementtype"].upper()]
        channels = int(fields.get("elementnumberofchannels", "1"))
    except (KeyError, ValueError):
        return
    expected = element * channels
    for n in sizes:
        expected *= n
    data_file = fields["elementdatafile"]
    if data_file.upper() == "LOCAL":
        target, offset = path, position
    elif data_file.upper().startswith("LIST") or "%" in data_file:
        return
    else:
        target, offset = (path.parent / data_file).resolve(), 0
        if not target.is_file():
            raise UnreadableFileError(f"file {path} names its image data file {target}, which does not exist", path)
    header_size = int(fields.get("headersize", "0") or 0)
    offset += max(header_size, 0)
    compressed = fields.get("compresseddata", "false").lower() == "true"
    found = _zlib_length(target, offset) if compressed else target.stat().st_size - offset
    if found < expected:
        where = f" in {target}" if target != path else ""
        raise _truncated(path, expected, max(found, 0), where)


def check_complete(path: str | os.PathLike) -> None:
    """Raise if the image file at ``path`` holds less image data than its header promises.

    Raises:
        TruncatedFileError: fewer bytes of image data than the header promises (names both numbers).
        DamagedFileError: compressed data that cannot be decompressed.
        UnreadableFileError: a detached header whose data file does not exist.
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        with path.open("rb") as handle:
            gzipped = handle.read(2) == b"\x1f\x8b"
        _check_nifti(path, compressed=gzipped)  # a .nii.gz that is not gzip data is read as it is by ITK
    elif name.endswith(".nii"):
        _check_nifti(path, compressed=False)
    elif name.endswith((".nrrd", ".nhdr")):
        _check_nrrd(path)
    elif name.endswith((".mha", ".mhd")):
        _check_metaimage(path)
