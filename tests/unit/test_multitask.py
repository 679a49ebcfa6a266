"""data.augment and data.tasks through the config, the real batch stream and train_run on tiny models:
augmenters' determinism and markup safety, sampling proportions at several T, per-task evaluation,
resume in the middle of a multi-task run, and config errors that name the key."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import Killed, killed_after
from loraforge.config import ConfigError, load_config
from loraforge.data.formats import DataError
from loraforge.data.augment import BT_TAG, PROTECTED
from loraforge.data.splits import encode_task, load_splits, load_task, prepare_datasets
from loraforge.train.batching import BatchStream, MixtureStream, make_stream

PAIRS = Path(__file__).parents[1] / "fixtures" / "core" / "pairs.jsonl"
MARKUP = ("Run `kubectl get pods` to list the {{< glossary_tooltip text=\"Pods\" term_id=\"pod\" >}} in the "
          "[default namespace](/docs/concepts/namespaces/) of https://k8s.io now and then again later.")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def pairs_file(path: Path, n: int, prefix: str = "p") -> Path:
    """n en/zh pairs, every one with markup the noise must keep whole."""
    zh = ("步：运行 `kubectl get pods` 列出 {{< glossary_tooltip text=\"Pods\" term_id=\"pod\" >}}，参见"
          "[默认命名空间](/docs/concepts/namespaces/) 和 https://k8s.io 。")  # all the markup: kept when protected
    return write_jsonl(path, [{"id": f"{prefix}{i}", "en": f"Step {i}: " + MARKUP, "zh": f"第 {i} {zh}"}
                              for i in range(n)])


def pii_file(path: Path, n: int) -> Path:
    return write_jsonl(path, [{"id": f"q{i}", "text": f"Call Erin Smith at 555-010{i % 10} today.",
                               "masked": "Call [NAME] at [PHONE] today."} for i in range(n)])


def tasks_override(tasks: list[dict]) -> str:
    return f"data.tasks={json.dumps(tasks)}"


# --- config ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("tasks, extra, key", [
    ([{"train": "a.jsonl"}, {"train": "b.jsonl", "task": "translat"}], [], "data.tasks[1].task"),
    ([{"train": "a.jsonl", "systme_prompt": "x"}], [], "data.tasks[0].systme_prompt"),
    ([{"task": "pii"}], [], "data.tasks[0].train"),
    ([{"train": "a.jsonl", "name": "bad name"}], [], "data.tasks[0].name"),
    ([{"train": "a.jsonl"}, {"train": "b.jsonl"}], [], "data.tasks[i].name"),  # both default to en-zh
    ([{"train": "a.jsonl", "task": "pii", "augment": {"noise": {"dropout": 0.1}}}], [], "data.tasks[0].augment"),
    ([{"train": "a.jsonl", "task": "pii"}], ["data.augment.noise.shuffle_k=2"], "data.augment"),
    ([{"train": "a.jsonl", "name": "x"}], ["data.task_weights={y: 1}"], "data.task_weights"),
    ([{"train": "a.jsonl"}], ["data.train=b.jsonl"], "data.train"),
    ([{"train": "a.jsonl", "augment": {"noise": {"dropout": 1.5}}}], [], "data.tasks[0].augment.noise.dropout"),
    ([{"train": "a.jsonl", "augment": {"back_translation": {"ratio": 1}}}], [],
     "data.tasks[0].augment.back_translation.file"),
])
def test_a_bad_task_entry_is_an_error_naming_the_key(tasks, extra, key):
    with pytest.raises(ConfigError) as e:
        load_config(None, [tasks_override(tasks), *extra])
    assert key in str(e.value)
    if "systme" in key:  # an unknown key lists the keys a task entry takes
        assert "system_prompt" in str(e.value) and "src_lang" in str(e.value)


def test_multi_task_only_keys_without_tasks_and_bad_augment_values_name_the_key():
    for override, key in (("data.task_temperature=5", "data.task_temperature"),
                          ("data.augment.noise.insertion=1", "data.augment.noise.insertion"),
                          ("data.augment.back_translation.ratio=-1", "data.augment.back_translation.ratio"),
                          ("data.augment.nois.dropout=0.1", "data.augment.nois")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(None, [override])
    with pytest.raises(ConfigError, match="data.augment: augmentation applies to data.task=translate"):
        load_config(None, ["data.task=pii", "data.augment.noise.dropout=0.1"])


def test_single_task_config_is_unchanged_and_tasks_inherit_what_they_do_not_set(tmp_path):
    single = load_config(None)
    assert single.data.tasks is None and single.data.task_configs() == [("translate", single.data)]
    saved = single.to_yaml()
    assert "tasks" not in saved and "task_temperature" not in saved and "train: k8s:train" in saved
    cfg = load_config(None, ["data.system_prompt=shared", "data.max_length=64", tasks_override([
        {"train": "a.jsonl", "test": "t.jsonl"},
        {"train": "a.jsonl", "src_lang": "zh", "tgt_lang": "en", "system_prompt": "zh to en"},
        {"task": "pii", "train": "p.jsonl", "name": "mask"},
        {"task": "pii", "train": "p.jsonl", "name": "long", "max_length": 384}])])
    resolved = dict(cfg.data.task_configs())
    assert list(resolved) == ["en-zh", "zh-en", "mask", "long"]
    assert resolved["long"].max_length == 384  # a task's own limit, the others inherit data.max_length
    assert (resolved["en-zh"].system_prompt, resolved["zh-en"].system_prompt) == ("shared", "zh to en")
    assert (resolved["zh-en"].src_lang, resolved["zh-en"].tgt_lang) == ("zh", "en")
    assert resolved["en-zh"].test == "t.jsonl" and resolved["zh-en"].test is None  # splits never inherited
    assert resolved["mask"].max_length == 64 and resolved["mask"].task == "pii"
    path = tmp_path / "config.yaml"
    path.write_text(cfg.to_yaml())  # a run's saved config loads back under the checks, same tasks
    back = load_config(path)
    assert back == cfg and dict(back.data.task_configs()) == resolved
    assert "train: k8s:train" not in path.read_text()


def test_each_task_drops_examples_over_its_own_max_length(tiny_tokenizer, tmp_path):
    """Long PII texts beside short translation segments: a task's max_length drops only its own rows."""
    train = write_jsonl(tmp_path / "t.jsonl", [{"id": f"p{i}", "en": "word " * (4 * i + 1), "zh": "字" * (4 * i + 1)}
                                               for i in range(8)])
    entry = {"train": str(train), "dev": None, "test": None}
    base = load_config(None, [tasks_override([entry]), "data.max_length=512"])
    lengths = sorted(len(x.input_ids) for x in prepare_datasets(base, tiny_tokenizer, "causal").tasks["en-zh"].train.encoded)
    cut = (lengths[3] + lengths[4]) // 2  # keeps the four shortest
    assert lengths[3] < cut < lengths[4]
    cfg = load_config(None, [tasks_override([{**entry, "name": "long"}, {**entry, "name": "short", "max_length": cut}]),
                             "data.max_length=512"])
    data = prepare_datasets(cfg, tiny_tokenizer, "causal")
    assert {k: len(t.train) for k, t in data.tasks.items()} == {"long": 8, "short": 4}
    assert {k: t.dropped_too_long["train"] for k, t in data.tasks.items()} == {"long": 0, "short": 4}
    # a limit that drops every row: the error names the key that set it, the task's own or data's
    too_short = load_config(None, [tasks_override([{**entry, "name": "long"}, {**entry, "name": "short", "max_length": 8}]),
                                   "data.max_length=512"])
    with pytest.raises(DataError, match=r"longer than data\.tasks\[1\]\.max_length=8"):
        prepare_datasets(too_short, tiny_tokenizer, "causal")
    shared = load_config(None, [tasks_override([{**entry, "name": "long"}]), "data.max_length=8"])
    with pytest.raises(DataError, match=r"longer than data\.max_length=8"):
        prepare_datasets(shared, tiny_tokenizer, "causal")


