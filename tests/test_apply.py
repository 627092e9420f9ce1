import cv2
import numpy as np

from facecloak.apply import apply_mask, apply_mask_with_landmarks, measure_quality
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
    q = measure_quality(big, out)
    assert 0.5 < q.ssim < 1.0 and 30 < q.psnr < 60


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
