"""experiments/committee.py: the committee's answer, what it fixes and breaks, and the committed page."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from common.models import Entry, Model
from common.nn.network import Network
from common.runs import fingerprint
from common.stages import load_specs
from experiments import committee

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "results" / "committee"


def member(seed: int) -> Model:
    spec = load_specs(["04"])["04"]
    network = Network.from_sizes([784, 8, 10], np.random.default_rng(seed))
    return Model(Entry(spec.name, spec.name, "04", spec), seed, network, Path(f"seed{seed}.npz"),
                 {"pixel_scale": "unit", "fingerprint": "x"}, {})


def test_the_committee_answers_the_highest_mean_probability_and_counts_what_it_changes():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(200, 784), dtype=np.uint8)
    labels = rng.integers(0, 10, 200)
    members = [member(seed) for seed in range(3)]
    record = committee.committee_record("04", members, images, labels)
    probabilities = [m.network.predict_proba(images.astype(np.float32) / 255) for m in members]
    answers = np.mean(probabilities, axis=0).argmax(axis=1)
    assert record["committee_accuracy"] == np.mean(answers == labels)
    for accuracy, fixed, broken, p in zip(record["member_accuracies"], record["fixed"], record["broken"], probabilities):
        assert accuracy == np.mean(p.argmax(axis=1) == labels)
        assert round((record["committee_accuracy"] - accuracy) * len(labels)) == fixed - broken
    assert [e["index"] for e in record["errors"]] == list(np.flatnonzero(answers != labels))
    assert all(e["label"] != e["answer"] and 0 < e["probability"] <= 1 for e in record["errors"])
    forward = 784 * 128 + 128 * 64 + 64 * 10  # the members' entry: stage 04's [784, 128, 64, 10]
    assert record["forward_multiply_adds"] == {"member": forward, "committee": 3 * forward}


def test_a_bad_stage_is_one_line():
    finished = subprocess.run([sys.executable, "experiments/committee.py", "--stages", "99", "--no-train"],
                              cwd=REPO, capture_output=True, text=True)
    assert finished.returncode != 0 and "Traceback" not in finished.stderr
    assert finished.stderr.strip().splitlines() == [
        "error: no stage 99 in stages/; there are " + ", ".join(sorted(load_specs())),
    ]


def test_the_committed_page_comes_from_its_record_and_todays_models():
    saved = json.loads((COMMITTED / "committee.json").read_text(encoding="utf-8"))
    records = saved["committees"]
    assert (COMMITTED / "committee.md").read_text(encoding="utf-8") == committee.committee_markdown(
        records, saved["environment"])
    specs = load_specs()
    for record in records:
        spec = specs[record["stage"]]
        assert [m["fingerprint"] for m in record["models"]] == [fingerprint(spec, seed) for seed in committee.SEEDS], \
            f"the models of {spec.name} are not today's: run experiments/committee.py --out results/committee again"
        assert (COMMITTED / f"committee_errors_{record['stage']}.png").stat().st_size > 10_000
        assert len(record["errors"]) == round((1 - record["committee_accuracy"]) * 10_000)


def test_the_readme_quotes_the_committed_committee():
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    record = json.loads((COMMITTED / "committee.json").read_text(encoding="utf-8"))["committees"][-1]
    members = record["member_accuracies"]
    assert (f"{100 * record['committee_accuracy']:.2f} % where its members score "
            f"{100 * min(members):.2f} to {100 * max(members):.2f} %") in readme
    assert f"the {len(record['errors'])} test digits it still gets wrong" in readme
