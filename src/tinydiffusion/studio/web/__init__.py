"""The studio over HTTP: the FastAPI app, its routers and how it answers (the ``serve`` extra; imports nothing).

    app.py        create_app: the shared state, middleware, error handlers, static files and the routers
    pages.py      router: the page at / and the offline /docs page (apidocs.py renders it)
    listing.py    router: the listed models with their cards, the runs with their curves and latest grid
    submit.py     router: the routes that queue work (sample, stream, edit/stream, compare)
    downloads.py  router: a job's state, cancelling it, a finished job's PNG, .npz and GIF
    intake.py     what a route does first: the shared Studio state, the bounded JSON body, the checked model
    responses.py  Server-Sent Events, and every error as JSON (404, 422, 429, 500)
    apidocs.py    the OpenAPI description as one offline page, and the routes' parameter docs
    server.py     ``serve(...)``: checks, warnings, uvicorn (the CLI's ``serve`` imports this one)
"""
