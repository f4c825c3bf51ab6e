"""webMUSHRA export: a config webMUSHRA accepts, and stimuli that pass its checks."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import yaml

from conftest import piano_like
from simdps.errors import SimDPSError
from simdps.evaluation.mushra import MushraConfig, MushraItem, write_webmushra

SR = 16_000
METHODS = ["lpc", "sim", "simdps-l"]


@pytest.fixture
def items(tmp_path):
    out = []
    for k in range(2):
        original = piano_like(6.0, SR, seed=k)
        folder = tmp_path / "audio" / f"ex{k}"
        folder.mkdir(parents=True)
        sf.write(folder / "original.wav", original, SR)
        paths = {}
        for j, m in enumerate(METHODS):
            restored = original.copy()
            restored[2 * SR:4 * SR] *= 0.5 + j  # simdps-l is louder than full scale here
            sf.write(folder / f"{m}.wav", restored, SR, subtype="FLOAT")
            paths[m] = folder / f"{m}.wav"
        out.append(MushraItem(f"ex{k}", folder / "original.wav", paths, 2.0, 4.0))
    return out


def _mushra_pages(doc):
    pages = []
    for page in doc["pages"]:
        if isinstance(page, list):  # webMUSHRA's ["random", page, page, ...] group
            assert page[0] == "random"
            pages += page[1:]
        elif page["type"] == "mushra":
            pages.append(page)
    return pages


def test_config_is_valid_webmushra_yaml_with_every_condition(tmp_path, items):
    out = tmp_path / "mushra"
    yaml_path = write_webmushra(out, items, METHODS, MushraConfig(pages_per_excerpt=2))
    assert yaml_path == out / "configs" / "simdps_eval.yaml"
    doc = yaml.safe_load(yaml_path.read_text())
    for key in ("testname", "testId", "bufferSize", "stopOnErrors", "showButtonPreviousPage", "remoteService"):
        assert key in doc
    assert doc["pages"][0]["type"] == "generic" and doc["pages"][-1]["type"] == "finish"
    pages = _mushra_pages(doc)
    assert len(pages) == 4  # 2 excerpts x 2 pages, as the paper repeated each excerpt
    assert len({p["id"] for p in pages}) == 4
    for page in pages:
        assert page["createAnchor35"] is False and page["createAnchor70"] is False
        assert list(page["stimuli"]) == METHODS  # LPC anchor + methods; webMUSHRA adds the hidden reference
        # Paths are relative to the webMUSHRA root, where configs/ is copied.
        for rel in [page["reference"], *page["stimuli"].values()]:
            assert rel.startswith("configs/resources/audio/simdps_eval/")
            assert (out / rel).is_file()


def test_stimuli_share_rate_length_channels_and_never_clip(tmp_path, items):
    out = tmp_path / "mushra"
    write_webmushra(out, items, METHODS)
    page = _mushra_pages(yaml.safe_load((out / "configs" / "simdps_eval.yaml").read_text()))[0]
    files = [out / page["reference"], *(out / p for p in page["stimuli"].values())]
    infos = [sf.info(f) for f in files]
    assert {(i.samplerate, i.frames, i.channels, i.subtype) for i in infos} == {(48_000, 6 * 48_000, 1, "PCM_16")}
    ref, _ = sf.read(files[0])
    loud, _ = sf.read(files[-1])
    assert np.max(np.abs(loud)) <= 10 ** (-1 / 20) + 1e-4
    # One gain for the whole page: the context (outside the gap) still matches the reference.
    np.testing.assert_allclose(loud[: 48_000], ref[: 48_000], atol=2e-4)


def test_missing_anchor_or_restoration_is_a_user_error(tmp_path, items):
    with pytest.raises(SimDPSError, match="low anchor"):
        write_webmushra(tmp_path / "m", items, ["sim", "simdps-l"])
    with pytest.raises(SimDPSError, match="no restoration by dps"):
        write_webmushra(tmp_path / "m", items, ["lpc", "dps"])
