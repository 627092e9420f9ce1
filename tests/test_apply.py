import cv2
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from facecloak.apply import apply_mask, apply_mask_with_landmarks, measure_quality
from facecloak.apply.quality import face_region, ssim
from facecloak.faces import AlignedFrame, detect_largest_face
from facecloak.mask import Mask, decode_mask, encode_mask


def _checker_mask(level=8):
    yy, xx = np.mgrid[:112, :112]
    sign = np.where((yy // 8 + xx // 8) % 2 == 0, 1.0, -1.0).astype(np.float32)
    return Mask(delta=np.repeat(sign[..., None], 3, 2) * level / 255, frame=AlignedFrame(), models=("sface",))


def test_apply_keeps_full_resolution_and_touches_only_the_face(selfie, detector):
    big = cv2.resize(selfie, (1000, 1000), interpolation=cv2.INTER_CUBIC)  # a 1 Mpx "phone photo"
    mask = decode_mask(encode_mask(_checker_mask()))
    out = apply_mask(big, mask, detector)
    assert out.shape == big.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - big.astype(int))
    assert diff.max() <= 8  # never more than the mask's budget
    changed = np.argwhere(diff.max(2) > 0)
    face = detect_largest_face(detector, big)
    x, y, w, h = face.box
    assert changed[:, 1].min() > x - w and changed[:, 1].max() < x + 2 * w
    assert diff[:50, :50].max() == 0 and diff[-50:, -50:].max() == 0  # background corners untouched
    q = measure_quality(big, out, face.box)
    assert 0.5 < q.ssim < 1.0 and 30 < q.psnr < 60
    assert q.face_ssim < q.ssim and 0 < q.flip_mean < q.flip_p99  # the whole photo dilutes the face's change


def test_mask_lands_where_the_template_says(selfie, detector):
    mask = Mask(delta=np.zeros((112, 112, 3), np.float32), frame=AlignedFrame(), models=("sface",))
    mask.delta[48:56, 34:42] = 20 / 255  # a bright patch on the image-left eye of the template
    face = detect_largest_face(detector, selfie)
    out = apply_mask_with_landmarks(selfie, mask, face.landmarks)
    ys, xs = np.nonzero(np.abs(out.astype(int) - selfie.astype(int)).max(2) > 10)
    eye = face.landmarks[0]
    assert abs(xs.mean() - eye[0]) < 6 and abs(ys.mean() - eye[1]) < 6


def test_clipping_and_faces_outside_the_photo(selfie, detector):
    white = np.full_like(selfie, 255)
    lms = detect_largest_face(detector, selfie).landmarks
    out = apply_mask_with_landmarks(white, _checker_mask(), lms)
    assert out.max() == 255 and out.min() >= 247  # clipped, never wrapped around
    far_away = lms + 10_000
    assert np.array_equal(apply_mask_with_landmarks(selfie, _checker_mask(), far_away), selfie)


def test_face_quality_measures_the_face_box_only(selfie, detector):
    box = detect_largest_face(detector, selfie).box
    x0, y0, x1, y1 = face_region(box, selfie.shape)
    x, y, w, h = box
    assert (x0, y0) == (int(x - 0.1 * w), int(y - 0.1 * h)) and (x1 - x0) == pytest.approx(1.2 * w, abs=2)

    same = measure_quality(selfie, selfie.copy(), box)
    assert (same.flip_mean, same.flip_p99, same.flip_visible, same.face_ssim, same.ssim) == (0, 0, 0, 1, 1)

    rng = np.random.default_rng(0)
    noise = rng.choice([-40, 40], size=selfie.shape)  # a blatant +-40 grey-level change
    on_face = selfie.astype(int)
    on_face[y0:y1, x0:x1] += noise[y0:y1, x0:x1]
    seen = measure_quality(selfie, np.clip(on_face, 0, 255).astype(np.uint8), box)
    assert seen.flip_mean > 0.15 and seen.flip_visible > 0.3 and seen.face_ssim < 0.7
    assert seen.face_ssim < seen.ssim  # the untouched background dilutes the whole-photo figure

    outside = selfie.astype(int) + noise
    outside[y0:y1, x0:x1] = selfie[y0:y1, x0:x1]  # the same change everywhere BUT the face box
    background = measure_quality(selfie, np.clip(outside, 0, 255).astype(np.uint8), box)
    assert background.ssim < 0.7 and (background.flip_mean, background.flip_visible, background.face_ssim) == (0, 0, 1)

    assert measure_quality(selfie, selfie, None).flip_mean is None  # no box: whole-photo figures only
    assert "FLIP mean" in seen.summary() and "FLIP" not in measure_quality(selfie, selfie).summary()


@pytest.mark.parametrize("where", ["nowhere", "pixel", "centre", "edges", "everywhere"])
def test_ssim_over_the_changed_region_is_skimages_whole_photo_figure(where):
    rng = np.random.default_rng(3)
    clean = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    cloaked = clean.copy()
    if where == "pixel":
        cloaked[30, 40, 1] ^= 9
    elif where == "centre":
        cloaked[20:40, 25:50] = np.clip(cloaked[20:40, 25:50].astype(int) + rng.integers(-20, 21, (20, 25, 3)), 0, 255)
    elif where == "edges":  # changes inside the border strip skimage leaves out of its average still count nearby
        cloaked[:2] = 0
        cloaked[-1, -3:] = 255
    elif where == "everywhere":
        cloaked = rng.integers(0, 256, clean.shape, dtype=np.uint8)
    reference = structural_similarity(clean, cloaked, channel_axis=2, data_range=255, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False)
    assert ssim(clean, cloaked) == pytest.approx(reference, abs=1e-12)


@pytest.mark.parametrize("where", ["centre", "edges", "everywhere"])
def test_strip_by_strip_quality_is_the_whole_photo_figure(where, monkeypatch):
    """SSIM and PSNR of a large photo are computed a strip of rows at a time: the figures must not change."""
    from facecloak.apply import quality

    rng = np.random.default_rng(5)
    clean = rng.integers(0, 256, (97, 61, 3), dtype=np.uint8)
    cloaked = clean.copy()
    if where == "centre":
        cloaked[30:70, 10:50] = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    elif where == "edges":
        cloaked[:2], cloaked[-1, -3:] = 0, 255
    else:
        cloaked = rng.integers(0, 256, clean.shape, dtype=np.uint8)
    whole_ssim, whole_psnr = quality.ssim(clean, cloaked), quality.psnr(clean, cloaked)
    monkeypatch.setattr(quality, "_STRIP_VALUES", 400)  # strips of a couple of rows
    assert quality.ssim(clean, cloaked) == pytest.approx(whole_ssim, abs=1e-12)
    assert quality.psnr(clean, cloaked) == pytest.approx(whole_psnr, abs=1e-12)
    reference = 10 * np.log10(255**2 / np.mean((clean.astype(np.float64) - cloaked) ** 2))
    assert whole_psnr == pytest.approx(reference, rel=1e-12)


def test_cloaking_and_measuring_a_large_photo_needs_bounded_memory():
    """A 12 Mpx photo whose face fills a third of it: the apply + quality path keeps a few photo-sized
    arrays, not float64 copies of the whole photo (which took GBs at 36 Mpx)."""
    import tracemalloc

    from facecloak.apply import add_and_clip, measure_quality

    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    roi = (1000, 500, 3000, 2500)  # a 2000 x 2000 face
    delta = rng.uniform(-8 / 255, 8 / 255, (2000, 2000, 3)).astype(np.float32)
    tracemalloc.start()
    try:
        cloaked = add_and_clip(clean, delta, roi)
        quality = measure_quality(clean, cloaked, (1100, 600, 1800, 1800))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 0.5 < quality.ssim < 1 and quality.flip_mean > 0
    assert peak < 2.5 * clean.nbytes, f"peak {peak / 2**20:.0f} MiB for a {clean.nbytes / 2**20:.0f} MiB photo"