# --- augmentation through the config path --------------------------------------------------------


@pytest.mark.parametrize("protect", [False, True])
def test_noise_from_the_config_is_deterministic_source_only_and_keeps_markup(tiny_tokenizer, tmp_path, protect):
    train = pairs_file(tmp_path / "train.jsonl", 6)
    cfg = load_config(None, [f"data.train={train}", "data.dev=null", "data.test=null", "data.max_length=512",
                             "data.augment.noise.dropout=0.3", "data.augment.noise.shuffle_k=3",
                             "data.augment.noise.insertion=0.2", f"data.protect_markup={protect}", "data.seed=5"])
    data = prepare_datasets(cfg, tiny_tokenizer, "causal")
    again = prepare_datasets(cfg, tiny_tokenizer, "causal").train  # e.g. a resumed process
    clean = load_task(cfg.data, None).train
    changed = 0
    for i, original in enumerate(clean):
        spans = [m.group(0) for m in PROTECTED.finditer(original.source)]
        assert len(spans) >= 4  # placeholders {n} when protected, the markup itself when not
        for epoch in range(4):
            ex = data.train.example_at(i, epoch)
            assert ex.source == again.example_at(i, epoch).source
            assert ex.target == original.target  # never the target
            assert [m.group(0) for m in PROTECTED.finditer(ex.source)] == spans  # whole, once, in order
            changed += ex.source != original.source
        assert len({data.train.example_at(i, e).source for e in range(4)}) > 1  # a new noise each epoch
    assert changed >= 20
    # the real batch stream trains on exactly those noised sources, epoch by epoch
    stream = BatchStream(data.train, batch_size=2, seed=0, grouping=False)
    from loraforge.data.templates import encode_examples

    for g in (0, stream.per_epoch + 1):
        epoch = g // stream.per_epoch
        want = encode_examples(tiny_tokenizer, [data.train.example_at(i, epoch) for i in stream.indices(g)],
                               cfg.data, "causal")
        batch = stream.batch(g, tiny_tokenizer.pad_token_id, "causal")
        for row, enc in enumerate(want):
            assert batch["input_ids"][row, :len(enc.input_ids)].tolist() == enc.input_ids


