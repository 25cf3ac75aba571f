"""Text: the Categorical output head over one-hot characters, the text data set, bits per
character in ``vrnn evaluate`` and samples written as text, through the real command line."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from conftest import REQUIRE_DATA
from toydata import vrnn

from vrnn.data import DataError, DataInfo, check_same_kind
from vrnn.data.core import split_indices
from vrnn.data.text import (
    CHUNK_CHARS,
    chunks,
    decode,
    encode,
    load_text_file,
    normalise_text,
    text_dataset,
)
from vrnn.data.text import text_path as builtin_text_path
from vrnn.models import presets
from vrnn.models.build import build_model
from vrnn.models.config import MODEL_NAMES, ModelConfig, models_for_kind, parse_model_name
from vrnn.models.distributions import CategoricalFrames, CategoricalHead, draw, make_head
from vrnn.models.presets import PRESETS, model_config, parameter_counts

TEXT_MODELS = ("rnn-categorical", "vrnn-categorical", "vrnn-i-categorical", "srnn-categorical",
               "dmm-categorical", "storn-categorical")


def one_hot(idx: torch.Tensor, v: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(idx, v).double()


# -- the Categorical head ---------------------------------------------------------------------

@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("T", [1, 7])
def test_log_prob_is_the_categorical_of_the_frame_symbol(B, T):
    g = torch.Generator().manual_seed(0)
    V = 5
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64) * 3
    idx = torch.randint(V, (B, T), generator=g)
    got = CategoricalFrames(logits=logits).log_prob(one_hot(idx, V))  # (B, T)
    ref = torch.distributions.Categorical(logits=logits).log_prob(idx)
    hand = logits.gather(-1, idx.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
    assert got.shape == (B, T)
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(got, hand)


def test_padding_frames_score_zero_and_other_frames_are_refused():
    logits = torch.randn(2, 4, dtype=torch.float64)
    dist = CategoricalFrames(logits=logits)
    assert torch.equal(dist.log_prob(torch.zeros(2, 4, dtype=torch.float64)), torch.zeros(2))
    with pytest.raises(ValueError, match="one-hot"):
        dist.log_prob(torch.tensor([[1.0, 1.0, 0, 0], [0, 0, 0, 1.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="one-hot"):
        dist.log_prob(torch.full((2, 4), 0.25, dtype=torch.float64))
    torch.testing.assert_close(dist.mean, torch.softmax(logits, -1))
    assert torch.equal(dist.mode, one_hot(logits.argmax(-1), 4))


def test_temperature_divides_the_logits():
    torch.manual_seed(0)
    head = make_head("categorical", 6, 5, components=1, min_scale=1e-4, scale_bias=0.6).double()
    assert isinstance(head, CategoricalHead)
    h = torch.randn(3, 6, dtype=torch.float64)
    logits = head.linear(h)
    torch.testing.assert_close(head(h).probs, torch.softmax(logits, -1))  # T = 1: the model
    torch.testing.assert_close(head(h, 2.5).probs, torch.softmax(logits / 2.5, -1))
    cold = head(h, 1e-4)  # T -> 0: the argmax, and every draw is it
    assert torch.allclose(cold.probs, one_hot(logits.argmax(-1), 5), atol=1e-6)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        assert torch.equal(draw(cold, g), one_hot(logits.argmax(-1), 5))


def test_draws_are_one_hot_with_the_model_frequencies_and_seeded():
    probs = torch.tensor([0.5, 0.25, 0.15, 0.1, 0.0], dtype=torch.float64)
    dist = CategoricalFrames(logits=probs.log().expand(20000, 5))
    x = draw(dist, torch.Generator().manual_seed(0))  # (N, V)
    assert x.shape == (20000, 5) and set(x.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(x.sum(-1), torch.ones(20000, dtype=x.dtype))
    freq = x.mean(0)
    sd = (probs * (1 - probs) / 20000).sqrt()
    assert bool(((freq - probs).abs() <= 5 * sd + 1e-12).all()), (freq, probs)
    assert freq[4] == 0  # a symbol of probability 0 is never drawn
    assert torch.equal(x, draw(dist, torch.Generator().manual_seed(0)))


# -- model names and presets ------------------------------------------------------------------

def test_categorical_names_belong_to_text_only():
    assert set(TEXT_MODELS) <= set(MODEL_NAMES)
    assert models_for_kind("text") == TEXT_MODELS
    for kind in ("audio", "strokes", "binary"):
        assert not set(models_for_kind(kind)) & set(TEXT_MODELS)
    named = parse_model_name("vrnn-i-categorical", "text")
    assert named == {"family": "vrnn", "prior": "standard", "output": "categorical",
                     "name": "VRNN-I-Categorical"}
    assert parse_model_name("srnn-categorical", "text")["family"] == "srnn"
    with pytest.raises(ValueError, match="use --model vrnn-categorical instead of vrnn-gauss"):
        parse_model_name("vrnn-gauss", "text")
    with pytest.raises(ValueError, match="use --model rnn-categorical instead of rnn-bernoulli"):
        parse_model_name("rnn-bernoulli", "text")
    with pytest.raises(ValueError, match="Categorical output, which needs one-hot text frames"):
        parse_model_name("vrnn-categorical", "audio")


@pytest.mark.parametrize("preset", PRESETS)
def test_text_presets_match_the_rnn_and_srnn_to_the_vrnn(preset):
    counts = parameter_counts("text", preset)
    assert set(counts) == set(TEXT_MODELS)
    ref = counts["vrnn-categorical"]
    assert abs(counts["rnn-categorical"] - ref) <= 0.01 * ref, counts
    if preset.startswith("paper") or preset == "small":
        assert abs(counts["srnn-categorical"] - ref) <= 0.01 * ref, counts
    # the SRNN's units: as close as whole units allow (at tiny one unit is over 1%)
    cfg = model_config("srnn-categorical", x_dim=67, data_kind="text", preset=preset)
    for step in (-1, 1):
        other = dataclasses.replace(cfg, h_dim=cfg.h_dim + step, a_dim=cfg.a_dim and
                                    cfg.a_dim + step)
        assert abs(presets._count(other) - ref) >= abs(counts["srnn-categorical"] - ref)


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_padded_sequence_scores_as_alone_and_samples_are_one_hot(name):
    torch.manual_seed(0)
    V = 7
    model = build_model(model_config(name, x_dim=V, data_kind="text", preset="tiny")).double()
    model.eval()
    g = torch.Generator().manual_seed(2)
    short, long = torch.randint(V, (1, 4), generator=g), torch.randint(V, (1, 9), generator=g)
    x = torch.zeros(2, 9, V, dtype=torch.float64)
    x[0, :4], x[1] = one_hot(short[0], V), one_hot(long[0], V)
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[0, :4], mask[1] = True, True
    Z = model.config.z_dim
    noise = torch.randn(2, 9, Z, generator=g, dtype=torch.float64)
    kw = {} if name.startswith("rnn") else {"noise": noise[:1, :4]}
    alone = model(x[:1, :4], **kw)
    batch = model(x, mask, **({} if name.startswith("rnn") else {"noise": noise}))
    torch.testing.assert_close(batch.log_px[0, :4], alone.log_px[0])
    torch.testing.assert_close(batch.kl[0, :4], alone.kl[0])
    s = model.sample(3, 6, prime=x[1, :3], generator=torch.Generator().manual_seed(0))
    assert s.shape == (3, 6, V) and torch.equal(s.sum(-1), torch.ones(3, 6, dtype=s.dtype))


# -- the data set -----------------------------------------------------------------------------

def _corpus(n_lines=300) -> str:
    rng = np.random.default_rng(0)
    words = ["the", "lady", "letter", "my", "dear", "brother", "of", "and", "Susan", "--"]
    lines = [f"{i:04d} " + " ".join(rng.choice(words, 8)) for i in range(n_lines)]
    return "\n".join(line + ("\n" if i % 7 == 6 else "") for i, line in enumerate(lines))


def test_vocabulary_round_trips_and_rides_in_the_data_info():
    ds = text_dataset(_corpus(), name="toy", source="test", licence="", seq_len=50)
    info = ds.info
    assert info.kind == "text" and info.x_dim == len(info.vocabulary) == len(set(info.vocabulary))
    assert list(info.vocabulary) == sorted(info.vocabulary)
    s = "my dear brother\n0123"
    frames = encode(s, info.vocabulary)
    assert frames.shape == (len(s), info.x_dim) and (frames.sum(1) == 1).all()
    assert decode(frames, info.vocabulary) == s
    again = DataInfo.from_dict(json.loads(json.dumps(info.to_dict())))
    assert again.vocabulary == info.vocabulary and again.normalised_dims == []
    assert np.array_equal(info.normalise(frames), frames)
    with pytest.raises(DataError, match="not in the vocabulary"):
        encode("my dear Z", info.vocabulary)
    with pytest.raises(DataError, match="distinct characters"):
        DataInfo(name="t", kind="text", x_dim=3, vocabulary="ab")
    other = DataInfo(name="o", kind="text", x_dim=info.x_dim, vocabulary=info.vocabulary[::-1])
    with pytest.raises(DataError, match="its characters are not the model's"):
        check_same_kind(other, info.to_dict(), "--data")
    check_same_kind(again, info.to_dict(), "--data")


def test_splits_are_disjoint_contiguous_lines_windows_fixed():
    text = normalise_text(_corpus())
    parts = chunks(text)
    assert "".join(parts) == text and all(len(p) >= CHUNK_CHARS for p in parts[:-1])
    assert all(p.endswith("\n") for p in parts[:-1])  # whole lines
    ds = text_dataset(text, name="toy", source="test", licence="", seq_len=50)
    voc = ds.info.vocabulary

    def line_ids(seqs):
        ids = set()
        for s in seqs:
            ids |= {int(w) for w in decode(s, voc).split() if w.isdigit() and len(w) == 4}
        return ids

    train, valid, test = (line_ids(getattr(ds, k)) for k in ("train", "valid", "test"))
    assert train and valid and test
    assert not (train & valid) and not (train & test) and not (valid & test)
    assert all(len(s) == 50 for s in ds.train + ds.valid)
    assert {decode(s, voc) for s in ds.test} <= set(parts)  # test: whole chunks
    assert len(ds.test) == max(1, round(0.05 * len(parts)))
    assert text_dataset(text, name="toy", source="test", licence="").train[0].shape[0] == 100


def test_a_test_character_the_training_text_lacks_is_an_error():
    parts = chunks(normalise_text(_corpus()))
    first_test = split_indices(len(parts))["test"][0]
    parts[first_test] = parts[first_test].replace("lady", "l\u00e6dy", 1)
    with pytest.raises(DataError, match="holds characters the training split lacks"):
        text_dataset("".join(parts), name="toy", source="test", licence="")


# -- the command line -------------------------------------------------------------------------

def _need_builtin_text():
    if builtin_text_path() is None:
        message = "text is not installed: pip install -e '.[data]' (music21)"
        if REQUIRE_DATA:
            pytest.fail(f"VRNN_REQUIRE_DATA=1 but {message}")
        pytest.skip(message)


def test_train_evaluate_sample_text_from_the_command_line(tmp_path):
    _need_builtin_text()
    out = tmp_path / "run"
    vrnn("train", "--data", "text", "--model", "vrnn-categorical", "--preset", "tiny",
         "--max-steps", "3", "--batch-size", "4", "--val-interval", "3",
         "--val-max-sequences", "4", "--out", out, "--device", "cpu", "--no-progress")
    ckpt = out / "best.pt"
    info = torch.load(ckpt, weights_only=True)["data_info"]
    assert info["kind"] == "text" and len(info["vocabulary"]) == info["x_dim"]

    args = ("evaluate", ckpt, "--samples", "2", "--max-sequences", "2")
    res = json.loads(vrnn(*args, "--json").stdout)
    per_step = sum(res["per_sequence"]["log_likelihood"]) / res["n_steps"]
    assert res["bits_per_character"] == pytest.approx(-per_step / math.log(2), rel=1e-9)
    assert res["bits_per_character"] == pytest.approx(
        -res["log_likelihood_per_step"] / math.log(2), rel=1e-12)
    assert 0 < res["bits_per_character"] < 8  # untrained: about log2(V) = 6.07
    printed = vrnn(*args).stdout
    assert f"bits per character: <= {res['bits_per_character']:.4f}" in printed

    prime = tmp_path / "prime.txt"
    prime.write_text("My dear Brother,")
    samples = tmp_path / "samples"
    vrnn("sample", ckpt, "--num", "2", "--steps", "30", "--prime", prime, "--out", samples,
         "--temperature", "0.7")
    arr = np.load(samples / "samples.npy")
    assert arr.shape == (2, 30, info["x_dim"]) and (arr.sum(-1) == 1).all()
    for i in range(2):
        written = (samples / f"sample_{i}.txt").read_text(encoding="utf-8")
        assert len(written) == len("My dear Brother,") + 30
        assert written.startswith("My dear Brother,")
        assert written[16:] == decode(arr[i], info["vocabulary"])
    assert "== sample 1 ==" in (samples / "samples.txt").read_text(encoding="utf-8")
    assert (samples / "samples_text.png").read_bytes()[:4] == b"\x89PNG"

    bad = tmp_path / "bad.txt"
    bad.write_text("caf\u00e9")
    proc = vrnn("sample", ckpt, "--prime", bad, "--out", samples, check=False)
    assert proc.returncode != 0 and "not in the vocabulary" in proc.stderr


def test_an_rnn_on_text_reports_exact_bits_and_a_gaussian_is_refused(tmp_path):
    _need_builtin_text()
    out = tmp_path / "rnn"
    vrnn("train", "--data", "text", "--model", "rnn-categorical", "--preset", "tiny",
         "--max-steps", "1", "--batch-size", "4", "--seq-len", "40", "--val-max-sequences", "4",
         "--out", out, "--device", "cpu", "--no-progress")
    args = ("evaluate", out / "last.pt", "--max-sequences", "2")
    res = json.loads(vrnn(*args, "--json").stdout)
    assert res["bits_per_character"] == pytest.approx(
        -res["log_likelihood_per_step"] / math.log(2), rel=1e-12)
    assert f"bits per character: {res['bits_per_character']:.4f} (exact)" in vrnn(*args).stdout
    proc = vrnn("train", "--data", "text", "--model", "vrnn-gauss", "--preset", "tiny",
                "--max-steps", "1", "--out", tmp_path / "bad", "--no-progress", check=False)
    assert proc.returncode != 0 and "vrnn-categorical" in proc.stderr


def test_load_text_file_reads_any_utf8_text(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text(_corpus(120), encoding="utf-8")
    ds = load_text_file(path, seq_len=40)
    assert ds.info.kind == "text" and ds.info.name == str(path)
    assert all(len(s) == 40 for s in ds.train)


def test_model_config_on_text_builds():
    cfg = model_config("vrnn-categorical", x_dim=67, data_kind="text", preset="small")
    assert isinstance(cfg, ModelConfig) and cfg.output == "categorical" and cfg.h_dim == 256


def test_prime_files_for_a_text_model(tmp_path):
    from vrnn.commands.prime import read_prime

    info = DataInfo(name="t", kind="text", x_dim=4, vocabulary=" abd")
    txt = tmp_path / "p.txt"
    txt.write_text("abba\r\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        read_prime(txt, info)  # a line end is not one of its characters
    txt.write_text("abd a", encoding="utf-8")
    frames = read_prime(txt, info)
    assert decode(frames, info.vocabulary) == "abd a"
    npy = tmp_path / "p.npy"
    np.save(npy, np.full((3, 4), 0.25, dtype=np.float32))
    with pytest.raises(ValueError, match="one-hot frames"):
        read_prime(npy, info)
    np.save(npy, frames)
    assert np.array_equal(read_prime(npy, info), frames)
    audio = DataInfo(name="a", kind="audio", x_dim=4, sample_rate=8000, frame_size=4)
    with pytest.raises(ValueError, match="only prime text models"):
        read_prime(txt, audio)


def test_a_byte_order_mark_is_not_a_character_of_a_prime_or_a_text(tmp_path):
    from vrnn.commands.prime import read_prime

    info = DataInfo(name="t", kind="text", x_dim=4, vocabulary=" abd")
    txt = tmp_path / "bom.txt"
    txt.write_bytes(b"\xef\xbb\xbfabd a")  # what Notepad writes for "UTF-8"
    assert decode(read_prime(txt, info), info.vocabulary) == "abd a"
    book = tmp_path / "book.txt"
    book.write_bytes("\ufeff".encode() + _corpus(120).encode())
    assert "\ufeff" not in load_text_file(book, seq_len=40).info.vocabulary


def test_a_text_prime_longer_than_the_long_sequence_limit_is_cut_with_a_warning(tmp_path):
    from vrnn.commands.prime import read_prime
    from vrnn.data.core import LONG_SEQUENCE_STEPS as N

    info = DataInfo(name="t", kind="text", x_dim=4, vocabulary=" abd")
    txt = tmp_path / "long.txt"
    txt.write_text("ab" * N + "dd a", encoding="utf-8")
    with pytest.warns(UserWarning, match=r"long\.txt is 20,004 characters long.*last 10,000"):
        frames = read_prime(txt, info)
    assert frames.shape == (N, 4)
    assert decode(frames, info.vocabulary) == ("ab" * N + "dd a")[-N:]
