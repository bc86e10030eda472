"""Contracts and plumbing shared by every order-platform service (no business logic)."""
