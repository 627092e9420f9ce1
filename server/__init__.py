"""facecloak.server: the gRPC enrollment service (``facecloak-server``; docs/server.md).

Modules: config (ServerConfig and its loading), app (FaceCloakServer: assembly, warm-up, shutdown),
service (the RPC handlers), pool (bounded queue + workers), auth (API keys, rate limits),
errors (reasons -> status codes), metrics (Prometheus), logs (JSON lines), main (the console script).
"""
