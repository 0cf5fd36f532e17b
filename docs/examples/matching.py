"""Name matching alone, the skill the family task needs first, and a plain reference model.

A family text is answered only by finding the facts that name the query's people among many
other names. These two tasks ask for that skill and nothing else, with the number of names
as their complexity (docs/results.md, family):

- `Membership`: `<cls> n_1 … n_k <sep> q` — is the name q among the k distinct names?
- `PairBinding`: `<cls> x_1 y_1 . … x_k y_k . <sep> a b ?` — k facts of two names each (all
  2k names distinct); are a and b the two names of one fact? Both are always named somewhere.
  Position targets, read by a per-position head, ask for a lookup binding needs: `targets
  partner` labels each of a and b with the other name of its own fact; `targets mention`
  labels every name in the facts a, b or neither.

Both train in loopformer as user tasks (`--task matching:Membership`, run from this folder).
Run as a script, this file trains a plain PyTorch transformer encoder on one of them, or on
loopformer's family texts (`--task family`, size = chain length, `--targets mention` or
`relation`) — two layers unless `--layers`, learned positions, CLS readout, no loopformer
model — as a reference for how long the plateau lasts outside our model; with several sizes,
each batch mixes them and every size is evaluated:

    python matching.py --task membership --size 20 --updates 6000
    python matching.py --task membership --size 2 5 10 20 --updates 3000
    python matching.py --task pair-binding --size 2 --layers 4 --targets partner --updates 3000
    python matching.py --task family --size 1 --layers 4 --targets mention --updates 3000
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass

import torch
from torch import nn

from loopformer.tasks import FamilyRelations, Task
from loopformer.tasks.base import cls_batch, cls_position_labels

NAMES = 40
PAD, CLS, SEP, DOT, ASK = range(5)
FIRST_NAME = 5  # token id of name 0


@dataclass
class MatchingExample:
    tokens: list[int]
    label: int
    complexity: int
    targets: tuple[int, ...] = ()  # per token: a class (PairBinding.targets), -100 for none


class Membership(Task):
    name = "membership"
    interface = "classifier"
    vocab_size = FIRST_NAME + NAMES
    num_classes = 2
    model_defaults = {"n_prelude": 0, "n_coda": 0}
    train_defaults = {"updates": 1000, "train_examples": 20_000, "depth_low": 1,
                      "depth_high": 4, "eval_every": 100}

    def __init__(self, train_complexities=(5,), test_complexities=(2, 5, 10, 20),
                 max_len: int = 64):
        self.train_complexities = tuple(train_complexities)
        self.test_complexities = tuple(test_complexities)
        self.max_len = max_len

    def check_complexity(self, complexity: int) -> None:
        if not 1 <= complexity < NAMES:
            raise ValueError(f"membership: the number of names must lie in [1, {NAMES - 1}], "
                             f"got {complexity}")

    def sample(self, complexity: int, rng: random.Random) -> MatchingExample:
        names = rng.sample(range(NAMES), NAMES)
        shown, others = names[:complexity], names[complexity:]
        label = int(rng.random() < 0.5)
        query = rng.choice(shown if label else others)
        return MatchingExample([FIRST_NAME + n for n in shown] + [SEP, FIRST_NAME + query],
                               label, complexity)

    def collate(self, examples) -> dict[str, torch.Tensor]:
        return cls_batch([ex.tokens for ex in examples], examples, CLS)


class PairBinding(Membership):
    name = "pair-binding"

    def __init__(self, train_complexities=(6,), test_complexities=(2, 4, 6),
                 max_len: int = 64, targets: str | None = None):
        super().__init__(train_complexities, test_complexities, max_len)
        if targets not in (None, "partner", "mention"):
            raise ValueError(f"pair-binding: targets must be partner or mention, got {targets}")
        self.targets = targets
        self.num_position_classes = {None: 0, "partner": NAMES, "mention": 3}[targets]

    def check_complexity(self, complexity: int) -> None:
        if not 2 <= complexity <= NAMES // 2:
            raise ValueError(f"pair-binding: the number of facts must lie in [2, {NAMES // 2}], "
                             f"got {complexity}")

    def sample(self, complexity: int, rng: random.Random) -> MatchingExample:
        names = rng.sample(range(NAMES), 2 * complexity)
        facts = [names[2 * i:2 * i + 2] for i in range(complexity)]
        label = int(rng.random() < 0.5)
        if label:
            a, b = rng.choice(facts)
        else:  # one name from each of two facts
            first, second = rng.sample(facts, 2)
            a, b = rng.choice(first), rng.choice(second)
        if rng.random() < 0.5:
            a, b = b, a
        text = [t for x, y in facts for t in (FIRST_NAME + x, FIRST_NAME + y, DOT)]
        if self.targets == "mention":  # a name in the facts: 0 if a, 1 if b, 2 otherwise
            targets = [-100 if t == DOT else {a: 0, b: 1}.get(t - FIRST_NAME, 2) for t in text]
            targets += [-100] * 4
        else:
            partner = {x: y for x, y in facts} | {y: x for x, y in facts}
            targets = [-100] * (len(text) + 1) + [partner[a], partner[b], -100]
        return MatchingExample(text + [SEP, FIRST_NAME + a, FIRST_NAME + b, ASK], label,
                               complexity, tuple(targets))

    def collate(self, examples) -> dict[str, torch.Tensor]:
        batch = super().collate(examples)
        if self.targets:
            batch["position_labels"] = cls_position_labels(batch, [ex.targets for ex in examples])
        return batch


class ReferenceEncoder(nn.Module):
    """A plain pre-norm transformer encoder with learned positions and a CLS readout (and a
    per-position head where the task sets position targets)."""

    def __init__(self, vocab: int, max_len: int, d: int = 128, heads: int = 4, layers: int = 2,
                 position_classes: int = 0):
        super().__init__()
        self.embed, self.position = nn.Embedding(vocab, d), nn.Embedding(max_len, d)
        layer = nn.TransformerEncoderLayer(d, heads, 2 * d, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, 2)
        self.position_head = nn.Linear(d, position_classes) if position_classes else None

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(ids, mask)[:, 0])

    def features(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) + self.position(torch.arange(ids.shape[1], device=ids.device))
        return self.encoder(x, src_key_padding_mask=~mask.bool())


@torch.no_grad()
def held_out_accuracy(model: nn.Module, task: Membership, size: int,
                      rng: random.Random) -> float:
    batch = task.collate([task.sample(size, rng) for _ in range(512)])
    logits = model(batch["input_ids"], batch["attention_mask"])
    return float((logits.argmax(-1) == batch["label"]).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=["membership", "pair-binding", "family"],
                        default="membership")
    parser.add_argument("--size", type=int, nargs="+", default=[20],
                        help="names (membership) or facts; several: mixed in every batch")
    parser.add_argument("--updates", type=int, default=6000)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--targets", choices=["partner", "mention", "relation"], default=None,
                        help="per-position targets trained too: partner (pair-binding), "
                        "mention (pair-binding, family), relation (family)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    allowed = {"membership": [None], "pair-binding": [None, "partner", "mention"],
               "family": [None, "mention", "relation"]}[args.task]
    if args.targets not in allowed:
        parser.error(f"--targets {args.targets} does not belong to --task {args.task}")
    if args.task == "family":
        task = FamilyRelations(mention_targets=args.targets == "mention",
                               relation_targets=args.targets == "relation")
    else:
        task = Membership() if args.task == "membership" else PairBinding(targets=args.targets)
    try:
        for size in args.size:
            task.check_complexity(size)
    except ValueError as error:
        parser.error(str(error))
    rng, held_out = random.Random(args.seed), random.Random(args.seed + 1)
    model = ReferenceEncoder(task.vocab_size, task.max_len, layers=args.layers,
                             position_classes=getattr(task, "num_position_classes", 0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for update in range(1, args.updates + 1):
        sizes = [rng.choice(args.size) if len(args.size) > 1 else args.size[0]
                 for _ in range(64)]
        batch = task.collate([task.sample(size, rng) for size in sizes])
        features = model.features(batch["input_ids"], batch["attention_mask"])
        loss = nn.functional.cross_entropy(model.head(features[:, 0]), batch["label"])
        if "position_labels" in batch:  # mean over the labelled positions
            loss = loss + nn.functional.cross_entropy(
                model.position_head(features).flatten(0, 1), batch["position_labels"].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if update % 250 == 0 or update == args.updates:
            accuracy = {size: held_out_accuracy(model, task, size, held_out)
                        for size in args.size}
            print(f"update {update}: loss {loss.item():.3f}, held-out accuracy " +
                  ", ".join(f"{a:.3f}" if len(accuracy) == 1 else f"{size}: {a:.3f}"
                            for size, a in accuracy.items()), flush=True)


if __name__ == "__main__":
    main()
