"""The workflow's plan (ordermerge/workflow/plan.py) without Snakemake: dimensions, targets, input
functions and code inputs of the default and the paper config; the rules' own text (every
rule staged once, named where it takes its resources); docs/reruns.md's table of what an edit
reruns."""
import re
from pathlib import Path
from types import SimpleNamespace as W

import pytest

from ordermerge.workflow import codedeps
from ordermerge.workflow.config import ConfigError, load
from ordermerge.workflow.plan import Plan, PlanError
from ordermerge.workflow.reruns import rerun_table, rule_scripts
from ordermerge.workflow.stages import RULES, STAGES, check_rules, stage_of

ROOT = Path(__file__).resolve().parent.parent
_RULE = re.compile(r"^\s*(?:use rule (\w+) as (\w+) with:|rule (\w+):|rule:\n\s+name:\n\s+(.+))$", re.M)


def rule_blocks():
    """(file name, rule name as written, parent rule or None, body) of every rule of
    rules/*.smk, read from their text: `rule NAME:`, `rule:` with `name:` (the name's
    expression as written, for a rule made in a loop) and `use rule PARENT as NAME with:`."""
    for f in sorted((ROOT / "rules").glob("*.smk")):
        text = f.read_text()
        heads = list(_RULE.finditer(text))
        for i, h in enumerate(heads):
            body = text[h.end():heads[i + 1].start() if i + 1 < len(heads) else len(text)]
            if h.group(1):
                yield f.name, h.group(2), h.group(1), body
            else:
                yield f.name, h.group(3) or h.group(4).strip(), None, body


def layer(tmp_path, text: str) -> Path:
    f = tmp_path / f"layer{len(list(tmp_path.iterdir()))}.yaml"
    f.write_text(text)
    return f


def test_the_paper_config_plans_every_table1_evaluation():
    """15 tasks x (20 runs + the merges: average, 5 seeds of selection, 5 of resample, Model
    Stock, Fisher merging, greedy soup, RegMean, SCE, the Karcher mean, Multi-SLERP,
    Breadcrumbs and 5 seeds of DELLA-linear; no ensemble: 20 7B models at once)."""
    p = Plan(load(ROOT / "config/paper.yaml"))
    assert len(p.tasks) == 15 and p.runs == list(range(20)) and p.seeds == [0, 1, 2, 3, 4]
    ids = p.method_ids("gsm8k")
    assert ids[0] == "avg" and len(ids) == 24 and sum(i.startswith("select-") for i in ids) == 5
    assert ids[11:18] == ["model-stock", "fisher-n256", "greedy-soup", "regmean-n256-a0.9",
                          "sce-t0.1", "karcher", "multislerp"]
    assert sum(i.startswith("della-linear-") for i in ids) == 5 and not p.config["merge"]["ensemble"]
    records = [path for _, path in p.table_records("1")]
    assert len(records) == len(set(records)) == 15 * 44
    gsm = [r for r in records if "/gsm8k/" in r]
    assert gsm[0] == "results/eval/llama-2-7b/gsm8k/shuffle/epoch3/sft/run0.json"
    # every record the tables read is a target or made for a table the default target asks for
    targets = set(p.all_targets())
    assert set(records) <= targets and "results/tables/table1.md" in targets


def test_dropping_a_task_removes_exactly_its_targets(tmp_path):
    off = layer(tmp_path, "multitask: {groups: {tiny: null}}\ntable2: null\nlora: null\n")
    before = Plan(load(off))
    cfg = load(off)
    del cfg["tasks"]["agnews"]
    after = Plan(cfg)
    gone = set(before.all_targets()) - set(after.all_targets())
    assert gone == {t for t in before.all_targets() if "/agnews/" in t} and len(gone) > 10
    assert set(after.all_targets()) <= set(before.all_targets())
    assert after.table_records("1") == [r for r in before.table_records("1") if "/agnews/" not in r[1]]


