"""The paper's reader study as a product: a blinded visual Turing test and its scoring.

- :mod:`histoaug.study.build` cuts a seeded, balanced, shuffled set of real and synthetic patches
  into a study folder (``histoaug study build``);
- :mod:`histoaug.study.server` serves its reader page and stores each answer as it is given
  (``histoaug study serve``); the same page also works opened from disk;
- :mod:`histoaug.study.scoring` and :mod:`histoaug.study.report` score the answers
  (``histoaug study score``).

:mod:`histoaug.study.layout` is the one place that names the study folder's files.
"""