def test_back_translated_pairs_mix_by_ratio_tagged_or_not(tiny_tokenizer, tmp_path):
    from loraforge.data.augment import BackTranslation, back_translate, write_synthetic

    train = pairs_file(tmp_path / "train.jsonl", 10)
    bt = BackTranslation(tagged=True)  # a cache written tagged is re-tagged (or not) by the config
    pairs = back_translate([f"合成 `cmd{i}`" for i in range(8)], lambda xs: [f"synthetic {x}" for x in xs], bt)
    cache = write_synthetic(tmp_path / "bt.jsonl.gz", pairs, bt.provenance("runs/rev", "mono.txt"))
    common = [f"data.train={train}", "data.dev=null", "data.test=null", "data.max_length=512",
              f"data.augment.back_translation.file={cache}", "data.augment.back_translation.ratio=0.5",
              "data.augment.noise.dropout=0.3"]
    # with markup protection too: the tag goes on after it (protected, "<BT>" would read as an HTML tag
    # the target lacks, and every tagged pair would be dropped)
    for tagged, protect in ((True, False), (False, False), (True, True)):
        cfg = load_config(None, [*common, f"data.augment.back_translation.tagged={tagged}",
                                 f"data.protect_markup={protect}"])
        examples = load_splits(cfg).train
        synthetic = [e for e in examples if e.meta.get("synthetic")]
        assert len(examples) == 15 and len(synthetic) == 5
        assert all(e.source.startswith(BT_TAG) == tagged for e in synthetic)
        assert all(("`cmd" in e.source) != protect for e in synthetic)  # protected: a placeholder instead
        assert all(not e.source.startswith(BT_TAG) for e in examples if not e.meta.get("synthetic"))
        train_set = encode_task(cfg.data, load_task(cfg.data, None), tiny_tokenizer, "causal", 0).train
        for i, e in enumerate(train_set.examples):  # synthetic sources are not noised again
            if e.meta.get("synthetic"):
                assert train_set.example_at(i, 3).source == e.source


