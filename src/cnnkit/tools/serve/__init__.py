"""``cnnkit serve``: a small local web app over a runs folder (needs the ``serve`` extra: FastAPI, uvicorn,
python-multipart).

Example::

    import uvicorn
    from cnnkit.tools.serve import create_app

    uvicorn.run(create_app("runs"), host="127.0.0.1", port=8000)
"""

from cnnkit.tools.serve.app import create_app

__all__ = ["create_app"]
