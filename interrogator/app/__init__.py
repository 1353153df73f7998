"""The local web app (``python -m interrogator app``, the ``[app]`` extra): the core's functions behind a
Gradio page and its API. ``service`` holds the models and the device queue and knows nothing of Gradio;
``paths`` decides which server files may be read or served; ``ui`` is the page."""
