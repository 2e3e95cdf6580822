"""The studio: ``tinydiffusion serve``, a local web page and JSON API to steer, watch and compare sampling.

``create_app`` (in ``app.py``) builds the FastAPI app; ``server.serve`` runs it on uvicorn. Nothing here is
imported by the rest of the package, and this file imports nothing, so the ``serve`` extra (FastAPI,
uvicorn) is needed only when the studio is used. The HTTP contract is ``docs/studio_api.md``.

    catalog.py    the models and runs the server lists (names are the only way in)
    cards.py      a model's card: conditioning, size, recommended settings, how it was trained
    runfiles.py   bounded, symlink-free reads of metrics.csv, sample grids, READMEs
    params.py     the sampling parameters of a request, checked like the CLI before any work is queued
    jobs.py       the bounded queue, its worker thread, cancellation, the last finished results
    runner.py     what a job does on the worker: sample (streaming frames) or compare; the pipeline cache
    encode.py     PNG grids, data URLs, GIF and .npz bytes (in memory)
    app.py        the routes; responses.py: SSE and JSON errors; apidocs.py: the offline /docs page
    server.py     ``serve(...)``: checks, warnings, uvicorn
"""
