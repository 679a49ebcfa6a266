"""Workflows: one module per job, each a plain function of a ``RunConfig`` (the Python API; the CLI
calls these and nothing else). They compose the building blocks (data, models, adapters, train,
eval) and keep runs in a ``loraforge.runs.RunDir``. A workflow module never imports another: what
two of them share lives below (``data.splits``, ``eval.inference``, ``eval.report``, ``runs``).

    train      train_run            fine-tune, evaluate before/after, write the run directory
    evaluate   eval_run, rebuild_report
    translate  translate, translate_texts
    compare    compare_run          every method on the same data and budget, one table
    inspect    check_data           ``data check``: what training will see
"""

from loraforge.data.splits import Datasets, prepare_datasets
from loraforge.eval.inference import evaluate, load_for_inference
from loraforge.workflows.compare import compare_run, parse_lrs, parse_methods
from loraforge.workflows.evaluate import eval_run, rebuild_report
from loraforge.workflows.inspect import check_data
from loraforge.workflows.train import MAY_CHANGE_ON_RESUME, config_for_resume, train_run
from loraforge.workflows.translate import Translation, translate, translate_texts, warn_cut

__all__ = ["MAY_CHANGE_ON_RESUME", "Datasets", "Translation", "check_data", "compare_run", "config_for_resume",
           "eval_run", "evaluate", "load_for_inference", "parse_lrs", "parse_methods",
           "prepare_datasets", "rebuild_report", "train_run", "translate", "translate_texts",
           "warn_cut"]
