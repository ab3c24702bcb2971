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

__all__ = ["fetch", "hub_cache_dir", "is_offline", "weight_patterns"]

# Small files every conversion takes along when the repo has them.
METADATA_FILES = ("config.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
# A sentence-transformers model's meaning (mbexport.semantics): its module chain and their configs.
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
                               "*_Pooling/*", "*_Normalize/*")

# Weight layouts in order of preference: (file that marks it, patterns to download).
_LAYOUTS = (
    ("model.safetensors", ("model.safetensors",)),
    ("model.safetensors.index.json", ("model.safetensors.index.json", "model-*-of-*.safetensors")),
    ("pytorch_model.bin", ("pytorch_model.bin",)),
    ("pytorch_model.bin.index.json", ("pytorch_model.bin.index.json", "pytorch_model-*-of-*.bin")),
)

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


def weight_patterns(repo_files: list[str]) -> list[str]:
    """allow_patterns for the one weight format to download from a repo with these files."""
    present = set(repo_files)
    for marker, patterns in _LAYOUTS:
        if marker in present:
            return list(patterns)
    tf_indexes = [f for f in repo_files if f.endswith(".ckpt.index") and "/" not in f]
    if tf_indexes:
        prefix = tf_indexes[0].removesuffix(".index")
        return [f"{prefix}.*", "bert_config.json"]
    return []


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
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    cache_dir = hub_cache_dir()
    where = _where(repo_id, revision)

    def from_cache(why: str) -> Path:
        try:
            folder = Path(
                snapshot_download(
                    repo_id,
                    revision=revision,
                    cache_dir=cache_dir,
                    local_files_only=True,
                    allow_patterns=["config.json"],
                )
            )
        except HFValidationError as e:
            raise SourceNotFoundError(f"{repo_id!r} is not a valid HF repo id ({_brief(e)})") from None
        except (LocalEntryNotFoundError, FileNotFoundError):
            raise _not_cached(repo_id, revision, cache_dir, why) from None
        names = {p.name for p in folder.iterdir()}
        if not weight_patterns(sorted(names)):
            raise _not_cached(repo_id, revision, cache_dir, f"{why} (the cached snapshot has no weights)")
        return folder

    if is_offline():
        return from_cache("the hub is offline (HF_HUB_OFFLINE=1)")

    api = HfApi(endpoint=_endpoint())
    try:
        # model_info is one request without retries: an unreachable hub fails fast to the cache.
        info = api.model_info(repo_id, revision=revision, timeout=_TIMEOUT_S)
        files = [sibling.rfilename for sibling in (info.siblings or [])]
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
        return from_cache(f"the hub could not be reached ({_brief(e)})")

    patterns = weight_patterns(files)
    if not patterns:
        raise SourceNotFoundError(
            f"{where} has no weights mbexport reads (model.safetensors, pytorch_model.bin, sharded variants or a "
            f"TF checkpoint); it holds: {', '.join(sorted(files)[:12])}"
        )
    if "vocab.txt" not in files and "tokenizer.json" in files:
        patterns = [*patterns, "tokenizer.json"]  # transformers 5 saves BERT tokenizers without vocab.txt
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            allow_patterns=[*METADATA_FILES, *SENTENCE_TRANSFORMERS_FILES, *patterns],
            endpoint=_endpoint(),
        )
    except Exception as e:
        if not _is_transport_error(e):
            raise
        raise SourceNotFoundError(
            f"downloading {where} failed ({_brief(e)}): run again to resume, or pass --from PATH with a local copy"
        ) from None
    return Path(folder)


def _is_transport_error(error: BaseException) -> bool:
    """A failure to talk to the hub (offline mode, HTTP error, connection, timeout, disk), as opposed
    to a bug: these fall back to the cache or become a one-line SourceNotFoundError."""
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    if isinstance(error, (OfflineModeIsEnabled, HfHubHTTPError, LocalEntryNotFoundError, OSError)):
        return True
    # httpx's transport errors (connect, read, timeout, proxy) do not subclass OSError.
    return type(error).__module__.startswith(("httpx", "httpcore", "requests", "urllib3"))
