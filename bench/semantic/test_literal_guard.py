"""The Python literal guard reproduces guard_cases.jsonl, and the committed pairs.jsonl is what
make_pairs.py writes. Stdlib only: `python3 -m unittest bench/semantic/test_literal_guard.py`
(also collected by pytest). The same golden file is meant for the Rust implementation."""

import json
import sys
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import literal_guard  # noqa: E402
import make_pairs  # noqa: E402


def load_cases():
    return [json.loads(line) for line in (HERE / "guard_cases.jsonl").read_text().splitlines() if line.strip()]


class GoldenCases(unittest.TestCase):
    def test_literals_and_names(self):
        cases = [c for c in load_cases() if "text" in c]
        self.assertGreater(len(cases), 10)
        for c in cases:
            with self.subTest(text=c["text"]):
                self.assertEqual([list(x) for x in literal_guard.literals(c["text"])], c["literals"])
                self.assertEqual(sorted(literal_guard.names(c["text"])), c["names"])

    def test_pair_decisions(self):
        cases = [c for c in load_cases() if "a" in c]
        self.assertGreater(len(cases), 10)
        self.assertTrue(any(c["allow"] for c in cases) and not all(c["allow"] for c in cases))
        for c in cases:
            with self.subTest(a=c["a"], b=c["b"]):
                self.assertEqual(literal_guard.guard_allows(c["a"], c["b"]), c["allow"])
                # The rule is symmetric: which text was cached first must not matter.
                self.assertEqual(literal_guard.guard_allows(c["b"], c["a"]), c["allow"])


class Rules(unittest.TestCase):
    def test_multiset_not_set(self):
        # One "120 bpm" against two is a different request.
        self.assertFalse(literal_guard.guard_allows("120 bpm loop", "120 bpm loop into a 120 bpm loop"))

    def test_reason_names_the_difference(self):
        self.assertIn("90 bpm", literal_guard.guard_reason("a 90 bpm loop", "a 120 bpm loop"))
        self.assertEqual(literal_guard.guard_reason("a 90 bpm loop", "a loop at 90 BPM"), "")


class PairsFile(unittest.TestCase):
    def test_committed_pairs_match_generator(self):
        text = make_pairs.render(make_pairs.build())
        self.assertEqual((HERE / "pairs.jsonl").read_text(), text, "run bench/semantic/make_pairs.py")
        limits = make_pairs.render(make_pairs.build_limits())
        self.assertEqual((HERE / "limits.jsonl").read_text(), limits, "run bench/semantic/make_pairs.py")

    def test_duplicate_pair_is_refused(self):
        rows = make_pairs.build()
        dup = dict(rows[0], a=rows[0]["b"], b=rows[0]["a"])
        with self.assertRaises(SystemExit):
            make_pairs.check(rows + [dup])


if __name__ == "__main__":
    unittest.main()
