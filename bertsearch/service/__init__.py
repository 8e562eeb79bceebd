"""The HTTP service (`bertsearch serve`), its search page, and a client with the calls of `Index`.

FastAPI, uvicorn and httpx come with the `service` extra: ``pip install 'bertsearch[service]'``.
"""
