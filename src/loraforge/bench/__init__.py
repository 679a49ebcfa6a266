"""Benchmarks whose numbers the README publishes.

CLI benchmarks (``loraforge bench ...``): ``train`` (loraforge against TRL, ``train.py`` + ``trl_job.py``),
``generate``, ``serve``; ``flops`` and ``report`` serve them. Stand-alone measurements, each run as
``python -m loraforge.bench.<name>``: ``attention_micro``, ``gpu_profile``, ``interleaved_ab``,
``kernel_caches``, ``tokenizer_memory``. None does any work at import.
"""
