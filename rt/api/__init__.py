"""REST: one module per resource, problem+json errors, the OpenAPI document."""
