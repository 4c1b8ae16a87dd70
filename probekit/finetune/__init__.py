"""Fine-tuning: paper 1's in-distribution control. Fully fine-tune a backbone with a linear head on
a dataset (paper 1's recipe, or a CPU-scaled version of it), keep the checkpoint content-addressed
beside the feature store, and load it back as a model like any other for extraction and probes.

    from probekit.finetune import cpu_recipe, finetune, load_finetuned
    tuned = finetune(backbone, "digits", cpu_recipe("digits"))
    tuned_bb = load_finetuned(backbone, tuned)     # = load_model(name, weights=tuned.weights)
"""

from .grid import FineTuned, choose_lr, finetune, load_finetuned
from .loop import RunResult
from .recipe import Recipe, compare_to_paper, cpu_recipe, lr_factor, paper_recipe

__all__ = [
    "FineTuned",
    "Recipe",
    "RunResult",
    "choose_lr",
    "compare_to_paper",
    "cpu_recipe",
    "finetune",
    "load_finetuned",
    "lr_factor",
    "paper_recipe",
]
