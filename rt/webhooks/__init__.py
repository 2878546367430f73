"""Webhooks out: endpoints, signing (X-RT-Signature and Standard Webhooks), the outbox worker and the delivery log."""
