"""Image and mask decoding: every Pillow mode to the right 8-bit RGB pixels, EXIF orientation applied
alike to photos and masks, and one-line errors naming the file for what cannot be decoded.

Every file here is written by Pillow (or by hand, byte for byte) and read back with the real
readers; expected pixels are computed independently with numpy."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from moduseg_core import ModusegError
from moduseg_core.files.io import image_size, read_image, read_mask

H, W = 6, 10


def gray16(value: int) -> np.ndarray:
    return np.full((H, W), value, np.uint16)


def ramp16() -> np.ndarray:
    return np.linspace(0, 65535, H * W).round().astype(np.uint16).reshape(H, W)


def expected_from_16(values: np.ndarray) -> np.ndarray:
    scaled = np.round(values.astype(np.float64) * 255 / 65535).astype(np.uint8)
    return np.repeat(scaled[:, :, None], 3, axis=2)


def over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float64)[:, :, None] / 255
    return np.round(rgb * a + 255 * (1 - a)).astype(np.uint8)


def _save(array: np.ndarray, mode: str | None = None, **kw):
    def write(path):
        (Image.fromarray(array, mode) if mode else Image.fromarray(array)).save(path, **kw)

    return write


def _cases():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (H, W), dtype=np.uint8)
    alpha = rng.integers(0, 256, (H, W), dtype=np.uint8)
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    index = rng.integers(0, 4, (H, W), dtype=np.uint8)

    def paletted(path, transparency=None):
        img = Image.fromarray(index, "P")
        img.putpalette(palette.ravel().tolist())
        img.save(path, **({} if transparency is None else {"transparency": transparency}))

    def pa(path):
        img = Image.fromarray(index, "P")
        img.putpalette(palette.ravel().tolist())
        img = img.convert("PA")
        img.putalpha(Image.fromarray(alpha, "L"))
        img.save(path)

    def cmyk(path):
        # pure cyan, magenta, yellow, black and white patches
        data = np.zeros((H, W, 4), np.uint8)
        data[:, 0:2, 0] = 255
        data[:, 2:4, 1] = 255
        data[:, 4:6, 2] = 255
        data[:, 6:8, 3] = 255
        Image.fromarray(data, "CMYK").save(path)

    cmyk_expected = np.full((H, W, 3), 255, np.uint8)
    cmyk_expected[:, 0:2] = (0, 255, 255)
    cmyk_expected[:, 2:4] = (255, 0, 255)
    cmyk_expected[:, 4:6] = (255, 255, 0)
    cmyk_expected[:, 6:8] = (0, 0, 0)

    bits = rng.integers(0, 2, (H, W)).astype(bool)
    floats = rng.random((H, W)).astype(np.float32)
    rgb16 = rng.integers(0, 256, (H, W, 3)).astype(np.uint16) * 257

    def png48(path):  # 16 bits a channel: PNG colour type 2, bit depth 16, written by hand
        import struct
        import zlib

        def chunk(kind, data):
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

        raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(H))
        header = struct.pack(">IIBBBBB", W, H, 16, 2, 0, 0, 0)
        path.write_bytes(
            b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
        )

    return [
        ("RGB png", "x.png", _save(rgb), rgb),
        ("L png", "x.png", _save(gray), np.repeat(gray[:, :, None], 3, axis=2)),
        ("I;16 png = 111*257", "x.png", _save(gray16(111 * 257)), np.full((H, W, 3), 111, np.uint8)),
        ("I;16 png full range", "x.png", _save(ramp16()), expected_from_16(ramp16())),
        ("I;16 tiff", "x.tif", _save(ramp16()), expected_from_16(ramp16())),
        ("I 32-bit tiff holding 16-bit data", "x.tif", _save(ramp16().astype(np.int32)), expected_from_16(ramp16())),
        (
            "F tiff 0..1",
            "x.tif",
            _save(floats),
            np.repeat(np.round(floats * 255).astype(np.uint8)[:, :, None], 3, axis=2),
        ),
        (
            "F tiff 0..255",
            "x.tif",
            _save(floats * 255),
            np.repeat(np.round(floats * 255).astype(np.uint8)[:, :, None], 3, axis=2),
        ),
        ("RGB 16-bit png", "x.png", png48, (rgb16 // 257).astype(np.uint8)),
        ("RGBA opaque", "x.png", _save(np.dstack([rgb, np.full((H, W), 255, np.uint8)])), rgb),
        ("RGBA over white", "x.png", _save(np.dstack([rgb, alpha])), over_white(rgb, alpha)),
        (
            "LA over white",
            "x.png",
            _save(np.dstack([gray, alpha]), "LA"),
            over_white(np.repeat(gray[:, :, None], 3, 2), alpha),
        ),
        ("P", "x.png", paletted, palette[index]),
        (
            "P with a transparent index",
            "x.png",
            lambda p: paletted(p, transparency=2),
            np.where((index == 2)[:, :, None], np.uint8(255), palette[index]),
        ),
        ("CMYK jpeg-free tiff", "x.tif", cmyk, cmyk_expected),
        ("1-bit png", "x.png", _save(bits), np.repeat(np.where(bits, 255, 0).astype(np.uint8)[:, :, None], 3, axis=2)),
        ("1-bit bmp", "x.bmp", _save(bits), np.repeat(np.where(bits, 255, 0).astype(np.uint8)[:, :, None], 3, axis=2)),
        (
            "L with a transparent grey (tRNS)",
            "x.png",
            _save(gray, transparency=int(gray[0, 0])),
            np.where((gray == gray[0, 0])[:, :, None], np.uint8(255), np.repeat(gray[:, :, None], 3, axis=2)),
        ),
    ]


CASES = _cases()


@pytest.mark.parametrize("name,filename,write,expected", CASES, ids=[c[0] for c in CASES])
def test_every_mode_decodes_to_the_right_rgb(tmp_path, name, filename, write, expected):
    path = tmp_path / filename
    write(path)
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == (H, W, 3)
    np.testing.assert_array_equal(image, expected)


def test_sixteen_bit_gray_photo_keeps_its_brightness(tmp_path):
    """The issue's case: a 16-bit grayscale PNG whose picture has 111 decoded as all-white (255)."""
    path = tmp_path / "scan.png"
    picture = np.full((40, 60), 111, np.uint16)
    picture[10:30, 20:40] = 200
    Image.fromarray(picture * 257).save(path)
    assert Image.open(path).mode == "I;16"
    image = read_image(path)
    assert image.mean() == pytest.approx(picture.mean(), abs=1e-9)
    np.testing.assert_array_equal(image[:, :, 0], picture.astype(np.uint8))


