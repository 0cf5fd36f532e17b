"""Each generator's labels are checked by an independent solver."""

import ast
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from loopformer.tasks import TASKS, make_task
from loopformer.tasks.family import NAMES, relation_words
from loopformer.tasks.family_tree import SELF, TARGET_OFFSETS, UNRELATED
from loopformer.tasks.graph import PAD_NODE


def reachable_hops(n, edges, source, target):
    """Plain BFS over an adjacency dict; None when unreachable."""
    seen, frontier, hops = {source}, [source], 0
    while frontier:
        if target in frontier:
            return hops
        frontier = [v for u in frontier for (a, v) in edges if a == u and v not in seen]
        seen.update(frontier)
        hops += 1
    return None


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), hops=st.integers(1, 17))
def test_graph_labels_and_hop_counts(seed, hops):
    ex = make_task("graph").sample(hops, random.Random(seed))
    n = len(ex.letters)
    assert ex.letters == sorted(set(ex.letters)) and 8 <= n <= max(16, hops + 3)
    found = reachable_hops(n, ex.edges, ex.source, ex.target)
    if ex.label == 1:
        assert found == hops  # distractors never shorten the path
    else:
        assert found is None
        assert any(v == ex.target for _, v in ex.edges)  # the target has an in-neighbour


def test_graph_classes_balanced_and_mask_is_in_neighbours():
    task = make_task("graph")
    examples = task.examples(400, [1, 3, 5], seed=0)
    assert 0.4 < sum(ex.label for ex in examples) / 400 < 0.6
    batch = task.collate(examples[:4])
    ex = examples[0]
    u, v = ex.edges[0]
    assert batch["adjacency"][0, v, u] and batch["adjacency"][0, u, u]
    n = len(ex.letters)
    assert (batch["node_ids"][0, n:] == PAD_NODE).all() and batch["node_mask"][0, n:].sum() == 0


def test_graph_rejects_impossible_hops():
    with pytest.raises(ValueError, match="hops must lie in"):
        make_task("graph").examples(1, [18], seed=0)


def python_value(text: str) -> bool:
    """The expression evaluated by Python (not > and > or, as in the task)."""
    return eval(text.replace("T", " True ").replace("F", " False ").replace("&", " and ")
                .replace("|", " or ").replace("!", " not "))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), depth=st.integers(1, 10))
def test_logic_labels_match_python_eval(seed, depth):
    ex = make_task("logic").sample(depth, random.Random(seed))
    assert python_value(ex.text) == bool(ex.label)


def python_operands(text: str) -> list[int]:
    """Per symbol, the value of the outermost operand ending there (-100: none), from Python's
    own parser: ! & | map one to one onto ~ & |, which Python ranks in the same order."""
    tree = ast.parse(text.translate(str.maketrans("!", "~")), mode="eval").body
    values = [-100] * len(text)

    def visit(node) -> bool:  # children first, so that outer operands overwrite inner ones
        if isinstance(node, ast.Name):
            value = node.id == "T"
        elif isinstance(node, ast.UnaryOp):
            value = not visit(node.operand)
        else:
            left, right = visit(node.left), visit(node.right)
            value = (left and right) if isinstance(node.op, ast.BitAnd) else (left or right)
        end = node.end_col_offset - 1
        if node.col_offset > 0 and text[node.col_offset - 1] == "(" and \
                end + 1 < len(text) and text[end + 1] == ")":
            end += 1  # the fewest parentheses: one pair, around exactly this operand
        values[end] = int(value)
        return value

    visit(tree)
    return values


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), depth=st.integers(1, 10))
def test_logic_operand_targets_match_pythons_parse(seed, depth):
    task = make_task("logic", operand_targets=True)
    ex = task.sample(depth, random.Random(seed))
    labels = task.collate([ex])["position_labels"][0].tolist()
    assert labels[0] == -100 and labels[1:] == python_operands(ex.text)
    assert labels[-1] == ex.label  # the whole expression ends on the last symbol
    assert "position_labels" not in make_task("logic").collate([ex])


