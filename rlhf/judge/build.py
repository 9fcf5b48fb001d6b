"""Which judge a run uses: one `JudgeSpec` (from the CLI or a job's params) → a judge object and its default name."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from rlhf.judge.run import JudgeError


@dataclass
class JudgeSpec:
    """Exactly one of `model` (alone), `endpoint` + `model`, `reward`, or `simulated`."""

    model: Optional[str] = None
    """A local causal LM (the packaged alias smollm2-135m-instruct, a checkpoint, an adapter), or with `endpoint` the served model's name."""
    endpoint: Optional[str] = None
    """URL of an OpenAI-compatible server (its root, /v1, or /v1/chat/completions)."""
    reward: Optional[str] = None
    """A reward model directory trained here: judges pairs by comparing scores."""
    simulated: bool = False
    """The simulated judge with planted biases (rlhf.simulation.judge), to try the judge metrics."""
    api_key_env: Optional[str] = None
    """Name of the environment variable holding the endpoint's key (the key itself is never stored)."""
    concurrency: int = 8
    """Endpoint requests in flight at once."""
    timeout_s: float = 60.0
    """Seconds an endpoint request may take."""
    retries: int = 3
    """Retries of an endpoint request after a connection error, timeout, 429 or 5xx (exponential backoff)."""
    rate_limit: float = 0.0
    """Endpoint requests per second at most (0 = no limit)."""
    batch_size: int = 16
    """Local model: conversations generated together; reward model: pairs scored together."""
    device: Optional[str] = None
    """Local or reward model: torch device (default: CUDA when present)."""
    load_in_4bit: bool = False
    """Local model: load it quantised to NF4."""
    tie_margin: float = 0.1
    """Reward judge: normalised score difference below which a pair is a tie."""
    sim_position_bias: float = 0.0
    """Simulated judge: probability of picking the response shown first regardless."""
    sim_length_bias: float = 0.0
    """Simulated judge: logits per doubling of length toward the longer response."""
    sim_unparsable_rate: float = 0.0
    """Simulated judge: share of replies that do not parse."""
    seed: int = 0
    """Simulated judge: seeds its draws."""

    def check(self) -> "JudgeSpec":
        chosen = [name for name, on in (("--model", self.model and not self.endpoint), ("--endpoint", self.endpoint),
                                        ("--reward", self.reward), ("--simulated", self.simulated)) if on]
        if len(chosen) != 1:
            raise JudgeError("give exactly one judge: --model M, --endpoint URL --model NAME, --reward DIR or --simulated"
                             + (f" (got {', '.join(chosen)})" if chosen else ""))
        if self.endpoint and not self.model:
            raise JudgeError("--endpoint needs --model NAME (the model the server serves)")
        if (self.reward or self.simulated) and self.model:
            raise JudgeError("--model goes with a local model or --endpoint, not with --reward / --simulated")
        return self

    def default_name(self) -> str:
        """A judge name from what it is: the model's or directory's name, made safe for `judge:<name>`."""
        self.check()
        raw = "simulated" if self.simulated else Path(self.reward).name if self.reward else str(self.model).rstrip("/").split("/")[-1]
        return re.sub(r"[^A-Za-z0-9._\-]+", "-", raw).strip("-.")[:100] or "judge"


def make_judge(spec: JudgeSpec) -> Any:
    """The judge object for `spec` (loads the model; reads the endpoint's key from its environment variable)."""
    spec.check()
    if spec.simulated:
        from rlhf.simulation.judge import SimulatedJudge

        return SimulatedJudge(position_bias=spec.sim_position_bias, length_bias=spec.sim_length_bias,
                              unparsable_rate=spec.sim_unparsable_rate, seed=spec.seed)
    if spec.reward:
        from rlhf.judge.backends import RewardJudge

        return RewardJudge(spec.reward, tie_margin=spec.tie_margin, batch_size=spec.batch_size, device=spec.device)
    if spec.endpoint:
        from rlhf.judge.backends import EndpointJudge
        from rlhf.judge.client import ChatClient, ClientConfig, read_api_key

        try:
            config = ClientConfig(concurrency=spec.concurrency, timeout_s=spec.timeout_s, retries=spec.retries, rate_limit=spec.rate_limit)
        except ValueError as exc:
            raise JudgeError(str(exc)) from None
        return EndpointJudge(ChatClient(spec.endpoint, spec.model, api_key=read_api_key(spec.api_key_env), config=config))
    from rlhf.judge.backends import LocalJudge

    return LocalJudge(str(spec.model), batch_size=spec.batch_size, device=spec.device, load_in_4bit=spec.load_in_4bit)
