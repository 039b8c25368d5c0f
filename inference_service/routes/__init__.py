"""The HTTP layer, one module per group of routes, plus the error format.

Each ``add_*_routes(router, ...)`` adds its routes to the router it is given: ``app.build_app`` gives the app's
own, because FastAPI (0.163) resolves an ``include_router``-ed router's routes on every request, a cost (tens of
microseconds) a predict need not pay."""
