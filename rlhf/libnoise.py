"""Known-harmless messages of third-party libraries, kept out of our users' output.

Installed when `rlhf` is imported (cheap: a logging filter, no library is imported here),
because the messages come while a library is being imported, e.g. bitsandbytes by `peft`,
`trl` or a 4-bit load, long before any of our loading code runs.

- bitsandbytes >= 0.49, on CPUs with AVX512-BF16, logs "Failed to load CPU gemm_4bit_forward
  from kernels-community: ... trust_remote_code ..." at import: it tries to fetch a packed
  CPU kernel from the model hub. We never use that kernel: `rlhf.models` switches every CPU
  4-bit layer to the one kernel that training and sampling share
  (`keep_cpu_4bit_on_one_kernel`), and this product runs without a hub. Only that record is
  dropped; every other bitsandbytes message still shows. With `HF_HUB_OFFLINE=1` the lookup
  logs "Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes' ..."
  (the `kernels` package) instead: dropped too, for that repository only.
"""

from __future__ import annotations

import logging

BITSANDBYTES_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
HUB_KERNEL_MESSAGE = "Failed to load CPU gemm_4bit_forward from kernels-community"
KERNELS_HUB_LOGGER = "kernels._internals.hf_hub"
OFFLINE_TRUST_MESSAGE = "Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes'"

DROPPED: dict[str, tuple[str, ...]] = {
    BITSANDBYTES_CPU_LOGGER: (HUB_KERNEL_MESSAGE,),
    KERNELS_HUB_LOGGER: (OFFLINE_TRUST_MESSAGE,),
}
"""Logger name → the starts of the message templates dropped from it."""


class DropMessages(logging.Filter):
    """Drops the records whose message template starts with one of `prefixes`."""

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def install() -> None:
    """Add the filters (once: a second call changes nothing)."""
    for name, prefixes in DROPPED.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMessages) for f in logger.filters):
            logger.addFilter(DropMessages(*prefixes))
