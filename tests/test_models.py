import numpy as np
import pytest
import torch

from facecloak.errors import BadOptionError
from facecloak.faces import AlignedFrame, align_largest_face, to_chw_float
from facecloak.imageio import read_image
from facecloak.models import REGISTRY, get_card, ort_embedder, torch_embedder

from .conftest import PEOPLE, person_photos


@pytest.fixture(scope="module")
def aligned_faces(lfw, detector):
    paths = [person_photos(lfw, p)[i] for p in PEOPLE for i in (0, 1)]
    crops = [align_largest_face(detector, read_image(p), AlignedFrame()).crop for p in paths]
    return to_chw_float(np.stack(crops))


@pytest.mark.parametrize("name", ["sface", "facenet"])
def test_torch_path_matches_onnx_runtime(name, aligned_faces):
    ref = ort_embedder(name)(aligned_faces)
    with torch.no_grad():
        out = torch_embedder(name)(torch.from_numpy(aligned_faces)).numpy()
    assert out.shape == (len(aligned_faces), get_card(name).embedding_dim)
    assert np.abs(out - ref).max() < 1e-4


def test_embedding_with_an_intermediate_activation(aligned_faces):
    embed = torch_embedder("sface")
    x = torch.from_numpy(aligned_faces[:2])
    with torch.no_grad():
        emb, act = embed.with_activation(x, "conv_8_relu")
        assert torch.allclose(emb, embed(x))  # the same forward pass as the embedding
    assert act.ndim == 4 and act.shape[0] == 2 and act.abs().sum() > 0
    with pytest.raises(KeyError, match="no value named"):
        embed.with_activation(x, "conv_8_dw_conv2d")  # folded into its batch norm's output


@pytest.mark.parametrize("name", ["sface", "facenet"])
def test_input_gradients_are_finite_and_nonzero(name, aligned_faces):
    x = torch.from_numpy(aligned_faces[:2]).requires_grad_(True)
    emb = torch_embedder(name)(x)
    (grad,) = torch.autograd.grad((emb[0] @ emb[1]), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["sface", "facenet"])
def test_same_person_matches_and_strangers_do_not(name, aligned_faces):
    emb = ort_embedder(name)(aligned_faces)
    thr = get_card(name).match_threshold
    same = [emb[i] @ emb[i + 1] for i in range(0, len(emb), 2)]
    strangers = [emb[i] @ emb[j] for i in range(0, len(emb), 2) for j in range(i + 2, len(emb), 2)]
    assert np.mean(np.array(same) >= thr) >= 0.8
    assert np.mean(np.array(strangers) < thr) >= 0.9


def test_registry_cards_and_unknown_names():
    assert {"sface", "facenet"} <= REGISTRY.keys()
    with pytest.raises(BadOptionError, match="unknown face-recognition model"):
        get_card("arcface_r999")
