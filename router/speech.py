"""Text-to-speech with espeak-ng, rendered to WAV files that pjsua2 plays.

espeak-ng writes 16-bit mono WAV at 22050 Hz, which this module resamples to
`router.speech.sampleRate` (8000 or 16000 Hz), the clock rates that pjsua's
conference bridge and telephone codecs use. Rendered prompts are cached in
`router.speech.cacheDir` under the SHA-256 of voice, rate and text, so a
prompt is rendered once per text. Nothing here blocks the event loop:
espeak-ng runs as an asyncio subprocess and the resampling on a worker
thread, which never touches pjsua2.

Without espeak-ng, `Speech.available` is false, one warning is logged at
start, and `render()` returns None so the caller sends the text in a SIP
Reason header instead.
"""

from __future__ import annotations

import array
import asyncio
import hashlib
import os
import shutil
import sys
import tempfile
import wave
from pathlib import Path

import structlog

from router.config import SpeechSettings

log = structlog.get_logger("router.speech")

EXECUTABLE = "espeak-ng"
# A `say` text has at most 4000 characters, about four minutes of speech,
# which espeak-ng renders in well under a second on one core.
RENDER_TIMEOUT_SECONDS = 30.0
# Messages of espeak-ng's standard error kept in a log event.
_STDERR_LOGGED_CHARS = 500


