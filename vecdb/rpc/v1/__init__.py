"""Generated code of the vecdb.v1 wire protocol (`make proto`); do not edit."""
