from loraforge.eval.metrics import markup_items, markup_preservation, task_metrics, translation_metrics

SRC = ('Run `kubectl get pods`, see [the docs](/docs/home/) and '
       '{{< glossary_tooltip text="namespace" term_id="namespace" >}}.')
GOOD = '运行 `kubectl get pods`，参见[文档](/docs/home/)和{{< glossary_tooltip text="命名空间" term_id="namespace" >}}。'


def test_markup_items_ignore_translated_shortcode_text():
    assert markup_items(SRC) == ["`kubectl get pods`", "](/docs/home/)", '{{glossary_tooltip term_id="namespace"}}']
    assert markup_items(GOOD) == markup_items(SRC)


def test_markup_preservation_counts_items():
    assert markup_preservation([SRC], [GOOD]) == 1.0
    assert markup_preservation([SRC], ["运行 kubectl get pods，参见[文档](/docs/home/)。"]) == 1 / 3
    assert markup_preservation(["no markup"], ["没有"]) is None


def test_translation_metrics_use_chinese_tokenization():
    perfect = translation_metrics([SRC], [GOOD], [GOOD])
    assert perfect["bleu"] == 100 and perfect["chrf"] == 100 and perfect["ter"] == 0
    # With the zh tokenizer, a one-character change still scores most n-grams.
    near = translation_metrics([SRC], [GOOD.replace("参见", "请看")], [GOOD])
    assert 40 < near["bleu"] < 100 and near["ter"] > 0
    assert translation_metrics([SRC], ["完全不同的句子"], [GOOD])["chrf"] < 15


def test_sft_task_reports_exact_match():
    m = task_metrics("sft", ["a", "b"], ["x", "y"], ["x", "z"])
    assert m["exact_match"] == 50.0


def test_chinese_translation_metrics_report_glossary_term_accuracy():
    src = ["The Admission Controller checks every Annotation."]
    right = translation_metrics(src, ["准入控制器检查每个注解。"], ["准入控制器检查每个注解。"])
    half = translation_metrics(src, ["准入控制器检查每个标注。"], ["准入控制器检查每个注解。"])
    assert right["term_accuracy"] == 100.0 and 0 < half["term_accuracy"] < 100  # 注解 missing
    assert translation_metrics(["no terms here"], ["这里没有"], ["这里没有"])["term_accuracy"] is None
    assert "term_accuracy" not in translation_metrics(src, ["x"], ["x"], tgt_lang="ja")  # the glossary is zh-cn