def test_a_held_out_section_stays_out_of_back_translation(tmp_path):
    """data.exclude_sources reaches the synthetic pairs: the monolingual reader skips the section's pages,
    a cache made without the exclusion has its pairs dropped at load, and the pages stay on the pairs."""
    from loraforge.data.augment import BackTranslation, back_translate, write_synthetic
    from loraforge.data.splits import excluded_by
    from loraforge.workflows.augment import read_monolingual

    mono = write_jsonl(tmp_path / "mono.jsonl", [
        {"id": "a", "text": "概念段落。", "source": "docs/concepts/a.md"},
        {"id": "b", "text": "教程段落。", "source": "docs/tutorials/b.md"},
        {"id": "c", "text": "任务段落。", "source": "docs/tasks/c.md"}])
    texts, pages = read_monolingual(mono, "zh", exclude=["docs/tutorials/"])
    assert texts == ["概念段落。", "任务段落。"] and pages == ["docs/concepts/a.md", "docs/tasks/c.md"]
    assert read_monolingual(mono, "zh", limit=2)[1] == ["docs/concepts/a.md", "docs/tutorials/b.md"]
    with pytest.raises(DataError, match="no monolingual texts outside docs/"):
        read_monolingual(mono, "zh", exclude=["docs/"])

    packaged, packaged_pages = read_monolingual("k8s:mono-zh", "zh", exclude=["docs/tutorials/"])  # the spec's --mono
    assert len(packaged) == len(packaged_pages) > 800 and all(p.startswith("docs/") for p in packaged_pages)
    assert not any(p.startswith("docs/tutorials/") for p in packaged_pages)
    assert len(read_monolingual("k8s:mono-zh", "zh")[0]) > len(packaged)  # the section has paragraphs there

    all_texts, all_pages = read_monolingual(mono, "zh")  # a cache made before the section was held out
    copy = lambda xs: [x if x.startswith("任务") else f"synthetic {x}" for x in xs]  # noqa: E731  (one copied back)
    pairs = back_translate(all_texts, copy, BackTranslation(), pages=all_pages)
    cache = write_synthetic(tmp_path / "bt.jsonl.gz", pairs, BackTranslation().provenance("runs/rev", str(mono)))
    train = pairs_file(tmp_path / "train.jsonl", 4)
    rows = [json.loads(line) for line in train.read_text().splitlines()]
    write_jsonl(train, [r | {"source": f"docs/{'tutorials' if i == 0 else 'tasks'}/p{i}.md"} for i, r in enumerate(rows)])
    cfg = load_config(None, [f"data.train={train}", "data.dev=null", "data.test=null",
                             f"data.augment.back_translation.file={cache}", "data.augment.back_translation.ratio=2",
                             "data.exclude_sources=[docs/tutorials/]"])
    task = load_task(cfg.data, None)
    synthetic = [e for e in task.train if e.meta.get("synthetic")]
    assert len(synthetic) == 6 and {e.target for e in synthetic} == {"概念段落。"}  # the copy is no pair
    assert task.synthetic_copies == 1
    assert not any(excluded_by(e, ["docs/tutorials/"]) for e in task.train)
    assert task.excluded["train"]["docs/tutorials/"] == 2  # one real row, one cached pair


def test_sampled_back_translation_keeps_markup_when_the_reverse_run_protects_it(tiny_model_dir):
    """A run trained with data.protect_markup never saw raw markup: sampling protects and restores it
    as greedy generation does, so every synthetic source keeps its target's markup whole."""
    from loraforge.eval.inference import load_for_inference, sample_answers

    sources = ["运行 `kubectl get pods` 列出 {{< glossary_tooltip text=\"Pod\" term_id=\"pod\" >}}。", "纯文本。"]
    for protect in (True, False):
        cfg = load_config(None, [f"model.name={tiny_model_dir}", "model.dtype=fp32", f"data.protect_markup={protect}",
                                 "eval.max_new_tokens=6", "eval.batch_size=2"])
        loaded, model = load_for_inference(cfg, None)
        out = sample_answers(loaded, model, cfg, sources, seed=3, progress=False)
        assert out == sample_answers(loaded, model, cfg, sources, seed=3, progress=False) and len(out) == 2
        kept = [m.group(0) in out[0] for m in PROTECTED.finditer(sources[0])]
        assert len(kept) == 2 and all(kept) is protect  # a random tiny model never writes it by itself


# --- sampling across tasks -------------------------------------------------------------------------