def test_palette_with_alpha_in_memory_composites_over_white():
    """PA exists only in memory (no format writes it): the conversion itself, on a Pillow image."""
    from moduseg_core.files.io import _to_rgb

    rng = np.random.default_rng(6)
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    index = rng.integers(0, 4, (H, W), dtype=np.uint8)
    alpha = rng.integers(0, 256, (H, W), dtype=np.uint8)
    img = Image.fromarray(index, "P")
    img.putpalette(palette.ravel().tolist())
    img = img.convert("PA")
    img.putalpha(Image.fromarray(alpha, "L"))
    assert img.mode == "PA"
    np.testing.assert_array_equal(_to_rgb(img, "x"), over_white(palette[index], alpha))


def test_multi_frame_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (W, H), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    image = read_image(tmp_path / "a.gif")
    assert tuple(image[0, 0]) == (255, 0, 0)


# -- EXIF orientation -------------------------------------------------------------------------------

#: What a viewer shows for each EXIF orientation, from the stored pixels (numpy only).
DISPLAYED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: np.swapaxes(a, 0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


@pytest.mark.parametrize("orientation", sorted(DISPLAYED))
def test_exif_orientation_is_applied_to_images_and_masks_alike(tmp_path, orientation):
    rng = np.random.default_rng(orientation)
    stored = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(stored).save(tmp_path / "photo.png", exif=_exif(orientation))
    shown = np.ascontiguousarray(DISPLAYED[orientation](stored))
    np.testing.assert_array_equal(read_image(tmp_path / "photo.png"), shown)
    assert image_size(tmp_path / "photo.png") == shown.shape[:2]
    # a mask file carrying the same tag is turned the same way (masks without a tag are taken as shown)
    labels = rng.integers(0, 3, (H, W)).astype(np.uint8)
    Image.fromarray(labels, "L").save(tmp_path / "tagged.png", exif=_exif(orientation))
    np.testing.assert_array_equal(read_mask(tmp_path / "tagged.png"), DISPLAYED[orientation](labels))


def test_precomputed_instance_map_with_a_tag_is_turned_too(tmp_path):
    from moduseg_builtins.proposers.precomputed import load_proposals

    instances = np.zeros((H, W), np.uint8)
    instances[:2, :3] = 1
    Image.fromarray(instances, "L").save(tmp_path / "x.png", exif=_exif(6))
    found = load_proposals(tmp_path / "x.png", expected_hw=(W, H))
    np.testing.assert_array_equal(found.masks[0], DISPLAYED[6](instances) == 1)


def test_rotated_phone_photo_lines_up_with_its_mask(tmp_path):
    """A portrait photo stored landscape with orientation 6 and its label PNG drawn on the upright picture:
    the red object and the mask's object cover the same pixels."""
    upright = np.zeros((80, 50, 3), np.uint8)
    upright[10:30, 5:20] = (255, 0, 0)
    mask = np.zeros((80, 50), np.uint8)
    mask[10:30, 5:20] = 7
    stored = np.rot90(upright, 1)  # what the camera wrote: turned back by 90°
    Image.fromarray(np.ascontiguousarray(stored)).save(tmp_path / "IMG_0001.jpg", exif=_exif(6), quality=100)
    Image.fromarray(mask, "L").save(tmp_path / "IMG_0001.png")
    image = read_image(tmp_path / "IMG_0001.jpg")
    labels = read_mask(tmp_path / "IMG_0001.png", expected_hw=image.shape[:2])
    red = (image[:, :, 0] > 128) & (image[:, :, 1] < 100)
    np.testing.assert_array_equal(red, labels == 7)


def test_mask_in_the_stored_orientation_is_refused_with_a_hint(tmp_path):
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "p.jpg", exif=_exif(6))
    Image.fromarray(np.zeros((H, W), np.uint8), "L").save(tmp_path / "m.png")  # raw, not as displayed
    with pytest.raises(
        ModusegError, match=r"m\.png is 6×10 but its image is 10×6 \(it is the image turned by 90°.*EXIF"
    ):
        read_mask(tmp_path / "m.png", expected_hw=read_image(tmp_path / "p.jpg").shape[:2])


