import pytest
import torch

from loopformer import LoopLM, ModelConfig

INJECTION_SETUPS = [
    dict(injection="add", state_init="zeros"),
    dict(injection="concat", state_init="zeros"),
    dict(injection="lti", state_init="embed"),
    dict(injection="gated", state_init="embed"),
]


def tiny_config(**overrides) -> ModelConfig:
    # A larger init than the default makes each step change the logits visibly, so tests that
    # compare outputs can tell one depth from another.
    base = dict(init_std=0.2, step_embedding="learned")
    base.update(overrides)
    return ModelConfig.from_preset("tiny", **base)


def tiny_model(seed: int = 0, **overrides) -> LoopLM:
    torch.manual_seed(seed)
    return LoopLM(tiny_config(**overrides)).eval()


@pytest.fixture(params=INJECTION_SETUPS, ids=lambda d: d["injection"])
def injection_setup(request):
    return request.param


class CompileCounter:
    """A torch.compile backend that counts the graphs it is given and runs them as traced."""

    def __init__(self):
        self.count = 0

    def __call__(self, graph_module, example_inputs):
        self.count += 1
        return graph_module.forward
