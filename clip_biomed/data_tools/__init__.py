"""Data tools: the published datasets' catalog, downloads and verification, split helpers, robust
image reading and a synthetic dataset writer. Command line: ``python -m clip_biomed.data_tools``.

Modules: ``catalog`` (the 11 datasets), ``download`` (fetch/unpack/verify), ``splits`` (split files,
stratified splits, few-shot cache), ``own_data`` (class folders / CSV -> classes), ``images``
(any image -> 8-bit RGB), ``synthetic`` (learnable toy datasets).
"""
