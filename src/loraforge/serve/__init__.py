"""An OpenAI-compatible server for a base model and many adapters. Never imports train."""