def test_the_default_config_plans_its_dimensions_and_paths():
    p = Plan(load())
    assert p.tasks == ["gsm8k", "sst2", "agnews", "glue_sst2"] and p.encoder_tasks == ["glue_sst2"]
    assert p.decoders == ["tiny-llama", "tiny-llama-s", "tiny-llama-lora"]
    assert p.encoders == ["tiny-bert", "tiny-bert-l"]
    # the LoRA runs (the lora section): the primary base, its adapter, the base an input of
    # every merge (the merge adds it to the merged update) and evaluation (the run folded in)
    lw = W(model="tiny-llama-lora", task="agnews", scheme="shuffle", run="0", epoch="3",
           kind="sft", method="avg")
    assert p.start_model(lw) == "results/base/tiny-llama/model" and p.is_lora(lw)
    assert p.train_cfg(lw)["adapter"]["r"] == 8 and p.train_cfg(lw)["lr"] == 5e-3
    assert p.merge_inputs(lw)["base"] == "results/base/tiny-llama/model"
    assert p.eval_inputs(lambda w: [])(lw)["base"] == "results/base/tiny-llama/model"
    assert "base" not in p.merge_inputs(W(model="tiny-llama", task="gsm8k", scheme="shuffle",
                                          epoch="3", method="avg"))
    assert len(p.table_records("1L")) == 4 + 1 + 3 + 3  # the runs, avg, select and resample seeds
    assert p.all_schemes == ["shuffle", "fix-batch"] and p.merge_epochs == [3] and p.report_epoch == 3
    w = W(model="tiny-bert", task="glue_sst2", scheme="shuffle", run="1", epoch="3", kind="sft",
          method="resample-n1-s0", name="run1")
    assert p.start_model(w) == "results/base/tiny-bert/init/glue_sst2"
    assert p.candidate_model(w, "run1") == "results/sft/tiny-bert/glue_sst2/shuffle/run1/epoch3"
    inputs = p.merge_inputs(w)
    assert inputs["base"] == p.start_model(w) and len(inputs["sub_models"]) == 4
    assert "ordermerge/merge/resample.py" in inputs["lib"] and "ordermerge/merge/ties.py" not in inputs["lib"]
    assert p.merge_params(W(method="avg")) == '{"weights": null}'
    # Table 2: the two decoders on sst2, the two encoders on glue_sst2
    models = [m for m, _ in p.table_records("2")]
    assert models[0] == "tiny-bert" and set(models) == {"tiny-bert", "tiny-bert-l", "tiny-llama", "tiny-llama-s"}
    # Figures: the runs' positions and scores, the merges' scores
    names = [n for n, _ in p.figure_inputs(1)]
    assert names.count("run0") == 2 and "avg" in names
    a = p.figures["anchor"]
    assert [n for n, path in p.figure_inputs(3) if path.endswith("samples.csv")] == [f"run{a}"]


def test_a_bad_layered_config_names_the_file_and_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"not a mapping"):
        load(layer(tmp_path, "- a list\n"))
    with pytest.raises(ConfigError, match=r"config key num_sub_model: unknown key"):
        load(layer(tmp_path, "num_sub_model: 3\n"))


def test_every_rule_is_staged_once_and_takes_its_own_resources():
    """A rule's threads and resources come from STAGES by its own name: each rule block of
    rules/*.smk names itself (a copied block naming another rule fails here)."""
    seen = set()
    for file, name, parent, body in rule_blocks():
        if parent:  # `use rule PARENT as NAME`: the parent's resources, of the same stage
            assert stage_of(name) == stage_of(parent), f"{file}: rule {name}"
            continue
        used = re.findall(r"P\.(?:threads|resources)\((.+?)\),?$", body, re.M)
        assert len(used) == 2 and len(set(used)) == 1, f"{file}: rule {name}: {used}"
        assert used[0] in (f'"{name}"', name), f"{file}: rule {name} takes {used[0]}'s resources"
        seen.add(name)
    assert {n for n in seen if not n.startswith(("f\"", "P."))} <= set(STAGES)
    assert stage_of("evaluate_multitask_g") == "evaluate" and stage_of("nope") is None
    with pytest.raises(PlanError, match="rule 'nope' has no stage"):
        Plan(load()).resources("nope")