def test_task_sampling_follows_the_temperature_through_the_real_batch_stream(tiny_tokenizer, tmp_path):
    sizes = {"big": 48, "mid": 12, "small": 3}
    tasks = [{"name": name, "train": str(pairs_file(tmp_path / f"{name}.jsonl", n, name))}
             for name, n in sizes.items()]
    batches, batch_size = 300, 4
    shares_small = []
    for T in (1, 2, 5, 1000):
        cfg = load_config(None, [tasks_override(tasks), f"data.task_temperature={T}", "data.max_length=512"])
        data = prepare_datasets(cfg, tiny_tokenizer, "causal")
        stream = make_stream(data.train, batch_size, seed=3, grouping=True)
        assert isinstance(stream, MixtureStream)
        counts = stream.task_counts(batches)
        n = batches * batch_size
        assert sum(counts.values()) == n
        weights = {k: v ** (1 / T) for k, v in sizes.items()}
        for name in sizes:
            p = weights[name] / sum(weights.values())
            assert abs(counts[name] / n - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-9, (T, name, counts)
        shares_small.append(counts["small"] / n)
        # every drawn example really is its task's: the batch holds that task's encoded example
        for g in (0, 7, 123):
            batch = stream.batch(g, tiny_tokenizer.pad_token_id, "causal")
            for row, p in enumerate(stream.positions(g)):
                task, epoch, index = stream.mixture.locate(p)
                enc = data.tasks[task].train.at(index, epoch)
                assert batch["input_ids"][row, :len(enc.input_ids)].tolist() == enc.input_ids
        # a pure function of g: a fresh stream (a resumed run) sees the same batches
        fresh = make_stream(prepare_datasets(cfg, tiny_tokenizer, "causal").train, batch_size, seed=3, grouping=True)
        assert all(torch.equal(fresh.batch(g, 0, "causal")["input_ids"], stream.batch(g, 0, "causal")["input_ids"])
                   for g in (5, 90))
    assert shares_small == sorted(shares_small) and shares_small[-1] > 0.25  # flatter with T, toward 1/3
    cfg = load_config(None, [tasks_override(tasks), "data.task_weights={big: 1, mid: 0, small: 3}",
                             "data.max_length=512"])
    counts = make_stream(prepare_datasets(cfg, tiny_tokenizer, "causal").train, 4, 0, False).task_counts(200)
    assert counts["mid"] == 0 and abs(counts["small"] / 800 - 0.75) < 0.07


# --- training, per-task evaluation, resume -------------------------------------------------------


def multitask_overrides(model_dir, tmp_path: Path, run_dir, *extra) -> list[str]:
    en_zh = pairs_file(tmp_path / "en-zh.jsonl", 10, "a")
    pii = pii_file(tmp_path / "pii.jsonl", 8)
    tasks = [{"train": str(en_zh), "dev": str(en_zh), "test": str(PAIRS), "augment": {"noise": {"dropout": 0.2}}},
             {"train": str(PAIRS), "test": str(en_zh), "src_lang": "zh", "tgt_lang": "en",
              "system_prompt": "Translate Chinese to English."},
             {"task": "pii", "train": str(pii), "test": str(pii), "system_prompt": "Mask personal data."}]
    return [f"model.name={model_dir}", tasks_override(tasks), "data.task_temperature=2", "data.max_length=512",
            "train.batch_size=4", "train.lr=3e-2", "train.warmup_steps=0", "eval.max_new_tokens=8",
            "eval.max_examples=6", f"output.dir={run_dir}", *extra]


def test_multitask_run_scores_each_task_with_its_own_metrics_and_reports_the_mix(tiny_model_dir, tmp_path, capsys):
    from loraforge.eval.metrics import task_metrics
    from loraforge.runs import RunDir
    from loraforge.workflows import eval_run, rebuild_report, train_run

    cfg = load_config(None, multitask_overrides(tiny_model_dir, tmp_path, tmp_path / "run", "train.steps=3"))
    run = train_run(cfg, progress=False)
    metrics = RunDir(run).metrics()
    assert metrics.task == "multi" and set(metrics.tasks) == {"en-zh", "zh-en", "pii"}
    tests = {name: load_task(d, 6).test for name, d in cfg.data.task_configs()}
    for name, d in cfg.data.task_configs():
        t = metrics.tasks[name]
        assert t.task == d.task and t.before and t.after
        own = {"chrf", "bleu", "markup"} if d.task == "translate" else {"leak_rate", "entity_f1"}
        assert own <= set(t.after)
        # computed on the task's own test rows, against its own references and target language
        outputs = run.outputs(f"after-{name}")
        hyps = [outputs[e.id] for e in tests[name]]
        after = dict(t.after)
        # counted for translation only (eval.min_output_ratio, eval.unfinished_keeps_source); each counted row's
        # output is its source
        kept = [after.pop(k, None) for k in ("segments_short", "segments_unfinished")]
        if d.task == "translate":
            assert 0 <= sum(kept) <= sum(h == e.source for h, e in zip(hyps, tests[name]))
        else:
            assert kept == [None, None]
        assert after == task_metrics(d.task, [e.source for e in tests[name]], hyps, [e.target for e in tests[name]],
                                     d.tgt_lang)
    assert metrics.tasks["pii"].baseline is not None and metrics.tasks["en-zh"].baseline is None
    assert sum(t.sampled for t in metrics.tasks.values()) == 3 * 4
    assert metrics.before == metrics.tasks["en-zh"].before and metrics.after == metrics.tasks["en-zh"].after
    report = (run / "report.md").read_text()
    assert "## Task zh-en (translate" in report and "## Task pii (pii" in report and "## Task mix" in report
    assert "Call Erin" not in report  # no raw PII samples in the report
    (run / "report.md").unlink()
    assert rebuild_report(run).read_text() == report
    again = eval_run(cfg, adapter=str(run), worst=2)
    assert again["tasks"]["zh-en"] == metrics.tasks["zh-en"].after
    # --worst: each translate task's two lowest sentence-chrF outputs, worst first; never the PII task's
    import sacrebleu

    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["task"] for r in rows] == ["en-zh", "en-zh", "zh-en", "zh-en"]
    for name in ("en-zh", "zh-en"):
        outputs = RunDir(run).outputs(f"after-{name}")
        scores = sorted(sacrebleu.sentence_chrf(outputs[e.id], [e.target]).score for e in tests[name])
        mine = [r for r in rows if r["task"] == name]
        assert [r["chrf"] for r in mine] == [round(x, 2) for x in scores[:2]]
        assert all(r["output"] == outputs[r["id"]] for r in mine)
    with pytest.raises(ConfigError, match="--worst: only for translate tasks"):
        eval_run(load_config(None, ["data.task=pii", "data.train=x.jsonl"]), worst=3)


