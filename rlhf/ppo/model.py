"""Policy, value and reference on ONE base model: PEFT adapters on a (4-bit) base plus a value head.

    base (frozen, NF4 or fp32) ─┬─ "policy" LoRA (trainable, every layer)    → logits
                                ├─ "value" LoRA (trainable, top k layers) + value head → V(s)
                                └─ no adapter (or a frozen "reference" LoRA) → reference logits

The reference is the base with the adapters disabled (`disable_adapter()`), or a frozen copy of
the starting adapter when the policy starts from an SFT adapter. Nothing duplicates the base
weights: every path runs the same modules with a different adapter switched on.

The critic is the reference trunk with a value adapter on its top `k` layers. The reference
pass of the rollout already computes the trunk's features at layer L-k, so the critic's forward
and backward run only through k layers (features are cached per rollout). With k = L this is a
full critic. At start-up the short path is checked against a full forward; an architecture
where it does not match (e.g. one that rescales its input embeddings inside `forward`) falls
back to the full forward automatically.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlhf.models import ModelSource, load_causal_lm, load_tokenizer, lora_config, resolve_model
from rlhf.ppo.core import position_ids_from_mask

POLICY = "policy"
VALUE = "value"
REFERENCE = "reference"


class ModelSetupError(ValueError):
    """The models given cannot be combined (mismatched reward model, unknown layer layout, ...)."""


@dataclass(frozen=True)
class AdapterSettings:
    """LoRA settings of the policy and value adapters."""

    r: int = 16
    alpha: int = 32
    target_modules: str | list[str] = "all-linear"
    value_layers: int | None = 4


class PolicyValueModel(nn.Module):
    """The trainable policy, the critic and the reference, sharing one base (see module docstring).

    Tensor conventions for every method: `input_ids`, `attention_mask` are (B, S) query+response
    rows, prompts left-padded, S = P + T; `response_length` is T. Outputs cover the T response
    positions: logits (B, T, V) predicting each response token, values (B, T) estimating the
    return before each response token is emitted.
    """

    def __init__(self, peft_model, value_head: nn.Linear, *, reference_adapter: str | None, value_layers: int):
        super().__init__()
        self.peft = peft_model
        self.value_head = value_head
        self.reference_adapter = reference_adapter
        self.num_layers = len(self._decoder_layers())
        self.value_layers = value_layers
        self.use_value_shortcut = True
        self._trainable = [p for n, p in self.named_parameters() if _is_trainable_name(n)]
        self._set_requires_grad()

    # ------------------------------------------------------------------ structure

    @property
    def config(self):
        return self.peft.get_base_model().config

    @property
    def device(self) -> torch.device:
        return self.value_head.weight.device

    def _decoder(self):
        """The transformer trunk (embeddings, layers, final norm) of the causal LM."""
        causal_lm = self.peft.get_base_model()
        decoder = getattr(causal_lm, "base_model", None)
        if decoder is None or decoder is causal_lm or not hasattr(decoder, "layers"):
            raise ModelSetupError(f"{type(causal_lm).__name__}: cannot find its decoder layers (expected `.model.layers`)")
        return decoder

    def _decoder_layers(self) -> nn.ModuleList:
        return self._decoder().layers

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Policy LoRA, value LoRA and value head: everything the optimiser updates."""
        return list(self._trainable)

    def named_trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if _is_trainable_name(n)]

    def _set_requires_grad(self) -> None:
        # PEFT's set_adapter flips requires_grad to "active adapter only"; both trainable adapters
        # must keep theirs (and the frozen reference must stay frozen) whichever one is active.
        for name, param in self.named_parameters():
            param.requires_grad_(_is_trainable_name(name))

    def _activate(self, adapters: str | list[str]) -> None:
        self.peft.base_model.set_adapter(adapters)
        self._set_requires_grad()

    def _value_adapters(self) -> list[str]:
        # The critic is the reference trunk plus the value adapter; with an SFT start the
        # reference is itself an adapter, active alongside.
        return [self.reference_adapter, VALUE] if self.reference_adapter else [VALUE]

    @contextlib.contextmanager
    def adapter_scope(self, adapter: str):
        """Within this block the named adapter (alone) is active; the policy's is restored after."""
        self._activate(adapter)
        try:
            yield
        finally:
            self._activate(POLICY)

    def trunk(self) -> nn.Module:
        """The shared decoder trunk (embeddings, layers, final norm), without the LM head."""
        return self._decoder()

    def add_frozen_adapter(self, name: str, lora_config, weights: dict[str, torch.Tensor]) -> None:
        """Put another frozen LoRA adapter (e.g. the reward model's) on the shared base."""
        self.peft.add_adapter(name, lora_config)
        self.load_adapter_state_dict(name, {k: v.to(self.device) for k, v in weights.items()}, strict=True)
        self._activate(POLICY)

    @contextlib.contextmanager
    def reference_mode(self):
        """Within this block the model computes the reference policy."""
        if self.reference_adapter:
            self._activate(self.reference_adapter)
            yield
        else:
            self._activate(POLICY)
            with self.peft.disable_adapter():
                yield
        self._activate(POLICY)

    # ------------------------------------------------------------------ forward passes

    def _causal_lm_logits(self, input_ids, attention_mask, response_length: int) -> torch.Tensor:
        # Feed all but the last token: the last T positions then predict exactly the T response
        # tokens, and only those T positions go through the LM head (the vocabulary projection
        # is a large share of a small model's compute).
        out = self.peft(
            input_ids=input_ids[:, :-1],
            attention_mask=attention_mask[:, :-1],
            position_ids=position_ids_from_mask(attention_mask)[:, :-1],
            logits_to_keep=response_length,
            use_cache=False,
        )
        return out.logits  # (B, T, V)

    def policy_logits(self, input_ids, attention_mask, response_length: int) -> torch.Tensor:
        """Policy logits for the response positions (with gradients). → (B, T, V)"""
        self._activate(POLICY)
        return self._causal_lm_logits(input_ids, attention_mask, response_length)

    def reference_forward(self, input_ids, attention_mask, response_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference logits (B, T, V) and the trunk features the critic starts from (B, S-1, H).

        The features are the input of decoder layer L-k under the reference, captured by a hook
        during the same pass: the critic reuses them instead of recomputing the lower layers.
        """
        captured: dict[str, torch.Tensor] = {}
        first_value_layer = self._decoder_layers()[self.num_layers - self.value_layers]

        def capture(_module, args, kwargs):
            captured["features"] = args[0] if args else kwargs["hidden_states"]

        handle = first_value_layer.register_forward_pre_hook(capture, with_kwargs=True)
        try:
            with torch.no_grad(), self.reference_mode():
                logits = self._causal_lm_logits(input_ids, attention_mask, response_length)
        finally:
            handle.remove()
        return logits, captured["features"].detach()

    def values(self, input_ids, attention_mask, response_length: int, features: torch.Tensor | None = None) -> torch.Tensor:
        """Critic values before each response token. → (B, T), float32.

        With `features` from `reference_forward` (and the short path validated), only the top k
        layers run; otherwise the whole trunk does.
        """
        self._activate(self._value_adapters())
        try:
            if features is not None and self.use_value_shortcut:
                hidden = self._top_layers(features, attention_mask[:, :-1])
            else:
                out = self._decoder()(
                    input_ids=input_ids[:, :-1],
                    attention_mask=attention_mask[:, :-1],
                    position_ids=position_ids_from_mask(attention_mask)[:, :-1],
                    use_cache=False,
                )
                hidden = out.last_hidden_state
        finally:
            self._activate(POLICY)
        hidden = hidden[:, -response_length:]  # (B, T, H)
        return self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)

    def _top_layers(self, features: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Run decoder layers L-k..L-1 and the final norm on (B, S', H) features. → (B, S', H)"""
        decoder = self._decoder()
        all_layers = decoder.layers
        # The trunk's own forward builds the causal mask and rotary embeddings; giving it only
        # the top layers and the features as its "embeddings" reuses that code unchanged.
        decoder.layers = nn.ModuleList(list(all_layers)[self.num_layers - self.value_layers :])
        try:
            out = decoder(
                inputs_embeds=features,
                attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask),
                use_cache=False,
            )
        finally:
            decoder.layers = all_layers
        return out.last_hidden_state

    @torch.no_grad()
    def validate_value_shortcut(self, input_ids, attention_mask, atol: float = 1e-3) -> bool:
        """Check the short critic path against the full one on a batch; pick the path. → True if short."""
        response_length = max(1, min(4, input_ids.size(1) - 1))
        _, features = self.reference_forward(input_ids, attention_mask, response_length)
        self.use_value_shortcut = True
        short = self.values(input_ids, attention_mask, response_length, features)
        self.use_value_shortcut = False
        full = self.values(input_ids, attention_mask, response_length)
        self.use_value_shortcut = bool(torch.allclose(short.float(), full.float(), atol=atol, rtol=1e-3))
        return self.use_value_shortcut

    # ------------------------------------------------------------------ sampling

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        max_new_tokens: int,
        temperature: float,
        eos_token_id: int,
        pad_token_id: int,
        greedy: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample responses from the policy. → (responses (B, T'), sampler log-probs (B, T')), T' ≤ max_new_tokens.

        Sampling is from exactly softmax(logits / temperature): no top-k, top-p or repetition
        penalty, and none of the model's stored generation defaults. The log-probs are the ones
        the sampler used (recorded during generation), which the self-check compares against a
        fresh forward pass. After a row's EOS, generation pads it with `pad_token_id`.
        """
        from transformers import GenerationConfig, LogitsProcessorList

        self._activate(POLICY)
        recorder = _SamplerLogprobs(1.0 if greedy else temperature)
        config = GenerationConfig(
            do_sample=not greedy,
            temperature=1.0,  # applied by the recorder, so what it records is what is sampled from
            top_k=0,
            top_p=1.0,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            use_cache=True,
        )
        # Fields left unset in `config` are filled from the model's stored generation config
        # (a checkpoint's repetition_penalty, top_p, ...): give it a blank one meanwhile.
        causal_lm = self.peft.get_base_model()
        stored = causal_lm.generation_config
        causal_lm.generation_config = GenerationConfig(eos_token_id=eos_token_id, pad_token_id=pad_token_id)
        try:
            sequences = self.peft.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                generation_config=config,
                logits_processor=LogitsProcessorList([recorder]),
            )
        finally:
            causal_lm.generation_config = stored
        responses = sequences[:, input_ids.size(1) :]
        return responses, recorder.finish(responses)

    # ------------------------------------------------------------------ state

    def adapter_state_dict(self, adapter: str) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        return {k: v.detach().clone() for k, v in get_peft_model_state_dict(self.peft, adapter_name=adapter).items()}

    def load_adapter_state_dict(self, adapter: str, state: dict[str, torch.Tensor], *, strict: bool = True) -> None:
        """Load adapter weights saved by `adapter_state_dict` (or PEFT's save format)."""
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(self.peft, state, adapter_name=adapter)
        unexpected = list(getattr(result, "unexpected_keys", []) or [])
        missing = [k for k in getattr(result, "missing_keys", []) or [] if f".{adapter}." in k and "lora_" in k]
        if strict and (unexpected or missing):
            problem = f"unknown weights {unexpected[:2]}" if unexpected else f"missing weights {missing[:2]}"
            raise ModelSetupError(f"adapter {adapter!r}: the saved weights do not fit this model ({problem})")
        self._set_requires_grad()

    def save_policy_adapter(self, directory: str | Path, base_model_name: str) -> Path:
        """Write the policy adapter as a standalone PEFT adapter dir (loads as adapter "default")."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in self.adapter_state_dict(POLICY).items()}
        save_file(state, str(directory / "adapter_model.safetensors"), metadata={"format": "pt"})
        config = self.peft.peft_config[POLICY].to_dict()
        config["base_model_name_or_path"] = base_model_name
        config["inference_mode"] = True
        config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}
        (directory / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
        return directory


class _SamplerLogprobs:
    """A logits processor that applies the temperature and records log p(sampled token).

    At each step it sees the scores for the next token; the token chosen from them is only
    known at the following step (the last column of `input_ids`), so it keeps one step of
    log-softmax pending and gathers it then: O(B) memory per step instead of O(B·V).
    """

    def __init__(self, temperature: float):
        self.temperature = temperature
        self.recorded: list[torch.Tensor] = []
        self._pending: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self._pending is not None:
            self.recorded.append(self._pending.gather(-1, input_ids[:, -1:]).squeeze(-1))
        scaled = scores / self.temperature
        self._pending = torch.log_softmax(scaled.float(), dim=-1)
        return scaled

    def finish(self, responses: torch.Tensor) -> torch.Tensor:
        """Sampler log-probs aligned with `responses` (B, T'). → (B, T')"""
        length = responses.size(1)
        if len(self.recorded) < length and self._pending is not None:
            self.recorded.append(self._pending.gather(-1, responses[:, len(self.recorded) : len(self.recorded) + 1]).squeeze(-1))
        self._pending = None
        if length == 0:
            return torch.zeros(responses.size(0), 0, device=responses.device)
        return torch.stack(self.recorded[:length], dim=1)


def _is_trainable_name(name: str) -> bool:
    if name.startswith("value_head."):
        return True
    return "lora_" in name and any(f".{adapter}." in name for adapter in (POLICY, VALUE))


def _linear_module_names(causal_lm, layer_indices: list[int], target_modules: str | list[str]) -> list[str]:
    """Full names of the linear layers inside the given decoder layers that LoRA should wrap."""
    prefix = None
    for name, module in causal_lm.named_modules():
        if isinstance(module, nn.ModuleList) and name.endswith("layers"):
            prefix = name
            break
    if prefix is None:
        raise ModelSetupError(f"{type(causal_lm).__name__}: cannot find its decoder layers")
    wanted = None if target_modules == "all-linear" else (
        [t.strip() for t in target_modules.split(",")] if isinstance(target_modules, str) else list(target_modules)
    )
    names = []
    for index in layer_indices:
        layer_prefix = f"{prefix}.{index}."
        for name, module in causal_lm.named_modules():
            if not name.startswith(layer_prefix) or not isinstance(module, nn.Linear):
                continue
            if wanted is None or name.rsplit(".", 1)[-1] in wanted:
                names.append(name)
    if not names:
        raise ModelSetupError(f"no linear modules matching {target_modules!r} in layers {layer_indices}")
    return names


def _target_list(target_modules: str | list[str]) -> str | list[str]:
    if isinstance(target_modules, str) and target_modules != "all-linear":
        return [t.strip() for t in target_modules.split(",") if t.strip()]
    return target_modules


def build_policy_value_model(
    policy: str | os.PathLike | ModelSource,
    *,
    load_in_4bit: bool = False,
    device: torch.device | str | None = None,
    adapters: AdapterSettings = AdapterSettings(),
    value_head_weight: torch.Tensor | None = None,
) -> PolicyValueModel:
    """Load the base once and put the policy, value and (for an SFT start) reference adapters on it.

    `policy` is a base model or a PEFT adapter directory (an SFT policy): then its weights start
    the policy adapter and a frozen copy is the reference. `value_head_weight` (1, H), e.g. the
    reward model's score head, initialises the value head; otherwise it is drawn from
    N(0, 1/(H+1)) (N+ detail 13). Trainable parameters are fp32 whatever the base's dtype.
    """
    from peft import PeftModel, get_peft_model

    source = policy if isinstance(policy, ModelSource) else resolve_model(policy)
    base_source = resolve_model(source.adapter_of) if source.kind == "adapter" else source
    base = load_causal_lm(base_source, load_in_4bit=load_in_4bit, device=device)
    num_layers = base.config.num_hidden_layers
    value_layers = num_layers if adapters.value_layers is None else min(adapters.value_layers, num_layers)
    value_targets = _linear_module_names(base, list(range(num_layers - value_layers, num_layers)), adapters.target_modules)

    if source.kind == "adapter":
        peft_model = PeftModel.from_pretrained(base, source.path, adapter_name=POLICY, is_trainable=True)
        peft_model.load_adapter(source.path, adapter_name=REFERENCE, is_trainable=False)
        reference_adapter = REFERENCE
    else:
        policy_config = lora_config("CAUSAL_LM", r=adapters.r, alpha=adapters.alpha, target_modules=_target_list(adapters.target_modules))
        peft_model = get_peft_model(base, policy_config, adapter_name=POLICY)
        reference_adapter = None
    value_config = lora_config("CAUSAL_LM", r=adapters.r, alpha=adapters.alpha, target_modules=value_targets)
    peft_model.add_adapter(VALUE, value_config)
    peft_model.set_adapter(POLICY)

    hidden = base.config.hidden_size
    value_head = nn.Linear(hidden, 1, bias=True, dtype=torch.float32)
    with torch.no_grad():
        if value_head_weight is not None:
            weight = value_head_weight.detach().float().reshape(-1)
            if weight.numel() != hidden:
                raise ModelSetupError(
                    f"value head: the reward model's score head has {weight.numel()} inputs but the policy's "
                    f"hidden size is {hidden} (different bases); use value_head_init='random'"
                )
            value_head.weight.copy_(weight.view(1, hidden))
        else:
            value_head.weight.normal_(0.0, 1.0 / (hidden + 1) ** 0.5)
        value_head.bias.zero_()
    value_head.to(base.device)
    for param in peft_model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    model = PolicyValueModel(peft_model, value_head, reference_adapter=reference_adapter, value_layers=value_layers)
    model.eval()  # dropout off everywhere, for sampling and training alike (N+ detail 12)
    return model


def portable_base_name(policy: str, source: ModelSource) -> str:
    """What to write as an adapter's base: something `resolve_model` finds on another machine too.

    The packaged alias stays the alias; an SFT adapter's base is its own recorded base; a local
    directory becomes absolute; a hub id stays as typed.
    """
    from rlhf.models import PACKAGED_SMOLLM2, SMOLLM2_HUB_ID

    if source.kind == "adapter":
        recorded = json.loads((Path(source.path) / "adapter_config.json").read_text())["base_model_name_or_path"]
        return portable_base_name(recorded, resolve_model(recorded))
    if str(policy).lower() in (PACKAGED_SMOLLM2, SMOLLM2_HUB_ID.lower()) or source.display_name == SMOLLM2_HUB_ID:
        return PACKAGED_SMOLLM2
    if source.kind == "local":
        return str(Path(source.path).resolve())
    return str(policy)


def base_model_path(policy: str | ModelSource) -> str:
    """The resolved local path (or hub id) of a model's base: for comparing two models' bases."""
    source = policy if isinstance(policy, ModelSource) else resolve_model(policy)
    path = source.adapter_of if source.kind == "adapter" else source.path
    return str(Path(path).resolve()) if Path(path).exists() else path


def load_policy_tokenizer(policy: str | ModelSource):
    """The policy's tokenizer, left-padded, pad token set (EOS when it has none)."""
    return load_tokenizer(policy, padding_side="left")


def describe_memory(model: PolicyValueModel) -> dict[str, Any]:
    """Bytes of base weights vs trainable weights (for logs and the sharing test)."""
    from rlhf.models import weights_footprint_bytes

    trainable = sum(p.numel() * p.element_size() for p in model.trainable_parameters())
    return {"total_bytes": weights_footprint_bytes(model), "trainable_bytes": trainable}
