"""The studio over HTTP: the FastAPI app, its routers and how it answers (the ``serve`` extra; imports nothing).

    app.py        create_app: the shared state, middleware, error handlers, static files and the routers
    guard.py      what every request meets first: Host, Origin, token, JSON only; the security headers
    pages.py      router: the page at / and the offline /docs page (apidocs.py renders it)
    listing.py    router: the listed models with their cards, the runs with their curves and latest grid
    submit.py     router: the routes that queue work (sample, stream, edit/stream, compare)
    downloads.py  router: a job's state, cancelling it, a finished job's PNG, .npz and GIF
    teach.py      router: Teach, a fine-tune of a listed model on the page's pictures (one at a time), its state
    intake.py     what a route does first: the shared Studio state, the bounded JSON body, the checked model
    responses.py  Server-Sent Events, and every error as JSON (404, 409, 422, 429, 500)
    apidocs.py    the OpenAPI description as one offline page, and the routes' parameter docs
    connections.py  uvicorn's protocol with timeouts: idle and slow connections closed, never counted as load
    server.py     ``serve(...)``: checks, the bound socket, the token, uvicorn (the CLI's ``serve`` imports this one)
"""
