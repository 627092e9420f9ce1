import io

import numpy as np
import pytest
from PIL import Image

from facecloak.errors import BadOptionError, ImageDecodeError, ImageTooLargeError
from facecloak.imageio import ImageLimits, decode_image, encode_image, read_image, write_image


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def test_zero_bytes_is_a_specific_error():
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"")


def test_non_image_and_truncated(selfie_path):
    with pytest.raises(ImageDecodeError, match="not an image"):
        decode_image(b"%PDF-1.4 this is not a photo")
    data = selfie_path.read_bytes()
    with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
        decode_image(data[: len(data) // 3])


def test_byte_and_pixel_limits_checked_before_decoding():
    with pytest.raises(ImageTooLargeError, match="bytes"):
        decode_image(b"x" * 101, ImageLimits(max_bytes=100))
    bomb = _png(Image.new("1", (9000, 9000)))  # 81 Mpx that compresses to a few KiB
    assert len(bomb) < 200_000
    with pytest.raises(ImageTooLargeError, match="pixels"):
        decode_image(bomb)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "CMYK", "P", "I;16"])
def test_all_modes_become_rgb8(mode, selfie):
    base = Image.fromarray(selfie)
    if mode == "I;16":
        grey = np.asarray(base.convert("L"), dtype=np.uint16) * 257
        img = Image.fromarray(grey)
        assert img.mode.startswith("I;16")
        data = _png(img)
    else:
        img = base.convert(mode)
        data = encode_image(np.asarray(base), "PNG") if mode == "P" else None
        buf = io.BytesIO()
        img.save(buf, format="JPEG" if mode == "CMYK" else "PNG")
        data = buf.getvalue()
    rgb = decode_image(data)
    assert rgb.dtype == np.uint8 and rgb.shape == selfie.shape
    if mode == "I;16":  # 16-bit is scaled down, not truncated
        assert abs(int(rgb.mean()) - int(np.asarray(base.convert("L")).mean())) <= 2


def test_transparent_pixels_become_white():
    img = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert (decode_image(_png(img)) == 255).all()


def test_exif_orientation_is_honoured(selfie):
    rotated = Image.fromarray(np.ascontiguousarray(np.rot90(selfie)))  # stored sideways
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned 90 degrees counter-clockwise: viewer must rotate 90 CW
    buf = io.BytesIO()
    rotated.save(buf, format="JPEG", quality=98, exif=exif.tobytes())
    upright = decode_image(buf.getvalue())
    assert upright.shape == selfie.shape
    assert np.abs(upright.astype(int) - selfie.astype(int)).mean() < 4


def test_png_output_is_lossless(tmp_path, selfie):
    out = tmp_path / "x.png"
    assert write_image(out, selfie) is selfie
    assert np.array_equal(read_image(out), selfie)


@pytest.mark.parametrize("suffix", [".jpg", ".webp"])
def test_lossy_writes_return_the_pixels_as_written(tmp_path, selfie, suffix):
    out = tmp_path / f"x{suffix}"
    written = write_image(out, selfie, jpeg_quality=10)
    assert np.array_equal(written, read_image(out)) and not np.array_equal(written, selfie)


@pytest.mark.parametrize("quality", [0, -5, 101, 1000])
def test_jpeg_quality_is_bounded(tmp_path, selfie, quality):
    with pytest.raises(BadOptionError, match="quality must be in 1..100"):
        encode_image(selfie, "JPEG", quality)
    with pytest.raises(BadOptionError, match="quality must be in 1..100"):
        write_image(tmp_path / "x.webp", selfie, jpeg_quality=quality)
    assert list(tmp_path.iterdir()) == []


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(ImageDecodeError, match="directory"):
        read_image(tmp_path)


def test_heic_selfies_decode(selfie):
    buf = io.BytesIO()
    Image.fromarray(selfie).save(buf, format="HEIF", quality=95)
    assert buf.getvalue()[4:12] == b"ftypheic"
    rgb = decode_image(buf.getvalue())
    assert rgb.shape == selfie.shape and np.abs(rgb.astype(int) - selfie.astype(int)).mean() < 3
