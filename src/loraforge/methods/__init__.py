"""Fine-tuning methods: what each one is, in one place (PEFT's one-folder-per-method layout).

``spec.MethodSpec`` is what a method declares (config keys, build, merges, packs, KAITO, estimate);
``registry`` holds them and answers every other module's questions; one module per method family
(``lora``, ``ia3``, ``prompt_learning``, ``bottleneck``, ``full``) declares its ``SPECS`` and builds it,
importing torch/PEFT inside its build function only. Torch-free at import, so ``config`` and
``deploy`` can ask it; ``adapters`` (apply, save, load, merge) sits above it.
"""
