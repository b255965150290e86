"""HTTP plumbing shared by every route: JSON bodies (`json`), cursor pagination (`pagination`), whole
numbers in query parameters (`params`), the OpenAPI document (`openapi`), the per-request yield
(`middleware`) and the health routes (`health`).
"""