def test_multitask_seq2seq_trains_one_adapter_on_the_mixture(tiny_seq2seq_dirs, tmp_path):
    from loraforge.runs import RunDir
    from loraforge.workflows import train_run

    tasks = [{"train": str(PAIRS), "test": str(PAIRS), "task_prefix": "translate English to Chinese: "},
             {"train": str(PAIRS), "test": str(PAIRS), "src_lang": "zh", "tgt_lang": "en",
              "task_prefix": "translate Chinese to English: "}]
    cfg = load_config(None, [f"model.name={tiny_seq2seq_dirs['marian']}", tasks_override(tasks), "data.max_length=128",
                             "train.steps=2", "train.batch_size=4", "eval.max_new_tokens=6", "eval.max_examples=4",
                             "eval.before=false", f"output.dir={tmp_path / 'run'}"])
    metrics = RunDir(train_run(cfg, progress=False)).metrics()
    assert set(metrics.tasks) == {"en-zh", "zh-en"} and all("chrf" in t.after for t in metrics.tasks.values())
    assert sum(t.sampled for t in metrics.tasks.values()) == 8


def test_resume_in_the_middle_of_a_multitask_run_gives_the_same_adapter(tiny_model_dir, tmp_path):
    from loraforge.workflows import train_run

    # adapter dropout and source noise on: only equal if the resumed run restores RNG, mix and noise alike
    common = ["train.steps=10", "train.save_every=4", "train.eval_every=0", "eval.before=false",
              "adapter.dropout=0.1"]
    ref = train_run(load_config(None, multitask_overrides(tiny_model_dir, tmp_path, tmp_path / "ref", *common)),
                    progress=False)

    cfg = load_config(None, multitask_overrides(tiny_model_dir, tmp_path, tmp_path / "run", *common))
    with killed_after(6), pytest.raises(Killed):
        train_run(cfg, progress=False)
    assert not (tmp_path / "run" / "adapter").exists() and (tmp_path / "run" / "checkpoints" / "step-000004").exists()
    run = train_run(cfg, resume=True, progress=False)
    want, got = load_file(str(ref / "adapter" / "adapter_model.safetensors")), \
        load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert want.keys() == got.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-7)
    assert json.loads((run / "metrics.json").read_text())["tasks"]["en-zh"]["sampled"] == \
        json.loads((ref / "metrics.json").read_text())["tasks"]["en-zh"]["sampled"]


# --- the CLI: data check and data augment ----------------------------------------------------------


