"""Users' output stays free of known-harmless library messages (rlhf/libnoise.py)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf.libnoise import BITSANDBYTES_CPU_LOGGER, HUB_KERNEL_MESSAGE, KERNELS_HUB_LOGGER, OFFLINE_TRUST_MESSAGE, DropMessages

TESTS_DIR = Path(__file__).resolve().parent

TINY_4BIT_LOAD = f"""
import sys
sys.path.insert(0, {str(TESTS_DIR)!r})
import rlhf.models as models
from tiny_models import save_tiny_causal_lm
path = save_tiny_causal_lm(sys.argv[1])
import peft  # imports bitsandbytes, as TRL's trainers do
model = models.load_causal_lm(path, device="cpu", load_in_4bit=True)
print("loaded", type(model).__name__)
"""


def _run(code: str, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, env=dict(os.environ, **(env or {})))
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def _cpu_has_avx512_bf16() -> bool:
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not _cpu_has_avx512_bf16(), reason="bitsandbytes logs the hub-kernel message only on CPUs with AVX512-BF16")
def test_a_4bit_load_prints_no_hub_kernel_message(tmp_path):
    # Without our filters the messages are there: bitsandbytes imported on its own prints them.
    assert HUB_KERNEL_MESSAGE in _run("import bitsandbytes", env={"HF_HUB_OFFLINE": "0"})
    assert OFFLINE_TRUST_MESSAGE in _run("import bitsandbytes", env={"HF_HUB_OFFLINE": "1"})
    for offline in ("0", "1"):  # offline, the lookup says it skips a trust check instead
        output = _run(TINY_4BIT_LOAD, str(tmp_path / f"tiny-{offline}"), env={"HF_HUB_OFFLINE": offline})
        assert "loaded LlamaForCausalLM" in output
        assert "gemm_4bit_forward" not in output and "kernels-community" not in output, output


def test_only_that_record_is_dropped(caplog):
    bnb, kernels = logging.getLogger(BITSANDBYTES_CPU_LOGGER), logging.getLogger(KERNELS_HUB_LOGGER)
    assert any(isinstance(f, DropMessages) for f in bnb.filters), "installed by importing rlhf"
    with caplog.at_level(logging.WARNING):
        bnb.warning(HUB_KERNEL_MESSAGE + ": %s. Please make sure ...", "trust_remote_code")
        bnb.warning("some other bitsandbytes warning")
        kernels.warning(OFFLINE_TRUST_MESSAGE + " because Hugging Face Hub is in offline mode.")
        kernels.warning("Skipping publisher trust check for 'someone/else' because Hugging Face Hub is in offline mode.")
    assert [r.getMessage() for r in caplog.records] == [
        "some other bitsandbytes warning",
        "Skipping publisher trust check for 'someone/else' because Hugging Face Hub is in offline mode.",
    ]
