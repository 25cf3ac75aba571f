"""Audio: a folder of recordings, TIMIT in its LDC layout, and the built-in speech sets.

Sources and licences
    ``speech``: Debian ``asterisk-core-sounds-en-wav`` (Asterisk's English prompts read by Allison
    Smith, CC-BY-SA-3.0), ``/usr/share/asterisk/sounds/en_US_f_Allison``: studio recordings of one
    female speaker, 16-bit mono 8 kHz; the analogue of the paper's Blizzard set.
    ``speech-multi``: the same prompts in five voices from
    ``asterisk-core-sounds-{en,es,fr,it,ru}-wav``: en_US_f_Allison and es_MX_f_Allison (Allison
    Smith, CC-BY-SA-3.0), fr_CA_f_June (June Wallack, CC-BY-SA-3.0), it_IT_m_Carlo (Carlo Flora,
    CC-BY-3.0), ru_RU_f_IvrvoiceRU (Maxim Topal, CC-BY-3.0). Five voices, four people (Allison
    reads both English and Spanish).
    Both built-in sets leave out the ``silence/`` folders (1-10 s of near-silent padding, not
    speech, whose near-constant frames would give the test set meaningless densities) and skip
    files shorter than one frame (``ru_RU_f_IvrvoiceRU/is.wav`` is empty); those are listed in
    ``info.skipped``.
    A folder of the user's recordings (any sample rate) or TIMIT (LDC's NIST SPHERE ``.WAV``
    files under ``TRAIN/`` and ``TEST/``, ``DR*/<speaker>/``), read with soundfile: every format
    the installed libsndfile reads (:data:`AUDIO_SUFFIXES`: WAV, FLAC, OGG Vorbis and Opus, MP3
    with libsndfile >= 1.1, AIFF, AU, CAF, W64, RF64, NIST SPHERE and the rarer ones), by file
    suffix. Headerless RAW and MATLAB ``.mat`` files are not audio here. Folders are walked with
    :func:`vrnn.data.walk.walk_files`: links followed, each real file once.

Preprocessing (the paper's)
    Multi-channel files are averaged to mono; ``sample_rate=`` resamples every file with
    ``scipy.signal.resample_poly`` (without it, files of mixed rates are an error). A file whose
    header gives a rate outside 1,000 to 1,000,000 Hz (:func:`plausible_rate`) is a bad file, and
    ``sample_rate=`` must lie in that range too. Each utterance is cut into frames of
    ``frame_size`` (200) samples without overlap; the trailing partial frame is dropped. One
    scalar mean and std over every training sample normalise all splits (kept in ``DataInfo`` and
    undone by ``denormalise`` before writing audio). Training and validation
    sequences are consecutive non-overlapping windows of ``seq_len`` frames (default 0.5 s: 20
    frames at 8 kHz, 40 at 16 kHz; an utterance's last partial window is dropped); the test set is
    whole utterances (variable length, padded with a mask by ``pad_batch``). ``train_streams`` holds
    the whole normalised training utterances for truncated BPTT.

Splits
    Folder: its ``train/``, ``valid/`` (or ``validation/``, ``dev/``) and ``test/`` subfolders when
    it has them, else 0.9 / 0.05 / 0.05 of the files with seed 0.
    TIMIT: the standard TRAIN / TEST split (every utterance of the complete test set, SA sentences
    included); validation is 5% of the TRAIN speakers (at least one; seed 0), all their utterances.
    ``speech``: 0.9 / 0.05 / 0.05 of the utterances, seed 0.
    ``speech-multi``: by speaker and by utterance. fr_CA_f_June (a person heard nowhere else) is
    held out whole for the test set; every other voice's utterances are split 0.9 / 0.05 / 0.05
    (seed 0, per voice), and their 5% test shares join the test set too. So the test set mixes
    unseen utterances of seen speakers with an unseen speaker.
"""

from __future__ import annotations

import re
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf

from vrnn.data.core import (
    DataError,
    DataInfo,
    SequenceDataset,
    check_finite,
    moments,
    report_bad,
    split_indices,
    subset,
)
from vrnn.data.walk import walk_files

