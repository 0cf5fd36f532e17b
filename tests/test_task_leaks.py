"""Held-out sets share no example with the training set, and no trivial feature of an
example predicts its label (a logistic-regression probe stays within 3 points of chance)."""

from collections import Counter, defaultdict

import pytest
import torch

from loopformer.config import ModelConfig
from loopformer.tasks import TASKS, make_task
from loopformer.training.config import TrainConfig
from loopformer.training.sources import ExampleSource


def probe_accuracy(features: list[list[float]], labels: list[int]) -> tuple[float, float]:
    """A logistic regression fitted on the first two thirds, scored on the rest; returns
    (its accuracy, the majority-class rate on the same examples)."""
    x, y = torch.tensor(features, dtype=torch.float), torch.tensor(labels, dtype=torch.float)
    cut = 2 * len(labels) // 3
    x = (x - x[:cut].mean(0)) / x[:cut].std(0).clamp_min(1e-6)
    w = torch.zeros(x.shape[1] + 1, requires_grad=True)
    xb = torch.cat((x, torch.ones(len(x), 1)), 1)
    optimizer = torch.optim.LBFGS([w], max_iter=200)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xb[:cut] @ w, y[:cut])
        loss.backward()
        return loss

    optimizer.step(closure)
    accuracy = ((xb[cut:] @ w > 0).float() == y[cut:]).float().mean().item()
    positive = y[cut:].mean().item()
    return accuracy, max(positive, 1 - positive)


def lookup_accuracy(keys: list, labels: list[int]) -> tuple[float, float]:
    """The majority label of each key on the first two thirds, scored on the rest (an unseen
    key answers the majority class): a probe for cues that only a combination of features
    gives, which a linear model misses. Returns (its accuracy, the majority-class rate)."""
    cut = 2 * len(labels) // 3
    seen = defaultdict(Counter)
    for key, label in zip(keys[:cut], labels[:cut]):
        seen[key][label] += 1
    majority = Counter(labels[:cut]).most_common(1)[0][0]
    right = sum((seen[key].most_common(1)[0][0] if key in seen else majority) == label
                for key, label in zip(keys[cut:], labels[cut:]))
    positive = sum(labels[cut:]) / len(labels[cut:])
    return right / len(labels[cut:]), max(positive, 1 - positive)


def graph_features(ex):
    into = lambda v: sum(1 for _, b in ex.edges if b == v)
    out_of = lambda v: sum(1 for a, _ in ex.edges if a == v)
    return [into(ex.target), out_of(ex.target), into(ex.source), out_of(ex.source),
            len(ex.letters), len(ex.edges)]


def logic_features(ex):
    s = ex.text
    return [len(s), *(s.count(c) for c in "TF&|!("), s[0] == "T", s[0] == "!", s[-1] == "T",
            s.count("T") - s.count("F")]


def family_features(ex):
    words = ex.words
    start = len(words) - words[::-1].index(".")  # the query follows the last fact
    relation, facts = words[start + 3:-3], words[:start]
    return [len(relation), relation[-1] == "parent", relation[-1] == "child",
            relation[-1] == "sibling", len(words), facts.count("."), facts.count("sibling"),
            facts.count("parent"), facts.count("child")]


def family_roles(ex):
    """The query's relation, the fact counts, and for A and B: has a parent, a child, a
    sibling in the facts, and in how many facts each is named."""
    words = ex.words
    start = len(words) - words[::-1].index(".")
    a, b = words[start], words[-2]
    facts = [words[i:i + 7] for i in range(0, start, 7)]
    has = Counter()
    for x, _, _, relation, _, y, _ in facts:
        if relation == "sibling":
            has[x, "sibling"] += 1
            has[y, "sibling"] += 1
        else:
            parent, child = (x, y) if relation == "parent" else (y, x)
            has[parent, "child"] += 1
            has[child, "parent"] += 1
    roles = tuple(has[p, r] > 0 for p in (a, b) for r in ("parent", "child", "sibling"))
    named = tuple(sum(p in (f[0], f[5]) for f in facts) for p in (a, b))
    counts = tuple(sum(f[3] == r for f in facts) for r in ("parent", "child", "sibling"))
    return {"relation": tuple(words[start + 3:-3]), "roles": roles, "named": named,
            "counts": counts}


