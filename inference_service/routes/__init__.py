"""The HTTP layer: the error format and the routers ``app.build_app`` puts together, one module each."""
