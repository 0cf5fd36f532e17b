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

    assert "no corpus given: pass --data PATH" in error([])
    assert "no such file" in error(["--data", str(tmp_path / "missing.txt")])
    assert "--model.vocab-size 300" in error(["--data", str(corpus), "--model.vocab-size",
                                              "100"])
    assert "is a corpus for task 'text'" in error(["--task", "graph", "--data", str(corpus)])
    assert not (tmp_path / "run").exists()