def test_code_inputs_are_the_scripts_import_closure():
    code = {s: set(Plan.code(s)) for s in ("sft.py", "score.py", "evaluate.py", "merge.py", "figure.py")}
    # training depends on neither evaluation, scoring, the config checks nor the CLI
    assert not {f for f in code["sft.py"] if f.startswith("ordermerge/evaluate/")}
    assert {"ordermerge/sft.py", "ordermerge/objectives.py", "ordermerge/schema.py"} <= code["sft.py"]
    assert not code["sft.py"] & {"ordermerge/scoring.py", "ordermerge/workflow/config.py", "ordermerge/cli.py"}
    # scoring and evaluation are apart from the merge engine and from each other
    assert "ordermerge/merge/engine.py" not in code["score.py"] | code["evaluate.py"]
    assert "ordermerge/scoring.py" not in code["evaluate.py"]
    assert "ordermerge/train.py" not in code["merge.py"]  # models.py no longer reaches it
    # a method's own module is a merge's input through the registry, not the closure
    assert not any(f.endswith(("ties.py", "dare.py", "select.py")) for f in code["merge.py"])
    p = Plan(load())
    ties = set(p.merge_code("ties-d0.2-l1.0"))
    assert {"ordermerge/merge/ties.py", "ordermerge/merge/topk.py"} <= ties
    assert code["merge.py"] - {"ordermerge/merge/methods.py"} < ties
    assert "ordermerge/merge/dare.py" not in ties
    # not the registry: the job's param is its method's entry, which differs between methods
    assert "ordermerge/merge/methods.py" not in ties
    assert p.method_entry(W(method="ties-d0.2-l1.0")) != p.method_entry(W(method="ties-select-d0.2-l1.0-s0"))
    assert '"fused_tv_mode": 1' in p.method_entry(W(method="ties-d0.2-l1.0"))


def test_the_closure_follows_relative_imports_packages_and_function_level_imports(tmp_path):
    pkg = tmp_path / "ordermerge"
    (pkg / "sub").mkdir(parents=True)
    for f, text in {"__init__.py": "", "a.py": "from .sub import b\n", "c.py": "X = 1\n",
                    "sub/__init__.py": "", "sub/b.py": "def f():\n    from ..c import X\n    return X\n",
                    "unused.py": ""}.items():
        (pkg / f).write_text(text)
    script = tmp_path / "s.py"
    script.write_text("import os\nfrom ordermerge.a import *\n")
    got = [p.relative_to(pkg).as_posix() for p in codedeps.closure(script, pkg.resolve())]
    assert got == ["__init__.py", "a.py", "c.py", "sub/__init__.py", "sub/b.py"]
    # each file's imports are parsed once per version of it: an edit is seen by the next
    # closure (another script's, as the closure of one script is cached as a whole)
    (pkg / "c.py").write_text("from . import unused\nX = 1\n")
    other = tmp_path / "t.py"
    other.write_text("from ordermerge.a import *\n")
    got = [p.relative_to(pkg).as_posix() for p in codedeps.closure(other, pkg.resolve())]
    assert got == ["__init__.py", "a.py", "c.py", "sub/__init__.py", "sub/b.py", "unused.py"]


