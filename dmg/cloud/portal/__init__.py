"""The read-only HTML portal: gateways, nodes and recent runs, rendered on the server."""
