"""The models: exact parity with the released Stable Audio Open 1.0 state dict, the building
blocks pinned against hand-computed values, chunked decoding, checkpoints, and the sampler."""
import math

import pytest
import torch

from sao.models import CheckpointMismatch, create_model, load_checkpoint, parameter_counts
from sao.models.autoencoder import SnakeBeta
from sao.models.dit import GLU, FourierFeatures, apply_rotary_half, rotate_half

from .conftest import REPO

# the released checkpoint's key list (copied from shared/reference so the test never depends on it)
KEYS = REPO / "tests" / "data" / "stable_audio_open_1_0_state_dict_keys.tsv"


@pytest.fixture(scope="module")
def official():
    return create_model("stable_audio_open_1_0", device="meta")


def test_official_config_matches_the_released_state_dict(official):
    ref = {}
    for line in KEYS.read_text().splitlines():
        k, shape, _ = line.split("\t")
        ref[k] = tuple(int(x) for x in shape.strip("()").split(",") if x.strip())
    own = {k: tuple(v.shape) for k, v in official.state_dict().items()}
    assert own == ref


def test_parameter_counts(official):
    assert parameter_counts(official) == {"autoencoder": 156_112_514, "dit": 1_056_828_544,
                                          "timing_conditioners": 396_544}


def test_snake_beta_by_hand():
    s = SnakeBeta(2)
    with torch.no_grad():
        s.alpha.copy_(torch.tensor([0.0, math.log(2.0)]))
        s.beta.copy_(torch.tensor([0.0, math.log(0.5)]))
    x = torch.tensor([[[0.5], [1.0]]])
    expected = torch.tensor([[[0.5 + math.sin(0.5) ** 2], [1.0 + 2.0 * math.sin(2.0) ** 2]]])
    assert torch.allclose(s(x), expected, atol=1e-6)


def test_rotary_on_half_of_the_head_dims():
    t = torch.arange(8.0).reshape(1, 1, 1, 8)           # one head of 8 dims, rotary on the first 4
    freqs = torch.tensor([[0.3, 0.7, 0.3, 0.7]])
    out = apply_rotary_half(t, freqs)
    x = t[..., :4]
    manual = x * freqs.cos() + torch.tensor([[-2.0, -3.0, 0.0, 1.0]]) * freqs.sin()
    assert torch.allclose(out[..., :4], manual) and torch.equal(out[..., 4:], t[..., 4:])
    assert torch.equal(rotate_half(torch.tensor([1.0, 2.0, 3.0, 4.0])), torch.tensor([-3.0, -4.0, 1.0, 2.0]))


def test_swiglu_and_fourier_by_hand():
    g = GLU(1, 1)
    with torch.no_grad():
        g.proj.weight.copy_(torch.tensor([[2.0], [1.0]]))
        g.proj.bias.zero_()
    x = torch.tensor([[1.5]])
    assert torch.allclose(g(x), torch.tensor([[3.0 * (1.5 / (1 + math.exp(-1.5)))]]), atol=1e-6)
    f = FourierFeatures(1, 4)
    with torch.no_grad():
        f.weight.copy_(torch.tensor([[0.5], [1.0]]))
    t = torch.tensor([[0.25]])
    a, b = 2 * math.pi * 0.25 * 0.5, 2 * math.pi * 0.25
    assert torch.allclose(f(t), torch.tensor([[math.cos(a), math.cos(b), math.sin(a), math.sin(b)]]), atol=1e-6)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from sao.models.t5_local import build_tiny_t5
    d = tmp_path_factory.mktemp("t5")
    build_tiny_t5(d, ["a dog barking in the rain", "soft piano melody", "wind and birds at dawn"] * 50)
    torch.manual_seed(0)
    return create_model("tiny", t5_path=str(d)), d


def test_chunked_decode_equals_full_decode(tiny):
    model, _ = tiny
    ae = model.pretransform.model
    torch.manual_seed(1)
    for p in ae.parameters():       # non-trivial weights (the released init is near-identity)
        p.data.normal_(0, 0.05)
    z = torch.randn(1, 64, 300)
    with torch.no_grad():
        full = ae.decode(z)
        chunked = ae.decode_chunked(z, chunk=128, overlap=32)
    assert full.shape == chunked.shape == (1, 2, 300 * 2048)
    assert torch.allclose(full, chunked, atol=1e-5 * float(full.abs().max()) + 1e-6)


def test_tiny_model_runs_the_full_sampler(tiny):
    from sao.models.sampling import generate
    model, _ = tiny
    for sampler in ("dpmpp-3m-sde", "dpmpp-2m"):
        a = generate(model, ["a dog barking"], seconds_total=1.0, steps=4, cfg_scale=7.0, sampler=sampler, seed=3,
                     device="cpu")
        b = generate(model, ["a dog barking"], seconds_total=1.0, steps=4, cfg_scale=7.0, sampler=sampler, seed=3,
                     device="cpu")
        assert a.shape == (1, 2, 44100) and torch.isfinite(a).all() and torch.equal(a, b)


def test_checkpoint_round_trip_and_clear_errors(tiny, tmp_path):
    from safetensors.torch import save_file
    model, t5 = tiny
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp_path / "model.safetensors"))
    torch.save({"state_dict": state}, tmp_path / "model.ckpt")
    other = create_model("tiny", t5_path=str(t5))
    load_checkpoint(other, tmp_path / "model.safetensors")
    load_checkpoint(other, tmp_path / "model.ckpt")
    assert all(torch.equal(other.state_dict()[k], v) for k, v in state.items())
    (tmp_path / "bad.ckpt").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointMismatch, match="cannot be read safely"):
        load_checkpoint(other, tmp_path / "bad.ckpt")
    partial = dict(state)
    partial.pop("model.model.transformer.project_in.weight")
    partial["model.model.extra"] = torch.zeros(1)
    torch.save({"state_dict": partial}, tmp_path / "partial.ckpt")
    with pytest.raises(CheckpointMismatch, match=r"1 missing .*project_in.*1 unexpected .*model\.model\.extra"):
        load_checkpoint(other, tmp_path / "partial.ckpt")


def test_sao_generate_cli(tiny, tmp_path):
    import soundfile as sf

    from sao import cli
    _, t5 = tiny
    out = tmp_path / "x.wav"
    assert cli.main(["generate", "rain on a tin roof", "--model-config", "tiny", "--t5-path", str(t5), "--seconds", "1",
                     "--steps", "3", "--out", str(out)]) == 0
    info = sf.info(str(out))
    assert info.samplerate == 44100 and info.channels == 2 and abs(info.duration - 1.0) < 0.01
    assert cli.main(["generate", "x", "--out", str(tmp_path / "y.wav")]) == 1   # official config needs weights
