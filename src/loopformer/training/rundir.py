"""The training process's hold on its run directory: an exclusive lock, what a killed writer
left removed, config.json written, metrics.jsonl appended one flushed line per update."""

from __future__ import annotations

import json
from pathlib import Path

from ..files import DirectoryLock, remove_temporaries, write_json_atomic, write_text_atomic
from .run import read_metrics


class RunWriter:
    """Use as a context manager around training; only the main process holds one."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.lock = DirectoryLock(self.out)
        self.metrics = None

    def __enter__(self) -> "RunWriter":
        if self.out.exists() and not self.out.is_dir():
            raise NotADirectoryError(f"--out {self.out} is a file, not a run directory")
        self.out.mkdir(parents=True, exist_ok=True)
        self.lock.__enter__()  # before anything is read or written
        self.removed = remove_temporaries(self.out)
        return self

    def start(self, config: dict, resumed_at: int | None) -> None:
        """Write config.json; start metrics.jsonl afresh, or keep its records up to the
        update a resumed run restarts from (later ones will be redone)."""
        write_json_atomic(self.out / "config.json", config)
        path = self.out / "metrics.jsonl"
        kept = [] if resumed_at is None or not path.exists() else \
            [r for r in read_metrics(self.out) if r["update"] <= resumed_at]
        write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
        self.metrics = open(path, "a")

    def log(self, record: dict) -> None:
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()

    def __exit__(self, *exc) -> None:
        if self.metrics is not None:
            self.metrics.close()
        self.lock.__exit__(*exc)
