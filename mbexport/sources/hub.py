"""Hub repositories -> a local snapshot directory, through huggingface_hub and its cache.

``fetch(repo_id, revision)`` downloads only what a conversion needs: the config, the
tokenizer files and ONE weight format (safetensors when the repo has it, else
``pytorch_model.bin``, else a TF1 checkpoint), sharded or not. It honours the usual
environment, read at call time (not when huggingface_hub was imported):

- ``HF_HUB_CACHE`` / ``HUGGINGFACE_HUB_CACHE`` / ``HF_HOME`` for where the cache lives;
- ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``: no network at all, the cache only;
- ``HF_ENDPOINT`` for a mirror.

When the hub cannot be reached the cache is used; when the cache has nothing either,
the error names the repo and revision and says how to proceed (go online, or ``--from PATH``).
"""

from __future__ import annotations

import os
from pathlib import Path

from mbexport.errors import SourceNotFoundError
from mbexport.layout import CONFIG, SPECIAL_TOKENS_MAP, TOKENIZER_CONFIG, VOCAB
from mbexport.sources.registry import download_patterns as weight_patterns

__all__ = ["fetch", "hub_cache_dir", "is_offline", "weight_patterns"]

# Small files every conversion takes along when the repo has them.
METADATA_FILES = (CONFIG, VOCAB, TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP)
# A sentence-transformers model's meaning (mbexport.semantics): its module chain and their configs.
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
                               "*_Pooling/*", "*_Normalize/*")

_TRUE = ("1", "on", "yes", "true")
_TIMEOUT_S = 20.0


def is_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) as set now; else huggingface_hub's own view."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        value = os.environ.get(var)
        if value:
            return value.strip().lower() in _TRUE
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir() -> Path:
    """The HF hub cache directory as the environment says now (same precedence as huggingface_hub)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        value = os.environ.get(var)
        if value:
            return Path(os.path.expandvars(os.path.expanduser(value)))
    home = os.environ.get("HF_HOME")
    if home:
        return Path(os.path.expandvars(os.path.expanduser(home))) / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(os.path.expandvars(os.path.expanduser(xdg))) / "huggingface" / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def _brief(error: BaseException) -> str:
    first = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first[:120]}" if first else type(error).__name__


def _where(repo_id: str, revision: str | None) -> str:
    return repo_id if revision is None else f"{repo_id}@{revision}"


def _not_cached(repo_id: str, revision: str | None, cache_dir: Path, why: str) -> SourceNotFoundError:
    return SourceNotFoundError(
        f"{_where(repo_id, revision)} is not in the HF cache ({cache_dir}) and {why}: "
        "run once with network access (unset HF_HUB_OFFLINE) to download it, or pass --from PATH with a local copy"
    )


def fetch(repo_id: str, revision: str | None = None) -> Path:
    """Download (or find in the cache) what converting ``repo_id`` at ``revision`` needs.

    Returns the snapshot directory. Raises ``SourceNotFoundError`` when the repo, the
    revision or usable weights do not exist, or when it is neither reachable nor cached.
    """
    cache_dir = hub_cache_dir()
    if is_offline():
        return _from_cache(repo_id, revision, cache_dir, "the hub is offline (HF_HUB_OFFLINE=1)")
    try:
        files = _repo_files(repo_id, revision)
    except _Unreachable as e:
        return _from_cache(repo_id, revision, cache_dir, str(e))
    return _download(repo_id, revision, cache_dir, _allow_patterns(repo_id, revision, files))


class _Unreachable(Exception):
    """The hub could not be asked (a transport failure): the cache is the fallback."""


def _from_cache(repo_id: str, revision: str | None, cache_dir: Path, why: str) -> Path:
    """The cached snapshot, when it holds weights; else a one-line error saying ``why`` the hub was not used."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True,
                                        allow_patterns=[CONFIG]))
    except HFValidationError as e:
        raise SourceNotFoundError(f"{repo_id!r} is not a valid HF repo id ({_brief(e)})") from None
    except (LocalEntryNotFoundError, FileNotFoundError):
        raise _not_cached(repo_id, revision, cache_dir, why) from None
    if not weight_patterns(sorted(p.name for p in folder.iterdir())):
        raise _not_cached(repo_id, revision, cache_dir, f"{why} (the cached snapshot has no weights)")
    return folder


def _repo_files(repo_id: str, revision: str | None) -> list[str]:
    """The repo's file names at ``revision``; one request without retries, so an unreachable hub fails fast."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError, RevisionNotFoundError

    where = _where(repo_id, revision)
    try:
        info = HfApi(endpoint=_endpoint()).model_info(repo_id, revision=revision, timeout=_TIMEOUT_S)
    except GatedRepoError:
        raise SourceNotFoundError(
            f"{where} is gated: accept its terms on the hub and log in (`hf auth login`), or pass --from PATH"
        ) from None
    except RepositoryNotFoundError:
        raise SourceNotFoundError(
            f"{repo_id} does not exist on the hub (or is private): check the name, `mbexport list` shows the "
            "catalogue; a local checkout goes in as a path or with --from PATH"
        ) from None
    except RevisionNotFoundError:
        raise SourceNotFoundError(f"{repo_id} has no revision {revision!r}: check the branch, tag or commit") from None
    except HFValidationError as e:
        raise SourceNotFoundError(f"{repo_id!r} is not a valid HF repo id ({_brief(e)})") from None
    except Exception as e:
        if not _is_transport_error(e):
            raise
        raise _Unreachable(f"the hub could not be reached ({_brief(e)})") from None
    return [sibling.rfilename for sibling in (info.siblings or [])]


def _allow_patterns(repo_id: str, revision: str | None, files: list[str]) -> list[str]:
    """Metadata, sentence-transformers files and ONE weight format; an error when the repo has no weights we read."""
    patterns = weight_patterns(files)
    if not patterns:
        raise SourceNotFoundError(
            f"{_where(repo_id, revision)} has no weights mbexport reads (model.safetensors, pytorch_model.bin, "
            f"sharded variants or a TF checkpoint); it holds: {', '.join(sorted(files)[:12])}"
        )
    if VOCAB not in files and "tokenizer.json" in files:
        patterns = [*patterns, "tokenizer.json"]  # transformers 5 saves BERT tokenizers without vocab.txt
    return [*METADATA_FILES, *SENTENCE_TRANSFORMERS_FILES, *patterns]


def _download(repo_id: str, revision: str | None, cache_dir: Path, patterns: list[str]) -> Path:
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=patterns,
                                   endpoint=_endpoint())
    except Exception as e:
        if not _is_transport_error(e):
            raise
        raise SourceNotFoundError(f"downloading {_where(repo_id, revision)} failed ({_brief(e)}): run again to "
                                  "resume, or pass --from PATH with a local copy") from None
    return Path(folder)


def _is_transport_error(error: BaseException) -> bool:
    """A failure to talk to the hub (offline mode, HTTP error, connection, timeout, disk), as opposed
    to a bug: these fall back to the cache or become a one-line SourceNotFoundError."""
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    if isinstance(error, (OfflineModeIsEnabled, HfHubHTTPError, LocalEntryNotFoundError, OSError)):
        return True
    # httpx's transport errors (connect, read, timeout, proxy) do not subclass OSError.
    return type(error).__module__.startswith(("httpx", "httpcore", "requests", "urllib3"))
