"""The app's routers, one module each: search, items and their files, meta (probes and the
modalities), and the page. :func:`~jointspace.serve.app.create_app` includes them, the API
key a dependency of those that serve data."""
