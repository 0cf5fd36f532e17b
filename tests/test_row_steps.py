"""num_steps as a (B,) tensor: each batch row runs its own number of thinking steps, with the
answers of separate runs (the masking that per-token exits use)."""

import pytest
import torch

from loopformer import LoopLM, ModelConfig
from loopformer.model.depth import Depth
from loopformer.tasks import make_task
from loopformer.tasks.interfaces import build_task_model


def tiny(**overrides) -> ModelConfig:
    base = dict(vocab_size=32, d_model=32, n_heads=4, n_prelude=1, n_core=1, n_coda=1,
                injection="gated", state_init="embed", max_seq_len=16)
    return ModelConfig(**{**base, **overrides})


@pytest.mark.parametrize("injection", ["add", "concat", "gated", "lti"])
def test_rows_match_separate_runs_in_a_language_model(injection):
    torch.manual_seed(0)
    model = LoopLM(tiny(injection=injection)).eval()
    ids = torch.randint(0, 32, (3, 10))
    steps = torch.tensor([2, 5, 1])
    out = model(ids, num_steps=steps)
    for b, n in enumerate(steps.tolist()):
        alone = model(ids[b:b + 1], num_steps=n)
        torch.testing.assert_close(out.logits[b], alone.logits[0], rtol=1e-4, atol=1e-5)
    assert out.steps.tolist() == [[n] * 10 for n in steps.tolist()]


def test_rows_in_a_task_model_with_every_step_read_out_and_gradients():
    torch.manual_seed(0)
    task = make_task("logic")
    model = build_task_model(task, tiny(vocab_size=task.vocab_size, n_coda=0, causal=False,
                                        max_seq_len=64))
    batch = task.collate(task.examples(4, [2, 3], seed=0))
    steps = torch.tensor([3, 1, 4, 2])
    out = model(batch, steps, all_steps=True)
    assert len(out.logits) == 4 and out.steps.tolist() == steps.tolist()
    for b, n in enumerate(steps.tolist()):
        one = {k: v[b:b + 1] for k, v in batch.items()}
        alone = model(one, n).logits[-1][0]
        torch.testing.assert_close(out.logits[-1][b], alone, rtol=1e-4, atol=1e-5)
        # A row that stopped reads the same answer at every later step.
        torch.testing.assert_close(out.logits[n - 1][b], out.logits[-1][b])
    out.logits[-1].sum().backward()
    assert all(p.grad is not None for p in model.backbone.core.parameters() if p.requires_grad)


def test_row_steps_are_validated():
    model = LoopLM(tiny()).eval()
    ids = torch.randint(0, 32, (2, 4))
    with pytest.raises(ValueError, match=">= 1 in every row"):
        model(ids, num_steps=torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="one count per batch row"):
        Depth.of(torch.tensor([[1, 2]]))
    with pytest.raises(ValueError, match="has 3 rows but the batch has 2"):
        model(ids, num_steps=torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="learned halting"):
        LoopLM(tiny(halting="act"))(ids, num_steps=torch.tensor([1, 2]))
