import numpy as np
import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from vrnn.commands.analysis import figure_kl, kl_profile
from vrnn.data import DataInfo
from vrnn.models.build import build_model
from vrnn.models.presets import model_config

X_DIM = {"audio": 6, "strokes": 3, "binary": 5}
OUTPUT = {"audio": "gauss", "strokes": "gauss", "binary": "bernoulli"}


def tiny(kind="audio", family="vrnn", **kw):
    torch.manual_seed(0)
    cfg = model_config(f"{family}-{OUTPUT[kind]}", x_dim=X_DIM[kind], data_kind=kind,
                       preset="tiny", **kw)
    return build_model(cfg).double()


def sequence(kind, T, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(T, X_DIM[kind]))
    if kind == "strokes":
        x[:, 2] = rng.random(T) < 0.2
    if kind == "binary":
        x = (rng.random((T, X_DIM[kind])) < 0.3).astype(np.float64)
    return x


@pytest.mark.parametrize("T", [1, 7])
@pytest.mark.parametrize("prior", ["learned", "standard"])
def test_profile_shapes_and_kl_match_the_loss(T, prior):
    model = tiny(prior=prior)
    Z = model.config.z_dim
    x = torch.from_numpy(sequence("audio", T))
    prof = kl_profile(model, x, seed=3)
    assert {k: v.shape for k, v in prof.items()} == {
        "kl": (T,), "log_px": (T,), "enc_loc": (T, Z), "enc_scale": (T, Z),
        "enc_loc_change": (T,), "enc_scale_change": (T,)}
    assert all(isinstance(v, np.ndarray) for v in prof.values())
    assert (prof["kl"] >= 0).all() and (prof["enc_scale"] > 0).all()
    # the same seed gives the same noise as the training loss's forward pass
    loss, terms = model.loss(x[None], generator=torch.Generator().manual_seed(3))
    np.testing.assert_allclose(prof["kl"].sum(), terms.kl.sum().item(), rtol=1e-10)
    np.testing.assert_allclose(prof["log_px"], terms.log_px[0].detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(prof["log_px"].sum() - prof["kl"].sum(), -loss.item(), rtol=1e-10)


def test_profile_kl_is_the_closed_form_of_the_returned_encoder():
    model = tiny()
    x = sequence("audio", 9)
    prof = kl_profile(model, x, seed=1)
    terms = model(torch.from_numpy(x)[None], generator=torch.Generator().manual_seed(1),
                  return_latents=True)
    lat = terms.latents
    np.testing.assert_allclose(prof["enc_loc"], lat["enc_loc"][0].detach().numpy())
    q = Independent(Normal(torch.from_numpy(prof["enc_loc"]), torch.from_numpy(prof["enc_scale"])),
                    1)
    p = Independent(Normal(lat["prior_loc"][0], lat["prior_scale"][0]), 1)
    np.testing.assert_allclose(prof["kl"], kl_divergence(q, p).detach().numpy(), rtol=1e-10)


def test_profile_changes_follow_their_definitions():
    model = tiny()
    prof = kl_profile(model, sequence("audio", 8), seed=0)
    mu, sigma = prof["enc_loc"], prof["enc_scale"]
    assert prof["enc_loc_change"][0] == 0 and prof["enc_scale_change"][0] == 0
    for t in range(1, 8):
        assert prof["enc_loc_change"][t] == pytest.approx(((mu[t] - mu[t - 1]) ** 2).sum())
        assert prof["enc_scale_change"][t] == pytest.approx(
            np.mean(np.abs(np.log(sigma[t]) - np.log(sigma[t - 1]))))
    assert prof["enc_loc_change"][1:].max() > 0  # the encoder does move


def test_profile_seed_and_input_checks():
    model = tiny()
    x = sequence("audio", 6)
    a, b = kl_profile(model, x, seed=0), kl_profile(model, x, seed=0)
    c = kl_profile(model, x, seed=1)
    np.testing.assert_array_equal(a["kl"], b["kl"])
    assert not np.allclose(a["kl"][1:], c["kl"][1:])  # z_1 feeds h_1, so later KLs differ
    np.testing.assert_allclose(a["kl"][0], c["kl"][0])  # step 1 depends on x_1 and h_0 only
    with pytest.raises(ValueError, match=r"\(1, 6, 6\)"):
        kl_profile(model, x[None])
    with pytest.raises(ValueError, match=r"\(6, 2\)"):
        kl_profile(model, x[:, :2])
    with pytest.raises(ValueError, match="no latent variables"):
        kl_profile(tiny(family="rnn"), x)


@pytest.mark.parametrize("kind", ["audio", "strokes", "binary"])
def test_figure_kl_writes_a_png(tmp_path, kind):
    model = tiny(kind)
    info = DataInfo(name=f"tiny-{kind}", kind=kind, x_dim=X_DIM[kind],
                    sample_rate=8000 if kind == "audio" else None,
                    frame_size=X_DIM[kind] if kind == "audio" else None,
                    mean=[0.1] if kind == "audio" else [], std=[0.5] if kind == "audio" else [])
    x = sequence(kind, 12)
    out = figure_kl(model, x if kind != "strokes" else torch.from_numpy(x), info,
                    tmp_path / "sub" / "kl.png", title="t")
    assert out == tmp_path / "sub" / "kl.png"
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