def test_every_rule_runs_the_script_its_declaration_names():
    """stages.py declares each rule's script once; the Snakefile holds rules/*.smk to it
    (check_rules), and every script is some rule's."""
    scripts = rule_scripts()
    assert scripts["merge_seeds"] == scripts["merge"] == "merge.py"
    assert scripts["merge_soup"] == "greedy_soup.py"  # `use rule merge` with its own script
    assert scripts["evaluate_runs"] == "evaluate.py" and scripts["figure{N}"] == "figure.py"
    assert scripts["evaluate_multitask_{GROUP}"] == "evaluate.py" and scripts["table{N}"] == "table.py"
    assert set(scripts.values()) == {p.name for p in (ROOT / "scripts").glob("*.py")}
    # the rules as Snakemake holds them: a rule's name and its named input `script`
    rule = lambda name, script: W(name=name, input=W(script=script))
    assert check_rules([rule("all", None), rule("merge", "scripts/merge.py"),
                        rule("table1", "scripts/table.py"),
                        rule("evaluate_multitask_g", "scripts/evaluate.py")]) == []
    assert check_rules([rule("merge_soup", "scripts/merge.py"), rule("new_rule", "scripts/x.py")]) == [
        "rule merge_soup runs scripts/merge.py, but ordermerge/workflow/stages.py declares "
        "scripts/greedy_soup.py",
        "rule new_rule is not declared in ordermerge/workflow/stages.py RULES"]
    # in the text of the rules: each rule's `script` input names its declared script
    for file, name, parent, body in rule_blocks():
        named = re.findall(r'P\.(?:script|script_inputs)\("([\w.]+)"\)', body)
        decl = RULES.get(name)
        if decl and named:
            assert named[0] == decl.script, f"{file}: rule {name}"


def test_the_readme_table_of_reruns_is_the_plans():
    """docs/reruns.md holds `python -m ordermerge.workflow.reruns`'s table as it is."""
    table = rerun_table()
    assert table in (ROOT / "docs" / "reruns.md").read_text(), \
        "docs/reruns.md's rerun table is stale: paste `python -m ordermerge.workflow.reruns` into it"
    row = next(line for line in table.splitlines() if "`merge/ties.py`" in line)
    assert "the merges of ties, ties_select only" in row
    assert any(line.startswith("| `layouts.py`, `schema.py`, `sft.py`, `sharding.py`, `train_args.py` | sft |")
               for line in table.splitlines())
    every = next(line for line in table.splitlines() if line.endswith("| every rule |"))
    assert "`utils.py`" in every
    registry = next(line for line in table.splitlines() if line.startswith("| `merge/methods.py`"))
    assert registry.endswith("multitask_merge: the merges of the methods whose entries changed only |")
    assert "multitask_align" not in registry  # the alignment reads no method
    assert registry.count("merge_seeds") == 1  # not also among the rules rerun in full


def test_a_new_table_is_one_registry_entry(monkeypatch, tmp_path):
    """A fifth table (Table 1 on the decoder tasks only) from one entry: planned, staged, its
    records read and placed, built and written, with no other file changed."""
    import dataclasses
    import json

    from ordermerge.report import registry, tables
    spec = dataclasses.replace(
        registry.TABLES["1"], number="5", what="Table 1 on the decoder tasks", always=False,
        records=lambda p: [(None, r) for r in p.eval_records("gsm8k", p.schemes[0], [p.report_epoch])],
        params=lambda p: {"stats": {"resamples": 200, "bootstrap": 100, "seed": 0}})
    monkeypatch.setitem(registry.TABLES, "5", spec)
    p = Plan(load())
    assert p.tables() == ["1", "1L", "2", "3", "4", "5"] and set(p.table_files("5")) <= set(p.all_targets())
    assert stage_of("table5") == "report" and p.resources("table5") == p.resources("table1")
    assert len(p.table_records("5")) == 4 + len(p.method_ids("gsm8k"))
    # its records, read back and placed in cells, and the table built from them
    ids = [f"gsm8k:{i}" for i in range(8)]
    args = []
    for k, (kind, name) in enumerate([("sft", "run0"), ("sft", "run1"), ("merged", "avg")]):
        f = tmp_path / f"{name}.json"
        examples = [{"id": i, "correct": (j + k) % 3 != 0} for j, i in enumerate(ids)]
        f.write_text(json.dumps({"task": "gsm8k", "kind": kind, "name": name, "scheme": "shuffle",
                                 "score": sum(e["correct"] for e in examples) / 8, "examples": examples}))
        args.append(str(f))
    records = tables.read_records(args, "5")
    assert tables.cells_of(records, "5") == [(None, "gsm8k", "single"), (None, "gsm8k", "single"),
                                             (None, "gsm8k", "weighted-avg")]
    table, md, tex = tables.build("5", records, json.loads(p.table_params("5"))["stats"])
    assert table.loc["weighted-avg", "gsm8k"] == pytest.approx(62.5) and "Table 5" in tex
    assert md == tables.build("1", records, json.loads(p.table_params("5"))["stats"])[1]
    with pytest.raises(ValueError, match="no table '6'"):
        tables.read_records(args, "6")


