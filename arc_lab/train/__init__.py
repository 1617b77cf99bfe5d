"""The shared training loop and its pieces (see each module's docstring for its public API).

* :mod:`arc_lab.train.args` -- the settings as plain dataclasses: ``OptimConfig``, ``LoraConfig``,
  ``StageArgs`` (a stage's settings), ``Runtime`` (logger, eval callback, stepper factory, caches).
* :mod:`arc_lab.train.stepper` -- ``Stepper`` protocol (backward / step / save / load) + plain-torch AdamW.
* :mod:`arc_lab.train.batching` -- pre-tokenisation by input kind (encode_pair), collation.
* :mod:`arc_lab.train.forward` -- ``answer_logps``: one forward, LM head at answer positions only.
* :mod:`arc_lab.train.lora` -- fresh peft LoRA on a frozen model; reference = adapter disabled.
* :mod:`arc_lab.train.reference` -- reference log-probs precomputed once, cached on disk by fingerprint.
* :mod:`arc_lab.train.checkpoint` -- atomic checkpoints, exact resume.
* :mod:`arc_lab.train.loop` -- ``train(model, tokenizer, objective, examples, args, *, out_dir, runtime)
  -> TrainResult``.
* :mod:`arc_lab.train.merge` -- ``merge(...)``: LoRA merged into a standalone checkpoint.
"""
