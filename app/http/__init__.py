"""HTTP plumbing shared by every route: JSON bodies (`json`), cursor pagination (`pagination`), the
OpenAPI document (`openapi`), the per-request yield (`middleware`) and the health routes (`health`).
"""
