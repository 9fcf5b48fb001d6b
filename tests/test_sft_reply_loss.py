"""`reply_token_loss` (the LM head at the labelled positions only) equals the full-logits loss, in value and gradients."""

from __future__ import annotations

import pytest
import torch

from rlhf.sft import reply_token_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch(vocab: int) -> dict[str, torch.Tensor]:
    """Two right-padded rows: a prompt (-100) then a reply; the second row is shorter (pads are -100 too)."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab, (2, 12), generator=generator)
    attention = torch.ones_like(ids)
    attention[1, 9:] = 0
    labels = ids.clone()
    labels[0, :5] = -100  # prompt of row 0
    labels[1, :3] = -100  # prompt of row 1
    labels[1, 9:] = -100  # padding of row 1
    return {"input_ids": ids, "attention_mask": attention, "labels": labels}


def _model(peft: bool):
    from tiny_models import build_causal_lm, build_tokenizer

    model = build_causal_lm(build_tokenizer())
    if peft:
        from peft import get_peft_model

        from rlhf.models import lora_config

        model = get_peft_model(model, lora_config("CAUSAL_LM", r=4, alpha=8, target_modules="all-linear"))
        for name, parameter in model.named_parameters():  # LoRA B starts at zero: make the adapter matter
            if "lora_B" in name:
                torch.nn.init.normal_(parameter, std=0.02)
    model.train()
    return model


def _loss_and_grads(model, loss_fn):
    model.zero_grad()
    loss = loss_fn()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("peft", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("num_items", [None, 7])
def test_reply_token_loss_equals_the_full_logits_loss_and_its_gradients(peft, num_items):
    model = _model(peft)
    batch = _batch(model.config.vocab_size)
    labelled = int((batch["labels"][:, 1:] != -100).sum())

    def full_logits():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()  # (B, S-1, V)
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch["labels"][:, 1:], reduction="sum", ignore_index=-100)
        return nll / (num_items or labelled)

    expected, expected_grads = _loss_and_grads(model, full_logits)
    got, got_grads = _loss_and_grads(model, lambda: reply_token_loss(model, dict(batch), num_items)[0])
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)
    assert expected_grads.keys() == got_grads.keys() and expected_grads
    for name, grad in expected_grads.items():
        assert torch.allclose(got_grads[name], grad, atol=1e-5, rtol=1e-5), name


def test_reply_token_loss_projects_only_the_labelled_positions():
    model = _model(peft=False)
    batch = _batch(model.config.vocab_size)
    _, logits = reply_token_loss(model, dict(batch))
    assert logits.shape == (int((batch["labels"][:, 1:] != -100).sum()), model.config.vocab_size)


def test_the_trainer_loss_equals_trls_own(tiny_model_dir, tmp_path):
    """The same batch through our trainer's loss and through TRL's fused-head loss (which scores every position)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from rlhf.models import load_causal_lm, load_tokenizer, resolve_model
    from rlhf.sft import _make_trainer_class

    tokenizer = load_tokenizer(tiny_model_dir, padding_side="right")
    ids = tokenizer("hello world please write a poem", add_special_tokens=False)["input_ids"]
    data = Dataset.from_dict({"input_ids": [ids, ids[:4]], "completion_mask": [[0, 0, 1, 1, 1, 1], [0, 1, 1, 1]]})
    losses = []
    for trainer_class in (SFTTrainer, _make_trainer_class()):
        model = load_causal_lm(resolve_model(str(tiny_model_dir)), device=torch.device("cpu"), dtype=torch.float32)
        args = SFTConfig(output_dir=str(tmp_path / trainer_class.__name__), completion_only_loss=True, use_cpu=True, bf16=False,
                         report_to=[], per_device_train_batch_size=2, max_length=32)
        trainer = trainer_class(model=model, args=args, train_dataset=data, processing_class=tokenizer)
        batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        trainer.model.train()
        losses.append(float(trainer.compute_loss(trainer.model, batch).detach()))
    assert losses[1] == pytest.approx(losses[0], abs=1e-5)