@pytest.mark.parametrize("fields", [("relation", "counts"), ("relation", "roles"),
                                    ("relation", "named"), ("relation", "roles", "counts")])
def test_no_combination_of_family_surfaces_predicts_the_label(fields):
    """Version 2 leaked through combinations: the relation with the number of vertical facts
    gave 0.69, with the roles of A and B 0.91 (both by this probe)."""
    examples = make_task("family").examples(6000, [2, 3, 4, 5], seed=11)
    keys = [tuple(family_roles(ex)[f] for f in fields) for ex in examples]
    accuracy, chance = lookup_accuracy(keys, [ex.label for ex in examples])
    assert accuracy <= chance + 0.03, (fields, accuracy, chance)


def test_the_lookup_probe_finds_a_combined_leak():
    """Two features each at chance whose exclusive-or is the label are found."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 2, (2, 3000), generator=g)
    accuracy, chance = lookup_accuracy(list(zip(x.tolist(), y.tolist())), (x ^ y).tolist())
    assert accuracy == 1.0 and chance < 0.55


def parity_features(ex):
    return [len(ex.bits), ex.bits[0], ex.bits[-1]]


# Logic at depth 1-2 is 2-7 symbols long, and one bit is its own parity: there the surface
# is the whole question.
PROBES = {"graph": (graph_features, [1, 2, 3, 4, 5]),
          "logic": (logic_features, list(range(3, 9))),
          "family": (family_features, [2, 3, 4, 5]),
          "parity": (parity_features, list(range(2, 13)))}


@pytest.mark.parametrize("name", sorted(PROBES))
def test_no_trivial_feature_predicts_the_label(name):
    features, complexities = PROBES[name]
    examples = make_task(name).examples(2400, complexities, seed=11)
    rows = [[float(v) for v in features(ex)] for ex in examples]
    labels = [ex.label for ex in examples]
    for columns in [list(range(len(rows[0])))] + [[i] for i in range(len(rows[0]))]:
        accuracy, chance = probe_accuracy([[r[i] for i in columns] for r in rows], labels)
        assert accuracy <= chance + 0.03, (name, columns, accuracy, chance)


def test_the_probe_finds_a_real_leak():
    """The probe is not blind: a feature equal to the label with 20% noise is found."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (1200,), generator=g)
    noisy = torch.where(torch.rand(1200, generator=g) < 0.2, 1 - labels, labels)
    accuracy, chance = probe_accuracy([[float(v)] for v in noisy], labels.tolist())
    assert accuracy > chance + 0.2


@pytest.mark.parametrize("name", sorted(TASKS))
def test_eval_sets_leave_out_the_training_set(name):
    task = make_task(name)
    train = task.train_set(600, seed=4)
    keys = {task.key(ex) for ex in train}
    for c in task.test_complexities[:3]:
        held_out = task.eval_set(c, 200, seed=4, exclude=keys)
        found = [task.key(ex) for ex in held_out]
        assert not keys & set(found) and len(set(found)) == len(found)


def test_a_source_evaluates_only_unseen_examples():
    """Chains over 4 entities and 2 relations have 8 one-hop questions: the training set holds
    them all, so the one-hop level has no held-out set; the 2-hop level holds the rest of its
    16 questions."""
    task = make_task("chains", num_entities=4, num_relations=2, train_complexities=(1, 2))
    cfg = TrainConfig(task="chains", train_examples=60, eval_examples=100, seed=0)
    source = ExampleSource(cfg, ModelConfig(vocab_size=6, d_model=16, n_heads=2), task)
    assert 1 not in source.eval_sets and 2 in source.eval_sets
    batch = source.eval_sets[2]
    questions = {(int(ids[-3]), int(ids[-2]), int(ids[-1])) for ids in batch["input_ids"]}
    trained = {(ex.entity, *(4 + r for r in ex.relations)) for ex in source.train_set
               if ex.complexity == 2}
    assert questions and not questions & trained and len(questions | trained) == 16
