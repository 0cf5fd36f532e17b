"""Language modelling on text (task "text"): a corpus in, a tokenizer and token cache saved with
the run, validation loss and perplexity out; resume and --config repeat it exactly."""

import json
import random

import pytest
from safetensors.torch import load_file

from loopformer.cli import main
from loopformer.training.run import read_metrics

SMALL = ["--model.d-model", "32", "--model.n-heads", "2", "--model.vocab-size", "300",
         "--model.max-seq-len", "33", "--train.tokenizer-vocab-size", "300", "--batch-size",
         "4", "--train.eval-every", "2", "--train.eval-examples", "8", "--no-progress"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(0)
    words = "the cat sat on a mat and a dog ran to the red house while birds sang".split()
    path = tmp_path_factory.mktemp("corpus") / "stories.jsonl"
    path.write_text("".join(json.dumps({"text": " ".join(rng.choice(words) for _ in range(60))})
                            + "\n" for _ in range(200)))
    return path


def weights(run, update):
    return load_file(run / f"ckpt-{update:07d}" / "model.safetensors")


def test_text_training_resume_and_repeat(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    main(["train", "--task", "text", "--data", str(corpus), "--updates", "2", "--out", str(run),
          *SMALL])
    assert "val_ppl" in capsys.readouterr().out
    assert (run / "tokenizer.json").is_file() and len(list(run.glob("tokens/*/val.bin"))) == 1
    record = read_metrics(run)[-1]
    assert record["eval"]["val_ppl"] > 1 and record["loss"] > 0
    main(["train", "--out", str(run), "--resume", "--updates", "4", "--no-progress"])
    assert [r["update"] for r in read_metrics(run)] == [1, 2, 3, 4]

    again = tmp_path / "again"  # the stored config (with the corpus path) repeats the run
    main(["train", "--config", str(run / "config.json"), "--out", str(again),
          "--no-progress"])
    for name, value in weights(run, 4).items():
        assert value.equal(weights(again, 4)[name]), name
    stored = json.loads((run / "config.json").read_text())["train"]
    assert stored["data"] == [str(corpus)] and stored["task"] == "text"


def test_text_needs_a_corpus_that_fits(corpus, tmp_path, capsys):
    def error(args):
        with pytest.raises(SystemExit):
            main(["train", "--task", "text", "--out", str(tmp_path / "run"), *SMALL, *args])
        return capsys.readouterr().err

    assert "no such file" in error(["--data", str(tmp_path / "missing.txt")])
    assert "--model.vocab-size 300" in error(["--data", str(corpus), "--model.vocab-size",
                                              "100"])
    assert "is a corpus for task 'text'" in error(["--task", "graph", "--data", str(corpus)])
    assert not (tmp_path / "run").exists()


def test_perplexity_generate_and_export(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    main(["train", "--task", "text", "--data", str(corpus), "--updates", "2", "--out", str(run),
          *SMALL])
    main(["perplexity", str(run), "--steps", "1", "3", "--examples", "4"])
    result = json.loads((run / "perplexity.json").read_text())
    assert result["steps"] == [1, 3] and all(p > 1 for p in result["perplexity"])
    assert (run / "perplexity.png").is_file()
    main(["analyze", str(run), "--examples", "2", "--steps", "8"])
    analysis = json.loads((run / "analysis" / "analysis.json").read_text())
    assert analysis["lens_metric"] == "loss" and analysis["tokens"] == 2 * 32
    assert (run / "analysis" / "lens.png").is_file()
    capsys.readouterr()
    main(["generate", str(run), "--prompt", "the cat", "--max-new-tokens", "5", "--steps", "2"])
    out = capsys.readouterr().out
    assert out.startswith("the cat") and "5 tokens" in out and "2.00 core steps per token" in out

    pytest.importorskip("transformers")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import loopformer.hf  # noqa: F401  (registers the Auto classes)
    from loopformer import LoopLM
    from loopformer.data.tokenizer import load_tokenizer

    main(["export", str(run), "--hf", str(tmp_path / "hf")])
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "the dog sat on the red mat"
    assert tokenizer(text)["input_ids"] == load_tokenizer(run / "tokenizer.json").encode(text).ids
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    hf_model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    lm = LoopLM.from_pretrained(tmp_path / "hf")
    torch.manual_seed(0)  # the text recipe starts the state from noise (Huginn)
    hf_tokens = hf_model.generate(ids, max_new_tokens=6, do_sample=False, num_steps=3)
    torch.manual_seed(0)
    assert torch.equal(hf_tokens, lm.generate(ids, 6, 3))
