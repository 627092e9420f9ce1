import cv2
import numpy as np
import pytest

from facecloak.errors import FaceTooSmallError, NoFaceError
from facecloak.faces import AlignedFrame, align_largest_face, detect_largest_face, estimate_similarity


def test_detects_five_landmarks_in_template_order(detector, selfie):
    face = detect_largest_face(detector, selfie)
    lms = face.landmarks
    assert lms.shape == (5, 2)
    assert lms[0, 0] < lms[1, 0] and lms[3, 0] < lms[4, 0]  # image-left eye/mouth corner first
    assert lms[2, 1] > lms[0, 1] and lms[3, 1] > lms[2, 1]  # eyes above nose above mouth


def test_alignment_puts_landmarks_on_the_template(detector, selfie):
    frame = AlignedFrame()
    aligned = align_largest_face(detector, selfie, frame)
    again = detect_largest_face(detector, cv2.resize(aligned.crop, (224, 224))).landmarks / 2.0
    assert np.abs(again - frame.points()).mean() < 3.0
    # the detected landmarks mapped into the frame land on the template too (budget stickers go there)
    assert aligned.frame_landmarks.shape == (5, 2) and np.abs(aligned.frame_landmarks - frame.points()).mean() < 3.0


def test_similarity_fit_recovers_a_known_transform():
    src = np.array([[10, 20], [50, 22], [30, 40], [15, 60], [45, 61]], dtype=float)
    angle, scale, shift = np.deg2rad(17), 1.7, np.array([5.0, -3.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ rot.T + shift
    m = estimate_similarity(src, dst)
    assert np.allclose(m[:, :2], rot, atol=1e-9) and np.allclose(m[:, 2], shift, atol=1e-9)


@pytest.mark.parametrize("bad", [np.ones((5, 2)), np.full((5, 2), np.nan)])
def test_degenerate_landmarks_are_rejected(bad):
    with pytest.raises(ValueError):
        estimate_similarity(bad, AlignedFrame().points())


def test_no_face(detector):
    with pytest.raises(NoFaceError, match="no face"):
        detect_largest_face(detector, np.full((300, 300, 3), 128, np.uint8))


def test_tiny_face(detector, selfie):
    canvas = np.full((400, 400, 3), 200, np.uint8)
    canvas[:60, :60] = cv2.resize(selfie, (60, 60), interpolation=cv2.INTER_AREA)
    with pytest.raises(FaceTooSmallError, match="too small"):
        detect_largest_face(detector, canvas)


def test_largest_of_several_faces_wins(detector, lfw, selfie):
    from facecloak.imageio import read_image

    other = read_image(next((lfw / "Laura_Bush").glob("*.jpg")))
    canvas = np.full((500, 900, 3), 255, np.uint8)
    canvas[:250, :250] = other
    canvas[:, 300:800] = cv2.resize(selfie, (500, 500))
    face = detect_largest_face(detector, canvas)
    assert face.box[0] > 300 and face.box[2] > 150