def test_the_memory_preflight_refuses_an_unsharded_7b_on_80_gb_and_accepts_it_over_8():
    paper = load(ROOT / "config/paper.yaml")
    p = Plan(paper).check()  # one H200 (139 GiB) per SFT job: accepted
    assert p.sharding() == (False, 1) and p.model_shape("tinyllama-1.1b").parameters() == 1_100_048_384
    paper["resources"]["sft"]["gpu_mem_gb"] = 80
    with pytest.raises(PlanError) as e:
        Plan(paper).check()
    lines = str(e.value).splitlines()
    assert lines[0] == "memory preflight:" and len(lines) == 1 + 12  # llama-2-7b on its 12 tasks
    assert lines[1].startswith("  sft of llama-2-7b on gsm8k needs about 102.7 GiB (weights 25.1, "
                               "gradients 25.1, optimizer 50.2, activations 8.9, logits 2.3), over "
                               "resources.sft.gpu_mem_gb = 80: shard it")
    paper["sft"].update(accelerate_config="config/accelerate/fsdp-7b-8gpu.yaml", num_processes=8)
    assert Plan(paper).check().sharding() == (True, 8)  # about 21 GiB per process: accepted


def test_the_preflight_names_a_model_without_sizes_and_checks_evaluation(tmp_path):
    cfg = load(layer(tmp_path, "model: {name: m7, source: some/hub-id}\n"
                               "resources: {sft: {gpu_mem_gb: 80}}\n"))
    with pytest.raises(PlanError, match=r"model m7: no sizes to estimate its memory from \(set its `shape`"):
        Plan(cfg).check()
    tiny = load(layer(tmp_path, "resources: {evaluate: {gpu_mem_gb: 0.001}}\n"))
    with pytest.raises(PlanError, match=r"evaluate of tiny-llama on gsm8k needs about .* \(weights .*"
                                        r"kv_cache .*\), over resources.evaluate.gpu_mem_gb = 0.001"):
        Plan(tiny).check()


def test_the_preflight_gives_vllm_its_share_of_the_gpu_and_one_sequence():
    """With evaluate.backend vllm the evaluation job needs the weights and one sequence's KV
    cache within gpu_memory_utilization of the GPU (vLLM fills the rest with cache); the
    transformers path needs its whole batch within the GPU."""
    paper = load(ROOT / "config/paper.yaml")
    assert paper["evaluate"]["backend"] == "vllm"
    paper["resources"]["evaluate"]["gpu_mem_gb"] = 48
    Plan(paper).check()  # 7B bf16: 12.6 GiB of weights and one 1.5k-token sequence within 0.9 x 48 GiB
    paper["evaluate"]["vllm"]["gpu_memory_utilization"] = 0.25
    with pytest.raises(PlanError, match=r"evaluate of llama-2-7b on alpaca needs about 1[34]\.\d "
                                        r"GiB .* over evaluate.vllm.gpu_memory_utilization 0.25 of "
                                        r"resources.evaluate.gpu_mem_gb = 48: raise"):
        Plan(paper).check()
    paper["evaluate"]["backend"] = "hf"  # batch 32 of prompt + 1,024 new tokens: too much
    with pytest.raises(PlanError, match=r"evaluate of llama-2-7b on alpaca .* over "
                                        r"resources.evaluate.gpu_mem_gb = 48: lower evaluate.batch_size"):
        Plan(paper).check()


