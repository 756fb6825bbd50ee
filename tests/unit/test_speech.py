import array
import asyncio
import math
import os
import shutil
import wave
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from router import speech as speech_module
from router.config import SpeechSettings
from router.speech import Speech, resample, resample_wav

ESPEAK = shutil.which("espeak-ng")
# Locally these tests are skipped without espeak-ng. Under CI, where
# `make test` installs it, a missing espeak-ng fails them instead.
requires_espeak = pytest.mark.skipif(
    ESPEAK is None and not os.environ.get("CI"),
    reason="espeak-ng not found on PATH: install the Debian package espeak-ng "
    "(`make test` does) to run the speech tests",
)


def sine(frequency: float, rate: int, seconds: float) -> array.array:
    count = int(rate * seconds)
    return array.array(
        "h",
        (
            int(10000 * math.sin(2 * math.pi * frequency * index / rate))
            for index in range(count)
        ),
    )


def zero_crossings(samples: array.array) -> int:
    return sum(
        1
        for index in range(1, len(samples))
        if (samples[index - 1] < 0) != (samples[index] < 0)
    )


def write_wav(path: Path, samples: array.array, rate: int) -> None:
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(samples.tobytes())


def make_speech(tmp_path: Path, executable: str | None = ESPEAK, **fields) -> Speech:
    return Speech(SpeechSettings(**fields), executable, tmp_path)


# ----- resampling --------------------------------------------------------------


@pytest.mark.parametrize("target_rate", [16000, 8000])
def test_resample_keeps_duration(target_rate: int) -> None:
    samples = sine(440, 22050, 1.0)

    resampled = resample(samples, 22050, target_rate)

    assert abs(len(resampled) - target_rate) <= 1


@pytest.mark.parametrize("target_rate", [16000, 8000])
def test_resample_keeps_pitch(target_rate: int) -> None:
    samples = sine(440, 22050, 1.0)

    resampled = resample(samples, 22050, target_rate)

    # A 440 Hz tone crosses zero 880 times a second at any sample rate.
    assert abs(zero_crossings(resampled) - zero_crossings(samples)) <= 2


def test_resample_keeps_constant_level() -> None:
    samples = array.array("h", [1234] * 2205)

    resampled = resample(samples, 22050, 16000)

    assert set(resampled) == {1234}


def test_resample_same_rate_copies() -> None:
    samples = sine(300, 16000, 0.1)

    resampled = resample(samples, 16000, 16000)

    assert resampled == samples
    assert resampled is not samples


def test_resample_wav_writes_mono_16_bit(tmp_path: Path) -> None:
    source = tmp_path / "source.wav"
    target = tmp_path / "target.wav"
    write_wav(source, sine(440, 22050, 0.5), 22050)

    resample_wav(source, target, 8000)

    with wave.open(str(target), "rb") as reader:
        assert reader.getnchannels() == 1
        assert reader.getsampwidth() == 2
        assert reader.getframerate() == 8000
        assert abs(reader.getnframes() - 4000) <= 1
    assert [path.name for path in tmp_path.iterdir() if "partial" in path.name] == []


def test_resample_wav_rejects_stereo(tmp_path: Path) -> None:
    source = tmp_path / "stereo.wav"
    with wave.open(str(source), "wb") as writer:
        writer.setnchannels(2)
        writer.setsampwidth(2)
        writer.setframerate(22050)
        writer.writeframes(bytes(400))

    with pytest.raises(wave.Error, match="mono"):
        resample_wav(source, tmp_path / "out.wav", 16000)


# ----- the cache ---------------------------------------------------------------


def test_cache_path_depends_on_text_voice_and_rate(tmp_path: Path) -> None:
    default = make_speech(tmp_path)
    german = make_speech(tmp_path, voice="de")
    narrow = make_speech(tmp_path, sample_rate=8000)

    paths = {
        default.cache_path("Hello"),
        default.cache_path("Hello!"),
        german.cache_path("Hello"),
        narrow.cache_path("Hello"),
    }

    assert len(paths) == 4
    assert default.cache_path("Hello") == make_speech(tmp_path).cache_path("Hello")
    assert all(path.parent == tmp_path for path in paths)


async def test_render_without_espeak_returns_none(tmp_path: Path) -> None:
    speech = make_speech(tmp_path, executable=None)

    assert not speech.available
    assert await speech.render("Hello") is None


def test_start_logs_missing_espeak_once(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(speech_module.shutil, "which", lambda name: None)

    with capture_logs() as events:
        speech = Speech.start(SpeechSettings(cacheDir=str(tmp_path / "cache")))

    assert not speech.available
    assert [e["event"] for e in events] == ["speech.unavailable"]
    assert "espeak-ng" in events[0]["detail"]


def test_start_falls_back_to_temporary_cache(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")

    with capture_logs() as events:
        speech = Speech.start(SpeechSettings(cacheDir=str(blocker / "speech")))

    warnings = [e for e in events if e["event"] == "speech.cache_dir_unusable"]
    assert len(warnings) == 1
    fallback = speech.cache_path("x").parent
    assert fallback.is_dir()
    fallback.rmdir()


# ----- rendering with espeak-ng --------------------------------------------------


@requires_espeak
async def test_render_writes_cached_wav(tmp_path: Path) -> None:
    speech = make_speech(tmp_path)

    path = await speech.render("Thank you for calling.")

    assert path is not None
    assert path == speech.cache_path("Thank you for calling.")
    with wave.open(str(path), "rb") as reader:
        assert reader.getnchannels() == 1
        assert reader.getsampwidth() == 2
        assert reader.getframerate() == 16000
        assert reader.getnframes() > 16000 * 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@requires_espeak
async def test_render_uses_cache(tmp_path: Path, monkeypatch) -> None:
    speech = make_speech(tmp_path)
    first = await speech.render("Please hold.")

    async def fail(*args):
        raise AssertionError("espeak-ng ran for a cached text")

    monkeypatch.setattr(speech, "_run_espeak", fail)
    second = await speech.render("Please hold.")

    assert second == first


@requires_espeak
async def test_concurrent_renders_share_one_run(tmp_path: Path, monkeypatch) -> None:
    speech = make_speech(tmp_path)
    runs = []
    original = speech._run_espeak

    async def counted(output, text):
        runs.append(text)
        return await original(output, text)

    monkeypatch.setattr(speech, "_run_espeak", counted)
    paths = await asyncio.gather(*(speech.render("One moment.") for _ in range(3)))

    assert len(set(paths)) == 1
    assert paths[0] is not None
    assert runs == ["One moment."]


@requires_espeak
async def test_text_starting_with_dash_is_spoken(tmp_path: Path) -> None:
    speech = make_speech(tmp_path, sample_rate=8000)

    path = await speech.render("--version")

    assert path is not None
    with wave.open(str(path), "rb") as reader:
        assert reader.getframerate() == 8000
        assert reader.getnframes() > 0


async def test_failed_rendering_returns_none(tmp_path: Path) -> None:
    speech = make_speech(tmp_path, executable="/bin/false")

    with capture_logs() as events:
        path = await speech.render("Hello")

    assert path is None
    assert [e["event"] for e in events] == ["speech.render_failed"]
    assert list(tmp_path.iterdir()) == []
