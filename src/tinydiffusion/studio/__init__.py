"""The studio: ``tinydiffusion serve``, a local web page and JSON API to steer, watch and compare sampling.

``web.app.create_app`` builds the FastAPI app; ``web.server.serve`` runs it on uvicorn. Nothing here is
imported by the rest of the package but for the CLI's ``serve`` (which imports ``web.server``), and this file
imports nothing, so the ``serve`` extra (FastAPI, uvicorn) is needed only when the studio is used. The HTTP
contract is ``docs/studio_api.md``. Three rooms, each a folder's map of its own:

    catalog.py    the models and runs the server lists (names are the only way in; NotFound: 404)
    cards.py      a model's card: conditioning, size, recommended settings, how it was trained
    runfiles.py   bounded, symlink-free reads of metrics.csv, sample grids, READMEs
    work/         what a job is and does: params, edits, jobs (the queue), runner, frames, encode, teach
    web/          HTTP: app, guard, the routers (pages, listing, submit, downloads, teach), intake, responses,
                  apidocs, connections, server
    static/       the page itself (index.html, style.css and its scripts)
"""
