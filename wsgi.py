"""The WSGI entry point: ``gunicorn -c gunicorn.conf.py wsgi:app``.

Building the app here, not in ``app.py``, keeps importing the factory free of side effects
(tests, scripts and the CLI build their own). ``flask`` finds this module by its name, so
``flask gallery ...`` needs no ``--app``.
"""

from app import build_app

app = build_app()