def test_logic_depth_grows_and_labels_balance():
    task = make_task("logic")
    shallow, deep = task.examples(200, [2], 0), task.examples(200, [10], 0)
    assert sum(len(e.text) for e in deep) > 3 * sum(len(e.text) for e in shallow)
    assert 0.4 < sum(e.label for e in deep) / 200 < 0.6


def family_kinship(facts: str):
    """Kinship by CLUTRR's rules in a one-parent family tree, from the facts alone: parent
    links, sibling groups (union-find) sharing one parent, then a walk up from each end.
    Returns offset(a, b): how many generations a is above b (negative: below, 0: siblings),
    None where neither descends from the other."""
    group, parent_of = {}, {}

    def find(x):
        while group.setdefault(x, x) != x:
            x = group[x]
        return x

    links = []
    for fact in facts.split(" . "):
        x, _, _, relation, _, y = fact.replace(" .", "").split()
        if relation == "sibling":
            group[find(x)] = find(y)
        else:
            links.append((x, y) if relation == "parent" else (y, x))  # (parent, child)
    for parent, child in links:
        assert parent_of.setdefault(find(child), parent) == parent, "two parents"

    def up(x):
        return parent_of.get(find(x))

    def generations_above(a, b):  # a is this many generations above b, or None
        k, x = 0, b
        while x is not None and x != a:
            x, k = up(x), k + 1
        return k if x == a and k else None

    def offset(a, b):
        if a != b and (find(a) == find(b) or up(a) is not None and up(a) == up(b)):
            return 0  # a sibling fact chain, or one parent
        if generations_above(a, b):
            return generations_above(a, b)
        below = generations_above(b, a)
        return -below if below else None

    return offset


def solve_family(words):
    """Returns (the stated relation holds, the true offset of A over B)."""
    facts, query = " ".join(words).rsplit(" . ", 1)
    tokens = query.replace(" ?", "").split()
    a, b, relation = tokens[0], tokens[-1], tokens[3:-2]
    true = family_kinship(facts)(a, b)
    size = 1 + relation.count("great") + relation.count("grand")
    stated = 0 if relation[-1] == "sibling" else size if relation[-1] == "parent" else -size
    return stated == true, true


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), depth=st.integers(1, 12))
def test_family_labels_are_true_kinship(seed, depth):
    ex = make_task("family").sample(depth, random.Random(seed))
    holds, true = solve_family(ex.words)
    assert holds == bool(ex.label)
    assert abs(true) <= depth and len(set(w for w in ex.words if w in NAMES)) >= depth + 1


def test_family_chain_needs_every_fact():
    """The chain is the only link between the queried people: removing any chain fact leaves
    them unrelated (so the answer needs all K facts)."""
    task = make_task("family")
    for ex in task.examples(60, [2, 4, 6], seed=2):
        text = " ".join(ex.words)
        facts, query = text.rsplit(" . ", 1)
        facts = facts.split(" . ")
        needed = sum(solve_family(" . ".join(facts[:i] + facts[i + 1:] + [query]).split())[1]
                     is None for i in range(len(facts)))  # no longer kin without fact i
        assert needed == ex.complexity


def test_family_distractor_mix_shortens_training_texts_only():
    """train_distractor_mix: that fraction of the training texts keep 0 to K + 4 of their
    distractor facts; labels stay true kinship, and held-out texts keep them all."""
    task = make_task("family", train_distractor_mix=1.0)
    facts = lambda ex: ex.words.count(".")
    train = task.train_set(200, seed=3, complexities=[2, 3])
    assert {facts(ex) - ex.complexity for ex in train} == set(range(0, 8))
    for ex in train:
        assert solve_family(ex.words)[0] == bool(ex.label)
    assert 0.4 < sum(ex.label for ex in train) / len(train) < 0.6
    assert all(facts(ex) == 2 * ex.complexity + 4 for ex in task.eval_set(3, 50, seed=3))
    assert make_task("family").train_set(50, seed=3) == \
        make_task("family", train_distractor_mix=0.0).train_set(50, seed=3)
    with pytest.raises(ValueError, match="train_distractor_mix"):
        make_task("family", train_distractor_mix=1.5)


