"""How fast the case check is: N regression cases scored before and after one edit, with the lite engine.

Starts its own throwaway stack (bench/_stack.py) with one rerank worker, imports a subset of the ATEC
FAQ (../shared/eval/atec, read in place), adds up to 500 of its labelled queries as cases
(`kb_cases import`, expect "suggest"), then for each size checks an edit of one entry (faq_change_check:
the change applied in a rolled-back transaction) and, side by side in the same run, asks the same
cases once the plain way (chat.evaluation.queries_score, what kb_eval does). Prints seconds and
cases/second; a check scores every case twice (before and after).

    .venv/bin/python bench/case_check.py [--sizes 100,500] [--entries 1500] [--seed 7] [--profile]

``--profile``: each check also runs under cProfile, and the seconds of its stages are printed after it.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import random
import time

from _stack import PYTHON, ROOT, bench_stack, log

ATEC = ROOT.parent / "shared" / "eval" / "atec"
# The check's stages, as (module path ending, function) in the profile.
STAGES = [("selectors.py", "faq_queries_embed"), ("selectors.py", "faq_vector_search"),
          ("selectors.py", "faq_fulltext_search"), ("query.py", "in_bulk"), ("fusion.py", "fuse"),
          ("services.py", "rerank_score"), ("checks.py", "_outcome"), ("services.py", "faq_entries_embed"),
          ("changes.py", "apply"), ("selectors.py", "faq_recall")]


def stages_print(profile: cProfile.Profile) -> None:
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    for path, name in STAGES:
        calls = seconds = 0.0
        for (filename, _, function), (_, primitive, _, cumulative, _) in stats.items():
            if function == name and filename.endswith(path):
                calls, seconds = calls + primitive, seconds + cumulative
        print(f"    {name:<26} {int(calls):>5} calls {seconds:>7.2f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100,500")
    parser.add_argument("--entries", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", action="store_true")
    options = parser.parse_args()
    sizes = sorted(int(size) for size in options.sizes.split(","))
    rng = random.Random(options.seed)
    queries = [json.loads(line) for line in (ATEC / "queries.jsonl").read_text(encoding="utf-8").splitlines()]
    queries = rng.sample([row for row in queries if len(row["relevant_ids"]) == 1], max(sizes))
    faq = [json.loads(line) for line in (ATEC / "faq.jsonl").read_text(encoding="utf-8").splitlines()]
    wanted = {row["relevant_ids"][0] for row in queries}
    others = [row for row in faq if row["id"] not in wanted]
    keep = wanted | {row["id"] for row in rng.sample(others, max(0, options.entries - len(wanted)))}

    with bench_stack("case-check") as stack:
        faq_file = stack.run_dir / "faq.jsonl"
        faq_file.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in faq if row["id"] in keep),
                            encoding="utf-8")
        stack.manage("kb_import", str(faq_file), "--kb", "atec", "--language", "zh")
        stack.manage("kb_reembed", "--kb", "atec", "--missing")
        stack.spawn("rerank", [PYTHON, "-m", "celery", "-A", "kbservice", "worker", "-Q", "rerank", "-P", "threads",
                               "-c", "8", "--prefetch-multiplier", "1", "-n", "rerank-cases@%h", "-l", "INFO"])
        from chat.evaluation import LabelledQuery, queries_score
        from chat.services.checks import faq_change_check
        from knowledge.cases.changes import FaqChange
        from knowledge.models import FaqEntry, KnowledgeBase, RegressionCase
        from rerank.heartbeat import rerank_workers_alive

        while not rerank_workers_alive():
            if problem := stack.exited():
                raise RuntimeError(problem)
            time.sleep(1)
        kb = KnowledgeBase.objects.get(slug="atec")
        log(f"atec: {FaqEntry.objects.filter(kb=kb).count()} entries; rerank worker ready")
        queries_score(kb=kb, queries=[LabelledQuery(query=row["query"], relevant=frozenset()) for row in queries[:16]])
        edited = FaqEntry.objects.get(kb=kb, external_id=queries[0]["relevant_ids"][0])
        print(f"{'cases':>6} {'check s':>8} {'cases/s':>8} {'plain ask s':>12} {'check / plain':>14}")
        for size in sizes:
            RegressionCase.objects.filter(kb=kb).delete()
            cases_file = stack.run_dir / f"cases-{size}.jsonl"
            cases_file.write_text("".join(json.dumps({"query": row["query"], "relevant_ids": row["relevant_ids"],
                                                      "expect": "suggest"}, ensure_ascii=False) + "\n"
                                          for row in queries[:size]), encoding="utf-8")
            stack.manage("kb_cases", "import", str(cases_file), "--kb", "atec")
            change = FaqChange(op="update", kb_id=kb.pk, entry_ids=(edited.pk,), expected_version=edited.version,
                               data={"summary": edited.summary + "（补充说明）"})
            profile = cProfile.Profile() if options.profile else None
            started = time.perf_counter()
            if profile is not None:
                profile.enable()
            check = faq_change_check(kb=kb, change=change)
            checked = time.perf_counter() - started
            if profile is not None:
                profile.disable()
            started = time.perf_counter()
            queries_score(kb=kb, queries=[LabelledQuery(query=row["query"], relevant=frozenset())
                                          for row in queries[:size]])
            plain = time.perf_counter() - started
            assert check.cases == size
            print(f"{size:>6} {checked:>8.1f} {size / checked:>8.1f} {plain:>12.1f} {checked / plain:>14.2f}",
                  flush=True)
            if profile is not None:
                stages_print(profile)


if __name__ == "__main__":
    main()