def test_every_log_path_mirrors_its_benchmark_path():
    """The cost table finds a warm-forked job's CPU time in its log by the benchmark's path
    (report/cost.py job_log): each rule's log is its benchmark under results/logs/."""
    checked = 0
    for file, name, _, body in rule_blocks():
        logs = re.findall(r'log:\s*\n\s*"(results/logs/[^"]+)"', body)
        marks = re.findall(r'benchmark:\s*\n\s*"(results/benchmarks/[^"]+)"', body)
        if logs and marks:
            want = marks[0].replace("results/benchmarks/", "results/logs/", 1).removesuffix(".tsv") + ".log"
            assert logs[0] == want, f"{file}: rule {name}: log {logs[0]} for benchmark {marks[0]}"
            checked += 1
    assert checked >= 15


def test_each_data_aware_method_names_its_data_once():
    """merge/rundata.py declares each kind of per-run data a method reads; the plan takes
    a merge's extra inputs, arguments and params from it."""
    from ordermerge.merge.methods import METHODS, parse_method_id
    from ordermerge.merge.rundata import RUN_DATA, held_by, run_data
    readers = {m.data for m in METHODS.values() if m.data}
    assert readers == set(RUN_DATA) == {"diagonal_fisher", "input_gram", "validation_records"}
    assert all(d.rule in RULES and (ROOT / "scripts" / d.script).is_file() for d in RUN_DATA.values())
    p = Plan(load())
    w = W(model="tiny-llama", task="gsm8k", scheme="shuffle", epoch="3", method="fisher-n16")
    for mid in ("fisher-n16", "regmean-n8-a0.9", "greedy-soup", "avg"):
        data = run_data(METHODS[parse_method_id(mid)[0]])
        inputs = p.merge_inputs(w, mid)
        extra = set(inputs) - {"lib", "sub_models", "base"}
        assert extra == set(data.keys if data else ()), mid
        got = held_by(W(keys=lambda: inputs.keys()))
        assert got == ([data] if data else [])
    fisher = p.merge_inputs(w, "fisher-n16")["fisher_dirs"]
    assert fisher == [f"results/fisher/tiny-llama/gsm8k/shuffle/epoch3/run{r}-n16" for r in p.runs]
    assert p.base_arg(w, W(keys=lambda: ["fisher_dirs"], fisher_dirs=fisher[:2])) == \
        f"--fisher {fisher[0]} {fisher[1]}"
    grams = p.merge_inputs(w, "regmean-n8-a0.9")["gram_dirs"]
    assert grams == [f"results/gram/tiny-llama/gsm8k/shuffle/epoch3/run{r}-n8" for r in p.runs]
    assert p.base_arg(w, W(keys=lambda: ["gram_dirs"], gram_dirs=grams[:2])) == f"--gram {grams[0]} {grams[1]}"
    assert '"evaluate": {' in p.merge_params(w, "greedy-soup") and '"weights"' not in p.merge_params(w, "greedy-soup")


def test_the_seeds_jobs_make_the_seeds_a_spec_expands_over_and_no_other():
    """merge_seeds, evaluate_seeds and general_eval_seeds match the row ids some spec expands
    over merge.seeds; a spec naming its seed is one merge of the single-merge rules (the
    seeds job made every seed before, for one read)."""
    import re
    cfg = load()
    cfg["merge"]["methods"] = [{"method": "select"}, {"method": "della_linear", "seed": 0},
                               {"method": "resample"}]
    pattern = Plan(cfg).seeded_rows_pattern()
    assert re.fullmatch(pattern, "select") and re.fullmatch(pattern, "resample-n1")
    assert not re.fullmatch(pattern, "della-linear-d0.2-e0.1-l1.0") and not re.fullmatch(pattern, "dare-ties-p0.5-l1.0")
    cfg["merge"]["methods"] = [{"method": "average"}]
    cfg["table4"] = None
    cfg["figures"] = None
    cfg["general_eval"] = None
    cfg["lora"] = None
    cfg["table2"] = None
    assert re.fullmatch(Plan(cfg).seeded_rows_pattern(), "") is None
