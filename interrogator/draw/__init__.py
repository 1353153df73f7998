"""Text to image on the interrogator's CLIP: VQGAN+CLIP (``python -m interrogator draw``, the ``[draw]`` extra).

One module per role: ``vqgan`` (the VQGAN from taming's files or a converted folder, and the conversion),
``prompts`` (weighted parts, settings, jobs), ``augment`` (the random crops), ``optimize`` (the loop),
``writer`` (PNGs with their settings, videos). It depends on the core; the core never imports it.
"""
