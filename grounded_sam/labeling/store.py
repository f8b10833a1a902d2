"""A labelling job's folder: what it was asked (``job.json``) and each image's result as one JSON line.

Lines are appended and synced as each image finishes, so a run killed at any point loses at
most the image in flight; a line cut short by the kill is dropped on the next start and that
image is done again. ``job.json`` ties the folder to its models, prompt and settings: a
re-run with the same job skips what is done, a different job is refused rather than mixed in.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import InputError

JOB_FILE, RESULTS_FILE, ERRORS_FILE = "job.json", "results.jsonl", "errors.jsonl"


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line that was being written when the process died (it has no newline)."""
    if not path.exists():
        return
    with open(path, "rb+") as f:
        data = f.read()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            f.truncate(end)


def read_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The complete records of a JSON-lines file (a torn last line is skipped)."""
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.endswith("\n") and line.strip():
                yield json.loads(line)


def job_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


class LabelStore:
    """``with LabelStore(out, job) as store: store.done_names(); store.add(record)``."""

    def __init__(self, out: Path, job: dict[str, Any]) -> None:
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise InputError(f"--out {self.out} is a file: give a folder (it is created if missing)")
        self.out.mkdir(parents=True, exist_ok=True)
        job_path = self.out / JOB_FILE
        if job_path.exists() and any(read_lines(self.out / RESULTS_FILE)):  # a folder with no result yet is simply reused
            old = json.loads(job_path.read_text(encoding="utf-8"))
            changed = job_differences(old, job)
            if changed:
                raise InputError(
                    f"{self.out} holds a labelling run with other models, prompt or settings ("
                    + "; ".join(changed) + "): give a new --out, or delete that folder to start again"
                )
        else:
            job_path.write_text(json.dumps(job, indent=2) + "\n", encoding="utf-8")
        self.job = job
        _drop_torn_tail(self.out / RESULTS_FILE)
        self._results = open(self.out / RESULTS_FILE, "a", encoding="utf-8")  # noqa: SIM115 - open for the run
        # images that failed before are tried again: this file lists the failures of the latest run
        self._errors = open(self.out / ERRORS_FILE, "w", encoding="utf-8")  # noqa: SIM115

    def __enter__(self) -> LabelStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._results.close()
        self._errors.close()

    def done_names(self) -> set[str]:
        """``file_name`` of every image with a result on disk."""
        return {record["file_name"] for record in read_lines(self.out / RESULTS_FILE)}

    def add(self, record: dict[str, Any]) -> None:
        """One image's result line (or its error line), on disk before this returns."""
        target = self._errors if "error" in record else self._results
        target.write(json.dumps(record, separators=(",", ":")) + "\n")
        target.flush()
        os.fsync(target.fileno())