def test_malformed_exif_counts_as_no_orientation(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.png", exif=b"Exif\x00\x00garbage-not-tiff")
    np.testing.assert_array_equal(read_image(tmp_path / "x.png"), rgb)


# -- what cannot be decoded -----------------------------------------------------------------------------


def _truncated_jpeg(path):
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        path.with_suffix(".tmp.jpg")
    )
    data = path.with_suffix(".tmp.jpg").read_bytes()
    path.with_suffix(".tmp.jpg").unlink()
    path.write_bytes(data[: len(data) // 2])


def _truncated_png(path):
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        path.with_suffix(".tmp.png")
    )
    data = path.with_suffix(".tmp.png").read_bytes()
    path.with_suffix(".tmp.png").unlink()
    path.write_bytes(data[: len(data) - 200])


BAD_IMAGES = [
    ("empty file", "x.png", lambda p: p.write_bytes(b""), "unreadable or corrupt"),
    ("text named .jpg", "x.jpg", lambda p: p.write_text("not a picture\n"), "unreadable or corrupt"),
    ("html named .png", "x.png", lambda p: p.write_text("<html><body>404</body></html>"), "unreadable or corrupt"),
    ("png signature only", "x.png", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n"), "unreadable or corrupt"),
    ("truncated jpeg", "x.jpg", _truncated_jpeg, "unreadable or corrupt"),
    ("truncated png", "x.png", _truncated_png, "unreadable or corrupt"),
    ("float with NaN", "x.tif", _save(np.full((H, W), np.nan, np.float32)), "NaN or infinite pixels"),
    ("float beyond 16 bits", "x.tif", _save(np.full((H, W), 1e9, np.float32)), "float pixels up to 1e\\+09"),
    ("a folder", "x.jpg", lambda p: p.mkdir(), "is a folder, not an image file"),
    ("missing", "x.jpg", lambda p: None, "does not exist"),
]


@pytest.mark.parametrize("name,filename,write,message", BAD_IMAGES, ids=[c[0] for c in BAD_IMAGES])
def test_undecodable_images_are_refused_naming_the_file(tmp_path, name, filename, write, message):
    path = tmp_path / filename
    write(path)
    with pytest.raises(ModusegError, match=message) as info:
        read_image(path)
    text = str(info.value)
    assert str(path) in text and "\n" not in text


def test_pixel_guard_refuses_before_decoding(tmp_path):
    Image.fromarray(np.zeros((100, 300, 3), np.uint8)).save(tmp_path / "wide.png")
    with pytest.raises(ModusegError) as info:
        read_image(tmp_path / "wide.png", max_pixels=29_999)
    assert str(info.value).startswith(
        f"image {tmp_path / 'wide.png'} is 300×100 (0.0 MP), more than method.max_image_pixels=29999"
    )
    assert "--set method.max_image_pixels=N" in str(info.value)
    assert read_image(tmp_path / "wide.png", max_pixels=30_000).shape == (100, 300, 3)


def test_huge_header_is_refused_without_decoding(tmp_path):
    """A 40000×40000 PNG header over a few bytes of data (a decompression bomb): refused from the header."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    (tmp_path / "bomb.png").write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + chunk(b"IEND", b"")
    )
    with pytest.raises(
        ModusegError,
        match=r"bomb\.png has 1600000000 pixels \(1600\.0 MP\), more than method\.max_image_pixels=150000000",
    ):
        read_image(tmp_path / "bomb.png")


# -- masks ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["P", "L", "1", "I;16"])
def test_masks_of_every_lossless_mode(tmp_path, mode):
    ids = np.random.default_rng(4).integers(0, 2 if mode == "1" else 21, (H, W))
    if mode == "1":
        Image.fromarray(ids.astype(bool)).save(tmp_path / "m.png")
    elif mode == "I;16":
        Image.fromarray(ids.astype(np.uint16)).save(tmp_path / "m.png")
    else:
        img = Image.fromarray(ids.astype(np.uint8), mode)
        if mode == "P":
            img.putpalette(np.random.default_rng(5).integers(0, 256, 768, dtype=np.uint8).tolist())
        img.save(tmp_path / "m.png")
    assert Image.open(tmp_path / "m.png").mode == mode
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png", expected_hw=(H, W), n_classes=21), ids)


BAD_MASKS = [
    ("RGB colour mask", lambda p: Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(p), "has mode RGB"),
    ("LA", lambda p: Image.fromarray(np.zeros((H, W, 2), np.uint8), "LA").save(p), "has mode LA"),
    (
        "JPEG named .png",
        lambda p: Image.fromarray(np.zeros((H, W), np.uint8), "L").save(p, format="JPEG"),
        "is a JPEG file",
    ),
    (
        "wrong size",
        lambda p: Image.fromarray(np.zeros((H + 1, W), np.uint8), "L").save(p),
        "is 7×10 but its image is 6×10",
    ),
    (
        "class id out of range",
        lambda p: Image.fromarray(np.full((H, W), 21, np.uint8), "L").save(p),
        "holds class id 21, outside 0..20",
    ),
    ("16-bit id", lambda p: Image.fromarray(np.full((H, W), 1000, np.uint16)).save(p), "holds class id 1000"),
    ("empty", lambda p: p.write_bytes(b""), "unreadable or corrupt"),
    ("corrupt", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), "unreadable or corrupt"),
]


@pytest.mark.parametrize("name,write,message", BAD_MASKS, ids=[c[0] for c in BAD_MASKS])
def test_bad_masks_are_refused_naming_the_file(tmp_path, name, write, message):
    path = tmp_path / "m.png"
    write(path)
    with pytest.raises(ModusegError, match=message) as info:
        read_mask(path, expected_hw=(H, W), n_classes=21)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_ignore_index_is_allowed_in_masks(tmp_path):
    ids = np.zeros((H, W), np.uint8)
    ids[0] = 255
    Image.fromarray(ids, "L").save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png", n_classes=2)[0, 0] == 255


def test_cause_is_chained(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(ModusegError) as info:
        read_image(tmp_path / "x.png")
    assert isinstance(info.value.__cause__, Exception)  # what Pillow said, for MODUSEG_DEBUG=1
