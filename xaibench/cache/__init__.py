"""xaibench's disk cache: expensive, reusable results under a hash of what they depend on.

Namespaces are folders of the cache folder: ``features`` (frozen backbone features), ``phantom``
(rendered phantom chunks), ``fits`` (trained models, :mod:`xaibench.engine.fit_cache`) and those of
plugins (``cardiac_phantom``). The folder is ``$XAIBENCH_CACHE_DIR``, else
``$XDG_CACHE_HOME/xaibench``, else ``~/.cache/xaibench``; it is marked as xaibench's when first
used, and a folder holding anything else is left alone (:mod:`xaibench.cache.folder`). Every entry
carries a checksum verified on read; a bad one is logged, deleted and computed again
(:mod:`xaibench.cache.entries`). ``xaibench cache info|prune`` (:mod:`xaibench.cache.prune`) list
and delete entries, and nothing else.

The public API for plugins: :class:`CacheNamespace` (verified reads, atomic writes of one's own
entries), :func:`content_key`, :func:`default_cache_dir`, :class:`TensorCache`.
"""

from xaibench.cache.entries import (
    CacheNamespace,
    TensorCache,
    content_key,
)
from xaibench.cache.folder import (
    CACHE_ENV,
    CacheState,
    default_cache_dir,
    prepare_cache_dir,
)
from xaibench.cache.prune import NotACacheError, PruneResult, cache_info, prune_cache

__all__ = [
    "CACHE_ENV",
    "CacheNamespace",
    "CacheState",
    "NotACacheError",
    "PruneResult",
    "TensorCache",
    "cache_info",
    "content_key",
    "default_cache_dir",
    "prepare_cache_dir",
    "prune_cache",
]
