"""The control plane: REST API, database, portal, and the client nodes and the CLI use.

==========================  ==========================================================
``client``                  :class:`CloudClient`, the API as nodes and the CLI see it
``server``                  :func:`serve` (blocking) and :func:`start_cloud_subprocess`
``keys``                    :func:`api_token`, gateway keys (Fernet), node tokens
``db`` / ``models``         SQLAlchemy engine and tables; migrations in ``migrations/``
``schemas``                 request bodies (pydantic)
``service/``                the rules, one transaction per use case (no HTTP here)
``api/``                    FastAPI app (:func:`create_app`), routers, auth, errors
``portal/``                 the read-only HTML portal at ``/``
==========================  ==========================================================
"""
