"""Issue 7, item 1: every bad input through the real `python -m engine generate` subprocess.

Refused inputs must give exit code 2, one `error` event with a one-line message naming the
problem and the fix, and no traceback on stderr.  Inputs that should work must work: odd
formats are checked through the inputs stage (the run is then cancelled, as a client would),
and one full run carries the odd-but-valid cases end to end.
"""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import EXAMPLE, run_engine
from engine import protocol
from reliability import FAST, assert_job_consistent, assert_refused, events_of, run_and_interrupt

RED, BLUE = (220, 20, 20), (20, 20, 220)


def depth_npy(path, width=80, height=60, value=3.0):
    np.save(path, np.full((height, width), value, np.float32))
    return path


def two_colour(width=80, height=60) -> Image.Image:
    """Left half red, right half blue: shows orientation and colour survive loading."""
    image = Image.new("RGB", (width, height), RED)
    image.paste(BLUE, (width // 2, 0, width, height))
    return image


def png16_rgb(path, array: np.ndarray):
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one), written chunk by chunk."""
    height, width, _ = array.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in array)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def huge_grey_jpeg(path, side=16384):
    """A valid mid-grey baseline JPEG of side x side pixels in ~3 MB, made in milliseconds.

    Pillow encodes a 16x16 mid-grey image; we keep its headers, patch the size in SOF0 and
    repeat its entropy-coded block.  With the standard Huffman tables a block whose DC
    difference is 0 and whose AC is all zero is the bits 00 1010, so four blocks are exactly
    the three bytes 28 A2 8A, which is also what the 16x16 image's own scan holds.
    """
    import io

    buffer = io.BytesIO()
    Image.new("L", (16, 16), 128).save(buffer, format="JPEG", quality=75)
    data = buffer.getvalue()
    sof = data.index(b"\xff\xc0")
    sos = data.index(b"\xff\xda")
    scan_start = sos + 2 + struct.unpack(">H", data[sos + 2:sos + 4])[0]
    assert data[scan_start:-2] == b"\x28\xa2\x8a", "Pillow's JPEG encoder changed its tables"
    head = bytearray(data[:scan_start])
    head[sof + 5:sof + 9] = struct.pack(">HH", side, side)
    path.write_bytes(bytes(head) + b"\x28\xa2\x8a" * (side * side // 64 // 4) + b"\xff\xd9")
    return path


# -- refused inputs ------------------------------------------------------------------------------


def _missing(tmp):
    return tmp / "no such photo.png", []


def _not_an_image(tmp):
    path = tmp / "notes.png"
    path.write_text("this is a text file, not a picture")
    return path, []


def _truncated_png(tmp):
    two_colour().save(tmp / "full.png")
    data = (tmp / "full.png").read_bytes()
    (tmp / "cut.png").write_bytes(data[: len(data) // 2])
    return tmp / "cut.png", []


def _truncated_jpeg(tmp):
    noise = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp / "full.jpg", quality=90)
    data = (tmp / "full.jpg").read_bytes()
    (tmp / "cut.jpg").write_bytes(data[: len(data) // 2])
    return tmp / "cut.jpg", []


def _one_pixel(tmp):
    Image.new("RGB", (1, 1), RED).save(tmp / "dot.png")
    return tmp / "dot.png", []


def _huge_png(tmp):
    Image.new("1", (16384, 16384), 1).save(tmp / "huge.png")  # 1-bit: ~60 KB on disk, 32 MB to make
    return tmp / "huge.png", []


def _depth_wrong_size(tmp):
    two_colour().save(tmp / "photo.png")
    return tmp / "photo.png", ["--depth", str(depth_npy(tmp / "depth.npy", 50, 50))]


def _depth_all_nan(tmp):
    two_colour().save(tmp / "photo.png")
    return tmp / "photo.png", ["--depth", str(depth_npy(tmp / "depth.npy", value=np.nan))]


def _depth_zero_and_negative(tmp):
    two_colour().save(tmp / "photo.png")
    depth = np.zeros((60, 80), np.float32)
    depth[:, 40:] = -2.0
    np.save(tmp / "depth.npy", depth)
    return tmp / "photo.png", ["--depth", str(tmp / "depth.npy")]


def _depth_infinite(tmp):
    two_colour().save(tmp / "photo.png")
    return tmp / "photo.png", ["--depth", str(depth_npy(tmp / "depth.npy", value=np.inf))]


def _depth_unknown_format(tmp):
    two_colour().save(tmp / "photo.png")
    (tmp / "depth.txt").write_text("1 2 3")
    return tmp / "photo.png", ["--depth", str(tmp / "depth.txt")]


def _depth_missing(tmp):
    two_colour().save(tmp / "photo.png")
    return tmp / "photo.png", ["--depth", str(tmp / "nowhere.npy")]


def _no_depth(tmp):
    two_colour().save(tmp / "photo.png")
    return tmp / "photo.png", []


def _setting(*arguments):
    def make(tmp):
        two_colour().save(tmp / "photo.png")
        return tmp / "photo.png", ["--depth", str(depth_npy(tmp / "depth.npy")), *arguments]

    return make


REFUSED = {
    "missing file": (_missing, ["not found", "no such photo.png", "check the path"]),
    "not an image": (_not_an_image, ["notes.png", "not an image", "save it as png or jpeg"]),
    "truncated png": (_truncated_png, ["cut.png", "truncated", "re-export"]),
    "truncated jpeg": (_truncated_jpeg, ["cut.jpg", "truncated", "re-export"]),
    "1x1 image": (_one_pixel, ["dot.png", "1x1", "at least 16 px"]),
    "16k x 16k png": (_huge_png, ["huge.png", "16384x16384", "limit is 80 mp", "downscale"]),
    "depth of the wrong size": (_depth_wrong_size, ["depth.npy", "50x50", "image's size"]),
    "depth all NaN": (_depth_all_nan, ["depth.npy", "no valid", ".npy (metres)"]),
    "depth zero and negative": (_depth_zero_and_negative, ["depth.npy", "no valid", ".npy (metres)"]),
    "depth infinite": (_depth_infinite, ["depth.npy", "no valid"]),
    "depth of unknown format": (_depth_unknown_format, ["depth.txt", "unknown format", ".npy (metres)"]),
    "depth missing": (_depth_missing, ["depth file not found", "nowhere.npy", "check the path"]),
    "offline profile without depth": (_no_depth, ["offline profile", "pass --depth"]),
    "resolution 0": (_setting("--resolution", "0"), ["resolution", "16..4096"]),
    "iterations < 0": (_setting("--iterations", "-3"), ["iterations", "0..1000000"]),
    "steps < 0": (_setting("--steps", "-1"), ["steps", "0..256"]),
    "setting of the wrong type": (_setting("--set", "reprojections=many"), ["reprojections", "must be int"]),
    "unknown setting": (_setting("--set", "colour=red"), ["unknown settings", "colour"]),
}


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_bad_input_is_refused_with_a_clear_one_line_message(tmp_path, case):
    make, words = REFUSED[case]
    image, extra = make(tmp_path)
    # FAST first: a case's own setting comes later on the command line and wins.
    result = run_engine("generate", str(image), "--out", str(tmp_path / "job"), *FAST, *extra, timeout=120)
    assert_refused(result, protocol.EXIT_BAD_INPUT, *words)


# -- inputs that must work ----------------------------------------------------------------------


def _accepted(tmp, make_image, depth_size=(80, 60)):
    """Run the CLI until the inputs stage is done, then cancel; the working image it wrote."""
    image = make_image(tmp)
    depth = depth_npy(tmp / "depth.npy", *depth_size)
    job = tmp / "job"
    result = run_and_interrupt(
        ["generate", str(image), "--depth", str(depth), "--out", str(job), *FAST],
        tmp / "stderr.txt",
        when=lambda e: e["type"] == "stage_done" and e["stage"] == "inputs",
    )
    assert result.returncode == protocol.EXIT_CANCELLED, result.events[-1:] + [result.stderr[-2000:]]
    assert "Traceback" not in result.stderr
    assert "inputs" in assert_job_consistent(job)
    return np.asarray(Image.open(job / "inputs" / "image.png").convert("RGB"), dtype=np.int16)


def _saved(name, convert, **save):
    def make(tmp):
        path = tmp / name
        convert(two_colour()).save(path, **save)
        return path

    return make


def _rgba(image):
    image = image.convert("RGBA")
    image.putalpha(255)
    return image


def _grey16(image):
    return Image.fromarray((np.asarray(image.convert("L"), dtype=np.uint16) * 257))


def _png16_rgb(tmp):
    png16_rgb(tmp / "deep.png", np.asarray(two_colour(), dtype=np.uint16) * 257)
    return tmp / "deep.png"


FORMATS = {
    "RGBA png": (_saved("a.png", _rgba), True),
    "paletted png": (_saved("p.png", lambda i: i.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)), True),
    "paletted png with transparency": (_saved("pt.png", lambda i: i.convert("P"), transparency=0), True),
    "grey png": (_saved("l.png", lambda i: i.convert("L")), False),
    "grey + alpha png": (_saved("la.png", lambda i: i.convert("LA")), False),
    "16-bit grey png": (_saved("g16.png", _grey16), False),
    "16-bit RGB png": (_png16_rgb, True),
    "CMYK jpeg": (_saved("cmyk.jpg", lambda i: i.convert("CMYK"), quality=95), True),
    "webp": (_saved("w.webp", lambda i: i, lossless=True), True),
    "tiff": (_saved("t.tif", lambda i: i), True),
}


@pytest.mark.parametrize("case", FORMATS, ids=list(FORMATS))
def test_image_formats_are_accepted_and_keep_their_colours(tmp_path, case):
    make, coloured = FORMATS[case]
    pixels = _accepted(tmp_path, make)
    assert pixels.shape == (48, 64, 3)  # 80x60 at --resolution 64
    left, right = pixels[24, 8], pixels[24, 56]
    if coloured:
        assert left[0] > 180 and left[2] < 60 and right[2] > 180 and right[0] < 60, (left, right)
    else:  # grey: left (red) and right (blue) differ in luminance
        assert abs(int(left[0]) - int(right[0])) > 20 and np.ptp(left) < 3, (left, right)


def test_exif_orientation_is_respected(tmp_path):
    def rotated_photo(tmp):
        # Stored 64x32 landscape, left half red; orientation 6 says "turn 90 degrees clockwise
        # to view": the viewer sees a 32x64 portrait whose top half is red.
        exif = Image.Exif()
        exif[0x0112] = 6
        two_colour(64, 32).save(tmp / "phone.jpg", exif=exif, quality=95)
        return tmp / "phone.jpg"

    pixels = _accepted(tmp_path, rotated_photo, depth_size=(32, 64))
    assert pixels.shape == (64, 32, 3)
    top, bottom = pixels[8, 16], pixels[56, 16]
    assert top[0] > 180 and top[2] < 60 and bottom[2] > 180 and bottom[0] < 60, (top, bottom)


def test_a_16k_jpeg_is_decoded_reduced_not_refused(tmp_path):
    pixels = _accepted(tmp_path, lambda tmp: huge_grey_jpeg(tmp / "huge.jpg"), depth_size=(80, 80))
    assert pixels.shape == (64, 64, 3)
    assert np.all(np.abs(pixels - 128) <= 2)


def test_odd_but_valid_inputs_run_end_to_end(tmp_path):
    """Spaces and unicode in every path, a unicode prompt, an RGBA image, a depth holding NaN,
    inf, zero and negative values, and N = 0 (no expansion): a full run that must succeed."""
    folder = tmp_path / "my photos ü 写真"
    folder.mkdir()
    image = folder / "façade 1 🌿.png"
    Image.open(EXAMPLE / "image.png").convert("RGBA").save(image)
    depth = np.asarray(Image.open(EXAMPLE / "depth.png"), dtype=np.float32) / 1000.0
    depth[:10], depth[10:20], depth[20:30], depth[30:40] = np.nan, np.inf, 0.0, -1.0
    np.save(folder / "depth ø.npy", depth)
    job = tmp_path / "jobs ö" / "job ä 1"
    prompt = "a mossy courtyard — 苔むした中庭, café 🌿"
    result = run_engine(
        "generate", str(image), "--depth", str(folder / "depth ø.npy"), "--out", str(job), "--prompt", prompt, *FAST
    )
    assert result.returncode == protocol.EXIT_OK, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    events = events_of(result.stdout)
    assert events[-1]["type"] == "result"
    assert assert_job_consistent(job) == list(protocol.STAGES)
    assert json.loads((job / "job.json").read_text(encoding="utf-8"))["prompt"] == prompt
    kept = np.load(job / "inputs" / "depth.npz")["depth"]
    assert np.all(kept[:8] == 0) and np.all(kept[kept.shape[0] // 2:] > 0)  # bad rows hold "no depth"
    views = json.loads((job / "expand" / "views.json").read_text())
    assert len(views["cameras"]) == 1 and views["steps"] == []  # N = 0: the input view only
    for name in ("points.ply", "gaussians.ply"):
        assert (job / name).read_bytes().startswith(b"ply")