def test_family_relation_targets_are_kinship_to_a():
    task = make_task("family", relation_targets=True)
    examples = task.examples(40, [2, 4, 7], seed=5)
    batch = task.collate(examples)
    assert batch["position_labels"].shape == batch["input_ids"].shape
    for row, ex in enumerate(examples):
        facts = " ".join(ex.words).rsplit(" . ", 1)[0]
        offset, a = family_kinship(facts), ex.words[len(ex.words) - ex.words[::-1].index(".")]
        labels = batch["position_labels"][row, 1:1 + len(ex.words)].tolist()
        for word, label in zip(ex.words, labels):
            if word not in NAMES:
                assert label == -100
            elif word == a:
                assert label == SELF
            else:
                true = offset(a, word)
                assert label == (UNRELATED if true is None else TARGET_OFFSETS + true)
        assert (batch["position_labels"][row, 1 + len(ex.words):] == -100).all()
    assert "position_labels" not in make_task("family").collate(examples)


def test_family_mention_targets_flag_a_and_b_in_the_facts():
    task = make_task("family", mention_targets=True)
    examples = task.examples(40, [1, 3], seed=6)
    batch = task.collate(examples)
    assert task.num_position_classes == 3
    for row, ex in enumerate(examples):
        *facts, query = " ".join(ex.words).split(" . ")
        a, b = query.split()[0], query.split()[-2]
        expected = [{a: 0, b: 1}.get(word, 2) if word in NAMES else -100
                    for word in " . ".join(facts).split()] + [-100] * (len(query.split()) + 1)
        assert batch["position_labels"][row, 1:1 + len(ex.words)].tolist() == expected
        assert (batch["position_labels"][row, 1 + len(ex.words):] == -100).all()
    with pytest.raises(ValueError, match="choose one"):
        make_task("family", mention_targets=True, relation_targets=True)


def test_relation_words():
    assert relation_words(1) == ["parent"] and relation_words(-2) == ["grand", "child"]
    assert relation_words(4) == ["great", "great", "grand", "parent"]
    assert relation_words(0) == ["sibling"]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), hops=st.integers(1, 16))
def test_chains_by_direct_walk(seed, hops):
    task = make_task("chains")
    ex = task.sample(hops, random.Random(seed))
    entity = ex.entity
    for r in ex.relations:
        entity = task.permutations[r][entity]
    assert entity == ex.answer
    assert all(sorted(p) == list(range(200)) for p in task.permutations)  # permutations


def test_chains_options_set_the_training_hops_and_the_steps_per_hop():
    task = make_task("chains", train_hops=8, extra_steps=2)
    assert task.train_complexities == tuple(range(1, 9))
    assert task.thinking_steps(torch.tensor([1, 8, 12])).tolist() == [3, 10, 14]
    with pytest.raises(ValueError, match="train_hops"):
        make_task("chains", train_hops=0)


def test_modarith_split_is_disjoint_and_complete():
    task = make_task("modarith", modulus=11, train_fraction=0.4)
    train = {ex.operands for ex in task.train_set(0, seed=3)}
    held_out = {ex.operands for ex in task.eval_set(2, 10**6, seed=3)}
    assert not train & held_out and len(train | held_out) == 121
    assert abs(len(train) - 0.4 * 121) < 6  # 40% of the 66 unordered pairs, both orders
    assert all((b, a) in train for a, b in train)  # a swapped pair is no held-out question
    ex = task.eval_set(2, 1, seed=3)[0]
    assert ex.answer == (ex.operands[0] + ex.operands[1]) % 11


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_is_seeded_and_collates(name):
    task = make_task(name)
    c = task.train_complexities[-1]
    a, b = task.examples(8, [c], seed=5), task.examples(8, [c], seed=5)
    assert a == b and a != task.examples(8, [c], seed=6)
    batch = task.collate(a)
    assert batch["label"].shape == (8,) and (batch["complexity"] == c).all()
    ids = batch.get("input_ids", batch.get("node_ids"))
    assert int(ids.max()) < task.vocab_size and int(batch["label"].max()) < task.num_classes