def test_data_check_shows_augmented_examples_beside_their_originals(tiny_model_dir, tmp_path, capsys):
    from loraforge.cli import main

    train = pairs_file(tmp_path / "train.jsonl", 4)
    cache = write_jsonl(tmp_path / "bt.jsonl", [{"id": "b0", "en": "synthetic source", "zh": "真实目标"},
                                                 {"id": "b1", "en": "抄写", "zh": "抄写"}])  # a copy: dropped
    code = main(["data", "check", f"model.name={tiny_model_dir}", f"data.train={train}", "data.dev=null",
                 "data.max_length=512", "data.augment.noise.dropout=0.3", "data.augment.noise.shuffle_k=2",
                 f"data.augment.back_translation.file={cache}", "data.augment.back_translation.tagged=true", "-n", "2"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("original: Step ") == 2 and out.count("epoch 1:") == 2
    assert f"synthetic source: {BT_TAG}synthetic source" in out and "real target:      真实目标" in out
    assert "4 of 8 training examples; 1 dropped as copies" in " ".join(out.split()) and "抄写" not in out


def test_data_augment_materializes_the_epoch_and_caches_back_translation(tiny_model_dir, tmp_path, capsys):
    from loraforge.cli import main
    from loraforge.data.augment import read_provenance
    from loraforge.data.formats import load_examples
    from loraforge.workflows import train_run

    train = pairs_file(tmp_path / "train.jsonl", 5)
    cfg_args = [f"model.name={tiny_model_dir}", f"data.train={train}", "data.dev=null", "data.test=null",
                "data.max_length=512", "data.augment.noise.dropout=0.3", "data.seed=2"]
    outs = []
    for name, epoch in (("e1a", 1), ("e1b", 1), ("e2", 2)):
        out = tmp_path / f"{name}.jsonl"
        assert main(["data", "augment", *cfg_args, "--out", str(out), "--epoch", str(epoch)]) == 0
        outs.append([json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()])
    capsys.readouterr()
    assert outs[0] == outs[1] and outs[0] != outs[2]  # the same epoch twice; another epoch differs
    assert all(r["original"].startswith("Step") and r["target"].startswith("第") for r in outs[0])
    assert sum(r["source"] != r["original"] for r in outs[0]) >= 3

    # a reverse (zh->en) run, then the back-translation cache of monolingual Chinese, sampled and greedy
    rev_cfg = load_config(None, [f"model.name={tiny_model_dir}", f"data.train={PAIRS}", "data.dev=null",
                                 "data.test=null", "data.src_lang=zh", "data.tgt_lang=en", "train.steps=1",
                                 "train.batch_size=2", f"output.dir={tmp_path / 'rev'}"])
    reverse = train_run(rev_cfg, progress=False)
    mono = tmp_path / "mono.txt"
    texts = ["Pod 是最小的单元。", "使用 kubectl。", "Kubernetes 是一个开源系统。"]
    mono.write_text(f"{texts[0]}\n\n{texts[1]}\n{texts[2]}\n", encoding="utf-8")  # empty lines are skipped
    caches = {}
    for name, flag in (("s1", "--sampling"), ("s2", "--sampling"), ("g", "--greedy")):
        out = tmp_path / f"bt-{name}.jsonl.gz"
        code = main(["data", "augment", *cfg_args, "--out", str(out), "--back-translate", str(reverse), "--mono",
                     str(mono), flag])
        err = capsys.readouterr().err
        if code == 2:  # a random tiny model may end every output at once: an error, never an empty cache
            assert "came out empty; nothing cached" in err and not out.exists()
            continue
        assert code == 0
        caches[name] = [(e.source, e.target) for e in load_examples(str(out), None, None, "en", "zh")]
        assert {t for _, t in caches[name]} <= set(texts) and all(s.strip() for s, _ in caches[name])
        assert read_provenance(out)["sampling"] == (flag == "--sampling")
        assert read_provenance(out)["reverse_adapter"] == str(reverse)
    assert caches["s1"] == caches["s2"]  # seeded sampling (sampled outputs are rarely all empty)
    # a reverse run that does not translate zh->en is refused, naming what it does translate
    assert main(["data", "augment", *cfg_args, "data.src_lang=de", "--out", str(tmp_path / "x.jsonl"),
                 "--back-translate", str(tmp_path / "rev"), "--mono", str(mono)]) == 2
    assert "translates no zh->de" in capsys.readouterr().err
