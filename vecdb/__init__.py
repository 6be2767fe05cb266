"""vecdb: a disk-hybrid, multi-tenant vector database."""