_FORMAT_SUFFIXES = {
    "WAV": (".wav", ".wave"), "WAVEX": (".wav",), "FLAC": (".flac",), "OGG": (".ogg", ".oga"),
    "MP3": (".mp3",), "AIFF": (".aiff", ".aif", ".aifc"), "AU": (".au", ".snd"),
    "CAF": (".caf",), "W64": (".w64",), "RF64": (".rf64",), "NIST": (".sph", ".nist"),
    "VOC": (".voc",), "IRCAM": (".ircam",), "SVX": (".8svx", ".16sv", ".svx"), "PAF": (".paf",),
    "PVF": (".pvf",), "XI": (".xi",), "HTK": (".htk",), "SDS": (".sds",), "AVR": (".avr",),
    "SD2": (".sd2",), "WVE": (".wve",), "MPC2K": (".mpc2k",),
}
"""File suffixes of each libsndfile major format (RAW and MAT4/MAT5 left out: headerless, and
MATLAB data)."""


def _audio_suffixes() -> tuple[str, ...]:
    have = sf.available_formats()
    out = [x for fmt, xs in _FORMAT_SUFFIXES.items() if fmt in have for x in xs]
    if "OPUS" in sf.available_subtypes("OGG"):
        out.append(".opus")
    return tuple(dict.fromkeys(out))


AUDIO_SUFFIXES = _audio_suffixes()
"""The suffixes (lower case) of the audio files that the installed soundfile reads."""
SOUNDS_ROOT = Path("/usr/share/asterisk/sounds")
"""Where Debian's asterisk-core-sounds packages install their voices."""


class Voice:
    """One asterisk-core-sounds voice: language, folder, Debian package, speaker, licence."""

    def __init__(self, lang: str, folder: str, speaker: str, licence: str):
        self.lang, self.folder, self.speaker, self.licence = lang, folder, speaker, licence
        self.package = f"asterisk-core-sounds-{lang}-wav"

    def path(self) -> Path | None:
        """The installed folder of this voice, or None."""
        p = SOUNDS_ROOT / self.folder
        return p if p.is_dir() else None


VOICES = (
    Voice("en", "en_US_f_Allison", "Allison Smith", "CC-BY-SA-3.0"),
    Voice("es", "es_MX_f_Allison", "Allison Smith", "CC-BY-SA-3.0"),
    Voice("fr", "fr_CA_f_June", "June Wallack", "CC-BY-SA-3.0"),
    Voice("it", "it_IT_m_Carlo", "Carlo Flora", "CC-BY-3.0"),
    Voice("ru", "ru_RU_f_IvrvoiceRU", "Maxim Topal", "CC-BY-3.0"),
)
HELD_OUT_VOICE = "fr_CA_f_June"
"""speech-multi: the voice whose every utterance goes to the test set."""
EXCLUDED_DIRS = ("silence",)
"""Built-in speech sets: folders that hold no speech."""


def default_seq_len(sample_rate: int, frame_size: int) -> int:
    """Frames in 0.5 s (the paper's sequence length): 20 at 8 kHz, 40 at 16 kHz (F = 200)."""
    return max(1, int(round(0.5 * sample_rate / frame_size)))


def is_audio_name(name: str) -> bool:
    """Whether a file name has one of :data:`AUDIO_SUFFIXES` (any case)."""
    return Path(name).suffix.lower() in AUDIO_SUFFIXES


def find_audio_files(root: Path, exclude_dirs: tuple[str, ...] = (),
                     bad: list[str] | None = None) -> list[Path]:
    """Every audio file (:data:`AUDIO_SUFFIXES`, any case) under ``root``, recursively, each real
    file once, sorted. Audio files that cannot be used by name (not UTF-8) are not returned; their
    'name: problem' lines go to ``bad`` when it is given."""
    walk = walk_files(root, is_audio_name, exclude_dirs)
    if bad is not None:
        bad += walk.bad
    return walk.files


def suffix_list() -> str:
    """The audio suffixes for a message: '.wav, .flac, .ogg, ...'."""
    return ", ".join(AUDIO_SUFFIXES[:6]) + (", ..." if len(AUDIO_SUFFIXES) > 6 else "")


def _nist_sample_count(path: Path) -> int | None:
    """``sample_count`` from a NIST SPHERE header, or None for other files."""
    with open(path, "rb") as f:
        head = f.read(1024)
    if not head.startswith(b"NIST_1A"):
        return None
    m = re.search(rb"sample_count\s+-i\s+(\d+)", head)
    return int(m.group(1)) if m else None


MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 1_000_000
"""Sample rates (Hz) outside ``[MIN_SAMPLE_RATE, MAX_SAMPLE_RATE]`` are refused: a header that
says 1 Hz is broken or not sound, and resampling such a file to a model's rate would multiply its
size by thousands."""
RATE_RANGE = f"audio is read at {MIN_SAMPLE_RATE:,} to {MAX_SAMPLE_RATE:,} Hz"


def plausible_rate(rate: int) -> bool:
    """Whether ``rate`` (Hz) is a sample rate of sound (:data:`MIN_SAMPLE_RATE` to
    :data:`MAX_SAMPLE_RATE`)."""
    return MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE


def implausible_rate(path: Path, rate: int) -> str:
    """The 'path: problem' line of a file whose header gives an implausible sample rate."""
    return (f"{path}: its header gives a sample rate of {rate:,} Hz, which is not sound "
            f"({RATE_RANGE})")


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """A mono waveform ``x`` (N,) at ``rate`` Hz resampled to ``target`` Hz
    (``scipy.signal.resample_poly``), float32."""
    # imported here: scipy.signal takes seconds to import, and only resampling needs it
    from scipy.signal import resample_poly

    g = gcd(int(target), int(rate))
    return resample_poly(x, int(target) // g, int(rate) // g).astype(np.float32)


def read_audio(path: str | Path, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """One audio file as a mono float32 waveform in [-1, 1] (channels averaged).

    Args:
        path: an audio file soundfile reads (WAV, FLAC, OGG, MP3, AIFF, NIST SPHERE...).
        sample_rate: resample to this rate (Hz); None keeps the file's.

    Returns:
        (x, rate): x of shape (N,), and its sample rate.

    Raises:
        DataError naming the file when it cannot be read, is truncated, holds NaN/inf or its
        sample rate is not plausible (:func:`plausible_rate`).
    """
    path = Path(path)
    try:
        with sf.SoundFile(str(path)) as f:
            rate, n_header, extra = f.samplerate, f.frames, f.extra_info
            if not plausible_rate(rate):
                raise DataError(implausible_rate(path, rate))
            x = f.read(dtype="float32", always_2d=True)  # (N, channels)
        declared = _nist_sample_count(path)
    except (RuntimeError, OSError, sf.SoundFileError) as e:
        raise DataError(f"{path}: cannot read audio ({e})") from None
    m = re.search(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", extra, re.MULTILINE)
    if m:
        raise DataError(f"{path}: truncated audio file (its header announces {m.group(1)} bytes "
                        f"of samples, the file holds {m.group(2)})")
    if declared is not None and declared != len(x):
        raise DataError(f"{path}: truncated audio file (its NIST header announces {declared} "
                        f"samples, the file holds {len(x)})")
    if len(x) != n_header:
        raise DataError(f"{path}: truncated audio file (header: {n_header} samples, read {len(x)})")
    check_finite(x, str(path))
    x = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]  # (N,)
    if sample_rate is not None and sample_rate != rate:
        x, rate = resample(x, rate, sample_rate), int(sample_rate)
    return np.ascontiguousarray(x, dtype=np.float32), int(rate)


def check_rate_flag(sample_rate: int | None) -> None:
    """DataError unless ``sample_rate=`` (``--sample-rate``) is None or :func:`plausible_rate`."""
    if sample_rate is not None and not plausible_rate(sample_rate):
        raise DataError(f"sample_rate= (--sample-rate) must be a sample rate of sound, "
                        f"{MIN_SAMPLE_RATE:,} to {MAX_SAMPLE_RATE:,} Hz; got {sample_rate:,}")


def _probe(files: list[Path], bad: dict[Path, str]) -> tuple[dict[Path, int], dict[Path, str]]:
    """Each readable file's sample rate and 'FORMAT/SUBTYPE'; a line in ``bad`` for the others."""
    rates, kinds = {}, {}
    for f in files:
        try:
            info = sf.info(str(f))
        except (RuntimeError, OSError, sf.SoundFileError) as e:
            bad[f] = f"{f}: cannot read audio ({e})"
            continue
        if not plausible_rate(int(info.samplerate)):
            bad[f] = implausible_rate(f, int(info.samplerate))
            continue
        rates[f], kinds[f] = int(info.samplerate), f"{info.format}/{info.subtype}"
    return rates, kinds


def _common_rate(name: str, rates: dict[Path, int], bad: list[str], skip_bad: bool) -> int:
    """The one sample rate of the readable files; DataError when they differ or none is readable."""
    first: dict[int, Path] = {}
    for f, r in rates.items():
        first.setdefault(r, f)
    if len(first) > 1:
        (r1, f1), (r2, f2) = list(first.items())[:2]
        raise DataError(f"data {name}: mixed sample rates, {f1} is {r1} Hz but {f2} is {r2} Hz "
                        f"({len(first)} rates in all); choose one with sample_rate= "
                        f"(--sample-rate)")
    if not first:
        raise report_bad(bad, f"data {name}", skip_bad=skip_bad)
    return next(iter(first))


def build_audio_dataset(name: str, split_files: dict[str, list[Path]], *, frame_size: int = 200,
                        seq_len: int | None = None, sample_rate: int | None = None,
                        skip_bad: bool = False, skip_short: bool = False, source: str = "",
                        licence: str = "", split_note: str = "",
                        bad_names: list[str] | None = None) -> SequenceDataset:
    """Read, frame and normalise the files of each split (see the module docstring).

    Args:
        split_files: 'train' / 'valid' / 'test' -> audio files.
        frame_size: samples per frame F (the model's x_dim).
        seq_len: frames per training / validation sequence; default 0.5 s.
        sample_rate: resample to this rate; default the files' common rate.
        skip_bad: leave out unreadable, truncated, non-finite or too-short files (listed in
            ``info.skipped``) instead of raising.
        skip_short: leave out files shorter than one frame even without ``skip_bad``.
        bad_names: 'name: problem' lines of files found but not usable by name (see
            :func:`find_audio_files`); bad files like the others.
    """
    if frame_size < 1:
        raise DataError(f"frame_size must be >= 1, got {frame_size}")
    if seq_len is not None and seq_len < 1:
        raise DataError(f"seq_len must be >= 1 frame, got {seq_len}")
    check_rate_flag(sample_rate)
    everything = [f for s in ("train", "valid", "test") for f in split_files.get(s, [])]
    named = list(bad_names or [])
    if not everything and not named:
        raise DataError(f"data {name}: no audio files")
    bad: dict[Path, str] = {}
    rates, kinds = _probe(everything, bad)

    def all_bad() -> list[str]:
        return named + list(bad.values())

    if named and not skip_bad:
        raise report_bad(all_bad(), f"data {name}")
    rate = sample_rate or _common_rate(name, rates, all_bad(), skip_bad)
    skipped: list[str] = []
    formats: dict[str, int] = {}
    utts: dict[str, list[np.ndarray]] = {"train": [], "valid": [], "test": []}
    for split in utts:
        for f in split_files.get(split, []):
            if f in bad:
                continue
            try:
                x, _ = read_audio(f, rate)
            except DataError as e:
                bad[f] = str(e)
                continue
            n = len(x) // frame_size
            if n == 0:
                msg = (f"{f}: {len(x)} samples at {rate} Hz is shorter than one frame of "
                       f"{frame_size} samples")
                if skip_short:
                    skipped.append(msg)
                else:
                    bad[f] = msg
                continue
            utts[split].append(x[: n * frame_size].reshape(n, frame_size))  # (T, F)
            formats[kinds[f]] = formats.get(kinds[f], 0) + 1
    if bad and not skip_bad:
        raise report_bad(all_bad(), f"data {name}")
    skipped += all_bad()
    if not utts["train"]:
        if skip_bad and all_bad():
            raise report_bad(all_bad(), f"data {name}", skip_bad=True)
        raise DataError(f"data {name}: no usable training audio")
    mean, std = moments(utts["train"])  # one scalar over every training sample
    if not std[0] > 0:
        raise DataError(f"data {name}: the training audio is constant (std 0)")
    for split in utts:
        for u in utts[split]:
            u -= np.float32(mean[0])
            u /= np.float32(std[0])
    L = seq_len or default_seq_len(rate, frame_size)

    def windows(us: list[np.ndarray]) -> list[np.ndarray]:
        return [u[k * L:(k + 1) * L] for u in us for k in range(len(u) // L)]  # (L, F) views

    info = DataInfo(name=name, kind="audio", x_dim=frame_size, sample_rate=rate,
                    frame_size=frame_size, mean=[float(mean[0])], std=[float(std[0])],
                    normalised_dims=list(range(frame_size)), source=source, licence=licence,
                    split_note=(f"{split_note} Train/valid: windows of {L} frames "
                                f"({L * frame_size / rate:.3g} s); test: whole utterances."
                                ).strip(),
                    skipped=skipped)
    return SequenceDataset(info=info, train=windows(utts["train"]), valid=windows(utts["valid"]),
                           test=list(utts["test"]), train_streams=list(utts["train"]),
                           formats=formats)


# -- a folder of audio files ---------------------------------------------------------------------

_SPLIT_DIRS = {"train": "train", "valid": "valid", "validation": "valid", "dev": "valid",
               "test": "test"}


def load_audio_folder(root: str | Path, *, frame_size: int = 200, seq_len: int | None = None,
                      sample_rate: int | None = None, skip_bad: bool = False,
                      max_files: int | None = None) -> SequenceDataset:
    """Every audio file under ``root`` (recursively); see the module docstring."""
    root = Path(root)
    bad_names: list[str] = []
    files = find_audio_files(root, bad=bad_names)
    if not files and not bad_names:
        raise DataError(f"{root}: no audio files found ({suffix_list()}; searched recursively)")
    files = subset(files, max_files)
    tops = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    predefined = {_SPLIT_DIRS[k]: v for k, v in tops.items() if k in _SPLIT_DIRS}
    if "train" in predefined and len(predefined) > 1:
        split_files: dict[str, list[Path]] = {"train": [], "valid": [], "test": []}
        outside = 0
        for f in files:
            top = f.relative_to(root).parts[0].lower()
            if top in _SPLIT_DIRS and len(f.relative_to(root).parts) > 1:
                split_files[_SPLIT_DIRS[top]].append(f)
            else:
                outside += 1
        note = ("Predefined split: the folder's train/valid/test subfolders"
                + (f" ({outside} files outside them unused)." if outside else "."))
    else:
        idx = split_indices(len(files))
        split_files = {k: [files[i] for i in v] for k, v in idx.items()}
        note = "Files split 0.9/0.05/0.05 with seed 0."
    return build_audio_dataset(str(root), split_files, frame_size=frame_size, seq_len=seq_len,
                               sample_rate=sample_rate, skip_bad=skip_bad,
                               source=f"audio files under {root}", split_note=note,
                               bad_names=bad_names)


# -- TIMIT ----------------------------------------------------------------------------------------

def find_timit_root(path: str | Path) -> Path | None:
    """The folder holding TIMIT's ``TRAIN`` and ``TEST`` (any case, ``TRAIN`` with ``DR1``...
    dialect-region folders): ``path`` or up to two levels below it; None if there is none."""
    path = Path(path)
    if not path.is_dir():
        return None
    level = [path]
    for _ in range(3):
        nxt = []
        for cand in level:
            dirs = sorted(p for p in cand.iterdir() if p.is_dir())
            names = {p.name.upper(): p for p in dirs}
            if {"TRAIN", "TEST"} <= set(names) and any(
                    re.fullmatch(r"DR\d+", d.name.upper())
                    for d in names["TRAIN"].iterdir() if d.is_dir()):
                return cand
            nxt += dirs
        level = nxt
    return None


def _timit_files(split_dir: Path, bad: list[str] | None = None) -> list[Path]:
    """Audio files of a TIMIT split, one per (speaker, utterance): ``SA1.WAV`` and a converted
    ``SA1.WAV.wav`` next to it count once."""
    seen, out = set(), []
    for f in find_audio_files(split_dir, bad=bad):
        key = (str(f.parent).upper(), f.name.split(".")[0].upper())
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def load_timit(path: str | Path, *, frame_size: int = 200, seq_len: int | None = None,
               sample_rate: int | None = None, skip_bad: bool = False,
               max_files: int | None = None) -> SequenceDataset:
    """TIMIT in its LDC layout (``TRAIN/DR*/<speaker>/*.WAV``, NIST SPHERE, 16 kHz)."""
    root = find_timit_root(path)
    if root is None:
        raise DataError(f"{path}: not TIMIT's LDC layout (no TRAIN and TEST folders found)")
    dirs = {p.name.upper(): p for p in root.iterdir() if p.is_dir()}
    bad_names: list[str] = []
    train_all, test = _timit_files(dirs["TRAIN"], bad_names), _timit_files(dirs["TEST"], bad_names)
    if not train_all and not test and not bad_names:
        raise DataError(f"{root}: TIMIT folders TRAIN and TEST hold no .WAV files")
    if max_files is not None:
        keep = set(subset(train_all + test, max_files))
        train_all, test = [f for f in train_all if f in keep], [f for f in test if f in keep]
    speakers = sorted({f.parent.name.upper() for f in train_all})
    n_valid = max(1, int(np.floor(0.05 * len(speakers) + 0.5))) if len(speakers) >= 2 else 0
    perm = np.random.default_rng(0).permutation(len(speakers))
    valid_speakers = {speakers[i] for i in perm[:n_valid]}
    valid = [f for f in train_all if f.parent.name.upper() in valid_speakers]
    train = [f for f in train_all if f.parent.name.upper() not in valid_speakers]
    note = (f"TIMIT's standard split: TRAIN minus {len(valid_speakers)} of its "
            f"{len(speakers)} speakers (5%, seed 0) for validation; TEST (complete test set, "
            f"SA sentences included) for test.")
    return build_audio_dataset(str(path), {"train": train, "valid": valid, "test": test},
                               frame_size=frame_size, seq_len=seq_len, sample_rate=sample_rate,
                               skip_bad=skip_bad, source=f"TIMIT (LDC93S1) at {root}",
                               licence="LDC User Agreement", split_note=note,
                               bad_names=bad_names)


# -- built-in speech sets -------------------------------------------------------------------------

def voice_files(voice: Voice) -> list[Path]:
    """The speech files of an installed voice (``silence/`` left out); [] when absent."""
    p = voice.path()
    return find_audio_files(p, EXCLUDED_DIRS) if p is not None else []


def missing_voices(multi: bool) -> list[Voice]:
    """The voices a built-in speech set needs that are not installed."""
    need = VOICES if multi else VOICES[:1]
    return [v for v in need if v.path() is None]


def install_hint(voices: list[Voice] | tuple[Voice, ...]) -> str:
    return "sudo apt-get install " + " ".join(v.package for v in voices)


def load_speech(*, multi: bool = False, frame_size: int = 200, seq_len: int | None = None,
                sample_rate: int | None = None, skip_bad: bool = False,
                max_files: int | None = None) -> SequenceDataset:
    """The built-in ``speech`` (one voice) or ``speech-multi`` (five voices) set."""
    name = "speech-multi" if multi else "speech"
    missing = missing_voices(multi)
    if missing:
        where = ", ".join(str(SOUNDS_ROOT / v.folder) for v in missing)
        raise DataError(f"data set {name!r} is not installed ({where} missing); install it with: "
                        f"{install_hint(missing)}")
    voices = VOICES if multi else VOICES[:1]
    per_voice = {v.folder: voice_files(v) for v in voices}
    if max_files is not None:
        keep = set(subset([f for fs in per_voice.values() for f in fs], max_files))
        per_voice = {k: [f for f in fs if f in keep] for k, fs in per_voice.items()}
    split_files: dict[str, list[Path]] = {"train": [], "valid": [], "test": []}
    for folder, files in per_voice.items():
        if multi and folder == HELD_OUT_VOICE:
            split_files["test"] += files
            continue
        for split, idx in split_indices(len(files)).items():
            split_files[split] += [files[i] for i in idx]
    if multi:
        note = (f"Split by speaker and by utterance: {HELD_OUT_VOICE} held out whole for test; "
                f"each other voice's utterances 0.9/0.05/0.05 (seed 0), its 5% test share "
                f"joining the test set.")
        licence = "CC-BY-SA-3.0 (en, es, fr voices), CC-BY-3.0 (it, ru voices)"
        source = ("Debian asterisk-core-sounds-{en,es,fr,it,ru}-wav: "
                  + ", ".join(f"{v.folder} ({v.speaker})" for v in voices))
    else:
        note = "Utterances split 0.9/0.05/0.05 with seed 0."
        licence = "CC-BY-SA-3.0"
        source = (f"Debian asterisk-core-sounds-en-wav: {SOUNDS_ROOT / VOICES[0].folder} "
                  f"(Allison Smith)")
    return build_audio_dataset(name, split_files, frame_size=frame_size, seq_len=seq_len,
                               sample_rate=sample_rate, skip_bad=skip_bad, skip_short=True,
                               source=source, licence=licence, split_note=note)
