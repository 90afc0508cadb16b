"""How accurate qhealth is: the classifier and the Prometheus rules against labeled traces.

Scores the in-process classifier, and the rules run by the real ``promtool``, on
``shared/traces/wide/``, on fresh sets drawn by the simulator with other seeds, on
the traces recorded from real frameworks (``tests/fixtures/real/``), and on each of
them resampled to 30 s (a slow scraper). As ``shared/tools/score_traces.py`` does,
every labeled sample is weighted by its trace's sampling interval (per second of
labeled time), and a sample counts as right when the reported conditions are
exactly the labeled ones.

    python3 bench/accuracy.py                       # wide/, seeds 7301 and 7302, real fixtures
    python3 bench/accuracy.py --seeds 1 2 3 --no-rules

Prints a table by set, by condition, by sampling interval and by pool size, then,
last, ``accuracy: easy X hard Y false_alarms Z rules_fire_where_labeled W``
over every set: ``rules_fire_where_labeled`` is the share of labeled samples with a
condition at which the rules' ``queue:qhealth_condition:active`` holds exactly the
labeled conditions (evaluated by promtool at those samples).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from qhealth import Trace, classify, read_trace
from qhealth._config import ClassifierConfig
from qhealth.rules import RulesConfig, build, dump, render
from qhealth.rules.promtool import Segment, build_test, read_labels, resample

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
GENERATE = SHARED / "tools" / "tracegen" / "generate.py"


@dataclass
class Labeled:
    """One labeled trace as a scraper at its interval sees it."""

    name: str
    set_name: str
    trace: Trace
    segments: list[Segment]
    difficulty: str
    family: str
    workers: int | None


@dataclass
class Tally:
    right: float = 0.0
    total: float = 0.0

    def add(self, ok: bool, weight: float) -> None:
        self.total += weight
        self.right += weight if ok else 0.0

    @property
    def share(self) -> float | None:
        return self.right / self.total if self.total else None


@dataclass
class Scores:
    by: dict[tuple[str, str], Tally] = field(default_factory=lambda: defaultdict(Tally))

    def add(self, keys: Iterable[tuple[str, str]], ok: bool, weight: float) -> None:
        for key in keys:
            self.by[key].add(ok, weight)

    def get(self, kind: str, value: str) -> float | None:
        tally = self.by.get((kind, value))
        return tally.share if tally else None


def load_set(directory: Path, set_name: str, resample_to: float | None = None) -> list[Labeled]:
    out = []
    for path in sorted(directory.glob("*.jsonl")):
        labels_path = path.with_name(path.name.removesuffix(".jsonl") + ".labels.json")
        if not labels_path.exists():
            continue
        meta = json.loads(labels_path.read_text(encoding="utf-8"))
        trace, segments = read_trace(path), read_labels(labels_path)
        interval = trace.header.interval_s
        scenario = meta.get("scenario") or {}
        workers = (scenario.get("pool") or {}).get("workers") or scenario.get("workers")
        difficulty = str(meta.get("difficulty", "easy"))
        if resample_to is not None:
            every = round(resample_to / interval)
            if every <= 1 or abs(every * interval - resample_to) > 1e-9:
                continue
            cfg = ClassifierConfig()
            shift = cfg.span_for(resample_to) - float(meta.get("window_s") or cfg.span_for(interval))
            trace, segments = resample(trace, every, segments, window_shift_s=max(0.0, shift))
            difficulty = _difficulty(meta, resample_to, difficulty)
        item = Labeled(
            name=path.stem,
            set_name=set_name,
            trace=trace,
            segments=segments,
            difficulty=difficulty,
            family=str(meta.get("family", "?")),
            workers=int(workers) if isinstance(workers, int | float) else None,
        )
        if _labeled_points(item):  # a phase shorter than a slow scraper's window leaves none
            out.append(item)
    return out


def _difficulty(meta: dict[str, object], interval: float, default: str) -> str:
    """Hard: boom-bust sampled at an interval at least as long as the poll period."""
    scenario = meta.get("scenario")
    regimes = scenario.get("regimes", []) if isinstance(scenario, dict) else []
    periods = [
        float(r["mode"]["period"])
        for r in regimes
        if isinstance(r, dict) and isinstance(r.get("mode"), dict) and r["mode"].get("type") == "sync_poll"
    ]
    boom = any("boom_bust" in (r.get("label") or []) for r in regimes if isinstance(r, dict))
    return "hard" if boom and periods and interval >= min(periods) else default


def _labeled_points(item: Labeled) -> list[tuple[int, frozenset[str]]]:
    points = []
    for i, sample in enumerate(item.trace.samples):
        for segment in item.segments:
            if segment.t0 <= sample.t < segment.t1:
                points.append((i, segment.conditions))
                break
    return points


def _keys(item: Labeled, labeled: frozenset[str]) -> list[tuple[str, str]]:
    workers = item.workers
    size = "?" if workers is None else "3-9" if workers < 10 else "10-24" if workers < 25 else "25-50"
    family = "healthy" if not labeled and item.family == "healthy" else item.family
    return [
        ("set", item.set_name),
        ("difficulty", item.difficulty),
        ("family", family),
        ("interval", f"{item.trace.header.interval_s:g} s"),
        ("workers", size),
    ]


def score_classifier(items: list[Labeled]) -> tuple[Scores, Tally, Tally]:
    """Accuracy by key, and false alarms (healthy samples with a condition)."""
    scores, false_alarms, fired = Scores(), Tally(), Tally()
    for item in items:
        verdicts = classify(
            item.trace.samples, item.trace.header.interval_s, capacity=item.trace.header.capacity
        )
        weight = item.trace.header.interval_s
        for i, labeled in _labeled_points(item):
            got = {str(c) for c in verdicts[i].conditions}
            ok = got == labeled
            scores.add(_keys(item, labeled), ok, weight)
            if not labeled:
                false_alarms.add(bool(got), weight)
            else:
                fired.add(ok, weight)
    return scores, false_alarms, fired


_FAILED = re.compile(r'expr: "queue:qhealth_condition:active", time: (\S+?),')


def _failed_times(item: Labeled, promtool: str, tmp: Path, rule_file: str) -> set[float]:
    """The labeled times at which promtool found the rules' verdict wrong."""
    from qhealth.rules import parse_duration

    test = build_test(item.trace, item.segments, [rule_file], name=item.name)
    test_path = tmp / f"{item.set_name.replace(' ', '_')}-{item.name}.test.yml"
    test_path.write_text(dump(test), encoding="utf-8")
    command = [promtool, "test", "rules", str(test_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    failed = {round(parse_duration(t), 6) for t in _FAILED.findall(result.stdout + result.stderr)}
    if result.returncode != 0 and not failed:
        raise RuntimeError(f"promtool failed on {item.name}: {result.stderr[-500:]}")
    return failed


def score_rules(items: list[Labeled], promtool: str, jobs: int) -> tuple[Scores, Tally, Tally]:
    """The same scores for the rules: promtool evaluates the condition series at every labeled sample."""
    from concurrent.futures import ThreadPoolExecutor

    scores, false_alarms, fired = Scores(), Tally(), Tally()
    with tempfile.TemporaryDirectory(prefix="qhealth-accuracy-") as tmpdir:
        tmp = Path(tmpdir)
        rule_files: dict[float, str] = {}
        for interval in sorted({item.trace.header.interval_s for item in items}):
            path = tmp / f"rules-{interval:g}.yml"
            path.write_text(render(build(RulesConfig(scrape_interval_s=interval))), encoding="utf-8")
            rule_files[interval] = path.name
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            failures = list(
                pool.map(
                    lambda item: _failed_times(item, promtool, tmp, rule_files[item.trace.header.interval_s]),
                    items,
                )
            )
        for item, failed in zip(items, failures, strict=True):
            interval = item.trace.header.interval_s
            for i, labeled in _labeled_points(item):
                t = round(round(item.trace.samples[i].t / interval) * interval, 6)
                ok = t not in failed
                scores.add(_keys(item, labeled), ok, interval)
                if not labeled:
                    false_alarms.add(not ok, interval)
                else:
                    fired.add(ok, interval)
    return scores, false_alarms, fired


def draw(seed: int, into: Path) -> Path:
    target = into / f"seed-{seed}"
    if not (target / "MANIFEST.json").exists():
        subprocess.run(
            [sys.executable, str(GENERATE), "draw", str(target), "--seed", str(seed)],
            check=True,
            capture_output=True,
        )
    return target


def _fmt(x: float | None) -> str:
    return "  -  " if x is None else f"{x:.3f}"


def _order(value: str) -> tuple[float, str]:
    """Numbers in their order (1 s before 15 s), names alphabetically."""
    head = value.split(" ", maxsplit=1)[0].split("-", maxsplit=1)[0]
    try:
        return float(head), value
    except ValueError:
        return float("inf"), value


def print_table(title: str, classifier: Scores, rules: Scores | None) -> None:
    print(f"\n{title}")
    print(f"  {'':<22} {'classifier':>10} {'rules':>8}")
    kinds = ("set", "difficulty", "family", "interval", "workers")
    for kind in kinds:
        values = sorted({v for k, v in classifier.by if k == kind}, key=_order)
        for value in values:
            r = rules.get(kind, value) if rules else None
            print(f"  {kind + ' ' + value:<22} {_fmt(classifier.get(kind, value)):>10} {_fmt(r):>8}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[7301, 7302], help="fresh sets to draw")
    parser.add_argument("--no-rules", action="store_true", help="score the classifier only")
    parser.add_argument("--no-resample", action="store_true", help="skip the 30 s resampled sets")
    parser.add_argument("--jobs", type=int, default=2, help="promtool runs at once")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "qhealth-accuracy-sets")
    args = parser.parse_args(argv)

    sets: list[tuple[str, Path]] = [("wide", SHARED / "traces" / "wide")]
    args.cache.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        print(f"drawing seed {seed} ...", file=sys.stderr)
        sets.append((f"seed {seed}", draw(seed, args.cache)))
    real = ROOT / "tests" / "fixtures" / "real"
    if any(real.glob("*.labels.json")):
        sets.append(("real", real))
    items: list[Labeled] = []
    for name, directory in sets:
        items += load_set(directory, name)
        if not args.no_resample and name != "real":
            items += load_set(directory, f"{name} @30s", resample_to=30.0)

    classifier, c_false, c_fired = score_classifier(items)
    rules_scores = r_false = r_fired = None
    if not args.no_rules:
        promtool = shutil.which("promtool")
        if promtool is None:
            print("promtool not found: apt-get install prometheus (or pass --no-rules)", file=sys.stderr)
            return 2
        rules_scores, r_false, r_fired = score_rules(items, promtool, args.jobs)

    print(f"{len(items)} labeled traces: " + ", ".join(f"{n}" for n, _ in sets) + " (and each at 30 s)")
    print_table(
        "accuracy (share of labeled seconds with exactly the labeled conditions)", classifier, rules_scores
    )
    print(f"\n  false alarms (healthy seconds with a condition): classifier {_fmt(c_false.share)}", end="")
    print(f", rules {_fmt(r_false.share if r_false else None)}")
    print(f"  labeled conditions fired exactly: classifier {_fmt(c_fired.share)}", end="")
    print(f", rules {_fmt(r_fired.share if r_fired else None)}")
    easy, hard = classifier.get("difficulty", "easy"), classifier.get("difficulty", "hard")
    fired = r_fired.share if r_fired else None
    print(
        f"accuracy: easy {_fmt(easy)} hard {_fmt(hard)} false_alarms {_fmt(c_false.share)} "
        f"rules_fire_where_labeled {_fmt(fired)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