def default_cache_dir() -> Path:
    """Return `$XDG_CACHE_HOME/cozmox-router/speech`, or under `~/.cache`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cozmox-router" / "speech"


class Speech:
    """Renders text to WAV files with espeak-ng and caches them by text."""

    def __init__(
        self,
        settings: SpeechSettings,
        executable: str | None,
        cache_dir: Path,
    ) -> None:
        self._voice = settings.voice
        self._sample_rate = settings.sample_rate
        self._executable = executable
        self._cache_dir = cache_dir
        self._rendering: dict[str, asyncio.Future[Path | None]] = {}

    @classmethod
    def start(cls, settings: SpeechSettings) -> Speech:
        """Find espeak-ng and make the cache folder; log once if speech is off.

        A cache folder that cannot be created is replaced by a new
        temporary folder, so speech still works without a writable home.
        """
        executable = shutil.which(EXECUTABLE)
        cache_dir = Path(settings.cache_dir) if settings.cache_dir else None
        cache_dir = _make_cache_dir(cache_dir or default_cache_dir())
        if executable is None:
            log.warning(
                "speech.unavailable",
                detail=f"{EXECUTABLE} not found on PATH; texts are sent in the "
                "SIP Reason header instead of spoken. Install the Debian "
                "package espeak-ng to speak them.",
            )
        else:
            log.info("speech.ready", voice=settings.voice, cache_dir=str(cache_dir))
        return cls(settings, executable, cache_dir)

    @property
    def available(self) -> bool:
        """Whether espeak-ng was found, so texts can be spoken."""
        return self._executable is not None

    def cache_path(self, text: str) -> Path:
        """Return the path of the WAV file of `text`, rendered or not."""
        key = f"{self._voice}\0{self._sample_rate}\0{text}".encode()
        return self._cache_dir / f"{hashlib.sha256(key).hexdigest()}.wav"

    async def render(self, text: str) -> Path | None:
        """Return a WAV file of `text` spoken, rendering it if not cached.

        Returns None when speech is unavailable or rendering failed; the
        failure is logged. Concurrent requests for one text share one
        rendering.
        """
        if self._executable is None:
            return None
        path = self.cache_path(text)
        if await asyncio.to_thread(path.is_file):
            return path
        pending = self._rendering.get(path.name)
        if pending is not None:
            return await asyncio.shield(pending)

        # The rendering goes on for other callers if this one is cancelled.
        rendering = asyncio.ensure_future(self._render_to(path, text))
        self._rendering[path.name] = rendering
        return await asyncio.shield(rendering)

    async def _render_to(self, path: Path, text: str) -> Path | None:
        raw = path.with_name(f".{path.stem}.{os.getpid()}.espeak.wav")
        try:
            if not await self._run_espeak(raw, text):
                return None
            await asyncio.to_thread(resample_wav, raw, path, self._sample_rate)
        except (OSError, wave.Error, EOFError) as error:
            log.error("speech.render_failed", error=f"{type(error).__name__}: {error}")
            return None
        finally:
            raw.unlink(missing_ok=True)
            self._rendering.pop(path.name, None)
        log.info("speech.rendered", file=path.name, characters=len(text))
        return path

    async def _run_espeak(self, output: Path, text: str) -> bool:
        """Run espeak-ng on `text`, writing its WAV to `output`."""
        assert self._executable is not None
        # The text goes on standard input, so no text can pass for an option.
        process = await asyncio.create_subprocess_exec(
            self._executable,
            "-v", self._voice,
            "-b", "1",
            "--stdin",
            "-w", str(output),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            async with asyncio.timeout(RENDER_TIMEOUT_SECONDS):
                _, stderr = await process.communicate(text.encode())
        except TimeoutError:
            await _kill(process)
            log.error("speech.render_timed_out", timeout_seconds=RENDER_TIMEOUT_SECONDS)
            return False
        except asyncio.CancelledError:
            await _kill(process)
            raise
        if process.returncode != 0:
            log.error(
                "speech.render_failed",
                exit_status=process.returncode,
                stderr=stderr.decode(errors="replace")[-_STDERR_LOGGED_CHARS:],
            )
            return False
        return True


async def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
    await process.wait()


def _make_cache_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path
    except OSError as error:
        fallback = Path(tempfile.mkdtemp(prefix="cozmox-router-speech-"))
        log.warning(
            "speech.cache_dir_unusable",
            cache_dir=str(path),
            error=error.strerror or type(error).__name__,
            using=str(fallback),
        )
        return fallback


def resample_wav(source: Path, target: Path, rate: int) -> None:
    """Write `source`, a 16-bit mono WAV, to `target` at `rate` Hz.

    The file is written under a temporary name and renamed, so a reader
    never sees half a file.
    """
    with wave.open(str(source), "rb") as reader:
        if reader.getnchannels() != 1 or reader.getsampwidth() != 2:
            raise wave.Error("expected a 16-bit mono WAV file")
        source_rate = reader.getframerate()
        samples = array.array("h", reader.readframes(reader.getnframes()))
    if sys.byteorder == "big":
        samples.byteswap()  # WAV data is little-endian

    converted = resample(samples, source_rate, rate)
    if sys.byteorder == "big":
        converted.byteswap()
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    with wave.open(str(partial), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(converted.tobytes())
    partial.replace(target)


def resample(samples: array.array, source_rate: int, target_rate: int) -> array.array:
    """Resample 16-bit samples by linear interpolation, in integer arithmetic.

    Going down in rate, a [1, 2, 1] / 4 smoothing filter first damps what
    lies above the new Nyquist frequency, so less of it folds back as noise.
    That is enough for a synthetic voice that a telephone codec then cuts
    to 4 kHz anyway.
    """
    if source_rate == target_rate or len(samples) < 3:
        return array.array("h", samples)
    smooth = list(samples)
    if target_rate < source_rate:
        triples = zip(samples, samples[1:], samples[2:], strict=False)
        inner = [(left + 2 * middle + right) >> 2 for left, middle, right in triples]
        smooth = [samples[0], *inner, samples[-1]]
    smooth.append(smooth[-1])

    count = (len(samples) - 1) * target_rate // source_rate + 1
    resampled = array.array("h", bytes(2 * count))
    for index in range(count):
        position, remainder = divmod(index * source_rate, target_rate)
        left = smooth[position]
        step = (smooth[position + 1] - left) * remainder
        resampled[index] = left + step // target_rate
    return resampled