def test_unknown_task():
    with pytest.raises(ValueError, match="unknown task"):
        make_task("sudoku")


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), bits=st.integers(1, 40))
def test_parity_labels_by_counting(seed, bits):
    task = make_task("parity")
    ex = task.sample(bits, random.Random(seed))
    assert len(ex.bits) == bits and ex.label == bin(int("".join(map(str, ex.bits)), 2)).count("1") % 2
    batch = task.collate([ex])
    assert batch["input_ids"][0, -1] == 3 and batch["input_ids"][0, 0] == 2
    assert task.thinking_steps(batch["complexity"]).tolist() == [bits + 2]


def test_parity_running_targets_by_counting():
    """Each bit's position is labelled with the count of ones up to it, mod 2 (left padding;
    BOS, `=` and padding carry no target)."""
    task = make_task("parity", running_targets=True)
    rng = random.Random(0)
    examples = [task.sample(n, rng) for n in (1, 5, 9)]
    batch = task.collate(examples)
    for row, ex in enumerate(examples):
        labels, ids = batch["position_labels"][row].tolist(), batch["input_ids"][row].tolist()
        start = len(ids) - len(ex.bits) - 1
        assert ids[start:-1] == list(ex.bits)
        assert labels[start:-1] == [ex.bits[:i + 1].count(1) % 2 for i in range(len(ex.bits))]
        assert set(labels[:start] + labels[-1:]) == {-100}
    assert "position_labels" not in make_task("parity").collate(examples)


def test_parity_due_steps_say_when_each_parity_arrives():
    """Bit i's parity is due at step i + extra_steps - 1 and the answer's (at `=`) at n +
    extra_steps, the task's own step count; BOS and padding have no due step (0)."""
    task = make_task("parity", due_steps=True, extra_steps=3)
    rng = random.Random(1)
    examples = [task.sample(n, rng) for n in (2, 6)]
    batch = task.collate(examples)
    for row, ex in enumerate(examples):
        n, due = len(ex.bits), batch["position_due"][row].tolist()
        assert due[-n - 1:] == [i + 2 for i in range(1, n + 2)]
        assert due[-1] == task.thinking_steps(torch.tensor(n))
        assert set(due[:-n - 1]) == {0}
    assert "position_due" not in make_task("parity").collate(examples)
    with pytest.raises(ValueError, match="extra_steps >= 1"):
        make_task("parity", due_steps=True, extra_steps=0)


