"""The control plane: REST API, database, portal, and the client nodes and the CLI use."""
