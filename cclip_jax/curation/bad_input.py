"""Accounting of bad input for the manifest: every rejected record and every damaged file.

Both runners fold the adapters' `Skip`s and `UnitProblem`s into one `BadInputLog` (the local
runner in read order, the Beam runner through a CombineFn that merges workers' partial logs),
so the rule is written once. Per reason the log keeps the full count and the first
`MAX_EXAMPLES` examples in input order. "First" is by ordinal, not by arrival, so the order in
which partial logs are merged does not matter and both runners write the same manifest; the
cap keeps the manifest small when an input has millions of bad records.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from typing import Any

from cclip_jax.curation.adapters import Skip, UnitProblem

MAX_EXAMPLES = 100  # examples kept per reason (records and files alike); counts are complete


def _trim(rows: list[tuple]) -> list[tuple]:
    return sorted(rows)[:MAX_EXAMPLES]


@dataclasses.dataclass
class BadInputLog:
    """Counts and first examples, per reason, of rejected records and damaged files.

    Attributes:
      records: skip reason -> number of records.
      record_examples: skip reason -> [(unit, index, key)], the smallest ordinals.
      files: unit problem -> number of units.
      file_examples: unit problem -> [(unit, complete records, detail)], the smallest units.
    """

    records: Counter = dataclasses.field(default_factory=Counter)
    record_examples: dict[str, list[tuple]] = dataclasses.field(default_factory=dict)
    files: Counter = dataclasses.field(default_factory=Counter)
    file_examples: dict[str, list[tuple]] = dataclasses.field(default_factory=dict)

    def add(self, item: Skip | UnitProblem) -> None:
        if isinstance(item, Skip):
            counts, examples, reason = self.records, self.record_examples, item.reason
            row: tuple = (*item.ordinal, item.key)
        else:
            counts, examples, reason = self.files, self.file_examples, item.problem
            row = (item.unit, item.records, item.detail)
        counts[reason] += 1
        rows = examples.setdefault(reason, [])
        rows.append(row)
        if len(rows) > 2 * MAX_EXAMPLES:  # trim now and then: amortised O(1) per bad record
            examples[reason] = _trim(rows)

    def merge(self, other: BadInputLog) -> BadInputLog:
        out = BadInputLog(self.records + other.records, {}, self.files + other.files, {})
        for mine, theirs, into in (
            (self.record_examples, other.record_examples, out.record_examples),
            (self.file_examples, other.file_examples, out.file_examples),
        ):
            for reason in mine.keys() | theirs.keys():
                into[reason] = _trim(mine.get(reason, []) + theirs.get(reason, []))
        return out

    def skipped(self) -> dict[str, int]:
        """Records skipped by reason (the manifest's `counts.skipped`)."""
        return dict(sorted(self.records.items()))

    def raw(self) -> dict[str, Any]:
        """Exact, JSON-able state (for passing the log from Beam workers to the driver)."""
        return {
            "records": dict(self.records),
            "files": dict(self.files),
            "record_examples": {r: _trim(v) for r, v in self.record_examples.items()},
            "file_examples": {r: _trim(v) for r, v in self.file_examples.items()},
        }

    @classmethod
    def from_raw(cls, d: dict[str, Any]) -> BadInputLog:
        # JSON turns tuples into lists; tuples again, so that sorting and equality still hold.
        return cls(
            Counter(d["records"]),
            {r: [tuple(x) for x in v] for r, v in d["record_examples"].items()},
            Counter(d["files"]),
            {r: [tuple(x) for x in v] for r, v in d["file_examples"].items()},
        )

    def report(self, units: list[Any]) -> dict[str, Any]:
        """The manifest's `bad_input`: per reason, the count and the first examples, each
        naming its file (`units[i]`, or the folder of a TFDS unit)."""

        def name(unit: int) -> str:
            u = units[unit]
            return u if isinstance(u, str) else u[0]

        records = {
            r: {
                "count": self.records[r],
                "examples": [
                    {"file": name(u), "key": k} for u, _, k in _trim(self.record_examples[r])
                ],
            }
            for r in sorted(self.records)
        }
        files = {
            p: {
                "count": self.files[p],
                "examples": [
                    {"file": name(u), "records": n, "detail": d}
                    for u, n, d in _trim(self.file_examples[p])
                ],
            }
            for p in sorted(self.files)
        }
        return {"examples_per_reason": MAX_EXAMPLES, "files": files, "records": records}


def describe_file(problem: str, records: int, detail: str) -> str:
    """One line saying what happened to a file (the console's and the docs' wording)."""
    if records == 0 and problem == "unreadable":
        return f"unreadable ({detail}); no record read"
    return f"{problem} after {records} complete records ({detail})"


def summary(report: dict[str, Any]) -> str:
    """One line of counts: skipped records by reason, damaged files by problem."""
    return (
        f"skipped records by reason: { ({r: e['count'] for r, e in report['records'].items()}) }"
        f"; damaged files by problem: { ({p: e['count'] for p, e in report['files'].items()}) }"
    )


def log_report(report: dict[str, Any]) -> None:
    """Names every damaged file (up to the cap) and the skip counts on the console."""
    for problem, entry in report["files"].items():
        for ex in entry["examples"]:
            logging.warning(
                "%s: %s", ex["file"], describe_file(problem, ex["records"], ex["detail"])
            )
        more = entry["count"] - len(entry["examples"])
        if more:
            logging.warning(
                "... and %d more %s files (counted in manifest.json bad_input)", more, problem
            )
    if report["records"]:
        logging.warning(
            "skipped records by reason: %s (first %d of each, with their file and "
            "key, in manifest.json bad_input.records)",
            {r: e["count"] for r, e in report["records"].items()},
            report["examples_per_reason"],
        )