def test_composition_world_and_splits():
    """Answers by a direct walk of the facts; trained compositions use ID facts only; the OOD
    queries' facts appear in no trained composition; the three sets are disjoint."""
    task = make_task("composition", num_entities=60, num_relations=8, facts_per_entity=4,
                     ood_fraction=0.2, inferred_ratio=2.0)
    E = task.num_entities
    for ex in task.train_set(0, seed=0):
        entity = ex.head
        for r in ex.relations:
            entity = task.facts[entity, r]
        assert entity == ex.answer
    used = set()
    for ex in task.trained_queries:
        bridge = task.facts[ex.head, ex.relations[0]]
        used |= {(ex.head, ex.relations[0]), (bridge, ex.relations[1])}
    assert not used & task.ood_facts
    for ex in task.ood_queries:
        bridge = task.facts[ex.head, ex.relations[0]]
        facts = {(ex.head, ex.relations[0]), (bridge, ex.relations[1])}
        assert facts <= task.ood_facts and not facts & used
    splits = task.eval_splits(10**6, seed=0)
    keys = {name: {task.key(ex) for ex in found} for name, found in splits.items()}
    assert keys["train"] == {task.key(ex) for ex in task.trained_queries}
    assert not keys["id"] & keys["train"] and not keys["ood"] & (keys["id"] | keys["train"])
    assert {(ex.head, ex.relations[0]) for ex in splits["ood_atomic"]} == task.ood_facts
    assert all(task.facts[ex.head, ex.relations[0]] == ex.answer for ex in splits["ood_atomic"])
    assert len(task.train_set(0, 0)) == len(task.facts) + len(task.trained_queries)
    repeated = make_task("composition", num_entities=60, num_relations=8, facts_per_entity=4,
                         ood_fraction=0.2, inferred_ratio=2.0, atomic_repeat=3).train_set(0, 0)
    assert sum(ex.complexity == 1 for ex in repeated) == 3 * len(task.facts)
    assert sum(ex.complexity == 2 for ex in repeated) == len(task.trained_queries)
    with pytest.raises(ValueError, match="atomic_repeat"):
        make_task("composition", atomic_repeat=0)
    batch = task.collate(splits["ood"][:3])
    assert batch["input_ids"].shape == (3, 3) and int(batch["input_ids"][:, 1:].min()) >= E
    assert "position_labels" not in batch


def test_composition_entity_targets_by_walking_the_facts():
    """entity_targets: the head's position is labelled with the head, the first relation's
    with the bridge; the answer's position and padding with -100."""
    task = make_task("composition", num_entities=60, num_relations=8, facts_per_entity=4,
                     ood_fraction=0.2, inferred_ratio=2.0, entity_targets=True)
    atomic, two_hop = task.train_set(0, 0)[0], task.trained_queries[0]
    labels = task.collate([atomic, two_hop])["position_labels"].tolist()
    assert labels[0] == [-100, atomic.head, -100]
    assert labels[1] == [two_hop.head, task.facts[two_hop.head, two_hop.relations[0]], -100]


def test_logic_length_mix_lengthens_training_only():
    plain, mixed = make_task("logic"), make_task("logic", train_length_mix=1.0)
    assert [e.text for e in plain.train_set(50, seed=3)] == \
        [e.text for e in plain.examples(50, plain.train_complexities, seed=3)]
    long_train = mixed.train_set(400, seed=3, complexities=[8])
    short_train = plain.train_set(400, seed=3, complexities=[8])
    assert {e.complexity for e in long_train} == {8}
    assert sum(len(e.text) for e in long_train) > 1.5 * sum(len(e.text) for e in short_train)
    assert all(python_value(ex.text) == bool(ex.label) for ex in long_train[:100])
    assert [e.text for e in mixed.eval_set(8, 20, seed=3)] == \
        [e.text for e in plain.eval_set(8, 20, seed=3)]
    with pytest.raises(ValueError, match="train_length_mix"):
        make_task("logic", train_length_mix=1.5)


def test_logic_asks_one_step_per_level_of_nesting():
    """With depth "task", a depth-d expression gets d + extra_steps thinking steps."""
    task = make_task("logic", extra_steps=3)
    batch = task.collate([task.sample(d, random.Random(d)) for d in (1, 5, 8)])
    assert task.thinking_steps(batch["complexity"]).tolist() == [4, 8, 11]
    assert make_task("logic").thinking_steps(torch.tensor([14])).tolist() == [16]
    with pytest.raises(ValueError, match="extra_steps"):
        make_task("logic", extra_steps=-1)


def test_logic_operand_heights_count_levels_not_parentheses():
    """A literal is 0, a NOT or a whole chain of one operator one above its highest operand;
    a group ends at its ")" with its content's height."""
    from loopformer.tasks.logic import operand_heights
    assert operand_heights("T&F&T|F") == [0, None, 1, None, 1, None, 2]
    assert operand_heights("!(T|F)&T") == [None, None, 0, None, 0, 2, None, 3]
