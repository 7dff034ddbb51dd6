"""Out-of-fold calibration: does a threshold certified on one half of a base's questions hold on the other?

For each dataset (../shared/eval/atec, Chinese; ../shared/eval/stackfaq, English) it starts its own
throwaway stack (bench/_stack.py: Postgres+pgvector, Redis, one rerank worker with the configured
engine, `lite` by default), imports the FAQ with `kb_import`, embeds it, and asks every question once
through the real recall + rerank path (chat.evaluation.queries_score, as kb_eval and kb_calibrate do):
the labelled queries, each of them again with its relevant entries left out (simulated no-answer),
the off-topic questions, and (ATEC) the in-domain no-answer questions.

FAQ entries are split in two halves (seeded; StackFAQ by thread, so all answers of a thread fall in
one half) and queries follow their entry. For each fold the thresholds are fitted exactly as
kb_calibrate fits them (answer_threshold_search + suggest_threshold_choose on the fold's queries and
their left-out copies) and measured on the other half's queries, their left-out copies, and the
off-topic / in-domain no-answer questions (never used for fitting). Beside it, the same measurement
with the old fixed defaults (answer 0.7 / suggest 0.25) and with the uncalibrated rule (never answer).
Finally the AUROC of the rerank score on ATEC's human-labelled pairs.jsonl (query vs candidate).

    .venv/bin/python bench/calibration.py [--datasets atec,stackfaq] [--max-queries N] [--max-entries N]
                                          [--target 0.9] [--no-pairs] [--pairs N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _stack import PYTHON, ROOT, BenchStack, bench_stack, log
from tqdm import tqdm

EVAL = ROOT.parent / "shared" / "eval"
DATASETS = {"atec": ("zh", "atec-faq", EVAL / "atec"), "stackfaq": ("en", "stackfaq", EVAL / "stackfaq")}
OLD_DEFAULTS = (0.7, 0.25)
PAIR_BATCH = 16
CACHE = ROOT / "var" / "bench-cache"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def group_of(dataset: str, external_id: str) -> str:
    # StackFAQ: sf-<thread>-<answer>; every answer of a thread is relevant to its queries.
    return external_id.rsplit("-", 1)[0] if dataset == "stackfaq" else external_id


def half_of(group: str, seed: int) -> int:
    return hashlib.sha256(f"{seed}:{group}".encode()).digest()[0] % 2


@dataclass
class Asked:
    kind: str  # "query", "left_out", "offtopic", "indomain"
    half: int | None  # the half of its entry, for queries and their left-out copies
    observation: Any


def start_rerank_worker(stack: BenchStack) -> None:
    from rerank.heartbeat import rerank_workers_alive

    stack.spawn("rerank", [PYTHON, "-m", "celery", "-A", "kbservice", "worker", "-Q", "rerank", "-P", "threads",
                           "-c", "4", "--prefetch-multiplier", "1", "-n", "rerank-bench@%h", "-l", "INFO"])
    deadline = time.monotonic() + 300
    while not rerank_workers_alive():
        if problem := stack.exited():
            raise RuntimeError(problem)
        if time.monotonic() > deadline:
            raise RuntimeError("no rerank worker heartbeat within 300 s")
        time.sleep(1)


def faq_subset(stack: BenchStack, folder: Path, *, max_entries: int, max_queries: int | None, seed: int) -> Path:
    """Every entry a sampled query names, then random others up to ``max_entries``; written into the
    throwaway run folder (removed with the stack), never into the repository."""
    rng = random.Random(seed)
    queries = read_jsonl(folder / "queries.jsonl")
    if max_queries:
        queries = rng.sample(queries, min(len(queries), max_queries))
    faq = read_jsonl(folder / "faq.jsonl")
    wanted = {x for row in queries for x in row["relevant_ids"]}
    others = [row for row in faq if row["id"] not in wanted]
    keep = wanted | {row["id"] for row in rng.sample(others, max(0, min(len(others), max_entries - len(wanted))))}
    path = stack.run_dir / f"{folder.name}-faq-subset.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in faq if row["id"] in keep),
                    encoding="utf-8")
    log(f"{folder.name}: FAQ cut to {len(keep)} of {len(faq)} entries ({len(wanted)} named by the sampled queries)")
    return path


def load_kb(stack: BenchStack, name: str, language: str, faq_file: Path) -> Any:
    from knowledge.models import KnowledgeBase

    started = time.perf_counter()
    stack.manage("kb_import", str(faq_file), "--kb", name, "--language", language)
    stack.manage("kb_reembed", "--kb", name, "--missing")
    log(f"{name}: imported and embedded in {time.perf_counter() - started:.0f}s")
    return KnowledgeBase.objects.get(slug=name)


def cache_path(dataset: str, max_queries: int | None, max_entries: int | None, seed: int) -> Path:
    return CACHE / f"calibration-{dataset}-{max_queries or 'all'}-{max_entries or 'all'}-{seed}.json"


def asked_load(path: Path) -> tuple[list[Asked], str] | None:
    """Observations of an earlier run with the same data, sample and engine: asking is the slow part."""
    from chat.calibration import Observation

    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    return [Asked(row["kind"], row["half"], Observation(**row["observation"])) for row in saved["asked"]], \
        saved["identity"]


def asked_save(path: Path, asked: list[Asked], identity: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"identity": identity, "asked": [
        {"kind": a.kind, "half": a.half, "observation": asdict(a.observation)} for a in asked]}))


def ask_all(kb: Any, dataset: str, folder: Path, *, max_queries: int | None, seed: int) -> tuple[list[Asked], str]:
    from chat.evaluation import LabelledQuery, queries_score
    from knowledge.models import FaqEntry

    ids = dict(FaqEntry.objects.filter(kb=kb).values_list("external_id", "pk"))
    rng = random.Random(seed)  # the same draws as faq_subset's: the same queries
    queries = read_jsonl(folder / "queries.jsonl")
    offtopic = read_jsonl(folder / "no_answer_offtopic.jsonl")
    indomain = read_jsonl(folder / "no_answer_indomain.jsonl") if (folder / "no_answer_indomain.jsonl").exists() else []
    if max_queries:
        queries, offtopic, indomain = (rng.sample(rows, min(len(rows), max_queries))
                                       for rows in (queries, offtopic, indomain))
    items: list[tuple[str, int | None, Any]] = []
    for row in queries:
        relevant = frozenset(ids[x] for x in row["relevant_ids"])
        half = half_of(group_of(dataset, row["relevant_ids"][0]), seed)
        items.append(("query", half, LabelledQuery(query=row["query"], relevant=relevant)))
        items.append(("left_out", half, LabelledQuery(query=row["query"], relevant=frozenset(),
                                                      exclude=tuple(sorted(relevant)))))
    items += [("offtopic", None, LabelledQuery(query=row["query"], relevant=frozenset())) for row in offtopic]
    items += [("indomain", None, LabelledQuery(query=row["query"], relevant=frozenset())) for row in indomain]
    started = time.perf_counter()
    with tqdm(total=len(items), desc=f"{dataset}: asking", disable=None) as progress:
        run = queries_score(kb=kb, queries=[item for _, _, item in items], progress=progress.update)
    log(f"{dataset}: {len(items)} asks in {time.perf_counter() - started:.0f}s "
        f"(engine {run.engine}, model {run.model})")
    asked = [Asked(kind, half, scored.observation(top_n=kb.top_n))
             for (kind, half, _), scored in zip(items, run.scored, strict=True)]
    return asked, f"{run.engine}/{run.model}"


def measure(asked: Sequence[Asked], *, fit_half: int, target: float, confidence: float) -> dict[str, Any]:
    from chat.calibration import answer_threshold_search, decisions_report, suggest_threshold_choose
    from chat.services.ask import Thresholds, decide

    fit = [a.observation for a in asked if a.half == fit_half]
    found = answer_threshold_search(fit, target=target, confidence=confidence)
    suggest = suggest_threshold_choose(fit, answer_threshold=found.answer_threshold)
    rules = {
        "calibrated": Thresholds(answer=found.answer_threshold, suggest=suggest, calibrated=True),
        "old defaults 0.7/0.25": Thresholds(answer=OLD_DEFAULTS[0], suggest=OLD_DEFAULTS[1], calibrated=False),
        "uncalibrated (never answer)": Thresholds(answer=None, suggest=0.25, calibrated=False),
    }
    result: dict[str, Any] = {"fit_questions": len(fit), "answer_threshold": found.answer_threshold,
                              "suggest_threshold": suggest, "precision_bound": found.precision_bound,
                              "fit_coverage": found.coverage, "labels_needed": found.labels_needed, "rules": {}}
    for name, thresholds in rules.items():
        rows = {}
        for kind in ("query", "left_out", "offtopic", "indomain"):
            observations = [a.observation for a in asked if a.kind == kind and (a.half is None or a.half != fit_half)]
            if not observations:
                continue
            decisions = [decide(thresholds=thresholds, top_score=o.score, degraded=False,
                                has_candidates=o.score is not None) for o in observations]
            rows[kind] = decisions_report(observations, decisions)
        result["rules"][name] = rows
    return result


def pairs_auroc(folder: Path, limit: int | None) -> float | None:
    from chat.calibration import auroc
    from knowledge.models import DEFAULT_INSTRUCTION
    from rerank.batching import RerankRequest
    from rerank.services import rerank_score

    pairs = read_jsonl(folder / "pairs.jsonl")
    if limit:
        pairs = random.Random(0).sample(pairs, min(limit, len(pairs)))
    scores: list[float] = []
    for start in tqdm(range(0, len(pairs), PAIR_BATCH), desc="pairs", disable=None):
        batch = pairs[start:start + PAIR_BATCH]
        outcome = rerank_score(requests=[RerankRequest(query=p["query"], documents=[p["candidate"]],
                                                       instruction=DEFAULT_INSTRUCTION) for p in batch], timeout=600)
        if outcome.status != "ok":
            raise RuntimeError(f"rerank failed: {outcome.reason}")
        scores.extend(row[0] for row in outcome.scores)
    return auroc(scores, [bool(p["label"]) for p in pairs])


def fmt(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:5.3f}"


def print_report(dataset: str, identity: str, folds: list[dict[str, Any]]) -> None:
    print(f"\n== {dataset} ({identity}) ==")
    for fold_half, fold in enumerate(folds):
        print(f"fold: fit on half {fold_half} ({fold['fit_questions']} questions incl. left-out copies), measure on "
              f"half {1 - fold_half}: answer threshold {fold['answer_threshold']}, "
              f"suggest {fold['suggest_threshold']}, "
              f"bound {fmt(fold['precision_bound'])}, fit coverage {fmt(fold['fit_coverage'])}, "
              f"labels needed {fold['labels_needed']}")
        print(f"  {'rule':30} {'precision':>9} {'coverage':>8} {'answer':>6} {'suggest':>7} {'handoff':>7}"
              f" {'FA left-out':>11} {'FA off-topic':>12} {'FA in-domain':>12} {'AUROC':>6} {'ECE':>6}")
        for name, rows in fold["rules"].items():
            query = rows["query"]
            shares = {k: v / query.questions for k, v in query.decisions.items()}

            def rate(kind: str, rows: dict[str, Any] = rows) -> str:
                return fmt(rows[kind].false_answer_rate) if kind in rows else "  n/a"

            print(f"  {name:30} {fmt(query.answer_precision):>9} {fmt(query.coverage):>8} {shares['answer']:6.3f} "
                  f"{shares['suggest']:7.3f} {shares['handoff']:7.3f} {rate('left_out'):>11} {rate('offtopic'):>12} "
                  f"{rate('indomain'):>12} {fmt(query.auroc):>6} {fmt(query.ece):>6}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="atec,stackfaq")
    parser.add_argument("--max-queries", type=int, help="sample at most N of each question file (seeded)")
    parser.add_argument("--max-entries", type=int,
                        help="cut the FAQ to the entries the sampled queries name plus random others up to N "
                             "(fewer distractors: an easier base than the full one)")
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--no-pairs", action="store_true", help="skip the AUROC on atec/pairs.jsonl")
    parser.add_argument("--pairs", type=int, help="only a sample of N pairs (seeded)")
    parser.add_argument("--fresh", action="store_true", help=f"ask again rather than reuse {CACHE.name}/")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.datasets.split(",") if name.strip()]
    unknown = sorted(set(names) - set(DATASETS))
    if unknown:
        parser.error(f"unknown datasets {unknown}; choose from {sorted(DATASETS)}")
    for name in names:
        if not (DATASETS[name][2] / "faq.jsonl").exists():
            parser.error(f"{DATASETS[name][2]} is missing")
    with bench_stack("calibration") as stack:
        for name in names:
            language, slug, folder = DATASETS[name]
            path = cache_path(name, args.max_queries, args.max_entries, args.seed)
            loaded = None if args.fresh else asked_load(path)
            if loaded is None:
                if not stack.processes:
                    start_rerank_worker(stack)
                faq_file = folder / "faq.jsonl" if not args.max_entries else faq_subset(
                    stack, folder, max_entries=args.max_entries, max_queries=args.max_queries, seed=args.seed)
                kb = load_kb(stack, slug, language, faq_file)
                asked, identity = ask_all(kb, name, folder, max_queries=args.max_queries, seed=args.seed)
                asked_save(path, asked, identity)
            else:
                asked, identity = loaded
                log(f"{name}: observations from {path.relative_to(ROOT)} (--fresh asks again)")
            folds = [measure(asked, fit_half=half, target=args.target, confidence=args.confidence) for half in (0, 1)]
            print_report(name, identity, folds)
            if name == "atec" and not args.no_pairs:
                if not stack.processes:
                    start_rerank_worker(stack)
                pairs = args.pairs or 4000
                print(f"  AUROC of the rerank score on atec/pairs.jsonl ({pairs} labelled pairs): "
                      f"{fmt(pairs_auroc(folder, args.pairs))}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
